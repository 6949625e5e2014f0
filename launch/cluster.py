"""The Definitions for several machines: the assets and checks of assets.definitions, run by Celery workers.

Each step goes to the Celery queue its `dagster-celery/queue` tag names (assets/queues.py). Broker and result
backend come from deploy/cluster/celery.yaml, which the workers read too. The jobs, one per stage, carry
`ctglip/gpu` where the stage holds a GPU, so deploy/cluster/dagster.yaml's QueuedRunCoordinator limits how many
of them run at once.
"""

from pathlib import Path

import dagster as dg
import yaml
from dagster_celery import celery_executor

from assets import definitions

CELERY_YAML = Path(__file__).resolve().parents[1] / "deploy" / "cluster" / "celery.yaml"
GPU_RUN = {"ctglip/gpu": "1"}


def executor_config(path: Path = CELERY_YAML) -> dict:
    """The `execution.config` block of the workers' YAML; {env: ...} values resolve when a run starts."""
    return yaml.safe_load(path.read_text())["execution"]["config"]


JOBS = [
    dg.define_asset_job("source_job", selection=dg.AssetSelection.assets("source_archive"), description="Generate or record the archive."),
    dg.define_asset_job("ingest_job", selection=dg.AssetSelection.groups("ingest") - dg.AssetSelection.assets("source_archive"), description="Ingest shards (cpu)."),
    dg.define_asset_job("segmentation_job", selection=dg.AssetSelection.groups("segmentation"), tags=GPU_RUN, description="Organ masks per shard (gpu)."),
    dg.define_asset_job("reports_job", selection=dg.AssetSelection.groups("reports"), description="Report findings (cpu)."),
    dg.define_asset_job("pairs_job", selection=dg.AssetSelection.groups("pairs"), description="Grounded pairs (cpu)."),
    dg.define_asset_job("training_job", selection=dg.AssetSelection.groups("training"), tags=GPU_RUN, description="Both models (gpu)."),
    dg.define_asset_job("evaluation_job", selection=dg.AssetSelection.groups("evaluation"), tags=GPU_RUN, description="The evaluation (gpu)."),
    dg.define_asset_job("inference_job", selection=dg.AssetSelection.groups("inference"), tags=GPU_RUN, description="Study embeddings per shard (gpu)."),
]

defs = dg.Definitions.merge(
    definitions.defs,
    dg.Definitions(jobs=JOBS, executor=celery_executor.configured(executor_config(), name="celery")),
)
