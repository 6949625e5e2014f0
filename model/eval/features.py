"""Frozen features from any model offering the CT-GLIP interface (docs/ARCHITECTURE.md, "Model interface").

Duck typed: ``encode_organs(volume, mask, region, size)`` and ``encode_text(texts, normalize=True)``. The global CLIP
baseline is scored with the same calls on the same organ crops, so the comparison with the grounded model is like for
like: only the training signal differs.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from model.eval.data import EvalData

if TYPE_CHECKING:
    from model.network import CTGlip

M = TypeVar("M", bound=nn.Module)


def model_device(model: object) -> torch.device:
    params = getattr(model, "parameters", None)
    if params is not None:
        for p in params():
            return p.device
    return torch.device("cpu")


@torch.no_grad()
def organ_embeddings(model: CTGlip, data: EvalData, rows: pd.DataFrame, chunk: int = 64) -> np.ndarray:
    """(len(rows), e) organ embeddings, in the order of ``rows`` (their ``row`` column indexes the crops)."""
    device = model_device(model)
    index = rows["row"].to_numpy(dtype=int)
    out = [
        model.encode_organs(**data.crops.tensors(index[i : i + chunk], device)).float().cpu().numpy()
        for i in range(0, len(index), chunk)
    ]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.config.embed_dim), np.float32)


def randomly_initialised(model: M, seed: int | None = None) -> M:
    """A model of ``model``'s architecture with every parameter drawn afresh (the "random" row).

    A model built from a config (``CTGlip``: ``type(model)(model.config, model.preprocessing, text_states=...)``) is
    rebuilt by its own constructor, so every image-side parameter starts as a new training run would; the text
    encoder's frozen part is shared. Any other module is deep-copied and every submodule's ``reset_parameters()``
    re-run. ``seed`` None draws from torch's current random state, so callers that seed each repeat differently get a
    fresh network per repeat.
    """
    if seed is not None:
        torch.manual_seed(seed)
    config, pre = getattr(model, "config", None), getattr(model, "preprocessing", None)
    text = getattr(model, "text", None)
    if config is not None and pre is not None and text is not None:
        fresh = type(model)(config, pre, text_states=text.states)
        return fresh.to(model_device(model)).train(model.training)
    fresh = copy.deepcopy(model)
    for m in fresh.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
    return fresh
