"""Benchmark of the segmentation stage: precomputed masks -> canonical grid, organ_stats, TotalSegmentator.

Synthetic label maps (ellipsoid "organs" with v2 indices) at a demo size stand in for real masks;
TotalSegmentator runs only where its weights, nnU-Net and a GPU are all present (else: skipped, why).

    .venv/bin/python bench/segment.py            # default: 1,000 label maps for organ_stats, < 2 min
    .venv/bin/python bench/segment.py --help

Baseline, measured in the same run: a per-organ boolean-mask loop (``naive_stats``). Writes bench/results/segment.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import write_record  # noqa: E402

from pipeline import vocab  # noqa: E402
from pipeline.segment import SegmenterConfig, StatsConfig, organ_stats, segment  # noqa: E402
from pipeline.segment.totalseg import SegmenterDependencyError, WeightsMissingError, check_dependencies, check_weights  # noqa: E402
from pipeline.ids import pseudonym  # noqa: E402
from pipeline.volume import Volume, save_nifti  # noqa: E402

log = logging.getLogger("bench.segment")


def synthetic_labels(rng: np.random.Generator, size: int, n_organs: int, spacing: float) -> Volume:
    """A size^3 RAS label map with ``n_organs`` ellipsoids of distinct v2 labels."""
    lab = np.zeros((size, size, size), np.uint8)
    indices = rng.choice(sorted(vocab.class_map("total")), size=n_organs, replace=False)
    for index in indices:
        radii = rng.uniform(0.03, 0.12, 3) * size
        centre = rng.uniform(radii, size - radii)
        lo = np.maximum(np.floor(centre - radii).astype(int), 0)
        hi = np.minimum(np.ceil(centre + radii).astype(int) + 1, size)
        g = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        inside = sum(((x - c) / r) ** 2 for x, c, r in zip(g, centre, radii)) <= 1
        lab[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][inside] = index
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * size / 2
    return Volume(lab, affine)


def to_las(vol: Volume) -> Volume:
    """The same map stored LAS (first axis flipped), as TotalSegmentator/dcm2niix files often are."""
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = vol.shape[0] - 1
    return Volume(vol.array[::-1].copy(), vol.affine @ flip)


def bench_precomputed(maps: list[Volume], n: int, root: Path) -> dict[str, float]:
    masks = root / "masks"
    rows = []
    for m, vol in enumerate(maps):
        save_nifti(to_las(vol), masks / f"multi_{m}.nii.gz")
        rows.append(("nifti_multilabel", f"multi_{m}.nii.gz"))
    folder = masks / "folder_0"
    las = to_las(maps[0])
    for index in np.unique(las.array)[1:]:
        save_nifti(Volume((las.array == index).astype(np.uint8), las.affine), folder / f"{vocab.class_map('total')[int(index)]}.nii.gz")
    uids = [f"1.2.826.0.1.bench.{i}" for i in range(n)]
    fmt = [rows[i % len(rows)] for i in range(n)]
    n_folder = max(1, n // 20)  # folders are slower (one file per organ): a small share of the studies
    fmt[:n_folder] = [("nifti_folder", "folder_0")] * n_folder
    pd.DataFrame({"StudyInstanceUID": uids, "mask_path": [p for _, p in fmt], "format": [f for f, _ in fmt]}).to_csv(
        masks / "manifest.csv", index=False)
    config = SegmenterConfig(manifest=str(masks / "manifest.csv"))
    times: dict[str, list[float]] = {}
    for uid, (kind, _) in zip(uids, fmt):
        like = maps[0]
        t = time.perf_counter()
        segment(pseudonym("study", uid), like, config)
        times.setdefault(kind, []).append(time.perf_counter() - t)
    return {k: len(v) / sum(v) for k, v in times.items()} | {"all": n / sum(sum(v) for v in times.values())}


def bench_stats(maps: list[Volume], cts: list[Volume], n: int, check_fragments: bool) -> float:
    config = StatsConfig(check_fragments=check_fragments)
    t = time.perf_counter()
    for i in range(n):
        organ_stats(f"stu-{i}", maps[i % len(maps)], cts[i % len(cts)], config)
    return n / (time.perf_counter() - t)


def naive_stats(labels: Volume, ct: Volume) -> list[dict]:
    """Baseline: the obvious per-organ loop, one full-volume boolean mask per class present."""
    rows = []
    voxel_ml = float(np.prod(labels.spacing)) / 1000.0
    for index in np.unique(labels.array):
        if index == 0:
            continue
        mask = labels.array == index
        ijk = np.argwhere(mask)
        hu = ct.array[mask]
        rows.append({"index": int(index), "voxels": len(ijk), "volume_ml": len(ijk) * voxel_ml,
                     "bbox": (*ijk.min(0), *(ijk.max(0) + 1)), "centroid": labels.world(ijk.mean(0, keepdims=True))[0],
                     "hu_mean": float(hu.mean()), "hu_std": float(hu.std())})
    return rows


def bench_naive_stats(maps: list[Volume], cts: list[Volume], n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        naive_stats(maps[i % len(maps)], cts[i % len(cts)])
    return n / (time.perf_counter() - t)


def bench_totalsegmentator(size: int) -> str:
    try:
        check_weights(fast=True)
        check_dependencies()
    except (WeightsMissingError, SegmenterDependencyError) as err:
        return f"skipped: {type(err).__name__}: {str(err).split('. ')[0]}"
    import torch

    if not torch.cuda.is_available():
        return "skipped: no GPU visible to torch (CPU inference of the 'total' model takes minutes per study)"
    rng = np.random.default_rng(0)
    ct = Volume(rng.integers(-1000, 400, (size, size, size)).astype(np.int16), np.diag([1.5, 1.5, 1.5, 1.0]))
    config = SegmenterConfig(backend="totalsegmentator")
    segment("stu-warmup", ct, config)
    t = time.perf_counter()
    segment("stu-bench", ct, config)
    return f"{time.perf_counter() - t:.2f} s/study (fast, {size}^3 at 1.5 mm, {torch.cuda.get_device_name()})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128, help="edge of the synthetic label maps, voxels (default 128)")
    p.add_argument("--organs", type=int, default=30, help="organs per label map (default 30)")
    p.add_argument("--distinct", type=int, default=8, help="distinct synthetic maps, cycled (default 8)")
    p.add_argument("--n-stats", type=int, default=1000, help="label maps through organ_stats (default 1000)")
    p.add_argument("--n-precomputed", type=int, default=200, help="studies through the precomputed segmenter (default 200)")
    p.add_argument("--no-fragments", action="store_true", help="skip the connected-component check in organ_stats")
    p.add_argument("--n-baseline", type=int, default=50, help="label maps through the naive per-organ loop baseline (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="the record (default bench/results/segment.json)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    rng = np.random.default_rng(args.seed)
    t = time.perf_counter()
    maps = [synthetic_labels(rng, args.size, args.organs, 1.5) for _ in range(args.distinct)]
    cts = [Volume(rng.integers(-200, 300, m.shape).astype(np.int16), m.affine) for m in maps]
    print(f"generated {args.distinct} synthetic {args.size}^3 label maps with {args.organs} organs in {time.perf_counter() - t:.1f} s")

    with tempfile.TemporaryDirectory(prefix="bench-segment-") as tmp:
        rates = bench_precomputed(maps, args.n_precomputed, Path(tmp))
    for kind, rate in rates.items():
        print(f"precomputed segmenter ({kind}): {rate:.1f} studies/s")
    rate = bench_stats(maps, cts, args.n_stats, check_fragments=not args.no_fragments)
    print(f"organ_stats over {args.n_stats} label maps ({args.size}^3, {args.organs} organs): {rate:.1f} studies/s")
    base = bench_naive_stats(maps, cts, args.n_baseline)
    fast = bench_stats(maps, cts, args.n_baseline, check_fragments=False)
    print(f"baseline (per-organ boolean-mask loop, no fragment check) over {args.n_baseline} maps: {base:.1f} studies/s")
    print(f"organ_stats without fragment check, same maps: {fast:.1f} studies/s -> x{fast / base:.2f} the baseline")
    print(f"organ_stats with fragment check: x{rate / base:.2f} the baseline")
    totalseg = bench_totalsegmentator(args.size)
    print(f"totalsegmentator: {totalseg}")
    write_record("segment", {
        "precomputed_studies_per_s": {k: round(v, 2) for k, v in rates.items()},
        "organ_stats_studies_per_s": round(rate, 2), "organ_stats_without_fragment_check_studies_per_s": round(fast, 2),
        "baseline": "per-organ boolean-mask loop, no fragment check", "baseline_studies_per_s": round(base, 2),
        "ratio_without_fragment_check": round(fast / base, 2), "ratio_with_fragment_check": round(rate / base, 2),
        "totalsegmentator": totalseg,
    }, script=__file__, argv=argv, out=args.out,
        inputs={"label_maps": "synthetic_labels (ellipsoid organs)", "size": args.size, "organs": args.organs, "distinct": args.distinct,
                "n_stats": args.n_stats, "n_precomputed": args.n_precomputed, "n_baseline": args.n_baseline,
                "fragment_check": not args.no_fragments, "seed": args.seed})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
