"""Checkpoints: one dict holding everything a resume needs, written atomically.

Keys: ``model`` (state dict, without the frozen text encoder), ``optimizer``, ``scheduler``,
``step``, ``config`` (``TrainConfig.to_dict()``), ``sampler`` (epoch, batch offset), ``rng``
(python, numpy, torch states of every process), ``history`` (logged losses). ``model.pt`` files
written at the end of training hold only ``model``, ``config``, ``step`` and ``history``.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.config import ModelConfig, TrainConfig
from model.network import CTGlip
from model.preprocess import Preprocessing
from model.text import CachedTextEncoder
from pipeline.atomic import atomic_path

log = logging.getLogger(__name__)

_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


def step_path(directory: str | os.PathLike, step: int) -> Path:
    return Path(directory) / f"step_{step:07d}.pt"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """torch.save to a temporary file beside ``path``, then rename: a killed run leaves no half file."""
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    # our own files; weights_only=False because the RNG states hold numpy arrays and tuples
    return torch.load(path, map_location=map_location, weights_only=False)


def step_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    d = Path(directory)
    found = [(int(m.group(1)), p) for p in d.glob("step_*.pt") if (m := _STEP_FILE.match(p.name))] if d.is_dir() else []
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    found = step_checkpoints(directory)
    return found[-1][1] if found else None


def prune_checkpoints(directory: str | os.PathLike, keep: int) -> None:
    for _, p in step_checkpoints(directory)[:-keep] if keep > 0 else []:
        p.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_of(checkpoint: dict[str, Any]) -> TrainConfig:
    return TrainConfig.from_dict(checkpoint["config"])


def preprocessing_of(checkpoint: dict[str, Any] | str | os.PathLike) -> Preprocessing:
    """How the checkpoint's network was fed (``io["preprocessing"]``; older files: their ``config.data``)."""
    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    record = ckpt.get("io", {}).get("preprocessing")
    return Preprocessing.from_record(record) if record else Preprocessing.of(config_of(ckpt).data)


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", text_encoder: CachedTextEncoder | None = None
) -> CTGlip:
    """The trained network of a checkpoint (config inside), in eval mode.

    The frozen text encoder is rebuilt from the config (it is not stored); pass ``text_encoder``
    to share an already loaded one.
    """
    ckpt = load_checkpoint(path, map_location)
    model_config: ModelConfig = config_of(ckpt).model
    model = CTGlip(model_config, text_encoder=text_encoder)
    model.load_state_dict(ckpt["model"])
    log.info("loaded %s (%s, %s encoder, step %s)", path, model_config.kind, model_config.image_encoder, ckpt.get("step"))
    return model.to(map_location).eval()
