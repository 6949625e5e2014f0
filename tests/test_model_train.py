"""Training on organ crops: the loss goes down, the validation dictionary loss is recorded beside its floor, a killed
run resumes exactly, checkpoints load, the entry script runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.checkpoint import latest_checkpoint, load_checkpoint, load_model, preprocessing_of
from model.config import TrainConfig
from model.data import OrganBatchSampler, OrganDataset, collate
from model.fake_data import tiny_config
from model.files import WEIGHTS
from model.losses import total_loss
from model.network import CTGlip
from model.train import IMAGE_FREE_FLOOR, Validation, build_loss, lr_at, seed_everything, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@torch.no_grad()
def fixed_batch_loss(model: CTGlip, config: TrainConfig, data_root: Path) -> float:
    """The loss of step 0's global batch without augmentation: the same batch for every model compared."""
    ds = OrganDataset(data_root, config, train=False)
    keys = OrganBatchSampler(ds.items, config).global_batch(0)
    batch = collate([ds[(0, p, i)] for p, i in enumerate(keys)])
    return float(total_loss(build_loss(config)(**model.eval()(batch))))


def same_weights(a: Path, b: Path) -> None:
    x, y = load_file(a / WEIGHTS), load_file(b / WEIGHTS)
    assert x.keys() == y.keys()
    for k in x:
        torch.testing.assert_close(x[k], y[k], rtol=1e-5, atol=1e-6, msg=k)


def test_lr_schedule_is_warmup_then_cosine():
    cfg = tiny_config(steps=10, warmup_steps=2, lr=1.0, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(11)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[2] == 1.0
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:])) and lrs[10] == pytest.approx(0.1)


def test_the_text_layers_train_at_their_own_rate():
    from model.train import build_optimizer

    cfg = tiny_config(lr=1e-3, text_lr=5e-5)
    model = CTGlip(cfg.model, cfg.data.preprocessing)
    groups = build_optimizer(model, cfg).param_groups
    text = {id(p) for p in model.text.top.parameters()}
    assert text and all(g["lr"] == (5e-5 if {id(p) for p in g["params"]} <= text else 1e-3) for g in groups)
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)
    assert all(g["weight_decay"] == 0.0 for g in groups if any(p.ndim < 2 for p in g["params"]))


@pytest.mark.parametrize("kind", ["grounded", "global"])
def test_a_few_steps_reduce_the_loss(kind, fake_data_root, tmp_path):
    cfg = tiny_config(steps=8, checkpoint_every=8, model={"kind": kind})
    seed_everything(cfg.seed)
    before = fixed_batch_loss(CTGlip(cfg.model, cfg.data.preprocessing), cfg, fake_data_root)  # train()'s start
    logged: list[dict] = []
    result = train(cfg, fake_data_root, tmp_path, log=logged.append)
    after = fixed_batch_loss(load_model(result.model_path), cfg, fake_data_root)
    assert after < before
    expected = {"organ_loss", "identity_loss", "abnormality_loss"} if kind == "grounded" else {"global_loss"}
    assert set(result.final_losses) == expected | {"loss"} and len(logged) == 8
    assert result.final_losses["loss"] == pytest.approx(sum(result.final_losses[k] for k in expected), rel=1e-6)
    assert {"loss", "samples_per_s", "lr", "step", "logit_scale"} <= set(logged[-1])
    assert result.loss_curve_path.stat().st_size > 1000 and result.samples_per_s > 0
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics["steps"] == 8 and Path(metrics["checkpoint_path"]) == result.checkpoint_path
    exported = json.loads((result.model_path / "config.json").read_text())  # the model card's source
    ds = OrganDataset(fake_data_root, cfg)
    assert exported["step"] == 8 and exported["training"]["data"]["studies"] == len(ds.studies)
    assert exported["training"]["data"]["organ_items"] == len(ds.items)
    assert exported["training"]["final_losses"] == result.final_losses
    assert exported["dictionary"] == ds.dictionary.to_record()
    assert exported["train"]["data"]["preprocessing"]["organ_spacing"] and "preprocessing" not in exported["io"]  # once
    assert preprocessing_of(result.model_path) == ds.preprocessing


