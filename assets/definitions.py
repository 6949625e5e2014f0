"""The one `Definitions` of ct-glip: every asset group, check and resource.

Loaded by `dagster dev` / `dagster asset materialize` from the repo root ([tool.dagster] in pyproject.toml). Tables go
through the Parquet IO manager (`table_io`), checkpoint references through the JSON one (`json_io`): assets/io.py.
"""

import dagster as dg

from assets import evaluation, inference, ingest, pairs, reports, segmentation, training
from assets.io import JsonIOManager, ParquetIOManager
from assets.resources import ArchiveSource, DataRoot
from assets.segmentation import Segmenter

ASSETS = [
    ingest.source_archive, ingest.ingest, segmentation.segmentation, segmentation.lesion_masks,
    reports.report_tables, pairs.pair_tables, training.grounded_model, training.global_model,
    evaluation.evaluation_report, inference.study_embeddings,
]
CHECKS = [*ingest.CHECKS, *reports.CHECKS, *pairs.CHECKS]

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    resources={
        "data": DataRoot(),
        "source": ArchiveSource(),
        "segmenter": Segmenter(),
        "pipes": dg.PipesSubprocessClient(),
        "table_io": ParquetIOManager(),
        "json_io": JsonIOManager(),
    },
)
