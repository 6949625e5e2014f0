"""Checkpoints (for resuming) and exported models (for sharing); neither is read by unpickling code.

- Step checkpoints ``checkpoints/step_*.pt``: one dict holding everything a resume needs: ``model``
  (state dict, without the frozen text encoder), ``optimizer``, ``scheduler``, ``step``, ``config``
  (``TrainConfig.to_dict()``), ``io``, ``sampler`` (epoch, batch offset), ``rng`` (python, numpy, torch
  states of every process, as plain lists and tensors), ``history`` and ``format``. Written with
  ``torch.save``, read with ``torch.load(weights_only=True)``.
- An exported model is a folder: ``model.safetensors`` (weights), ``config.json`` (a plain JSON dict:
  ``format``, ``train`` = ``TrainConfig.to_dict()``, ``io``, ``step``, ``training`` = data summary and
  metrics; other records may join it) and ``README.md`` (the model card, rendered from config.json).
  ``load_model`` rebuilds the network from these alone.

A pickled ``model.pt`` from before this format is refused: ``python -m model.convert OLD_DIR`` converts
one that you trust.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from model.config import ModelConfig, TrainConfig
from model.files import CARD, CONFIG, WEIGHTS
from model.network import CTGlip
from model.preprocess import Preprocessing
from model.text import CachedTextEncoder
from pipeline.atomic import atomic_path, write_json

log = logging.getLogger(__name__)

FORMAT = "ct-glip/1"  # bump when what the files hold changes; older files are refused with a message
CONVERT = "python -m model.convert"

_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


class LegacyCheckpointError(ValueError):
    """A checkpoint in an older (pickled) format; the message says how to convert it."""


def step_path(directory: str | os.PathLike, step: int) -> Path:
    return Path(directory) / f"step_{step:07d}.pt"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """torch.save to a temporary file beside ``path``, then rename: a killed run leaves no half file."""
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({**state, "format": FORMAT}, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A step checkpoint of this format, read with ``weights_only=True`` (tensors and plain values only)."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise LegacyCheckpointError(_legacy_message(path, f"it holds more than tensors and plain values ({str(err).splitlines()[0]})")) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format", "none") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise LegacyCheckpointError(_legacy_message(path, f"its format is {found!r}, this version reads {FORMAT!r}"))
    return ckpt


def _legacy_message(path: str | os.PathLike, why: str) -> str:
    path = Path(path)
    target = path.parent if path.name == "model.pt" else path
    return (
        f"{path} is not a ct-glip {FORMAT} checkpoint: {why}. Old pickled files are not loaded, since loading a pickle "
        f"runs whatever code it holds. If you trust where the file came from, convert it once with "
        f"`{CONVERT} {target}` (writes a model folder: {WEIGHTS}, {CONFIG}, {CARD}; it asks for --trust where the file "
        f"cannot be read without running code); a training run can also start afresh (resume=False or a new output folder)."
    )


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
    """RNG states as tensors and plain values, so checkpoints load with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_of(checkpoint: dict[str, Any]) -> TrainConfig:
    """The training config of a step checkpoint or of an exported model's config.json."""
    return TrainConfig.from_dict(checkpoint["train"] if "train" in checkpoint else checkpoint["config"])


