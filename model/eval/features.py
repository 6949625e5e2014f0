"""Frozen features from any model offering the CT-GLIP interface (docs/ARCHITECTURE.md, "Model interface").

Duck typed: ``feature_map(volume)``, ``pool_organs(fmap, labels, organ_index)``,
``encode_global(volume)`` and ``encode_text(texts, normalize=True)``. The global CLIP baseline is
scored with the same calls, so its organ embeddings are pooled in the organ mask from its own
feature map: the comparison with the grounded model is like for like.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from model.eval.data import EvalCase


def model_device(model: object) -> torch.device:
    params = getattr(model, "parameters", None)
    if params is not None:
        for p in params():
            return p.device
    return torch.device("cpu")


def _volume(case: EvalCase, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(case.volume, dtype=torch.float32, device=device)[None, None]  # (1, 1, D, H, W)


def _labels(case: EvalCase, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(case.labels, dtype=torch.long, device=device)[None]  # (1, D, H, W)


def organ_embeddings_of_case(model: object, case: EvalCase, index_v2: Sequence[int], device: torch.device) -> torch.Tensor:
    """(n, dim) organ embeddings of one case (gradients flow if enabled)."""
    fmap = model.feature_map(_volume(case, device))  # (1, c, d, h, w)
    idx = torch.tensor([[0, int(i)] for i in index_v2], dtype=torch.long, device=device).reshape(-1, 2)
    return model.pool_organs(fmap, _labels(case, device), idx)


@torch.no_grad()
def organ_embeddings(model: object, cases: Sequence[EvalCase], rows: pd.DataFrame) -> np.ndarray:
    """(len(rows), dim) mask-pooled embeddings, in the order of ``rows`` (study_id, index_v2)."""
    device = model_device(model)
    by_id = {c.study_id: c for c in cases}
    out: list[np.ndarray | None] = [None] * len(rows)
    for sid, grp in rows.groupby("study_id", sort=False):
        emb = organ_embeddings_of_case(model, by_id[sid], grp["index_v2"].astype(int).tolist(), device)
        for pos, e in zip(np.flatnonzero(rows["study_id"].to_numpy() == sid), emb.float().cpu().numpy()):
            out[pos] = e
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack(out).astype(np.float32)


@torch.no_grad()
def study_embeddings(model: object, cases: Sequence[EvalCase]) -> np.ndarray:
    """(len(cases), dim) global embeddings."""
    device = model_device(model)
    embs = [model.encode_global(_volume(c, device)).float().cpu().numpy()[0] for c in cases]
    return np.stack(embs).astype(np.float32) if embs else np.zeros((0, 0), np.float32)


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


@torch.no_grad()
def prompt_embeddings(model: object, prompt_sets: Sequence[Sequence[str]]) -> np.ndarray:
    """(len(prompt_sets), dim): each set's phrasings encoded, L2-normalised, averaged, normalised again."""
    flat = [p for s in prompt_sets for p in s]
    emb = model.encode_text(flat, normalize=True).float().cpu().numpy()
    emb = _normalize(emb)
    out, start = [], 0
    for s in prompt_sets:
        out.append(emb[start : start + len(s)].mean(0))
        start += len(s)
    return _normalize(np.stack(out)).astype(np.float32)


def randomly_initialised(model: nn.Module, seed: int | None = None) -> nn.Module:
    """A model of ``model``'s architecture with every parameter drawn afresh (the "random" row).

    A model built from a config (``CTGlip``: ``type(model)(model.config, text_encoder=...)``) is
    rebuilt by its own constructor, so every parameter -- ViT position embeddings and the logit
    scale included -- starts as a new training run would; the frozen text encoder is shared. Any
    other module is deep-copied and every submodule's ``reset_parameters()`` re-run. ``seed``
    None draws from torch's current random state, so callers that seed each repeat differently
    get a fresh network per repeat.
    """
    if seed is not None:
        torch.manual_seed(seed)
    config = getattr(model, "config", None)
    if config is not None and hasattr(model, "text_encoder"):
        fresh = type(model)(config, text_encoder=model.text_encoder)
        return fresh.to(model_device(model)).train(model.training)
    fresh = copy.deepcopy(model)
    for m in fresh.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
    return fresh
