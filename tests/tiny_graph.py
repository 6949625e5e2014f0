"""The whole asset graph at a tiny budget, with the real packaged text encoder, materialized once per test session
into a persistent Dagster home, one run per step as `make run` does.

`test_materialize` checks its tables; `test_table_io` its recorded schemas; `test_ui` serves the same runs in the real UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from assets import definitions, evaluation, inference, ingest, pairs, reports, segmentation, training
from assets.io import JsonIOManager, ParquetIOManager
from assets.partitions import SHARD_KEYS
from assets.resources import ArchiveSource, DataRoot
from assets.segmentation import Segmenter

RANGE = {"dagster/asset_partition_range_start": SHARD_KEYS[0], "dagster/asset_partition_range_end": SHARD_KEYS[-1]}
# batch 8: two organ classes of four (grounded), two studies of four organs (global): the demo's groups. The text
# encoder is the preset's, the packaged MiniLM: on this graph it took no longer than the fake one when measured
# (issue 32), so the one whole-graph run of the suite uses the real one
TINY_TRAIN = {"steps": 2, "batch_size": 8, "checkpoint_every": 2}


@dataclass
class TinyGraph:
    root: Path  # CTGLIP_DATA of the run
    home: Path  # DAGSTER_HOME holding its runs
    instance: dg.DagsterInstance
    run_ids: list[str] = field(default_factory=list)
    pair_checks_passed: bool = False
    model_card: str = ""  # the grounded model's card as the training asset shows it


def materialize_tiny_graph(base: Path, text_encoder: str | None = None) -> TinyGraph:
    """``text_encoder``: None for the preset's (the packaged MiniLM), or another, e.g. "fake" (seeded word vectors)."""
    root, home = base / "data", base / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    graph = TinyGraph(root, home, dg.DagsterInstance.from_config(str(home)))
    resources = {
        "data": DataRoot(path=str(root)),
        "source": ArchiveSource(n_studies=6, seed=3),
        "segmenter": Segmenter(),
        "pipes": dg.PipesSubprocessClient(),
        "table_io": ParquetIOManager(path=str(root)),
        "json_io": JsonIOManager(path=str(root)),
    }

    def run(selection, **kw):
        # every asset of the Definitions, so that the selected ones load their inputs through the IO managers
        result = dg.materialize([*definitions.ASSETS, *definitions.CHECKS], selection=selection, resources=resources,
                                instance=graph.instance, **kw)
        assert result.success
        graph.run_ids.append(result.run_id)
        return result

    train = {**TINY_TRAIN, "text_encoder": text_encoder} if text_encoder else TINY_TRAIN
    run([ingest.source_archive])
    workers = {"config": {"workers": 1}}
    run([ingest.ingest, segmentation.segmentation, segmentation.lesion_masks], tags=RANGE,
        run_config={"ops": {"ingest": workers, "segmentation": workers}})
    run([reports.report_tables])
    result = run([pairs.pair_tables], run_config={"ops": {"pair_tables": {"config": {"split_ratios": [0.5, 0.25, 0.25]}}}})
    graph.pair_checks_passed = all(e.passed for e in result.get_asset_check_evaluations())
    trained = run([training.grounded_model, training.global_model], run_config={"ops": {
        "grounded_model": {"config": train}, "global_model": {"config": train}}})
    graph.model_card = trained.asset_materializations_for_node("grounded_model")[0].metadata["model_card"].value
    run([evaluation.evaluation_report], run_config={"ops": {"evaluation_report": {"config": {"n_bootstrap": 20, "ts_steps": 1}}}})
    run([inference.study_embeddings], tags=RANGE,
        run_config={"ops": {"study_embeddings": {"config": {"queries": ["the liver"], "heatmap_studies": 1}}}})
    return graph
