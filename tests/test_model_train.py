"""Training: the loss goes down, a killed run resumes exactly, checkpoints load, the entry script runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from safetensors.torch import load_file

from model.checkpoint import WEIGHTS, latest_checkpoint, load_checkpoint, load_model
from model.config import TrainConfig
from model.data import StudyDataset, collate
from model.fake_data import make_fake_data_root, tiny_config
from model.losses import total_loss
from model.network import CTGlip
from model.train import build_loss, lr_at, seed_everything, train


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_fake_data_root(tmp_path_factory.mktemp("fake"), n_studies=8, shape=(48, 48, 40))


@torch.no_grad()
def fixed_batch_loss(model: CTGlip, config: TrainConfig, data_root: Path) -> float:
    ds = StudyDataset(data_root, config.data, train=False)  # no augmentation: the same batch every time
    batch = collate([ds[i] for i in range(len(ds))])
    return float(total_loss(build_loss(config)(**model.eval()(batch))))


def test_lr_schedule_is_warmup_then_cosine():
    cfg = tiny_config(steps=10, warmup_steps=2, lr=1.0, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(11)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[2] == 1.0
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:])) and lrs[10] == pytest.approx(0.1)


@pytest.mark.parametrize("kind", ["grounded", "global"])
def test_a_few_steps_reduce_the_loss(kind, data_root, tmp_path):
    cfg = tiny_config(steps=8, checkpoint_every=8, model={"kind": kind})
    seed_everything(cfg.seed)
    before = fixed_batch_loss(CTGlip(cfg.model), cfg, data_root)  # the initial weights of train()
    logged: list[dict] = []
    result = train(cfg, data_root, tmp_path, log=logged.append)
    after = fixed_batch_loss(load_model(result.model_path), cfg, data_root)
    assert after < before
    expected = {"organ_loss", "abnormality_loss"} if kind == "grounded" else {"global_loss"}
    assert expected <= set(result.final_losses) and len(logged) == 8
    assert {"loss", "samples_per_s", "lr", "step"} <= set(logged[-1])
    assert result.loss_curve_path.stat().st_size > 1000 and result.samples_per_s > 0
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics["steps"] == 8 and Path(metrics["checkpoint_path"]) == result.checkpoint_path
    exported = json.loads((result.model_path / "config.json").read_text())  # the model card's source
    assert exported["step"] == 8 and exported["training"]["data"]["studies"] == len(StudyDataset(data_root, cfg.data, cfg.split))
    assert exported["training"]["final_losses"] == result.final_losses


class Killed(Exception):
    pass


def test_killed_run_resumes_to_the_same_weights(data_root, tmp_path):
    cfg = tiny_config(steps=5, checkpoint_every=2, batch_size=2)  # 4 batches/epoch: crosses an epoch
    straight = train(cfg, data_root, tmp_path / "straight")

    def kill_at_step_3(record: dict) -> None:
        if record["step"] == 3:  # after the step-2 checkpoint, before the next one
            raise Killed

    with pytest.raises(Killed):
        train(cfg, data_root, tmp_path / "killed", log=kill_at_step_3)
    assert latest_checkpoint(tmp_path / "killed" / "checkpoints").name == "step_0000002.pt"
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "killed" / "checkpoints"))
    assert {"model", "optimizer", "scheduler", "step", "config", "rng", "sampler"} <= set(ckpt)
    assert load_model(latest_checkpoint(tmp_path / "killed" / "checkpoints")).config == cfg.model  # learning curves read these
    resumed = train(cfg, data_root, tmp_path / "killed")
    assert resumed.resumed_from == 2 and resumed.steps == 5
    a, b = load_file(straight.model_path / WEIGHTS), load_file(resumed.model_path / WEIGHTS)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert [h["step"] for h in resumed.history] == [1, 2, 3, 4, 5]
    assert resumed.final_losses["loss"] == pytest.approx(straight.final_losses["loss"], rel=1e-5)
    # a finished run is not trained again; a changed config is refused
    assert train(cfg, data_root, tmp_path / "killed").resumed_from == 5
    with pytest.raises(ValueError, match="different config"):
        train(tiny_config(steps=5, lr=1.0), data_root, tmp_path / "killed")


def test_entry_script_by_hand(data_root, tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_entry", Path(__file__).parents[1] / "assets" / "train_entry.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(tiny_config(steps=2, model={"image_encoder": "vit"}).to_dict()))
    monkeypatch.delenv("DAGSTER_PIPES_CONTEXT", raising=False)
    assert entry.main(["--config", str(cfg), "--data-root", str(data_root), "--out", str(tmp_path / "out")]) == 0
    model = load_model(tmp_path / "out" / "model")
    assert model.config.image_encoder == "vit"
    assert (tmp_path / "out" / "loss_curve.png").exists()


def test_sigkilled_process_resumes_to_the_same_weights(data_root, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = tiny_config(steps=12, checkpoint_every=1, batch_size=2, num_threads=1)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    out = tmp_path / "killed"
    entry = Path(__file__).parents[1] / "assets" / "train_entry.py"
    proc = subprocess.Popen(
        [sys.executable, str(entry), "--config", str(tmp_path / "cfg.json"), "--data-root", str(data_root), "--out", str(out)],
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
    resumed = train(cfg, data_root, out)
    assert resumed.resumed_from is not None and 1 <= resumed.resumed_from < 12, resumed.resumed_from
    straight = train(cfg, data_root, tmp_path / "straight")
    a, b = load_file(straight.model_path / WEIGHTS), load_file(resumed.model_path / WEIGHTS)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
