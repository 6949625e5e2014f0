"""Pretraining loop: one process or data-parallel under ``torchrun`` (gloo on CPU, nccl on GPU).

``train(config, data_root, out_dir, log)`` resumes from the newest checkpoint in
``out_dir/checkpoints`` and continues exactly where it stopped (same batches, same augmentation,
same optimizer and scheduler state), so a killed run ends with the weights of an uninterrupted one.

Outputs in ``out_dir``: ``checkpoints/step_*.pt`` (full state), ``model/`` (the exported model:
``model.safetensors``, ``config.json``, model card ``README.md``; see ``model.checkpoint``),
``loss_curve.png``, ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from model.checkpoint import (
    config_of,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    save_model,
    set_rng_state,
    step_path,
)
from model.config import TrainConfig, io_metadata
from model.data import Batch, Dictionary, OrganBatchSampler, OrganDataset, collate
from model.losses import CTGlipLoss, balanced_bce, dictionary_logits, total_loss
from model.network import CTGlip
from model.precision import autocast
from model.preprocess import Preprocessing
from model.text import build_text_states
from pipeline.atomic import atomic_path, write_json

logger = logging.getLogger(__name__)

# fields that may change between a run and its resume (everything else must match the checkpoint)
RUN_ONLY_FIELDS = frozenset(
    {
        "steps",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "num_workers",
        "num_threads",
        "resume",
        "device",
        "val_every",
        "val_organs",
        "text_cache_dir",
    }
)
IMAGE_FREE_FLOOR = math.log(2)  # the class-balanced dictionary loss of any predictor that ignores the image


@dataclass(frozen=True)
class TrainResult:
    checkpoint_path: Path  # the last full checkpoint (resumable)
    model_path: Path  # the exported model folder, for `load_model`
    loss_curve_path: Path
    metrics_path: Path
    steps: int
    final_losses: dict[str, float]  # the last step's named terms and their sum ("loss")
    samples_per_s: float  # global organ crops per second over the steps this call ran (first step excluded)
    peak_rss_mb: float  # max resident memory of any training process
    world_size: int
    resumed_from: int | None  # step of the checkpoint this call started from
    history: tuple[dict[str, float], ...]  # one dict per logged step


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this call initialised the process group (and tears it down)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_setting: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); a no-op otherwise.

    ``device_setting`` (``TrainConfig.device``): 'auto' takes this process's CUDA device when torch
    sees one, 'cuda' insists on it, 'cpu' stays on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_setting not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device_setting!r}")
    if device_setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' asked for, but torch sees no CUDA device (use 'auto' or 'cpu')")
    use_cuda = device_setting != "cpu" and torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if world <= 1 and not dist.is_initialized():
        return DistContext(device=device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, owns)


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at ``steps``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norm weights and the logit scale (open_clip's rule); the text encoder's
    pretrained layers at ``text_lr``, everything else at ``lr`` (one schedule scales both)."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (name.startswith("text.top."), p.ndim >= 2 and "logit_scale" not in name)
        groups.setdefault(key, []).append(p)
    return torch.optim.AdamW(
        [
            {
                "params": ps,
                "lr": config.text_lr if text else config.lr,
                "weight_decay": config.weight_decay if decay else 0.0,
            }
            for (text, decay), ps in sorted(groups.items())
        ],
        lr=config.lr,
        betas=config.betas,
    )


def build_loss(config: TrainConfig) -> CTGlipLoss:
    return CTGlipLoss(
        organ_weight=config.organ_loss_weight,
        identity_weight=config.identity_loss_weight,
        abnormality_weight=config.abnormality_loss_weight,
        global_weight=config.global_loss_weight if config.model.kind == "global" else 0.0,
        false_negative_aware=config.false_negative_aware,
    )


def batch_to(batch: Batch, device: torch.device) -> Batch:
    if device.type == "cpu":
        return batch
    moved = {
        f.name: getattr(batch, f.name).to(device, non_blocking=True)
        for f in dataclasses.fields(batch)
        if isinstance(getattr(batch, f.name), torch.Tensor)
    }
    return dataclasses.replace(batch, **moved)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_resumable(checkpoint: dict[str, Any], config: TrainConfig) -> None:
    # read as a config (config_of): a field newer than the checkpoint counts as its default, an older layout is upgraded
    saved, now = config_of(checkpoint).to_dict(), config.to_dict()
    diff = sorted(k for k in set(saved) | set(now) if k not in RUN_ONLY_FIELDS and saved.get(k) != now.get(k))
    if diff:
        raise ValueError(f"checkpoint was trained with a different config ({diff}); use a new out_dir or resume=False")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def plot_losses(history: list[dict[str, float]], path: str | os.PathLike) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [h["step"] for h in history]
    keys = ["loss"] + sorted({k for h in history for k in h if k.endswith("_loss")})
    for k in keys:
        ax.plot(steps, [h.get(k, float("nan")) for h in history], label=k, lw=2 if k == "loss" else 1)
    val = [(h["step"], h["val_abnormality_loss"]) for h in history if "val_abnormality_loss" in h]
    if val:
        ax.plot(*zip(*val), "o-", color="black", label="validation abnormality_loss")
        ax.axhline(IMAGE_FREE_FLOOR, ls="--", color="grey", label="image-free floor (ln 2)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("CT-GLIP pretraining")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


@dataclass
class Validation:
    """A fixed draw of validation organs (those whose class has a dictionary), cropped once, with their dictionary rows
    in every training phrasing: the dictionary loss there, beside its image-free floor, tells whether the image side
    learned abnormalities rather than their frequencies."""

    crops: dict[str, torch.Tensor]
    item: torch.Tensor  # (r,) into the crops
    affirmed: list[str]
    negated: list[str]
    label: torch.Tensor  # (r,)
    weight: torch.Tensor  # (r,)

    @classmethod
    def of(
        cls,
        data_root: str | os.PathLike,
        config: TrainConfig,
        pre: Preprocessing,
        dictionary: Dictionary,
        split: str = "val",
    ) -> Validation | None:
        from model.data import AFFIRMED

        try:
            ds = OrganDataset(
                data_root, config, split, train=False, preprocessing=pre, dictionary=dictionary, cache_mb=256
            )
        except (FileNotFoundError, KeyError, ValueError):
            return None
        pool = [i for i, it in enumerate(ds.items) if dictionary.abnormalities.get(it.organ)]
        if not pool:
            return None
        rng = np.random.default_rng(12345)
        picked = sorted(
            rng.choice(pool, size=min(config.val_organs, len(pool)), replace=False).tolist(),
            key=lambda i: ds.items[i].study,
        )
        crops = [ds.crop(i) for i in picked]
        rows = [
            (n, *row)
            for n, i in enumerate(picked)
            for form in range(len(AFFIRMED))
            for row in dictionary.rows(ds.items[i], [form] * len(dictionary.abnormalities[ds.items[i].organ]))
        ]
        return cls(
            {k: torch.stack([c[k] for c in crops]) for k in crops[0]},
            torch.tensor([r[0] for r in rows]),
            [r[1] for r in rows],
            [r[2] for r in rows],
            torch.tensor([r[3] for r in rows]),
            torch.tensor([r[4] for r in rows]),
        )

    @torch.no_grad()
    def loss(self, model: CTGlip, device: torch.device, chunk: int = 64) -> float:
        was = model.training
        model.eval()
        n = len(self.crops["volume"])
        emb = torch.cat(
            [
                model.encode_organs(
                    *(self.crops[k][i : i + chunk].to(device) for k in ("volume", "mask", "region", "size"))
                )
                for i in range(0, n, chunk)
            ]
        )
        texts = list(dict.fromkeys(self.affirmed + self.negated))
        index = {t: j for j, t in enumerate(texts)}
        vec = model.encode_text(texts)
        aff, neg = vec[[index[t] for t in self.affirmed]], vec[[index[t] for t in self.negated]]
        logits = dictionary_logits(emb[self.item.to(device)], aff, neg, model.scale())
        model.train(was)
        return float(balanced_bce(logits, self.label.to(device), self.weight.to(device)))


def train(
    config: TrainConfig,
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    log: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Pretrain ``config``'s model on ``config.split`` of ``data_root`` into ``out_dir`` (module doc), resuming from
    the newest checkpoint there; ``log`` receives every logged step's record."""
    ctx = init_distributed(config.device)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    out, ckpt_dir = Path(out_dir), Path(out_dir) / "checkpoints"
    seed_everything(config.seed)

    dataset = OrganDataset(data_root, config, config.split, train=True)
    # the config as trained, written into every checkpoint: its preprocessing with the organ scales of this split
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, preprocessing=dataset.preprocessing))
    sampler = OrganBatchSampler(dataset.items, config, ctx.rank, ctx.world_size)
    run = _new_run(config, ctx)
    loss_fn = build_loss(config)
    validation = None
    if config.val_every and config.model.kind == "grounded" and ctx.is_main:
        validation = Validation.of(data_root, config, dataset.preprocessing, dataset.dictionary)
    _resume(run, ckpt_dir)
    if ctx.is_main:
        logger.info(
            "training %s/%s: %.2fM parameters, %d organ items of %d studies, global batch %d on %d process(es), "
            "%d steps",
            config.model.kind,
            config.model.image_encoder,
            run.model.param_count() / 1e6,
            len(dataset),
            len(dataset.studies),
            config.batch_size,
            ctx.world_size,
            config.steps,
        )
    _run_steps(run, dataset, sampler, loss_fn, validation, ckpt_dir, log)
    result = _result(run, out, ckpt_dir)
    if ctx.is_main:
        _export(run, result, dataset)
    if ctx.world_size > 1:
        dist.barrier()
    if ctx.owns_group:
        dist.destroy_process_group()
    return result


