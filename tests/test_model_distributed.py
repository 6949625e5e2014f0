"""Two gloo processes on one global batch give the loss and the gradients of one process."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from model.data import OrganBatchSampler, OrganDataset, collate
from model.fake_data import make_fake_data_root, tiny_config
from model.losses import total_loss
from model.network import CTGlip
from model.train import build_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KINDS = ("grounded", "global")
STEP = 1  # any step: its global batch is a function of (seed, step)


def _step(kind: str, data_root: Path, rank: int, world: int, ddp: bool) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """This process's share of step STEP's global batch (8 organ crops; the global model: 4 studies x 2 organs)."""
    cfg = tiny_config(model={"kind": kind})
    torch.manual_seed(0)
    model = CTGlip(cfg.model, cfg.data.preprocessing)
    net = DistributedDataParallel(model) if ddp else model
    ds = OrganDataset(data_root, cfg, train=True)
    keys = list(OrganBatchSampler(ds.items, cfg, rank, world))[STEP]
    losses = build_loss(cfg)(**net(collate([ds[k] for k in keys])))
    total_loss(losses).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in losses.items()}, grads


def _worker(rank: int, world: int, port: int, data_root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for kind in KINDS:
            losses, grads = _step(kind, Path(data_root), rank, world, ddp=True)
            torch.save({"losses": losses, "grads": grads}, Path(out) / f"{kind}-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    data_root = make_fake_data_root(tmp_path / "data", n_studies=6, shape=(48, 48, 40), p_abnormal=0.5)
    # fork: the children inherit the imported modules (spawning re-imports torch and monai, ~10 s each)
    mp.start_processes(_worker, args=(2, _free_port(), str(data_root), str(tmp_path)), nprocs=2, start_method="fork")
    for kind in KINDS:
        single_losses, single_grads = _step(kind, data_root, 0, 1, ddp=False)
        expected = {"organ_loss", "identity_loss", "abnormality_loss"} if kind == "grounded" else {"global_loss"}
        assert set(single_losses) == expected and all(v > 0 for v in single_losses.values())
        assert any(n.startswith("text.top.") for n in single_grads)  # the text layers train in both set-ups
        for rank in range(2):
            got = torch.load(tmp_path / f"{kind}-rank{rank}.pt")
            assert got["losses"].keys() == single_losses.keys()
            for k, v in single_losses.items():
                assert got["losses"][k] == pytest.approx(v, rel=1e-5, abs=1e-6)
            assert got["grads"].keys() == single_grads.keys()
            for n, g in single_grads.items():  # DDP-averaged gradients == single-process gradients
                torch.testing.assert_close(got["grads"][n], g, rtol=1e-3, atol=1e-5)
