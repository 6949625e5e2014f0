"""Benchmark: DICOM archive -> canonical resampled volumes, ours vs. a SimpleITK baseline vs. the read floor.

    python bench/ingest.py                 # 20 studies x 100 slices of 512x512 (about 1 GB, < 3 min)
    python bench/ingest.py --studies 40 --slices 200 --workers 2

Studies are written with the synthetic DICOM writer into a temporary folder (removed afterwards
unless --keep). All three contenders read the same files from the page cache after generation:
- floor: read every file's bytes once (no parsing), one process;
- ours: `pipeline.ingest.ingest_archive` (scan, select, validate, decode, HU check, resample to
  the canonical grid, int16 NIfTI), ``--workers`` processes;
- SimpleITK: ``ImageSeriesReader`` (GDCM) + ``Resample`` (linear) onto the same grid + clamp/cast to
  int16 + ``WriteImage`` (.nii.gz), in ``--workers`` processes with one ITK thread each, and
  (with --sequential-baseline) in one process with ITK's default threading.
Writes bench/results/ingest.json: each contender's seconds, the ratios, the agreement with SimpleITK and our
cost breakdown.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import write_record  # noqa: E402

from pydicom.uid import generate_uid  # noqa: E402

from pipeline.ingest import IngestConfig, ingest_archive  # noqa: E402
from pipeline.resample import Grid, ResampleOptions, canonical_grid  # noqa: E402
from pipeline.synthetic.dicom_writer import SeriesHeader, write_ct_series  # noqa: E402
from pipeline.tables import resolve_path  # noqa: E402
from pipeline.volume import load_nifti  # noqa: E402


def _phantom(n_slices: int, size: int, seed: int) -> np.ndarray:
    """Air, an elliptic body with fat rim, organs-ish blobs and bone, plus noise: int16 HU (i, j, k)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, size, dtype=np.float32)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    body = (xx**2 / 0.75 + yy**2 / 0.45) < 1
    fat = body & ((xx**2 / 0.62 + yy**2 / 0.34) >= 1)
    plane = np.where(body, 45, -1000).astype(np.int16)
    plane[fat] = -90
    plane[((xx + 0.3) ** 2 + (yy - 0.05) ** 2) < 0.05] = 65
    plane[(np.abs(xx) < 0.08) & (yy > 0.35) & (yy < 0.5)] = 800
    vol = np.repeat(plane[:, :, None], n_slices, axis=2)
    vol += rng.normal(0, 12, size=vol.shape).astype(np.int16)
    return vol


def generate(root: Path, n_studies: int, n_slices: int, size: int) -> tuple[list[Path], int]:
    base = _phantom(n_slices, size, 0)
    folders = []
    for s in range(n_studies):
        px = 0.68 + 0.02 * (s % 5)
        dz = (1.25, 1.5, 2.0, 2.5)[s % 4]
        aff = np.diag([-px, -px, dz, 1.0])
        aff[:3, 3] = (px * size / 2, px * size / 2, -dz * n_slices / 2)
        hdr = SeriesHeader(
            patient_name=f"BENCH^{s}", patient_id=f"B{s:04d}", patient_birth_date="19700101", patient_sex="O",
            accession_number=f"BA{s:06d}", study_instance_uid=generate_uid(), series_instance_uid=generate_uid(),
            frame_of_reference_uid=generate_uid(), study_date="20240101",
        )  # fmt: skip
        folder = root / f"study{s:03d}"
        write_ct_series(np.roll(base, s * 3, axis=2), aff, folder, hdr, file_order_seed=s)
        folders.append(folder)
    n_bytes = sum(p.stat().st_size for f in folders for p in f.iterdir())
    return folders, n_bytes


def floor_read(folders: list[Path]) -> float:
    t = time.perf_counter()
    for f in folders:
        for p in f.iterdir():
            with open(p, "rb") as fh:
                fh.read()
    return time.perf_counter() - t


