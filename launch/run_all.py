"""`make run`: materialize the whole asset graph, one Dagster run per step, then print where things are.

Every step is a run of the Definitions' asset job recorded in $DAGSTER_HOME, so the runs show up in the UI. They
run in this one process (the in-process executor): each `dagster asset materialize` would start a Python that
imports torch, MONAI and spaCy, and its multiprocess executor another per step and check, which cost more than
the stages on 24 studies. The training steps still run in their own processes (Dagster Pipes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import dagster as dg
import yaml

from assets import definitions
from launch.cli_env import ensure_dagster_home
from assets.partitions import SHARD_KEYS
from pipeline.tables import data_root

STEPS: tuple[tuple[str, bool], ...] = (
    # (selection, sharded)
    ("source_archive", False),
    ("ct_studies,rejected_studies,canonical_volumes", True),
    ("group:segmentation", True),
    ("group:reports", False),
    ("group:pairs", False),
    # both models side by side, one torch thread each (SIDE_BY_SIDE): on two cores that beats one after the
    # other with two threads each, and both still get the same share, so their throughput compares
    ("grounded_model,global_model", False),
    ("group:evaluation", False),
    ("group:inference", True),
)
MODELS = ("grounded_model", "global_model")
SIDE_BY_SIDE = "grounded_model,global_model"


RANGE_TAGS = {"dagster/asset_partition_range_start": SHARD_KEYS[0], "dagster/asset_partition_range_end": SHARD_KEYS[-1]}


def run_step(instance: dg.DagsterInstance, selection: str, sharded: bool, run_config: dict) -> dg.ExecuteInProcessResult:
    """One run of `selection` (as `dagster asset materialize --select` reads it, checks included), all shards
    in one run where `sharded`; recorded in `instance`. Its `success` is False when a step or a blocking check
    failed."""
    repo = definitions.defs.get_repository_def()
    keys = dg.AssetSelection.from_coercible(selection.split(",")).resolve(repo.asset_graph)
    job = repo.get_implicit_job_def_for_assets(keys)
    return job.execute_in_process(
        run_config=run_config, instance=instance, asset_selection=list(keys), tags=RANGE_TAGS if sharded else None, raise_on_error=False,
    )


def models_job() -> dg.JobDefinition:
    """A job of both models (a module-level function, so the multiprocess executor's step processes rebuild it)."""
    job = dg.define_asset_job("make_run_models", selection=list(MODELS))
    return dg.Definitions.merge(definitions.defs, dg.Definitions(jobs=[job])).resolve_job_def("make_run_models")


def run_models_side_by_side(instance: dg.DagsterInstance, run_config: dict):
    """Both trainers in one run, each step in its own process, one torch thread each unless the config says."""
    given = run_config.get("ops") or {}
    ops = {}  # a named job takes config for its own ops only
    for name in MODELS:
        op = dict(given.get(name) or {})
        op["config"] = {"num_threads": 1, **(op.get("config") or {})}
        ops[name] = op
    config = {**run_config, "ops": ops, "execution": {"config": {"multiprocess": {"max_concurrent": len(MODELS)}}}}
    return dg.execute_job(dg.reconstructable(models_job), instance, run_config=config, asset_selection=[dg.AssetKey(m) for m in MODELS])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m launch.run_all",
        description="Materialize every ct-glip asset (source -> ingest -> segmentation -> reports -> pairs -> training -> evaluation).",
    )
    parser.add_argument("--config", "-c", default=os.environ.get("CTGLIP_RUN_CONFIG"), help="Dagster run config YAML (e.g. to point ArchiveSource at your DICOM folder); default $CTGLIP_RUN_CONFIG.")
    parser.add_argument("--until", default=None, help="Stop after this group (e.g. pairs) for a quicker run.")
    args = parser.parse_args(argv)

    root = data_root()
    home = ensure_dagster_home()
    run_config = (yaml.safe_load(Path(args.config).read_text()) or {}) if args.config else {}
    started = time.time()
    times: list[tuple[str, float]] = []
    if home is None:
        print("DAGSTER_HOME is not set: these runs are not kept for the UI (make run sets it)", file=sys.stderr)
    with (dg.DagsterInstance.get() if home else dg.DagsterInstance.ephemeral()) as instance:
        for selection, sharded in STEPS:
            step = time.time()
            print(f"\n==> materialize '{selection}'" + (" (all shards)" if sharded else ""), flush=True)
            side_by_side = selection == SIDE_BY_SIDE and home is not None  # the multiprocess executor needs a kept instance
            result = run_models_side_by_side(instance, run_config) if side_by_side else run_step(instance, selection, sharded, run_config)
            if not result.success:
                print(f"step '{selection}' failed; see the run in the UI: make ui", file=sys.stderr)
                return 1
            times.append((selection, time.time() - step))
            print(f"    done in {times[-1][1]:.0f} s", flush=True)
            if args.until and selection.endswith(args.until):
                break

    total = time.time() - started
    print("\nStep times:")
    for selection, seconds in times:
        print(f"  {seconds:6.0f} s  {selection}")
    print(f"  {total:6.0f} s  all steps")
    print(f"\n{'Assets up to ' + args.until if args.until else 'All assets'} materialized in {total:.0f} s.")
    print(f"Tables:   {root / 'tables'}  (pandas: pd.read_parquet('{root / 'tables' / 'grounded_pairs.parquet'}'))")
    print(f"Dagster:  runs recorded in {os.environ.get('DAGSTER_HOME', '~/.dagster')}; open the UI with `make ui` -> http://127.0.0.1:3000")
    report = root / "reports" / "evaluation_report.md"
    if report.is_file():
        print("\n" + report.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
