"""Training throughput and memory: both image encoders at the demo input size, and 1 -> 2 processes.

Each measurement is a fresh process running ``assets/train_entry.py`` (so peak RSS is its own),
with the demo config (64^3 crop at 3 mm, global batch 4) on a synthetic data root unless
``--data-root`` names a real one. Reports samples/s (first step excluded) and peak resident memory
(``resource`` maxrss of the training process; ``tracemalloc`` would not see torch's allocator, so it
is not used), then the ratios. The 2-process run uses torchrun/gloo with the same global batches, and
its losses and final weights are compared with the 1-process run (they agree to float tolerance).
One torch thread per process by default, so one process uses one core and two use two.

    python bench/train.py            # default, < 3 min on 2 CPU cores
    python bench/train.py --steps 20 --data-root $CTGLIP_DATA
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
ENTRY = REPO / "assets" / "train_entry.py"


def run(name: str, overrides: dict, data_root: Path, work: Path, nproc: int = 1, threads: int | None = None) -> dict:
    out, cfg = work / name, work / f"{name}.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        overrides = {**overrides, "num_threads": threads}
    cfg.write_text(json.dumps(overrides))
    args = [str(ENTRY), "--config", str(cfg), "--data-root", str(data_root), "--out", str(out)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    else:
        cmd = [sys.executable, *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{name} failed ({proc.returncode})")
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["wall_s"] = time.perf_counter() - t0
    metrics["out"] = str(out)
    return metrics


def max_diffs(a: dict, b: dict) -> tuple[float, float]:
    """Largest weight difference (exported models) and largest per-step loss difference (last checkpoints) of two runs."""
    from safetensors.torch import load_file

    from model.checkpoint import WEIGHTS, load_checkpoint

    wa, wb = load_file(str(Path(a["model_path"]) / WEIGHTS)), load_file(str(Path(b["model_path"]) / WEIGHTS))
    weights = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    ha, hb = load_checkpoint(a["checkpoint_path"])["history"], load_checkpoint(b["checkpoint_path"])["history"]
    losses = max(abs(x["loss"] - y["loss"]) for x, y in zip(ha, hb))
    return weights, losses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, help="a data root with tables/ (default: a synthetic one in a temp dir)")
    p.add_argument("--steps", type=int, default=6, help="steps per run (the first is not timed)")
    p.add_argument("--batch-size", type=int, default=4, help="global batch (studies)")
    p.add_argument("--fake-text", action="store_true", help="hashed-word text encoder instead of the packaged MiniLM")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (default 1: fair 1 vs 2 process comparison on 2 cores; "
                        "0 = torch's default -- slow when the CPU is shared)")
    p.add_argument("--skip-scaling", action="store_true", help="only the encoder comparison")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train.json")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="ctglip-bench-") as tmp:
        work = Path(tmp)
        data_root = args.data_root
        if data_root is None:
            from model.fake_data import make_fake_data_root

            data_root = make_fake_data_root(work / "data", n_studies=max(8, 2 * args.batch_size), shape=(80, 80, 72))
        base = {"steps": args.steps, "batch_size": args.batch_size, "checkpoint_every": args.steps, "log_every": 1}
        if args.fake_text:
            base["model"] = {"text_encoder": "fake"}

        def with_model(**kw: object) -> dict:
            return {**base, "model": {**base.get("model", {}), **kw}}

        results = {}
        print(f"demo input 64^3 voxels, global batch {args.batch_size}, {args.steps} steps per run, "
              f"{args.threads or 'default'} thread(s) per process")
        for enc in ("cnn", "vit"):
            results[enc] = run(enc, with_model(image_encoder=enc), data_root, work, threads=args.threads)
            r = results[enc]
            print(f"  {enc:4s} 1 proc     : {r['samples_per_s']:7.2f} samples/s  peak RSS {r['peak_rss_mb']:7.0f} MB  "
                  f"final loss {r['final_losses'].get('loss', float('nan')):.3f}")
        cnn, vit = results["cnn"], results["vit"]
        print(f"  ratio vit/cnn: throughput x{vit['samples_per_s'] / cnn['samples_per_s']:.2f}, "
              f"peak memory x{vit['peak_rss_mb'] / cnn['peak_rss_mb']:.2f}")

        if not args.skip_scaling:
            results["cnn_2proc"] = two = run("cnn2p", with_model(image_encoder="cnn"), data_root, work, nproc=2, threads=args.threads)
            w_diff, loss_diff = max_diffs(cnn, two)
            results["scaling"] = {
                "speedup_2proc_vs_1proc": two["samples_per_s"] / cnn["samples_per_s"],
                "max_weight_diff_1proc_vs_2proc": w_diff,
                "max_step_loss_diff_1proc_vs_2proc": loss_diff,
            }
            print(f"  cnn  2 procs (gloo): {two['samples_per_s']:7.2f} samples/s  peak RSS {two['peak_rss_mb']:7.0f} MB per process")
            print(f"  scaling 2 procs / 1 proc: x{results['scaling']['speedup_2proc_vs_1proc']:.2f} (ideal x2.00)")
            print(f"  same global batches, 2 procs vs 1 proc: max |loss difference| over the steps "
                  f"{loss_diff:.2e}, max |weight difference| after {args.steps} steps {w_diff:.2e} "
                  "(AdamW magnifies float rounding in near-zero gradients; bounded by lr x steps)")
        for r in results.values():
            r.pop("out", None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
