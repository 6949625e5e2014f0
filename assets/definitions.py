"""The one `Definitions` of ct-glip: every asset group, check and resource.

Loaded by `dagster dev` / `dagster asset materialize` from the repo root ([tool.dagster] in pyproject.toml).
"""

import dagster as dg

from assets import ingest, pairs, reports, segmentation
from assets.resources import ArchiveSource, DataRoot
from assets.segmentation import Segmenter

defs = dg.Definitions(
    assets=[ingest.source_archive, ingest.ingest, segmentation.segmentation, reports.report_tables, pairs.pair_tables],
    asset_checks=[*ingest.CHECKS, *pairs.CHECKS],
    resources={"data": DataRoot(), "source": ArchiveSource(), "segmenter": Segmenter()},
)
