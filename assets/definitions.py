"""The one `Definitions` of ct-glip: every asset group, check and resource.

Loaded by `dagster dev` / `dagster asset materialize` from the repo root ([tool.dagster] in pyproject.toml).
"""

import dagster as dg

from assets import evaluation, inference, ingest, pairs, reports, segmentation, training
from assets.io import JsonIOManager
from assets.resources import ArchiveSource, DataRoot
from assets.segmentation import Segmenter

defs = dg.Definitions(
    assets=[
        ingest.source_archive, ingest.ingest, segmentation.segmentation, segmentation.lesion_masks,
        reports.report_tables, pairs.pair_tables, training.grounded_model, training.global_model,
        evaluation.evaluation_report, inference.study_embeddings,
    ],
    asset_checks=[*ingest.CHECKS, *reports.CHECKS, *pairs.CHECKS],
    resources={
        "data": DataRoot(),
        "source": ArchiveSource(),
        "segmenter": Segmenter(),
        "pipes": dg.PipesSubprocessClient(),
        "json_io": JsonIOManager(),
    },
)
