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

A model of another format -- a pickled ``model.pt``, or an older ct-glip's whole-study model (``ct-glip/1``) -- is
refused with a message saying what it is: the network and its inputs changed, so it must be trained again.
"""

from __future__ import annotations

import dataclasses
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
from model.text import CachedTextStates
from pipeline.atomic import atomic_path, write_json

log = logging.getLogger(__name__)

FORMAT = "ct-glip/2"  # bump when what the files hold changes; older files are refused with a message
OLDER = {"ct-glip/1": "whole-study crops and a frozen text encoder (before organ crops)"}

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
        raise LegacyCheckpointError(
            _legacy_message(path, f"it holds more than tensors and plain values ({str(err).splitlines()[0]})")
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format", "none") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise LegacyCheckpointError(_legacy_message(path, f"its format is {found!r}, this version reads {FORMAT!r}"))
    return ckpt


def _legacy_message(path: str | os.PathLike, why: str) -> str:
    return (
        f"{path} is not a ct-glip {FORMAT} checkpoint: {why}. It was written by an older ct-glip, whose network and "
        "inputs differ (pickled files are never loaded either: loading a pickle runs whatever code it holds): "
        "train the model again with this version; a training run starts afresh with resume=False or a new output "
        "folder."
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
    """The training config of a step checkpoint or of an exported model's config.json, its ``data.preprocessing`` as
    trained. Files written before the config held the record keep it in ``io["preprocessing"]``: it is taken from
    there (and one of an older kind is refused, saying so, before anything else is read)."""
    record = checkpoint.get("io", {}).get("preprocessing")
    trained = Preprocessing.from_record(record) if record is not None else None
    config = TrainConfig.from_dict(checkpoint["train"] if "train" in checkpoint else checkpoint["config"])
    if trained is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, preprocessing=trained))
    return config


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
    check_format(config.get("format"), config_path)
    check_text_encoder(
        config.get("train", {}).get("model", {}).get("text_encoder"), config_path, "train.model.text_encoder"
    )
    return config


def check_text_encoder(name: str | None, where: str | os.PathLike, key: str) -> None:
    """A model folder is data, not instructions: its text encoder must be the packaged one, the test stand-in, or a
    local folder -- never a hub id (ct-glip stays offline)."""
    from model.config import FAKE_TEXT, GT_MINILM

    if name is None or name in (GT_MINILM, FAKE_TEXT, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        return
    if not Path(name).is_absolute() or not Path(name).is_dir():
        raise ValueError(
            f"{where}: {key} = {name!r} is neither the packaged text encoder ({GT_MINILM!r}) nor an existing "
            "local folder (an absolute path); a model folder may not send ct-glip to download a model"
        )


def check_format(found: str | None, where: str | os.PathLike) -> None:
    """Refuse a model written by another version of ct-glip, saying what it was."""
    if found == FORMAT:
        return
    what = f" ({OLDER[found]}): train it again with this version" if found in OLDER else ""
    raise ValueError(f"{where}: model format {found!r}{what}; this version of ct-glip reads {FORMAT!r}")


def _model_folder(path: str | os.PathLike) -> Path:
    """The exported model folder ``path`` names: the folder itself, a file in it, or a training run's folder
    (``<data>/models/grounded-.../``, whose ``model/`` holds the export)."""
    p = Path(path)
    if p.name in (WEIGHTS, CONFIG, CARD):
        return p.parent
    # a run folder has a config.json of its own (the training config the trainer asset wrote), never the weights
    if p.is_dir() and not (p / WEIGHTS).is_file() and (p / "model" / CONFIG).is_file():
        return p / "model"
    return p


def resolve_model_path(path: str | os.PathLike) -> Path:
    """The model ``path`` names: a step checkpoint (``.pt``), an exported model folder, or a training run's folder (its
    ``model/``); a clear error where nothing is there."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"no trained model at {p}: expected an exported model folder ({WEIGHTS}, {CONFIG}), "
            "a training run's folder holding one (model/), or a step_*.pt"
        )
    return p if p.suffix == ".pt" else _model_folder(p)