@dataclass
class _Run:
    """One training run: what its steps change (model, optimizer, schedule) and where they stand."""

    config: TrainConfig  # as trained (the split's organ scales)
    ctx: DistContext
    model: CTGlip
    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step: int = 0  # optimizer steps taken
    start: int = 0  # batches drawn: where the sampler goes on
    history: list[dict[str, float]] = field(default_factory=list)  # one record per logged step
    resumed_from: int | None = None  # the step of the checkpoint this call started from
    timed_samples: int = 0  # organ crops of the timed steps (the first step of a call pays for warm-up)
    timed_seconds: float = 0.0


def _new_run(config: TrainConfig, ctx: DistContext) -> _Run:
    """A fresh model on this process's device, its optimizer and its learning-rate schedule (``lr_at``)."""
    text_states = build_text_states(config.model, config.text_cache_dir)
    model = CTGlip(config.model, config.data.preprocessing, text_states).to(ctx.device)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, config) / config.lr)
    return _Run(config, ctx, model, optimizer, scheduler)


def _resume(run: _Run, ckpt_dir: Path) -> None:
    """Go on from the newest checkpoint in ``ckpt_dir`` (unless ``config.resume`` is off): weights, optimizer and
    schedule, the step, the history, the sampler's place and this process's random state."""
    latest = latest_checkpoint(ckpt_dir) if run.config.resume else None
    if latest is None:
        return
    ckpt = load_checkpoint(latest, "cpu")  # RNG states must stay on the CPU
    _check_resumable(ckpt, run.config)
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.step, run.history, run.resumed_from = ckpt["step"], list(ckpt["history"]), ckpt["step"]
    run.start = ckpt["sampler"]["start"]
    rngs = ckpt["rng"]
    set_rng_state(rngs[run.ctx.rank] if len(rngs) == run.ctx.world_size else rngs[0])
    logger.info("resumed from %s at step %d", latest, run.step)


