"""`make run`: materialize the whole asset graph with the Dagster CLI, shard by shard, then print where things are.

Each step is a real `dagster asset materialize` run recorded in $DAGSTER_HOME, so the runs show up in the UI.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from assets.partitions import SHARD_KEYS
from pipeline.tables import data_root

STEPS: tuple[tuple[str, bool], ...] = (
    # (selection, sharded)
    ("source_archive", False),
    ("ct_studies,rejected_studies,canonical_volumes", True),
    ("group:segmentation", True),
    ("group:reports", False),
    ("group:pairs", False),
    # one model at a time, so both get the same two cores and their throughput compares
    ("grounded_model", False),
    ("global_model", False),
    ("group:evaluation", False),
    ("group:inference", True),
)


def _cmd(selection: str, sharded: bool, config: str | None) -> list[str]:
    exe = Path(sys.executable).with_name("dagster")
    cmd = [str(exe), "asset", "materialize", "-m", "assets.definitions", "--select", selection]
    if sharded:
        cmd += ["--partition-range", f"{SHARD_KEYS[0]}...{SHARD_KEYS[-1]}"]
    if config:
        cmd += ["-c", config]
    return cmd


def ensure_dagster_home(env: dict[str, str] = os.environ) -> Path | None:
    """Create $DAGSTER_HOME (and an empty dagster.yaml) where it is set but missing: the Dagster CLI refuses a
    home that does not exist, which would fail the first step of a run pointed at a new folder."""
    home = env.get("DAGSTER_HOME")
    if not home:
        return None
    path = Path(home)
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").touch()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assets.run_all",
        description="Materialize every ct-glip asset (source -> ingest -> segmentation -> reports -> pairs -> training -> evaluation).",
    )
    parser.add_argument("--config", "-c", default=os.environ.get("CTGLIP_RUN_CONFIG"), help="Dagster run config YAML (e.g. to point ArchiveSource at your DICOM folder); default $CTGLIP_RUN_CONFIG.")
    parser.add_argument("--until", default=None, help="Stop after this group (e.g. pairs) for a quicker run.")
    args = parser.parse_args(argv)

    root = data_root()
    ensure_dagster_home()
    started = time.time()
    for selection, sharded in STEPS:
        step = time.time()
        print(f"\n==> dagster asset materialize --select '{selection}'" + (" (all shards)" if sharded else ""), flush=True)
        done = subprocess.run(_cmd(selection, sharded, args.config))
        if done.returncode != 0:
            print(f"step '{selection}' failed (exit {done.returncode}); see the run in the UI: make ui", file=sys.stderr)
            return done.returncode
        print(f"    done in {time.time() - step:.0f} s", flush=True)
        if args.until and selection.endswith(args.until):
            break

    print(f"\nAll assets materialized in {time.time() - started:.0f} s.")
    print(f"Tables:   {root / 'tables'}  (pandas: pd.read_parquet('{root / 'tables' / 'grounded_pairs.parquet'}'))")
    print(f"Dagster:  runs recorded in {os.environ.get('DAGSTER_HOME', '~/.dagster')}; open the UI with `make ui` -> http://127.0.0.1:3000")
    report = root / "reports" / "evaluation_report.md"
    if report.is_file():
        print("\n" + report.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
