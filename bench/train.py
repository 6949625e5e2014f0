"""Training throughput in organ crops/s, where a step's time goes, and 1 -> 2 processes.

    python bench/train.py                                   # a synthetic data root, < 5 min on 2 CPU cores
    python bench/train.py --data-root data/benchmark        # the benchmark cohort's training split
    python bench/train.py --skip-scaling --steps 12

Part 1, in this process: the benchmark preset (``model.config.benchmark``: 32-voxel organ crops, residual CNN, the text
encoder's top layer trained) and two variants (the ViT; the text encoder frozen), each timed over ``--steps`` steps
after two untimed ones, split into making the batch (cropping), the image side's forward, the text side's forward,
the losses and backward pass, and the optimizer step; crops/s of each with its ratio to the preset, measured in the same
run. Part 2, fresh processes through ``launch/train_entry.py``: the preset on one process and on two (torchrun,
gloo, the same global batches), samples/s and whether the two end with the same weights. One torch thread per process
in part 2 so that one process uses one core and two use two. Writes bench/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from record import write_record  # noqa: E402

ENTRY = REPO / "launch" / "train_entry.py"
VARIANTS = {"benchmark preset": {}, "vit": {"model": {"image_encoder": "vit"}}, "frozen text": {"model": {"text_trainable_layers": 0}}}


def breakdown(overrides: dict, data_root: Path, steps: int, threads: int) -> dict:
    """Seconds per step of each part of a training step (the model's own forward, split), and crops/s."""
    import torch

    from model.config import benchmark, replace
    from model.data import OrganBatchSampler, OrganDataset, collate
    from model.losses import total_loss
    from model.network import CTGlip
    from model.text import build_text_states
    from model.train import build_loss, build_optimizer

    torch.set_num_threads(threads)
    cfg = replace(benchmark(), **overrides)
    ds = OrganDataset(data_root, cfg)
    sampler = OrganBatchSampler(ds.items, cfg)
    model = CTGlip(cfg.model, cfg.data.preprocessing, build_text_states(cfg.model)).train()
    opt, loss_fn = build_optimizer(model, cfg), build_loss(cfg)
    for item in ds.items:  # every study decoded once, as a long run has them
        ds._load(item.study)
    parts = dict.fromkeys(("batch", "image_forward", "text_forward", "loss_backward", "optimizer"), 0.0)
    for step in range(steps + 2):
        t0 = time.perf_counter()
        b = collate([ds[(step, p, i)] for p, i in enumerate(sampler.global_batch(step))])
        t1 = time.perf_counter()
        organ = model.encode_organs(b.volume, b.mask, b.region, b.size)
        t2 = time.perf_counter()
        text = model.encode_text(b.texts)
        t3 = time.perf_counter()
        losses = loss_fn(
            logit_scale=model.scale(), organ_features=organ, organ_text_features=text[b.organ_text_idx], organ_labels=b.labels,
            organ_findings=b.finding_ids, name_features=text[b.name_text_idx], dictionary_features=organ[b.dict_item],
            affirmed_features=text[b.dict_affirmed_idx], negated_features=text[b.dict_negated_idx],
            dictionary_labels=b.dict_label, dictionary_weights=b.dict_weight)
        total_loss(losses).backward()
        t4 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t5 = time.perf_counter()
        if step >= 2:  # the first steps read each new text through the frozen layers once
            for k, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                parts[k] += dt / steps
    total = sum(parts.values())
    return {"seconds_per_step": {k: round(v, 4) for k, v in parts.items()}, "step_s": round(total, 4),
            "crops_per_s": round(cfg.batch_size / total, 2), "batch_size": cfg.batch_size}


def run(name: str, overrides: dict, data_root: Path, work: Path, nproc: int = 1, threads: int | None = None) -> dict:
    out, cfg = work / name, work / f"{name}.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        overrides = {**overrides, "num_threads": threads}
    cfg.write_text(json.dumps(overrides))
    args = [str(ENTRY), "--config", str(cfg), "--preset", "benchmark", "--data-root", str(data_root), "--out", str(out)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args] if nproc > 1 else [sys.executable, *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{name} failed ({proc.returncode})")
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["wall_s"] = time.perf_counter() - t0
    return metrics


def max_weight_diff(a: dict, b: dict) -> float:
    from safetensors.torch import load_file

    from model.files import WEIGHTS

    wa, wb = load_file(str(Path(a["model_path"]) / WEIGHTS)), load_file(str(Path(b["model_path"]) / WEIGHTS))
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, help="a data root with tables/ (default: a synthetic one in a temp dir)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per variant (default 8)")
    p.add_argument("--threads", type=int, default=2, help="torch threads in part 1 (default 2)")
    p.add_argument("--skip-scaling", action="store_true", help="part 1 only")
    p.add_argument("--out", type=Path, default=None, help="the record (default bench/results/train.json)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    with tempfile.TemporaryDirectory(prefix="ctglip-bench-") as tmp:
        work = Path(tmp)
        data_root = args.data_root
        if data_root is None:
            from model.fake_data import make_fake_data_root

            data_root = make_fake_data_root(work / "data", n_studies=16, shape=(80, 80, 72), p_abnormal=0.5)
        results: dict = {"threads": args.threads, "steps": args.steps, "baseline": "benchmark preset", "variants": {}}
        print(f"{args.steps} timed steps per variant, {args.threads} torch thread(s), data {data_root}")
        for name, over in VARIANTS.items():
            r = results["variants"][name] = breakdown(over, data_root, args.steps, args.threads)
            base = results["variants"]["benchmark preset"]["crops_per_s"]
            r["ratio_to_preset"] = round(r["crops_per_s"] / base, 3)
            print(f"  {name:16s} {r['crops_per_s']:7.1f} crops/s (x{r['crops_per_s'] / base:.2f} vs the preset); per step: "
                  + ", ".join(f"{k} {v:.3f} s" for k, v in r["seconds_per_step"].items()))
        if not args.skip_scaling:
            steps = {"steps": 6, "checkpoint_every": 6, "log_every": 1, "val_every": 0}
            one = run("one", steps, data_root, work, threads=1)
            two = run("two", steps, data_root, work, nproc=2, threads=1)
            results["scaling"] = {"one_process_crops_per_s": one["samples_per_s"], "two_processes_crops_per_s": two["samples_per_s"],
                                  "speedup": two["samples_per_s"] / one["samples_per_s"], "max_weight_diff": max_weight_diff(one, two)}
            s = results["scaling"]
            print(f"  1 process {s['one_process_crops_per_s']:.1f} crops/s, 2 processes {s['two_processes_crops_per_s']:.1f} "
                  f"(x{s['speedup']:.2f}); same global batches: max |weight difference| {s['max_weight_diff']:.2e}")
    inputs = {"data_root": str(args.data_root) if args.data_root else "model.fake_data.make_fake_data_root(n_studies=16, shape=(80, 80, 72))"}
    write_record("train", results, script=__file__, argv=argv, inputs=inputs, out=args.out)
    print(f"wrote {args.out or 'bench/results/train.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
