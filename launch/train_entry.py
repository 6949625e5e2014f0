"""Training entry point, run by a Dagster asset through Dagster Pipes or by hand.

    torchrun --nproc_per_node=N launch/train_entry.py --config cfg.json --data-root D --out O
    python launch/train_entry.py --preset demo --data-root D --out O

``--config`` is a JSON object of ``TrainConfig`` fields (partial is fine; nested ``model`` /
``data`` dicts), applied on top of ``--preset``. When Dagster launched the process (its Pipes
environment variables are set), rank 0 opens the Pipes context, streams every logged step with
``pipes.log.info`` and reports the final metadata with ``report_asset_materialization``; the other
ranks only train. All logic lives in ``model.train``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from model.config import TrainConfig, benchmark, demo, paper
from model.train import TrainResult, train

PRESETS = {"demo": demo, "benchmark": benchmark, "paper": paper}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="JSON file of TrainConfig fields (overrides the preset)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--data-root", type=Path, default=Path(os.environ.get("CTGLIP_DATA", "data")))
    p.add_argument("--out", type=Path, required=True, help="output folder (checkpoints, model/ = the exported model, loss curve)")
    return p.parse_args(argv)


def load_config(path: Path | None, preset: str) -> TrainConfig:
    base = PRESETS[preset]()
    if path is None:
        return base
    return TrainConfig.from_dict(json.loads(path.read_text()), base=base)


def _launched_by_dagster() -> bool:
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR

    return DAGSTER_PIPES_CONTEXT_ENV_VAR in os.environ


def materialization_metadata(result: TrainResult) -> dict[str, Any]:
    meta: dict[str, Any] = {f"final_{k}": {"raw_value": v, "type": "float"} for k, v in result.final_losses.items()}
    meta |= {
        "steps": {"raw_value": result.steps, "type": "int"},
        "samples_per_s": {"raw_value": result.samples_per_s, "type": "float"},
        "peak_rss_mb": {"raw_value": result.peak_rss_mb, "type": "float"},
        "world_size": {"raw_value": result.world_size, "type": "int"},
        "checkpoint_path": {"raw_value": str(result.checkpoint_path), "type": "path"},
        "model_path": {"raw_value": str(result.model_path), "type": "path"},
        "loss_curve_path": {"raw_value": str(result.loss_curve_path), "type": "path"},
    }
    return meta


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s rank{rank} %(name)s %(levelname)s %(message)s")
    config = load_config(args.config, args.preset)
    with ExitStack() as stack:
        pipes = None
        if rank == 0 and _launched_by_dagster():
            from dagster_pipes import open_dagster_pipes

            pipes = stack.enter_context(open_dagster_pipes())

        def log(record: dict[str, float]) -> None:
            if pipes is not None:
                pipes.log.info(json.dumps(record, sort_keys=True))

        result = train(config, args.data_root, args.out, log=log if pipes is not None else None)
        if pipes is not None:
            pipes.report_asset_materialization(metadata=materialization_metadata(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
