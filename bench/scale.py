"""Scale plan: per-study cost of each stage and Dagster's per-step overhead measured here, projected to CT-GLIP's
17,702 studies and CT-RATE's 50,188 volumes on N CPU workers and M GPUs.

Measured in this run, on a synthetic cohort materialized from source to pairs with the same runs `make run` makes
(in process, ephemeral instance, temporary data root):
- each stage's seconds per study (its step's start-to-success time in the run's event log, over the studies);
  pair mining's at `--pairs-at` studies on bench/pairs.py's tables, where its fixed costs no longer dominate;
- bytes per study written under the data root (volumes, masks, tables);
- Dagster's per-step overhead, against the named baseline `in-process step`: the same run of `source_archive`
  (cohort unchanged: the stage does no work) in process, and as `dagster asset materialize` in a new process,
  the route the old `make run` took for every step and a multiprocess executor takes per step.

Taken from documentation, labelled as such in the output: TotalSegmentator's GPU seconds per study (original
TotalSegmentator on an NVIDIA RTX 6000, 512 x 512 x 366 CT: 82 s for the 1.5 mm `total` task, 30 s for the 3 mm
`--fast` model, as tabulated on the totalsegmentator-konfai PyPI page). Training is not projected: its cost is
set by epochs and batch size, not per study.

The projection: the CPU stages spread over N workers, TotalSegmentator over M GPUs, shards run in parallel, and
pair mining is one step over the whole table (serial). The synthetic studies are small (3 mm demo grid); real
studies cost more per study on CPU by roughly their voxel ratio, which `--voxel-ratio` applies (default: a
512 x 512 x 300 study resampled to 1.5 mm against the synthetic one, computed from the cohort).

    .venv/bin/python bench/scale.py                 # default: 12 studies, a few minutes on two cores
    .venv/bin/python bench/scale.py --studies 24 --workers 1 4 16 64 --gpus 1 4 16

Writes bench/results/scale.json: the measurements, the baseline and its ratio, and every row of the projection.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dagster as dg  # noqa: E402
import yaml  # noqa: E402

from launch.run_all import run_step  # noqa: E402
from pipeline.tables import read_table  # noqa: E402
from record import write_record  # noqa: E402

log = logging.getLogger("bench.scale")

COHORTS = {"CT-GLIP (17,702 studies)": 17_702, "CT-RATE (50,188 volumes)": 50_188}
TOTALSEG_GPU_S = {"1.5mm": 82.37, "3mm-fast": 30.07}  # documentation, see the module docstring
STEPS = (
    ("source", "source_archive", False),
    ("ingest", "ct_studies,rejected_studies,canonical_volumes", True),
    ("segmentation", "group:segmentation", True),
    ("reports", "group:reports", False),
    ("pairs", "group:pairs", False),
)
CPU_STAGES = ("ingest", "segmentation", "reports")  # per study, parallel over shards and workers
REAL_STUDY_VOXELS = 512 * 512 * 300  # an assumed real study before resampling (stated in the output)


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Each step's start-to-end seconds in a run's event log."""
    return {s.step_key: (s.end_time or 0.0) - (s.start_time or 0.0) for s in instance.get_run_step_stats(run_id)}


