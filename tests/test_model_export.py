"""Safe export: a model folder (safetensors + JSON config + model card) that loads without unpickling, found from the
training run's folder too; models of an older format or pickled files refused with a message saying to train again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.checkpoint import (
    FORMAT,
    LegacyCheckpointError,
    load_checkpoint,
    load_model,
    preprocessing_of,
    read_config,
    resolve_model_path,
    save_model,
)
from model.config import io_metadata, replace
from model.fake_data import tiny_config
from model.files import CARD, CONFIG, WEIGHTS
from model.network import CTGlip
from model.preprocess import Preprocessing

REPO = Path(__file__).parents[1]
PRE = Preprocessing(crop_voxels=16, spacing_mm=3.0, organ_spacing=(("liver", 4.5), ("spleen", 3.0)))


@pytest.fixture(scope="module")
def network():
    cfg = tiny_config(model={"text_trainable_layers": 2})
    torch.manual_seed(0)
    model = CTGlip(cfg.model, cfg.data.preprocessing)
    with torch.no_grad():  # as if trained: the text layers differ from a fresh start
        for p in model.text.top.parameters():
            p.add_(0.25)
    return cfg, model


def export(folder: Path, cfg, model: CTGlip, step: int = 3) -> Path:
    cfg = replace(cfg, data={"preprocessing": PRE})  # as training writes it: with the organ scales it chose
    config = {"train": cfg.to_dict(), "io": io_metadata(cfg), "step": step,
              "training": {"data": {"studies": 5, "split": "train"}, "final_losses": {"loss": 1.25}}}
    return save_model(folder, model.state_dict(), config)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_export_loads_back_from_plain_files_with_the_trained_text_layers(network, tmp_path):
    cfg, model = network
    folder = export(tmp_path / "m", cfg, model)
    assert sorted(p.name for p in folder.iterdir()) == sorted([WEIGHTS, CONFIG, CARD])
    stored = json.loads((folder / CONFIG).read_text())  # plain JSON that other records can join
    assert stored["format"] == FORMAT == "ct-glip/2" and stored["step"] == 3
    assert stored["train"]["model"]["text_trainable_layers"] == 2
    weights = load_file(folder / WEIGHTS)
    assert any(k.startswith("text.top.1.") for k in weights)  # the trained text layers travel with the model
    assert not any(k.startswith("text.states") for k in weights)  # the frozen part is rebuilt, not stored
    card = (folder / CARD).read_text()
    assert "## Training data" in card and "studies: 5" in card and "loss 1.2500" in card and "top 2 layer(s) trained" in card
    loaded = load_model(folder)
    assert_same_weights(model.state_dict(), loaded.state_dict())
    assert load_model(folder / WEIGHTS).config == cfg.model and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(["cyst of the liver"]), model.eval().encode_text(["cyst of the liver"]))
    assert preprocessing_of(folder) == PRE
    with pytest.raises(ValueError, match="'train'"):
        save_model(tmp_path / "bad", model.state_dict(), {"io": {}})


def test_the_training_runs_folder_names_its_model(network, tmp_path):
    """A training run's folder (data/models/grounded-.../) holds the export in model/: every reader takes either."""
    cfg, model = network
    run = tmp_path / "grounded-0123456789"
    export(run / "model", cfg, model)
    (run / "checkpoints").mkdir()
    for training_config in (None, {"model": {"kind": "grounded"}}):
        if training_config:  # the trainer asset writes the training config beside model/, without a format
            (run / "config.json").write_text(json.dumps(training_config))
        assert resolve_model_path(run) == run / "model" and resolve_model_path(run / "model") == run / "model"
        assert read_config(run)["step"] == 3 and preprocessing_of(run) == PRE
        assert_same_weights(model.state_dict(), load_model(run).state_dict())
    with pytest.raises(FileNotFoundError, match="no trained model at"):
        resolve_model_path(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no trained model at"):
        load_model(run / "checkpoints")  # a folder without a model


def test_a_step_checkpoint_loads_too(tmp_path):
    from model.fake_data import make_fake_data_root
    from model.train import train

    root = make_fake_data_root(tmp_path / "data", n_studies=4, shape=(40, 40, 36))
    result = train(tiny_config(steps=2, batch_size=2, checkpoint_every=1), root, tmp_path / "run")
    ckpt = load_checkpoint(result.checkpoint_path)
    assert ckpt["format"] == FORMAT and ckpt["step"] == 2
    assert_same_weights(load_model(result.checkpoint_path).state_dict(), load_model(result.model_path).state_dict())
    assert preprocessing_of(result.checkpoint_path) == preprocessing_of(result.model_path) == preprocessing_of(tmp_path / "run")


def test_a_model_of_the_older_format_is_refused_saying_to_train_again(network, tmp_path):
    cfg, model = network
    old = tmp_path / "old"
    shutil.copytree(export(tmp_path / "new", cfg, model), old)
    stored = json.loads((old / CONFIG).read_text())
    (old / CONFIG).write_text(json.dumps({**stored, "format": "ct-glip/1"}))
    for reader in (load_model, preprocessing_of, read_config):
        with pytest.raises(ValueError, match=r"ct-glip/1.*whole-study crops.*train it again"):
            reader(old)
    step = tmp_path / "checkpoints" / "step_0000002.pt"
    step.parent.mkdir()
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "step": 2, "format": "ct-glip/1"}, step)
    with pytest.raises(LegacyCheckpointError, match="train the model again"):
        load_model(step)