def preprocessing_of(checkpoint: dict[str, Any] | str | os.PathLike) -> Preprocessing:
    """How the checkpoint's network was fed: its config's ``data.preprocessing`` (``config_of``).

    ``checkpoint``: a loaded dict, a step checkpoint (``.pt``) or an exported model folder (its config.json)."""
    if isinstance(checkpoint, dict):
        ckpt = checkpoint
    else:
        ckpt = load_checkpoint(checkpoint) if Path(checkpoint).suffix == ".pt" else read_config(checkpoint)
    check_format(ckpt.get("format"), checkpoint if not isinstance(checkpoint, dict) else "checkpoint")
    return config_of(ckpt).data.preprocessing


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", text_states: CachedTextStates | None = None
) -> CTGlip:
    """The trained network, in eval mode: from an exported model folder (or the training run's folder holding it),
    or from a step checkpoint (``.pt``).

    The frozen part of the text encoder is rebuilt from the config (it is not stored); pass ``text_states`` to share an
    already loaded one (or one with an on-disk cache). A pickled ``model.pt`` is refused with how to convert it.
    """
    p = Path(path)
    if p.suffix == ".pt":
        if p.name == "model.pt":
            raise LegacyCheckpointError(_legacy_message(p, "it is a pickled model.pt"))
        ckpt = load_checkpoint(p, "cpu")
        check_format(ckpt.get("format"), p)
        check_text_encoder(ckpt["config"]["model"].get("text_encoder"), p, "config.model.text_encoder")
        train_config, state, step = config_of(ckpt), ckpt["model"], ckpt.get("step")
    else:
        config = read_config(p)
        train_config, step = config_of(config), config.get("step")
        state = load_file(str(_model_folder(p) / WEIGHTS), device="cpu")
    model_config: ModelConfig = train_config.model
    model = CTGlip(model_config, train_config.data.preprocessing, text_states=text_states)
    model.load_state_dict(state)
    log.info("loaded %s (%s, %s encoder, step %s)", path, model_config.kind, model_config.image_encoder, step)
    return model.to(map_location).eval()


def _model_card(config: dict[str, Any]) -> str:
    """A short model card (markdown) from an exported model's config dict."""
    train, training = config["train"], config.get("training", {})
    m, pre = train["model"], train["data"]["preprocessing"]
    data = training.get("data", {})
    losses = training.get("final_losses", {})
    lines = [
        f"# ct-glip model: {m['kind']} ({m['image_encoder']} image encoder)",
        "",
        "A 3D CT vision-language model trained with ct-glip (CT-GLIP, arXiv 2404.15272): "
        + (
            "organ-level (grounded) image-text alignment."
            if m["kind"] == "grounded"
            else "whole-volume vs whole-report alignment (CLIP baseline)."
        ),
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
        f"- one crop per organ, {pre['crop_voxels']}^3 voxels at its organ class's spacing "
        f"(train.data.preprocessing.organ_spacing), from a RAS volume at {pre['spacing_mm']} mm; HU window "
        f"{list(pre['hu_window'])} scaled to [-1, 1], the organ's mask as a channel",
        f"- text encoder: {m['text_encoder']}, its top {m.get('text_trainable_layers', 0)} layer(s) trained and "
        "stored here, "
        "the rest frozen and rebuilt from the packaged encoder",
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
        f"- steps: {config.get('step', '?')} of {train['steps']}, global batch {train['batch_size']}, "
        f"peak lr {train['lr']}, seed {train['seed']}",
    ]
    if training.get("samples_per_s") is not None:
        lines.append(
            f"- throughput: {training['samples_per_s']:.2f} organ crops/s "
            f"on {training.get('world_size', 1)} process(es)"
        )
    lines += ["", "## Metrics", ""]
    if losses:
        lines.append(
            "Final training losses (last logged step): " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(losses.items()))
        )
    else:
        lines.append("No training losses recorded.")
    lines.append(
        "Evaluation scores are not part of this card: see the evaluation report of the run that scored this model."
    )
    return "\n".join(lines) + "\n"
