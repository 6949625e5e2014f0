"""Training throughput at the paper preset (organ crops at 1.5 mm) on whatever accelerator is present: one command.

    python bench/gpu.py                  # on a GPU: the paper's 64-voxel organ crops, float32 vs bf16 vs bf16 + accumulation
    python bench/gpu.py --crop 32        # a smaller crop (the CPU default: the full one does not fit a CPU's time)

Each setting is a short ``model.train.train`` run of the paper preset (CNN encoder, 1.5 mm spacing) on a synthetic
data root written at 1.5 mm, measured in the same process: organ crops/s with the first step excluded, peak CUDA memory
(``torch.cuda.max_memory_allocated``) on a GPU, peak RSS otherwise. The baseline is float32 without accumulation,
measured in this run; the others print their ratio to it. The text encoder is the hashed-word one with one trainable
layer: Bio_ClinicalBERT is not installed offline, so the image side dominates.

Writes bench/results/gpu.json only where it ran on a GPU: a CPU run prints its figures and keeps no record (they
are not GPU figures).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from record import write_record  # noqa: E402

FULL_CROP = 64
CPU_CROP = 32


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crop", type=int, help=f"organ crop voxels per side (default: {FULL_CROP} on a GPU, {CPU_CROP} on a CPU)")
    p.add_argument("--batch-size", type=int, default=16, help="organ crops per batch (a multiple of 4; default 16)")
    p.add_argument("--accum", type=int, default=2, help="batches per step of the accumulation setting (default 2)")
    p.add_argument("--steps", type=int, default=4, help="steps per setting; the first is not timed (default 4)")
    p.add_argument("--device", default="auto", help="'auto', 'cuda' or 'cpu' (default auto)")
    p.add_argument("--bf16-on-cpu", action="store_true", help="also time bf16 on a CPU (skipped by default: CPU bf16 3D convolutions are slow and say nothing of a GPU)")
    p.add_argument("--out", type=Path, default=None, help="the record (default bench/results/gpu.json; GPU runs only)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from model.config import paper
    from model.fake_data import make_fake_data_root
    from model.train import init_distributed, train
    from pipeline.resample import PAPER_SPACING_MM

    device = init_distributed(args.device).device
    on_cpu = device.type == "cpu"
    crop = args.crop or (CPU_CROP if on_cpu else FULL_CROP)
    name = torch.cuda.get_device_name(device) if not on_cpu else "CPU"
    print(f"device: {name}" + (" -- ran on CPU, no accelerator found (figures are not GPU figures)" if on_cpu else ""))
    print(f"paper preset (CNN, 1.5 mm), organ crops {crop}^3, batch {args.batch_size}, {args.steps} steps per setting, fake text encoder", flush=True)
    settings = {"float32": {}, "bf16": {"precision": "bf16"}, f"bf16 + accum {args.accum}": {"precision": "bf16", "grad_accum_steps": args.accum}}
    if on_cpu and not args.bf16_on_cpu:
        settings = {"float32": {}, f"float32 + accum {args.accum}": {"grad_accum_steps": args.accum}}
        print("bf16 settings skipped on the CPU (--bf16-on-cpu to time them)")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ctglip-gpu-") as tmp:
        root = make_fake_data_root(Path(tmp) / "data", n_studies=8, shape=(96, 96, 88), spacing_mm=PAPER_SPACING_MM)
        for label, extra in settings.items():
            config = paper(steps=args.steps, batch_size=args.batch_size, checkpoint_every=args.steps, num_workers=0, warmup_steps=1,
                           val_every=0, device=args.device, model={"text_encoder": "fake", "text_trainable_layers": 1},
                           data={"preprocessing": {"crop_voxels": crop}},
                           **extra)
            if not on_cpu:
                torch.cuda.reset_peak_memory_stats(device)
            print(f"  running {label} ...", flush=True)
            r = train(config, root, Path(tmp) / label.replace(" ", "_"))
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if not on_cpu else r.peak_rss_mb
            results[label] = {"samples_per_s": r.samples_per_s, "peak_mb": peak, "memory": "cuda allocated" if not on_cpu else "process RSS (cumulative)",
                              "final_loss": r.final_losses.get("loss")}
    base = results["float32"]
    for label, r in results.items():
        r["ratio_to_float32"] = round(r["samples_per_s"] / base["samples_per_s"], 3)
        print(f"  {label:16s} {r['samples_per_s']:8.2f} crops/s (x{r['ratio_to_float32']:.2f} vs float32)  peak {r['peak_mb']:8.0f} MB ({r['memory']})  loss {r['final_loss']:.3f}")
    if on_cpu:
        print("no record written: no GPU (bench/results/gpu.json holds GPU figures only)")
        return 0
    write_record("gpu", {"device": name, "crop": crop, "batch_size": args.batch_size, "steps": args.steps, "baseline": "float32",
                         "results": results}, script=__file__, argv=argv, out=args.out,
                 inputs={"data": "model.fake_data.make_fake_data_root(n_studies=8, shape=(96, 96, 88), spacing_mm=1.5)",
                         "torch_cuda": torch.version.cuda})
    print(f"wrote {args.out or 'bench/results/gpu.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
