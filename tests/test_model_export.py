"""Safe export: a model folder (safetensors + JSON config + model card) that loads without unpickling,
old pickled model.pt files refused with the command that converts them, and that command run for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model.checkpoint import CARD, CONFIG, WEIGHTS, LegacyCheckpointError, load_checkpoint, load_model, save_model
from model.config import io_metadata
from model.fake_data import tiny_config
from model.network import CTGlip

REPO = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def network():
    cfg = tiny_config()
    torch.manual_seed(0)
    return cfg, CTGlip(cfg.model)


def old_model_pt(folder: Path, cfg, model: CTGlip) -> Path:
    """A model.pt as training wrote it before safetensors: a pickled dict."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.pt"
    history = [{"step": 1, "loss": 2.5, "organ_loss": 1.5}]
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "io": io_metadata(cfg), "step": 1, "history": history}, path)
    return path


class _Payload:
    """Unpickling this runs code (creates a marker file): what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_export_loads_back_from_plain_files(network, tmp_path):
    cfg, model = network
    config = {"train": cfg.to_dict(), "io": io_metadata(cfg), "step": 3,
              "training": {"data": {"studies": 5, "split": "train"}, "final_losses": {"loss": 1.25}}}
    folder = save_model(tmp_path / "m", model.state_dict(), config)
    assert sorted(p.name for p in folder.iterdir()) == sorted([WEIGHTS, CONFIG, CARD])
    stored = json.loads((folder / CONFIG).read_text())  # plain JSON that other records can join
    assert stored["format"] == "ct-glip/1" and stored["step"] == 3 and stored["train"]["model"]["kind"] == cfg.model.kind
    card = (folder / CARD).read_text()
    assert "## Training data" in card and "studies: 5" in card and "loss 1.2500" in card
    loaded = load_model(folder)
    assert_same_weights(model.state_dict(), loaded.state_dict())
    assert load_model(folder / WEIGHTS).config == cfg.model and not loaded.training


def test_old_model_pt_is_refused_with_the_conversion_command(network, tmp_path):
    cfg, model = network
    path = old_model_pt(tmp_path / "old", cfg, model)
    for target in (path, tmp_path / "old"):
        with pytest.raises(LegacyCheckpointError, match=r"python -m model\.convert .*old"):
            load_model(target)


def test_hostile_pickle_never_runs(tmp_path):
    marker = tmp_path / "marker.txt"
    folder = tmp_path / "sent"
    folder.mkdir()
    torch.save({"model": {}, "config": {}, "x": _Payload(marker)}, folder / "model.pt")
    torch.save({"model": {}, "x": _Payload(marker)}, folder / "step_0000001.pt")
    with pytest.raises(LegacyCheckpointError):
        load_model(folder)
    with pytest.raises(LegacyCheckpointError):
        load_model(folder / "step_0000001.pt")
    proc = subprocess.run([sys.executable, "-m", "model.convert", str(folder)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "--trust" in proc.stderr
    assert not marker.exists()


def test_convert_cli_writes_a_loadable_folder(network, tmp_path):
    cfg, model = network
    old_model_pt(tmp_path / "run", cfg, model)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "model.convert", str(tmp_path / "run")], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "run" / "model"
    assert_same_weights(model.state_dict(), load_file(folder / WEIGHTS))
    assert "converted" in (folder / CARD).read_text() or "not recorded" in (folder / CARD).read_text()
    assert_same_weights(model.state_dict(), load_model(folder).state_dict())


def test_old_step_checkpoint_needs_trust_to_convert(network, tmp_path):
    cfg, model = network
    old = tmp_path / "checkpoints" / "step_0000002.pt"
    old.parent.mkdir()
    rng = {"numpy": np.random.get_state()}  # numpy arrays: refused by weights_only loading
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "step": 2, "history": [], "rng": [rng]}, old)
    with pytest.raises(LegacyCheckpointError, match="model.convert"):
        load_checkpoint(old)
    from model.convert import convert

    with pytest.raises(PermissionError, match="--trust"):
        convert(old, tmp_path / "out")
    folder = convert(old, tmp_path / "out", trust=True)
    assert_same_weights(model.state_dict(), load_model(folder).state_dict())
