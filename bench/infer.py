"""``model.infer`` on one full-size study: wall time and peak memory, split into ingest, segmentation, encoder, zero-shot, heatmaps.

    python bench/infer.py                         # 512 x 512 x 300 voxels, 0.78 mm in-plane, 1.5 mm slices
    python bench/infer.py --checkpoint data/models/grounded-XXXX/model
    python bench/infer.py --threads 1             # model.infer --threads 1 (a CPU shared with other jobs)

Issue 15's target: at most 60 s and 6 GB for such a study with the demo checkpoint on the 2-core machine.
Without ``--checkpoint`` a demo-architecture model (ViT, 64^3 crop at 3 mm, packaged MiniLM text encoder)
is exported with untrained weights: time and memory do not depend on the weights' values. The study is
a synthetic body with ellipsoid organs, stored as int16 NIfTI, with its organ mask given (``--mask``):
TotalSegmentator's weights are not installed here, so "segmentation" is the mask's resampling to the
canonical grid, not a network. The CLI runs in a fresh process (its peak RSS is its own); the baseline,
measured in the same run, is reading the same study file with nibabel alone. Writes bench/results/infer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from record import write_record  # noqa: E402

TARGET_S, TARGET_GB = 60.0, 6.0


def make_study(folder: Path, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[Path, Path]:
    """A CT-like int16 volume (air, body, six organs) and its organ mask (v2 indices)."""
    from pipeline.volume import Volume, save_nifti
    from pipeline.vocab import organ

    rng = np.random.default_rng(0)
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    frac = [g / n for g, n in zip(grid, shape)]
    body = ((frac[0] - 0.5) / 0.42) ** 2 + ((frac[1] - 0.5) / 0.32) ** 2 <= 1
    body = np.broadcast_to(body, shape)
    hu = np.where(body, np.int16(-80), np.int16(-1000)).astype(np.int16)
    labels = np.zeros(shape, np.uint8)
    for name, centre, radii, value in (("liver", (0.62, 0.5, 0.45), (0.14, 0.12, 0.15), 60), ("spleen", (0.33, 0.45, 0.45), (0.06, 0.06, 0.08), 45),
                                       ("kidney_right", (0.6, 0.35, 0.3), (0.04, 0.05, 0.08), 150), ("kidney_left", (0.4, 0.35, 0.3), (0.04, 0.05, 0.08), 150),
                                       ("aorta", (0.5, 0.4, 0.5), (0.02, 0.02, 0.4), 200), ("heart", (0.5, 0.55, 0.8), (0.1, 0.09, 0.1), 40)):
        m = sum(((f - c) / r) ** 2 for f, c, r in zip(frac, centre, radii)) <= 1
        labels[m] = organ(name).index_v2
        hu[m] = value
    hu += rng.normal(0, 10, size=shape).astype(np.int16)
    affine = np.diag([*spacing, 1.0])
    ct, mask = folder / "ct.nii.gz", folder / "organs.nii.gz"
    save_nifti(Volume(hu, affine), ct, dtype=np.int16)
    save_nifti(Volume(labels, affine), mask, dtype=np.uint8)
    return ct, mask


def demo_checkpoint(folder: Path) -> Path:
    """A demo-architecture model exported the way training exports one (untrained weights)."""
    from model.checkpoint import save_model
    from model.config import demo, io_metadata
    from model.network import CTGlip

    config = demo()
    model = CTGlip(config.model, config.data.preprocessing)
    return save_model(folder / "model", model.state_dict(), {"train": config.to_dict(), "io": io_metadata(config), "step": 0})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="a trained model folder (default: the demo architecture, untrained)")
    p.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300), help="voxels of the study (default 512 512 300)")
    p.add_argument("--spacing", type=float, nargs=3, default=(0.78, 0.78, 1.5), help="mm (default 0.78 0.78 1.5)")
    p.add_argument("--queries", type=int, default=2, help="text queries mapped (default 2)")
    p.add_argument("--threads", type=int, default=0, help="model.infer --threads (default 0: torch's own choice)")
    p.add_argument("--out", type=Path, default=None, help="the record (default bench/results/infer.json)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="ctglip-infer-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        ct, mask = make_study(work, tuple(args.shape), tuple(args.spacing))
        print(f"study {tuple(args.shape)} voxels at {tuple(args.spacing)} mm written in {time.perf_counter() - t0:.1f} s")
        checkpoint = args.checkpoint or demo_checkpoint(work)

        import nibabel as nib

        t0 = time.perf_counter()
        np.asarray(nib.load(ct).dataobj)
        baseline = time.perf_counter() - t0

        queries = ["mass of the liver", "the spleen", "kidney stone", "aortic aneurysm"][: args.queries]
        cmd = [sys.executable, "-m", "model.infer", "--checkpoint", str(checkpoint), "--volume", str(ct), "--mask", str(mask),
               "--out", str(work / "out"), "--device", "cpu", "--text-cache", str(work / "text"), "--threads", str(args.threads)]
        for q in queries:
            cmd += ["--query", q]
        runs = {}
        for label in ("cold", "warm"):  # cold: the dictionary's prompts are encoded; warm: read from the text cache
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
            wall = time.perf_counter() - t0
            if proc.returncode:
                raise SystemExit(f"model.infer failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            summary = json.loads((work / "out" / "summary.json").read_text())
            runs[label] = {"total_s": wall, "timings_s": summary["timings_s"], "startup_and_io_s": wall - sum(summary["timings_s"].values())}
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB, the larger of the two runs

    load = os.getloadavg()[0]
    print(f"model.infer ({'given checkpoint' if args.checkpoint else 'demo architecture, untrained weights'}), canonical grid {summary['grid_shape']} "
          f"at {summary['spacing_mm'][0]:.1f} mm, {len(queries)} queries, {os.cpu_count()} CPU(s), --threads {args.threads}, load average {load:.1f}")
    print(f"  {'seconds':13s} {'cold':>7s} {'warm':>7s}   (cold: first run, prompts encoded; warm: prompts from the text cache)")
    for k in runs["cold"]["timings_s"]:
        print(f"  {k:13s} {runs['cold']['timings_s'][k]:7.1f} {runs['warm']['timings_s'][k]:7.1f}")
    print(f"  {'start-up+io':13s} {runs['cold']['startup_and_io_s']:7.1f} {runs['warm']['startup_and_io_s']:7.1f}   (python and torch import, model and text encoder load, writing outputs)")
    print(f"  {'total':13s} {runs['cold']['total_s']:7.1f} {runs['warm']['total_s']:7.1f}   target {TARGET_S:.0f} s: x{runs['cold']['total_s'] / TARGET_S:.2f} / x{runs['warm']['total_s'] / TARGET_S:.2f} of it")
    print(f"  peak RSS {peak_gb:.2f} GB (target {TARGET_GB:.0f} GB)")
    print(f"  baseline: nibabel read of the study alone {baseline:.1f} s; model.infer (warm) takes x{runs['warm']['total_s'] / baseline:.1f} of it")
    result = {"shape": list(args.shape), "spacing_mm": list(args.spacing), "runs": runs, "peak_rss_gb": peak_gb, "baseline_read_s": baseline,
              "ratio_warm_to_baseline": runs["warm"]["total_s"] / baseline, "targets": {"total_s": TARGET_S, "peak_rss_gb": TARGET_GB},
              "threads": args.threads, "grid_shape": summary["grid_shape"]}
    write_record("infer", result, script=__file__, argv=argv, out=args.out,
                 inputs={"study": "make_study (synthetic, seed 0)", "queries": queries,
                         "checkpoint": str(args.checkpoint) if args.checkpoint else "demo architecture, untrained"})
    print(f"wrote {args.out or 'bench/results/infer.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
