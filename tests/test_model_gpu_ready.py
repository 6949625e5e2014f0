"""GPU readiness on the CPU: gradient accumulation, bf16 autocast and the device setting in training."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from model.checkpoint import load_checkpoint
from model.fake_data import tiny_config
from model.files import WEIGHTS
from model.train import init_distributed, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Killed(Exception):
    pass


def test_accumulation_takes_k_batches_per_step_and_resumes_exactly(fake_data_root, tmp_path):
    cfg = tiny_config(steps=3, batch_size=4, grad_accum_steps=2, checkpoint_every=1)
    straight = train(cfg, fake_data_root, tmp_path / "straight")
    ckpt = load_checkpoint(straight.checkpoint_path)
    assert ckpt["step"] == 3 and ckpt["sampler"] == {"start": 6}  # 3 steps of 2 batches each
    metrics = json.loads(straight.metrics_path.read_text())
    assert metrics["grad_accum_steps"] == 2 and len(straight.history) == 3

    def kill_at_step_2(record: dict) -> None:
        if record["step"] == 2:
            raise Killed

    with pytest.raises(Killed):
        train(cfg, fake_data_root, tmp_path / "killed", log=kill_at_step_2)
    resumed = train(cfg, fake_data_root, tmp_path / "killed")
    assert resumed.resumed_from == 1
    a, b = load_file(str(straight.model_path / WEIGHTS)), load_file(str(resumed.model_path / WEIGHTS))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_accumulated_batches_are_the_batches_a_longer_run_would_see(fake_data_root, tmp_path):
    """Two batches of 4 accumulated per step are steps 2k and 2k + 1 of the sampler: the data seen does not depend
    on how it is split into optimisation steps."""
    from model.data import OrganBatchSampler, OrganDataset

    cfg = tiny_config(steps=2, batch_size=4, grad_accum_steps=2)
    ds = OrganDataset(fake_data_root, cfg)
    accumulated = list(OrganBatchSampler(ds.items, cfg))
    plain = list(OrganBatchSampler(ds.items, tiny_config(steps=4, batch_size=4)))
    assert accumulated == plain


def test_bf16_autocast_trains(fake_data_root, tmp_path):
    result = train(tiny_config(steps=2, batch_size=4, checkpoint_every=2, precision="bf16"), fake_data_root, tmp_path)
    assert result.final_losses and all(math.isfinite(v) for v in result.final_losses.values())
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