def _sitk_one(args: tuple[str, str, dict, tuple[int, int], int]) -> float:
    import SimpleITK as sitk

    folder, out, grid_d, window, threads = args
    if threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    t = time.perf_counter()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    img = reader.Execute()
    grid = Grid.from_dict(grid_d)
    m = grid.matrix
    ref = sitk.Image([int(n) for n in grid.shape], sitk.sitkInt16)
    ref.SetSpacing([float(s) for s in grid.spacing])
    ref.SetOrigin([-m[0, 3], -m[1, 3], m[2, 3]])  # RAS -> LPS
    ref.SetDirection([-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0])  # RAS axes expressed in LPS
    res = sitk.Resample(sitk.Cast(img, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear, float(window[0]), sitk.sitkFloat32)
    res = sitk.Cast(sitk.Round(sitk.Clamp(res, sitk.sitkFloat32, float(window[0]), float(window[1]))), sitk.sitkInt16)
    sitk.WriteImage(res, out, useCompression=True)
    return time.perf_counter() - t


def _grid_of(folder: Path, spacing: float) -> dict:
    from pipeline.dicom.geometry import check_geometry
    from pipeline.dicom.scan import read_header

    geo = check_geometry([read_header(p) for p in sorted(folder.iterdir())])
    return canonical_grid(geo.shape, geo.affine, spacing).to_dict()


def sitk_baseline(folders: list[Path], out_dir: Path, spacing: float, window, workers: int) -> float:
    out_dir.mkdir(parents=True, exist_ok=True)
    grids = [_grid_of(f, spacing) for f in folders]  # the same canonical grid as ours (not timed)
    tasks = [(str(f), str(out_dir / f"{f.name}.nii.gz"), g, tuple(window), 1 if workers > 1 else 0) for f, g in zip(folders, grids)]
    t = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
            list(pool.map(_sitk_one, tasks))
    else:
        for task in tasks:
            _sitk_one(task)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=20, help="number of studies (default 20)")
    ap.add_argument("--slices", type=int, default=100, help="slices per study (default 100)")
    ap.add_argument("--size", type=int, default=512, help="rows = columns per slice (default 512)")
    ap.add_argument("--spacing", type=float, default=1.5, help="canonical isotropic spacing, mm (default 1.5)")
    ap.add_argument("--workers", type=int, default=2, help="processes for ours and the parallel baseline (default 2)")
    ap.add_argument("--sequential-baseline", action="store_true", help="also time SimpleITK in one process with ITK threads")
    ap.add_argument("--tmp", type=Path, default=None, help="where to write the synthetic archive")
    ap.add_argument("--keep", action="store_true", help="keep the temporary archive and outputs")
    ap.add_argument("--out", type=Path, default=None, help="the record (default bench/results/ingest.json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    tmp = Path(tempfile.mkdtemp(prefix="ctglip-bench-", dir=args.tmp))
    try:
        archive = tmp / "data" / "source" / "dicom"
        t = time.perf_counter()
        folders, n_bytes = generate(archive, args.studies, args.slices, args.size)
        mb = n_bytes / 1e6
        print(f"generated {args.studies} studies x {args.slices} slices of {args.size}x{args.size} ({mb:.0f} MB) in {time.perf_counter() - t:.1f} s")
        floor_read(folders)  # warm the page cache for everybody
        t_floor = floor_read(folders)

        window = (-1024, 3071)
        cfg = IngestConfig(data_root=tmp / "data", resample=ResampleOptions(spacing=(args.spacing,) * 3, hu_window=window), workers=args.workers)
        res = ingest_archive(cfg)
        t_ours = res.timings["total"]
        assert len(res.ct_studies) == args.studies, res.rejected_studies

        t_sitk_par = sitk_baseline(folders, tmp / "sitk_par", args.spacing, window, args.workers)
        t_sitk_seq = None if not args.sequential_baseline else sitk_baseline(folders, tmp / "sitk_seq", args.spacing, window, 1)

        # same grid, same values (up to interpolation rounding)?
        row = res.ct_studies.iloc[0]
        ours = load_nifti(resolve_path(row.volume_path, cfg.data_root))
        folder = next(f for f in folders if _grid_of(f, args.spacing) == Grid.of(ours).to_dict())
        theirs = load_nifti(tmp / "sitk_par" / f"{folder.name}.nii.gz")
        same_grid = ours.shape == theirs.shape and np.allclose(ours.affine, theirs.affine, atol=1e-3)
        diff = np.abs(ours.array.astype(np.int32) - theirs.array.astype(np.int32)) if same_grid else None

        def line(name: str, sec: float) -> str:
            return f"{name:<34} {sec:8.2f} s  {args.studies / sec * 60:8.1f} studies/min  {mb / sec:8.1f} MB/s"

        print(f"\n{'':<34} {'wall':>10}  {'throughput':>21}  {'':>13}")
        print(line("floor (read bytes, 1 process)", t_floor))
        print(line(f"ours ({args.workers} processes)", t_ours))
        print(line(f"SimpleITK ({args.workers} processes x 1 thread)", t_sitk_par))
        if t_sitk_seq is not None:
            print(line("SimpleITK (1 process, ITK threads)", t_sitk_seq))
        print(f"\nratio ours/SimpleITK ({args.workers} proc): {t_ours / t_sitk_par:.2f} (time; < 1 = ours faster, speed-up {t_sitk_par / t_ours:.2f}x)")
        if t_sitk_seq is not None:
            print(f"ratio ours/SimpleITK (1 proc):     {t_ours / t_sitk_seq:.2f} (speed-up {t_sitk_seq / t_ours:.2f}x)")
        print(f"ratio ours/floor:                  {t_ours / t_floor:.1f}")
        if diff is not None:
            print(f"same grid as SimpleITK: yes; |ours - SimpleITK| HU: mean {diff.mean():.3f}, 99.9th pct {np.percentile(diff, 99.9):.0f}, max {diff.max()}")
        else:
            print("same grid as SimpleITK: NO (shape/affine differ)")
        steps = ["read", "decode", "rescale", "hu_check", "resample", "write"]
        busy = sum(res.timings.get(k, 0.0) for k in steps)
        print("\nour cost breakdown (worker CPU seconds summed over studies; scan is wall time in the parent):")
        print(f"  {'scan (header-only reads)':<28} {res.timings.get('scan', 0.0):7.2f} s")
        labels = {"read": "full read + header parse", "decode": "pixel decode", "rescale": "HU rescale", "hu_check": "HU sanity check", "resample": "resample (torch)", "write": "write int16 .nii.gz"}
        for k in steps:
            v = res.timings.get(k, 0.0)
            print(f"  {labels[k]:<28} {v:7.2f} s  {100 * v / max(busy, 1e-9):5.1f} %")
        write_record("ingest", {
            "seconds": {"floor": round(t_floor, 3), "ours": round(t_ours, 3), "sitk_parallel": round(t_sitk_par, 3),
                        "sitk_sequential": None if t_sitk_seq is None else round(t_sitk_seq, 3)},
            "baseline": f"SimpleITK ImageSeriesReader + Resample, {args.workers} processes x 1 thread",
            "ratio_ours_to_sitk": round(t_ours / t_sitk_par, 3), "ratio_ours_to_floor": round(t_ours / t_floor, 2),
            "ratio_ours_to_sitk_sequential": None if t_sitk_seq is None else round(t_ours / t_sitk_seq, 3),
            "studies_per_min_ours": round(args.studies / t_ours * 60, 1), "megabytes": round(mb, 1),
            "same_grid_as_sitk": bool(same_grid),
            "abs_hu_difference": None if diff is None else {"mean": round(float(diff.mean()), 4), "p99_9": float(np.percentile(diff, 99.9)),
                                                            "max": int(diff.max())},
            "our_cost_s": {"scan": round(res.timings.get("scan", 0.0), 3), **{k: round(res.timings.get(k, 0.0), 3) for k in steps}},
        }, script=__file__, argv=argv, out=args.out,
            inputs={"archive": "synthetic DICOM (pipeline.synthetic.dicom_writer)", "studies": args.studies, "slices": args.slices,
                    "size": args.size, "spacing_mm": args.spacing, "workers": args.workers})
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