def _run_steps(
    run: _Run,
    dataset: OrganDataset,
    sampler: OrganBatchSampler,
    loss_fn: CTGlipLoss,
    validation: Validation | None,
    ckpt_dir: Path,
    log: Callable[[dict[str, float]], None] | None,
) -> None:
    """Step until ``config.steps``: ``grad_accum_steps`` batches per optimizer step, a record every ``log_every``
    steps (and at validation and the last step), a checkpoint every ``checkpoint_every``."""
    config, ctx, model = run.config, run.ctx, run.model
    net: torch.nn.Module = model
    if ctx.world_size > 1:
        net = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    micro = 0
    run.optimizer.zero_grad(set_to_none=True)
    net.train()
    sampler.set_start(run.start)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=config.num_workers)
    t0 = time.perf_counter()
    for batch in loader:
        batch = batch_to(batch, ctx.device)
        run.start += 1
        with autocast(ctx.device, config.precision):
            outputs = net(batch)
        # the loss in float32: bf16 logits lose the small differences the contrastive softmax needs
        losses = loss_fn(**{k: v.float() if v.is_floating_point() else v for k, v in outputs.items()})
        loss = total_loss(losses)
        (loss / config.grad_accum_steps).backward()
        micro += 1
        if micro < config.grad_accum_steps:
            continue  # the next batch adds to the same step
        micro = 0
        lr = _optimizer_step(run)
        dt = time.perf_counter() - t0
        samples = config.batch_size * config.grad_accum_steps
        if run.step - (run.resumed_from or 0) > 1:  # the first step pays for warm-up
            run.timed_samples, run.timed_seconds = run.timed_samples + samples, run.timed_seconds + dt
        last = run.step == config.steps
        validate = validation is not None and (run.step % config.val_every == 0 or last)
        if run.step % config.log_every == 0 or last or validate:  # a validation step is always recorded
            record = _record(run, lr, loss, losses, samples / dt, dt)
            if validate and validation is not None:
                record["val_abnormality_loss"] = validation.loss(model, ctx.device)
                record["image_free_floor"] = IMAGE_FREE_FLOOR
            run.history.append(record)
            if ctx.is_main:
                _log_step(record, config.steps)
                if log is not None:
                    log(record)
        if run.step % config.checkpoint_every == 0 or run.step == config.steps:
            _save(run, step_path(ckpt_dir, run.step), ckpt_dir)
        if run.step >= config.steps:
            break
        t0 = time.perf_counter()