def test_a_model_written_before_the_config_held_its_preprocessing_loads_as_it_did(network, tmp_path):
    """ct-glip/2 files of the earlier layout: the record in io["preprocessing"], its fields also flat in train.data,
    the crop size and window in train.model."""
    cfg, model = network
    old = tmp_path / "old"
    shutil.copytree(export(tmp_path / "new", cfg, model), old)
    stored = json.loads((old / CONFIG).read_text())
    train = stored["train"]
    pre = train["data"].pop("preprocessing")
    train["data"].update({k: pre[k] for k in ("spacing_mm", "hu_window", "dilation_mm", "margin_mm", "min_organ_voxels")})
    train["model"].update(crop_voxels=pre["crop_voxels"], input_window=pre["hu_window"])
    (old / CONFIG).write_text(json.dumps({**stored, "io": {**stored["io"], "preprocessing": PRE.to_record()}}))
    assert preprocessing_of(old) == PRE
    assert_same_weights(model.state_dict(), load_model(old).state_dict())
    train["model"]["input_window"] = [-500.0, 500.0]  # the twins were kept equal; a file where they differ is refused
    (old / CONFIG).write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="disagrees"):
        load_model(old)


def test_a_pickled_model_pt_is_refused_saying_to_train_again(network, tmp_path):
    cfg, model = network
    folder = tmp_path / "old"
    folder.mkdir()
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "step": 1}, folder / "model.pt")
    for target in (folder, folder / "model.pt"):
        with pytest.raises(LegacyCheckpointError, match="train the model again") as err:
            load_model(target)
        assert "model.convert" not in str(err.value)  # the converter is gone: nothing to point at


class _Payload:
    """Unpickling this runs code (creates a marker file): what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_hostile_pickle_never_runs(tmp_path):
    marker = tmp_path / "marker.txt"
    folder = tmp_path / "sent"
    folder.mkdir()
    torch.save({"model": {}, "config": {}, "x": _Payload(marker)}, folder / "model.pt")
    torch.save({"model": {}, "format": FORMAT, "x": _Payload(marker)}, folder / "step_0000001.pt")
    for target in (folder, folder / "model.pt", folder / "step_0000001.pt"):
        with pytest.raises(LegacyCheckpointError):
            load_model(target)
    with pytest.raises(LegacyCheckpointError):
        load_checkpoint(folder / "step_0000001.pt")
    with pytest.raises(LegacyCheckpointError):
        preprocessing_of(folder / "step_0000001.pt")
    assert not marker.exists()
    assert not (REPO / "model" / "convert.py").exists()