def save_model(directory: str | os.PathLike, state_dict: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Export weights (safetensors), ``config`` (JSON; needs ``train``) and the model card into ``directory``.

    config.json is written last, so a folder with one is complete.
    """
    if "train" not in config:
        raise ValueError("config needs a 'train' entry (TrainConfig.to_dict())")
    directory = Path(directory)
    config = {**config, "format": FORMAT}
    json.dumps(config)  # fail before writing anything if a value is not plain JSON
    # safetensors refuses shared or strided storage: store a contiguous copy of every tensor
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    with atomic_path(directory / WEIGHTS, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "ct-glip": FORMAT})
    with atomic_path(directory / CARD, suffix=".md") as tmp:
        tmp.write_text(_model_card(config))
    write_json(config, directory / CONFIG)
    return directory


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """config.json of an exported model folder (or of the folder of a file in it), format checked."""
    folder = _model_folder(path)
    config_path = folder / CONFIG
    if not config_path.is_file():
        if (folder / "model.pt").is_file():
            raise LegacyCheckpointError(_legacy_message(folder / "model.pt", "it is a pickled model.pt"))
        raise FileNotFoundError(f"no trained model at {path}: expected a folder with {WEIGHTS} and {CONFIG}")
    config = json.loads(config_path.read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{config_path}: model format {config.get('format')!r}, this version of ct-glip reads {FORMAT!r}")
    return config


def _model_folder(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.parent if p.name in (WEIGHTS, CONFIG, CARD) else p


def preprocessing_of(checkpoint: dict[str, Any] | str | os.PathLike) -> Preprocessing:
    """How the checkpoint's network was fed (``io["preprocessing"]``; older files: their ``config.data``).

    ``checkpoint``: a loaded dict, a step checkpoint (``.pt``) or an exported model folder (its config.json)."""
    if isinstance(checkpoint, dict):
        ckpt = checkpoint
    else:
        ckpt = load_checkpoint(checkpoint) if Path(checkpoint).suffix == ".pt" else read_config(checkpoint)
    record = ckpt.get("io", {}).get("preprocessing")
    return Preprocessing.from_record(record) if record else Preprocessing.of(config_of(ckpt).data)


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", text_encoder: CachedTextEncoder | None = None
) -> CTGlip:
    """The trained network, in eval mode: from an exported model folder, or from a step checkpoint (``.pt``).

    The frozen text encoder is rebuilt from the config (it is not stored); pass ``text_encoder``
    to share an already loaded one. A pickled ``model.pt`` is refused with how to convert it.
    """
    p = Path(path)
    if p.suffix == ".pt":
        if p.name == "model.pt":
            raise LegacyCheckpointError(_legacy_message(p, "it is a pickled model.pt"))
        ckpt = load_checkpoint(p, "cpu")
        train_config, state, step = config_of(ckpt), ckpt["model"], ckpt.get("step")
    else:
        config = read_config(p)
        train_config, step = config_of(config), config.get("step")
        state = load_file(str(_model_folder(p) / WEIGHTS), device="cpu")
    model_config: ModelConfig = train_config.model
    model = CTGlip(model_config, text_encoder=text_encoder)
    model.load_state_dict(state)
    log.info("loaded %s (%s, %s encoder, step %s)", path, model_config.kind, model_config.image_encoder, step)
    return model.to(map_location).eval()


def _model_card(config: dict[str, Any]) -> str:
    """A short model card (markdown) from an exported model's config dict."""
    train, io, training = config["train"], config.get("io", {}), config.get("training", {})
    m = train["model"]
    data = training.get("data", {})
    losses = training.get("final_losses", {})
    image = io.get("image", {})
    lines = [
        f"# ct-glip model: {m['kind']} ({m['image_encoder']} image encoder)",
        "",
        "A 3D CT vision-language model trained with ct-glip (CT-GLIP, arXiv 2404.15272): "
        + ("organ-level (grounded) image-text alignment." if m["kind"] == "grounded" else "whole-volume vs whole-report alignment (CLIP baseline)."),
        "Research use only; not a medical device.",
        "",
        "## Use",
        "",
        "```python",
        "from model.checkpoint import load_model",
        "model = load_model('THIS_FOLDER')  # weights from model.safetensors, config from config.json",
        "```",
        "",
        "## Input",
        "",
        f"- volume: RAS, {image.get('spacing_mm', '?')} mm isotropic, HU window {image.get('from_hu_window', m.get('input_window'))} scaled to [-1, 1], crop {m['img_size']} voxels",
        f"- text encoder (frozen, not stored here): {m['text_encoder']}",
        "",
        "## Training data",
        "",
    ]
    if data:
        lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in sorted(data.items())]
    else:
        lines.append("- not recorded (converted from an older checkpoint)")
    lines += [
        "",
        "## Training",
        "",
        f"- steps: {config.get('step', '?')} of {train['steps']}, global batch {train['batch_size']}, peak lr {train['lr']}, seed {train['seed']}",
    ]
    if training.get("samples_per_s") is not None:
        lines.append(f"- throughput: {training['samples_per_s']:.2f} studies/s on {training.get('world_size', 1)} process(es)")
    lines += ["", "## Metrics", ""]
    if losses:
        lines.append("Final training losses (last logged step): " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(losses.items())))
    else:
        lines.append("No training losses recorded.")
    lines.append("Evaluation scores are not part of this card: see the evaluation report of the run that scored this model.")
    return "\n".join(lines) + "\n"
