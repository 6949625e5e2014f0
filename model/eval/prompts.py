"""Text prompts for the zero-shot protocols, from the organ vocabulary's class names.

Several phrasings per class are encoded and averaged (prompt ensembling, as in CLIP): the mean
of the L2-normalised prompt embeddings, normalised again.
"""

from __future__ import annotations

from model.text import readable_organ  # the same words as the training texts

ORGAN_TEMPLATES: tuple[str, ...] = (
    "the {organ}",
    "a CT image of the {organ}",
    "the {organ} on a CT scan",
    "this is the {organ}",
)
# The first phrasing of each is the grounded model's dictionary form (model.data: 'normal liver',
# 'mass of the liver'); the others are report-like, the global model's training texts.
NORMAL_TEMPLATES: tuple[str, ...] = (
    "normal {organ}",
    "no {abn} in the {organ}",
    "the {organ} shows no {abn}",
    "the {organ} is unremarkable",
    "no evidence of {abn} in the {organ}",
)
ABNORMAL_TEMPLATES: tuple[str, ...] = (
    "{abn} of the {organ}",
    "{abn} in the {organ}",
    "the {organ} shows {abn}",
    "there is {abn} in the {organ}",
    "findings of {abn} in the {organ}",
)


def organ_prompts(organ: str, templates: tuple[str, ...] = ORGAN_TEMPLATES) -> list[str]:
    words = readable_organ(organ)
    return [t.format(organ=words) for t in templates]


def abnormality_prompts(
    organ: str,
    abnormality: str,
    normal_templates: tuple[str, ...] = NORMAL_TEMPLATES,
    abnormal_templates: tuple[str, ...] = ABNORMAL_TEMPLATES,
) -> tuple[list[str], list[str]]:
    """(normal phrasings, abnormal phrasings) for one (organ, abnormality) pair."""
    words = readable_organ(organ)
    normal = [t.format(organ=words, abn=abnormality) for t in normal_templates]
    abnormal = [t.format(organ=words, abn=abnormality) for t in abnormal_templates]
    return normal, abnormal