def measure(root: Path, n_studies: int) -> dict:
    os.environ["CTGLIP_DATA"] = str(root)
    config = {
        "resources": {"source": {"config": {"n_studies": n_studies, "seed": 1}}},
        "ops": {"pair_tables": {"config": {"split_ratios": [0.5, 0.25, 0.25]}}},
    }
    stage_s: dict[str, float] = {}
    overhead: dict[str, float] = {}
    with dg.DagsterInstance.ephemeral() as instance:
        for name, selection, sharded in STEPS:
            t0 = time.perf_counter()
            result = run_step(instance, selection, sharded, config)
            wall = time.perf_counter() - t0
            assert result.success, f"{name} failed"
            steps = step_seconds(instance, result.run_id)
            stage_s[name] = sum(steps.values())
            overhead[name] = wall - stage_s[name]  # run bookkeeping outside the steps
            log.info(f"{name}: {wall:.1f} s wall, steps {stage_s[name]:.1f} s")
        # the baseline: source_archive again, the cohort unchanged, so the stage itself does nothing
        t0 = time.perf_counter()
        assert run_step(instance, "source_archive", False, config).success
        in_process = time.perf_counter() - t0
    cfg = root / "run.yaml"
    cfg.write_text(yaml.safe_dump(config))
    home = root / "dagster_home"
    home.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "assets.definitions",
                    "--select", "source_archive", "-c", str(cfg)], check=True, capture_output=True,
                   env={**os.environ, "DAGSTER_HOME": str(home)})
    cli = time.perf_counter() - t0

    studies = read_table("ct_studies", root)
    n = len(studies)
    voxels = float((studies["shape_x"] * studies["shape_y"] * studies["shape_z"]).mean()) if "shape_x" in studies else float("nan")
    sizes = {folder: sum(p.stat().st_size for p in (root / folder).rglob("*") if p.is_file()) / n
             for folder in ("source", "volumes", "masks", "lesions", "tables") if (root / folder).is_dir()}
    return {"n": n, "stage_s": stage_s, "run_overhead_s": overhead, "in_process_step_s": in_process, "cli_step_s": cli,
            "sizes": sizes, "voxels": voxels, "spacing": float(studies["spacing_x"].mean())}


def pair_mining_s_per_study(n_studies: int) -> float:
    """Pair mining's seconds per study at a cohort size where its fixed costs no longer count: bench/pairs.py's
    synthetic tables (read from Parquet, then mined), the step's own work on a large cohort."""
    spec = importlib.util.spec_from_file_location("bench_pairs", Path(__file__).with_name("pairs.py"))
    bench_pairs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_pairs)
    with tempfile.TemporaryDirectory() as tmp:
        r = bench_pairs.run(n_studies, 0, Path(tmp))
    return (r["read_s"] + r["mine_s"]) / n_studies


