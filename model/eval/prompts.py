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
# CT-CLIP's zero-shot form ("{abn} is present in the {organ}." / "... is not present ...") and
# paraphrases of it, averaged. None is a training text or the form of one: the grounded model's
# dictionary says "normal liver" / "mass of the liver" (model.data), its organ texts "liver: <report>",
# and the reports are the synthetic phrase banks (pipeline/synthetic/phrases.py);
# tests/test_eval_zero_shot.py checks the sets are disjoint.
NORMAL_TEMPLATES: tuple[str, ...] = (
    "{abn} is not present in the {organ}.",
    "There is no {abn} in the {organ}.",
    "The {organ} shows no sign of {abn}.",
    "No evidence of {abn} is seen in the {organ}.",
)
ABNORMAL_TEMPLATES: tuple[str, ...] = (
    "{abn} is present in the {organ}.",
    "There is {abn} in the {organ}.",
    "The {organ} shows signs of {abn}.",
    "Evidence of {abn} is seen in the {organ}.",
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
    normal = [_sentence(t.format(organ=words, abn=abnormality)) for t in normal_templates]
    abnormal = [_sentence(t.format(organ=words, abn=abnormality)) for t in abnormal_templates]
    return normal, abnormal


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