def _optimizer_step(run: _Run) -> float:
    """One optimizer step on the gradients gathered (clipped to ``grad_clip``), then the schedule's; the learning
    rate the step used."""
    lr = run.optimizer.param_groups[0]["lr"]
    if run.config.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    run.step += 1
    return lr


def _record(
    run: _Run, lr: float, loss: torch.Tensor, losses: dict[str, torch.Tensor], samples_per_s: float, dt: float
) -> dict[str, float]:
    """The history record of the step just taken: its loss and named terms, learning rate, logit scale and speed."""
    return {
        "step": run.step,
        "lr": lr,
        "loss": float(loss.detach()),
        **{k: float(v.detach()) for k, v in losses.items()},
        "logit_scale": float(run.model.logit_scale.detach().exp()),
        "samples_per_s": samples_per_s,
        "step_time_s": dt,
    }


def _log_step(record: dict[str, float], steps: int) -> None:
    """One line per logged step: the loss, its terms, the speed."""
    logger.info(
        "step %d/%d loss %.4f (%s) %.2f crops/s",
        record["step"],
        steps,
        record["loss"],
        ", ".join(f"{k} {record[k]:.4f}" for k in record if k.endswith("_loss") and k != "loss"),
        record["samples_per_s"],
    )


def _save(run: _Run, path: Path, ckpt_dir: Path) -> None:
    """A full checkpoint (every process's random state gathered; the main process writes it and prunes old ones)."""
    ctx = run.ctx
    rngs: list[dict[str, Any] | None] = [rng_state()]
    if ctx.world_size > 1:
        rngs = [None] * ctx.world_size
        dist.all_gather_object(rngs, rng_state())
    if ctx.is_main:
        save_checkpoint(
            {
                "model": run.model.state_dict(),
                "config": run.config.to_dict(),
                "io": io_metadata(run.config),
                "step": run.step,
                "history": run.history,
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "sampler": {"start": run.start},
                "rng": rngs,
            },
            path,
        )
        prune_checkpoints(ckpt_dir, run.config.keep_checkpoints)
    if ctx.world_size > 1:
        dist.barrier()


