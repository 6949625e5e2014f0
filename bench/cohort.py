"""The benchmark cohort, shared by bench/benchmark.py and bench/ablate.py so that choices are made on the very cohort
the benchmark tests: its options, its run config, and its build through the asset graph (reused while its
fingerprint, run config and table-making code, matches the stamp the last build left)."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The cohort, shared with bench/ablate.py so that choices are made on the very cohort the benchmark tests.
DEFAULT_ROOT = REPO / "data" / "benchmark"  # beside, not inside, `make run`'s demo tables; `make clean` removes it
COHORT_PRESET = "benchmark"  # pipeline.synthetic.cohort.PRESETS
COHORT_STUDIES = 640
COHORT_SEED = 2
# train / val / test by patient: a test split of at least 200 studies (issue 33) without building ~1,400 studies at
# the pair tables' default 70 / 15 / 15
COHORT_SPLIT = (0.5, 0.15, 0.35)
COHORT_STAMP = "benchmark_cohort.json"  # under the data root: what was built, from which code
CODE = ("pipeline", "assets", "sql")  # what the tables up to the pairs are made by


def cohort_run_config(preset: str, n_studies: int, seed: int, split: tuple[float, ...] = COHORT_SPLIT) -> dict:
    """The Dagster run config that selects the synthetic cohort (ArchiveSource) and its split shares: the generator
    needs them to give evaluation reports the reserved phrasing, the pair tables to split by them."""
    source = {"kind": "synthetic", "preset": preset, "n_studies": n_studies, "seed": seed, "split_ratios": list(split)}
    return {"resources": {"source": {"config": source}}, "ops": {"pair_tables": {"config": {"split_ratios": list(split)}}}}


def code_fingerprint() -> str:
    """sha256 of the sources that make the tables (relative names and bytes), uncommitted edits included."""
    h = hashlib.sha256()
    for d in CODE:
        for f in sorted((REPO / d).rglob("*")):
            if f.is_file() and f.suffix in (".py", ".sql"):
                h.update(str(f.relative_to(REPO)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()


def cohort_fingerprint(run_config: dict) -> str:
    """What a built cohort depends on: the run config and the code that makes the tables."""
    return hashlib.sha256(json.dumps({"run_config": run_config, "code": code_fingerprint()}, sort_keys=True).encode()).hexdigest()


def build_cohort(root: Path, run_config: dict) -> dict:
    """Materialize ``run_config``'s cohort under ``root`` up to the pair tables through the asset graph
    (``python -m launch.run_all --until pairs``), unless ``root`` already holds it: the stamp's fingerprint (run
    config and code) matches and the pair table is there. Returns the cohort record for benchmark.json."""
    from pipeline.atomic import write_json
    from pipeline.tables import table_path

    fp = cohort_fingerprint(run_config)
    stamp = root / COHORT_STAMP
    old = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if old.get("fingerprint") == fp and table_path("grounded_pairs", root).exists():
        logging.info("cohort under %s unchanged (fingerprint %s); not rebuilt", root, fp[:12])
        return old | {"rebuilt": False}
    stamp.unlink(missing_ok=True)  # a root stopped half-way never matches
    root.mkdir(parents=True, exist_ok=True)
    config = root / "benchmark_run_config.json"  # JSON is YAML: what run_all --config reads
    write_json(run_config, config)
    cmd = [sys.executable, "-m", "launch.run_all", "--config", str(config), "--until", "pairs"]
    logging.info("building the cohort under %s: %s", root, " ".join(cmd))
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "CTGLIP_DATA": str(root)})
    if done.returncode != 0:
        raise RuntimeError(f"building the benchmark cohort failed (exit {done.returncode}): {' '.join(cmd)} with CTGLIP_DATA={root}")
    record = {"fingerprint": fp, "run_config": run_config, "build_s": round(time.perf_counter() - t0, 1),
              "spec": json.loads((root / "source" / "cohort.json").read_text())}  # what source_archive generated
    write_json(record, stamp)
    return record | {"rebuilt": True}


def add_cohort_args(ap: argparse.ArgumentParser) -> None:
    """The cohort options, the same in bench/benchmark.py and bench/ablate.py."""
    ap.add_argument("--data-root", type=Path, default=DEFAULT_ROOT,
                    help="the cohort's data root: built there (or reused when its fingerprint matches) unless --no-build")
    ap.add_argument("--studies", type=int, default=COHORT_STUDIES, help="studies in the synthetic cohort (default %(default)s)")
    ap.add_argument("--cohort-seed", type=int, default=COHORT_SEED, help="the cohort generator's seed (default %(default)s)")
    ap.add_argument("--cohort-preset", default=COHORT_PRESET, choices=("benchmark", "demo"),
                    help="the synthetic cohort (pipeline.synthetic.cohort.PRESETS)")
    ap.add_argument("--no-build", action="store_true",
                    help="read --data-root as it is (materialized elsewhere); the cohort options are then unused")


def prepare_cohort(args: argparse.Namespace) -> dict:
    """Build or reuse the cohort the options name; with --no-build, only say where it came from."""
    if args.no_build:
        return {"built_by": "elsewhere (--no-build)"}
    return build_cohort(args.data_root, cohort_run_config(args.cohort_preset, args.studies, args.cohort_seed))