def project(m: dict, n_studies: int, workers: int, gpus: int, totalseg_s: float, voxel_ratio: float) -> dict:
    per_study = {k: v / m["n"] for k, v in m["stage_s"].items()}
    cpu = sum(per_study[k] for k in CPU_STAGES) * voxel_ratio * n_studies / workers
    gpu = totalseg_s * n_studies / gpus
    serial = m["pairs_s_per_study"] * n_studies  # one step over the whole table
    bottleneck = max((("CPU workers", cpu), ("GPUs (TotalSegmentator)", gpu), ("pair mining (serial)", serial)), key=lambda x: x[1])[0]
    # the CPU stages and TotalSegmentator overlap across shards; pair mining waits for both
    return {"wall_h": (max(cpu, gpu) + serial) / 3600, "cpu_h": cpu / 3600, "gpu_h": gpu / 3600, "serial_h": serial / 3600, "bottleneck": bottleneck}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=12, help="synthetic studies to measure on (default 12)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8, 32, 128], help="CPU workers N to project for")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 4, 16], help="GPUs M to project for")
    parser.add_argument("--totalseg", choices=sorted(TOTALSEG_GPU_S), default="1.5mm", help="TotalSegmentator model whose documented GPU time is used")
    parser.add_argument("--pairs-at", type=int, default=2000, help="cohort size at which pair mining's per-study cost is measured (bench/pairs.py tables)")
    parser.add_argument("--voxel-ratio", type=float, default=None, help="CPU cost of a real study over a synthetic one (default: voxel ratio, see the docstring)")
    parser.add_argument("--out", type=Path, default=None, help="the record (default bench/results/scale.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("dagster").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="ctglip-scale-") as tmp:
        m = measure(Path(tmp), args.studies)
    m["pairs_s_per_study"] = pair_mining_s_per_study(args.pairs_at)
    real_voxels = REAL_STUDY_VOXELS * (0.7 / 1.5) ** 3  # 0.7 mm in-plane, ~1 mm slices, to 1.5 mm: an assumption
    ratio = args.voxel_ratio if args.voxel_ratio is not None else max(1.0, real_voxels / m["voxels"])

    print(f"\n## Measured here: {m['n']} synthetic studies, {m['spacing']:.1f} mm grid, {os.cpu_count()} CPU cores\n")
    print("| stage | seconds per study | Dagster run overhead (s) |")
    print("|---|---|---|")
    for name, _, _ in STEPS:
        print(f"| {name} | {m['stage_s'][name] / m['n']:.3f} | {m['run_overhead_s'][name]:.1f} |")
    print(f"\nBaseline `in-process step` (source_archive, nothing to do): {m['in_process_step_s']:.2f} s; "
          f"the same step as `dagster asset materialize` in a new process: {m['cli_step_s']:.1f} s "
          f"= {m['cli_step_s'] / m['in_process_step_s']:.1f}x the baseline.")
    print(f"Pair mining at {args.pairs_at} studies (bench/pairs.py tables): {m['pairs_s_per_study'] * 1e3:.2f} ms per study; "
          f"the pairs step above, at {m['n']} studies, is mostly fixed cost.")
    print("Bytes per study: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in m["sizes"].items()))
    store_per_study = sum(v for k, v in m["sizes"].items() if k != "source") * ratio
    print(f"\nCPU cost of a real study = {ratio:.1f}x a synthetic one (voxel ratio; assumed real study 512x512x300 at "
          f"0.7 mm resampled to 1.5 mm); derived data {store_per_study / 1e6:.1f} MB per real study (scaled the same way).")
    print(f"TotalSegmentator GPU time: {TOTALSEG_GPU_S[args.totalseg]:.0f} s per study ({args.totalseg}; from documentation, not measured here).\n")
    print("| cohort | CPU workers N | GPUs M | CPU stages (h) | TotalSegmentator (h) | pair mining (h) | wall (h) | derived data (TB) | bottleneck |")
    print("|---|---|---|---|---|---|---|---|---|")
    projection = []
    for cohort, n_studies in COHORTS.items():
        for w in args.workers:
            for g in args.gpus:
                p = project(m, n_studies, w, g, TOTALSEG_GPU_S[args.totalseg], ratio)
                projection.append({"cohort": cohort, "cpu_workers": w, "gpus": g, **{k: round(v, 3) if isinstance(v, float) else v for k, v in p.items()},
                                   "derived_tb": round(store_per_study * n_studies / 1e12, 3)})
                print(f"| {cohort} | {w} | {g} | {p['cpu_h']:.1f} | {p['gpu_h']:.1f} | {p['serial_h']:.2f} | {p['wall_h']:.1f} | "
                      f"{store_per_study * n_studies / 1e12:.2f} | {p['bottleneck']} |")
    write_record("scale", {
        "measured": {"studies": m["n"], "spacing_mm": m["spacing"], "stage_s_per_study": {k: v / m["n"] for k, v in m["stage_s"].items()},
                     "run_overhead_s": m["run_overhead_s"], "bytes_per_study": m["sizes"], "pairs_s_per_study": m["pairs_s_per_study"]},
        "baseline": "in-process step (source_archive, nothing to do)", "in_process_step_s": m["in_process_step_s"],
        "cli_step_s": m["cli_step_s"], "ratio_cli_to_in_process": m["cli_step_s"] / m["in_process_step_s"],
        "voxel_ratio": ratio, "totalsegmentator_gpu_s_documented": {args.totalseg: TOTALSEG_GPU_S[args.totalseg]},
        "projection": projection,
    }, script=__file__, argv=argv, out=args.out,
        inputs={"cohort": "synthetic (ArchiveSource seed 1)", "studies": args.studies, "pairs_at": args.pairs_at,
                "workers": args.workers, "gpus": args.gpus})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