def _result(run: _Run, out: Path, ckpt_dir: Path) -> TrainResult:
    """What the run did, with the peak memory of its largest process."""
    rss = torch.tensor([peak_rss_mb()], device=run.ctx.device)  # nccl reduces CUDA tensors only
    if run.ctx.world_size > 1:
        dist.all_reduce(rss, op=dist.ReduceOp.MAX)
    model_path = out / "model"
    history = run.history
    final = {k: v for k, v in history[-1].items() if k == "loss" or k.endswith("_loss")} if history else {}
    return TrainResult(
        checkpoint_path=latest_checkpoint(ckpt_dir) or model_path,
        model_path=model_path,
        loss_curve_path=out / "loss_curve.png",
        metrics_path=out / "metrics.json",
        steps=run.step,
        final_losses=final,
        samples_per_s=run.timed_samples / run.timed_seconds if run.timed_seconds else float("nan"),
        peak_rss_mb=float(rss.item()),
        world_size=run.ctx.world_size,
        resumed_from=run.resumed_from,
        history=tuple(history),
    )


def _export(run: _Run, result: TrainResult, dataset: OrganDataset) -> None:
    """The exported model (weights, config.json, model card), the loss curve and metrics.json."""
    save_model(result.model_path, run.model.state_dict(), export_config(run.config, result, dataset))
    if run.history:
        plot_losses(run.history, result.loss_curve_path)
    write_json(_metrics(result, run.config), result.metrics_path)
    logger.info(
        "done: step %d, %s, %.2f crops/s, checkpoint %s",
        run.step,
        result.final_losses,
        result.samples_per_s,
        result.checkpoint_path,
    )


def export_config(config: TrainConfig, result: TrainResult, dataset: OrganDataset) -> dict[str, Any]:
    """config.json of the exported model: the training config, the I/O record, and what the model card reports."""
    items = dataset.items
    validation = [(h["step"], h["val_abnormality_loss"]) for h in result.history if "val_abnormality_loss" in h]
    return {
        "train": config.to_dict(),
        "io": io_metadata(config),
        "step": result.steps,
        "dictionary": dataset.dictionary.to_record(),
        "training": {
            "data": {
                "split": config.split,
                "studies": len(dataset.studies),
                "organ_items": len(items),
                "abnormal_organ_items": sum(bool(i.findings) for i in items),
                "organs": len({i.organ for i in items}),
            },
            "final_losses": result.final_losses,
            "validation_abnormality_loss": [{"step": s, "loss": v} for s, v in validation],
            "image_free_floor": IMAGE_FREE_FLOOR,
            "samples_per_s": result.samples_per_s if math.isfinite(result.samples_per_s) else None,  # JSON has no NaN
            "world_size": result.world_size,
        },
    }


def _metrics(result: TrainResult, config: TrainConfig) -> dict[str, Any]:
    return {
        "steps": result.steps,
        "final_losses": result.final_losses,
        "samples_per_s": result.samples_per_s,
        "peak_rss_mb": result.peak_rss_mb,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "device": "cuda" if torch.cuda.is_available() and config.device != "cpu" else "cpu",
        "precision": config.precision,
        "grad_accum_steps": config.grad_accum_steps,
        "world_size": result.world_size,
        "resumed_from": result.resumed_from,
        "checkpoint_path": str(result.checkpoint_path),
        "model_path": str(result.model_path),
        "loss_curve_path": str(result.loss_curve_path),
        "kind": config.model.kind,
        "image_encoder": config.model.image_encoder,
        "batch_size": config.batch_size,
    }
