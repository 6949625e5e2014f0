"""Zero-shot prompts and their embeddings: what serving (``model.inference``) and evaluation (``model.eval``) both
score organs against, so neither imports the other.

Several phrasings per class are encoded and averaged (prompt ensembling, as in CLIP): the mean
of the L2-normalised prompt embeddings, normalised again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from model.text import readable_organ  # the same words as the training texts

if TYPE_CHECKING:
    from model.network import CTGlip

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


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (float64: score differences are small)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


@torch.no_grad()
def prompt_embeddings(model: CTGlip, prompt_sets: Sequence[Sequence[str]]) -> np.ndarray:
    """(len(prompt_sets), e): each set's phrasings encoded, L2-normalised, averaged, normalised again."""
    flat = [p for s in prompt_sets for p in s]
    was = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()  # no dropout in the text encoder's trained layers
    emb = unit_rows(model.encode_text(flat, normalize=True).float().cpu().numpy())
    if was:
        model.train()
    out, start = [], 0
    for s in prompt_sets:
        out.append(emb[start : start + len(s)].mean(0))
        start += len(s)
    return unit_rows(np.stack(out)).astype(np.float32)