def test_the_validation_dictionary_loss_is_recorded_beside_its_image_free_floor(fake_data_root, tmp_path):
    cfg = tiny_config(steps=4, checkpoint_every=4, val_every=2, val_organs=64)
    result = train(cfg, fake_data_root, tmp_path)
    val = [(h["step"], h["val_abnormality_loss"]) for h in result.history if "val_abnormality_loss" in h]
    assert [s for s, _ in val] == [2, 4] and all(math.isfinite(v) and v > 0 for _, v in val)
    assert all(h["image_free_floor"] == math.log(2) for h in result.history if "val_abnormality_loss" in h)
    exported = json.loads((result.model_path / "config.json").read_text())["training"]
    assert exported["validation_abnormality_loss"] == [{"step": s, "loss": v} for s, v in val]
    assert exported["image_free_floor"] == IMAGE_FREE_FLOOR == math.log(2)
    # the recorded figure is the validation organs' balanced dictionary loss of the exported weights, recomputed here
    ds = OrganDataset(fake_data_root, cfg)
    validation = Validation.of(fake_data_root, cfg, ds.preprocessing, ds.dictionary)
    assert validation is not None and set(validation.affirmed) and len(validation.label) == len(validation.weight)
    assert float(validation.label.min()) == 0.0  # normal organs are scored too, not only the abnormal ones
    assert validation.loss(load_model(result.model_path), torch.device("cpu")) == pytest.approx(val[-1][1], rel=1e-5)
    # a split without organs of a dictionary class, or none at all: no validation, training goes on
    assert Validation.of(fake_data_root, cfg, ds.preprocessing, ds.dictionary, split="test") is None


def test_validation_follows_val_every_whatever_the_logging_interval(fake_data_root, tmp_path):
    """TrainConfig.val_every: 'every K steps (and at the last)'. Logging every 3 steps must not move it."""
    cfg = tiny_config(steps=4, checkpoint_every=4, val_every=2, val_organs=16, log_every=3)
    result = train(cfg, fake_data_root, tmp_path)
    assert [h["step"] for h in result.history if "val_abnormality_loss" in h] == [2, 4]


class Killed(Exception):
    pass


def test_a_run_stopped_in_process_resumes_to_the_same_weights(fake_data_root, tmp_path):
    cfg = tiny_config(steps=5, checkpoint_every=2)
    straight = train(cfg, fake_data_root, tmp_path / "straight")

    def stop_at_step_3(record: dict) -> None:
        if record["step"] == 3:  # after the step-2 checkpoint, before the next one
            raise Killed

    with pytest.raises(Killed):
        train(cfg, fake_data_root, tmp_path / "killed", log=stop_at_step_3)
    assert latest_checkpoint(tmp_path / "killed" / "checkpoints").name == "step_0000002.pt"
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "killed" / "checkpoints"))
    assert {"model", "optimizer", "scheduler", "step", "config", "io", "rng", "sampler", "history"} <= set(ckpt)
    assert ckpt["sampler"] == {"start": 2}
    assert load_model(latest_checkpoint(tmp_path / "killed" / "checkpoints")).config == cfg.model
    resumed = train(cfg, fake_data_root, tmp_path / "killed")
    assert resumed.resumed_from == 2 and resumed.steps == 5
    same_weights(straight.model_path, resumed.model_path)
    assert [h["step"] for h in resumed.history] == [1, 2, 3, 4, 5]
    assert resumed.final_losses["loss"] == pytest.approx(straight.final_losses["loss"], rel=1e-5)
    # a finished run is not trained again; a changed config is refused
    assert train(cfg, fake_data_root, tmp_path / "killed").resumed_from == 5
    with pytest.raises(ValueError, match="different config"):
        train(tiny_config(steps=5, checkpoint_every=2, lr=1.0), fake_data_root, tmp_path / "killed")


def test_entry_script_by_hand(fake_data_root, tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_entry", Path(__file__).parents[1] / "launch" / "train_entry.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(tiny_config(steps=2, model={"image_encoder": "vit"}).to_dict()))
    monkeypatch.delenv("DAGSTER_PIPES_CONTEXT", raising=False)
    assert entry.main(["--config", str(cfg), "--data-root", str(fake_data_root), "--out", str(tmp_path / "out")]) == 0
    model = load_model(tmp_path / "out" / "model")
    assert model.config.image_encoder == "vit"
    assert (tmp_path / "out" / "loss_curve.png").exists()


def test_sigkilled_process_resumes_to_the_same_weights(fake_data_root, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = tiny_config(steps=12, checkpoint_every=1, num_threads=1)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    out = tmp_path / "killed"
    entry = Path(__file__).parents[1] / "launch" / "train_entry.py"
    proc = subprocess.Popen(
        [sys.executable, str(entry), "--config", str(tmp_path / "cfg.json"), "--data-root", str(fake_data_root),
         "--out", str(out)],
        env={k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while latest_checkpoint(out / "checkpoints") is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if not (out / "checkpoints").is_dir() or (out / "model" / "config.json").exists():
        pytest.skip("the run finished (or never started) before it could be killed")
    resumed = train(cfg, fake_data_root, out)
    assert resumed.resumed_from is not None and 1 <= resumed.resumed_from < 12, resumed.resumed_from
    straight = train(cfg, fake_data_root, tmp_path / "straight")
    same_weights(straight.model_path, resumed.model_path)
