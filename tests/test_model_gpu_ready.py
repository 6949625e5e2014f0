"""GPU readiness on the CPU: gradient accumulation, bf16 autocast and the device setting in training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.checkpoint import WEIGHTS, load_checkpoint
from model.fake_data import make_fake_data_root, tiny_config
from model.train import init_distributed, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_fake_data_root(tmp_path_factory.mktemp("fake"), n_studies=8, shape=(40, 40, 36))


class Killed(Exception):
    pass


def test_accumulation_takes_k_batches_per_step_and_resumes_exactly(data_root, tmp_path):
    cfg = tiny_config(steps=3, batch_size=2, grad_accum_steps=2, checkpoint_every=1)
    straight = train(cfg, data_root, tmp_path / "straight")
    ckpt = load_checkpoint(straight.checkpoint_path)
    # 8 studies in batches of 2: 4 batches an epoch; 3 steps of 2 batches end half-way through the second epoch
    assert ckpt["sampler"] == {"epoch": 1, "start": 2}
    assert json.loads(straight.metrics_path.read_text())["grad_accum_steps"] == 2

    def kill_at_step_2(record: dict) -> None:
        if record["step"] == 2:
            raise Killed

    with pytest.raises(Killed):
        train(cfg, data_root, tmp_path / "killed", log=kill_at_step_2)
    resumed = train(cfg, data_root, tmp_path / "killed")
    assert resumed.resumed_from == 1
    a, b = load_file(str(straight.model_path / WEIGHTS)), load_file(str(resumed.model_path / WEIGHTS))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_autocast_trains(data_root, tmp_path):
    result = train(tiny_config(steps=2, batch_size=2, checkpoint_every=2, precision="bf16"), data_root, tmp_path)
    assert all(math.isfinite(v) for v in result.final_losses.values())
    assert json.loads(result.metrics_path.read_text())["precision"] == "bf16"


def test_device_setting():
    assert init_distributed("cpu").device.type == "cpu"
    with pytest.raises(ValueError, match="device must be"):
        init_distributed("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            init_distributed("cuda")
    with pytest.raises(ValueError, match="precision"):
        tiny_config(precision="fp8")
