"""The trained model applied to the archive: per-organ and whole-study embeddings of every ingested study."""

from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.metadata import image_md, table_metadata
from assets.partitions import SHARDS, SINGLE_RUN
from assets.queues import GPU
from assets.resources import DataRoot
from assets.training import verified_model
from pipeline.tables import resolve_path, table_path, write_table

GROUP = "inference"
COLUMNS = ["study_id", "organ", "embedding"]


class EmbeddingSettings(dg.Config):
    queries: list[str] = Field(default=["mass of the liver", "the spleen"], description="Texts mapped onto the first studies as heatmaps, shown in the UI.")
    heatmap_studies: int = Field(default=2, ge=0, description="Studies of the run whose query heatmaps are computed and shown.")
    device: str = Field(default="auto", description="'auto' (CUDA when present), 'cpu' or 'cuda[:N]'.")
    precision: Literal["float32", "bf16"] = Field(default="float32", description="bf16 autocasts the image encoder (GPU).")


@dg.asset(
    group_name=GROUP, deps=["ct_studies", "organ_masks"], ins={"grounded_model": dg.AssetIn()}, partitions_def=SHARDS,
    backfill_policy=SINGLE_RUN, kinds={"pytorch"}, op_tags=GPU,  # runs the image encoder
    description="Per shard, one row per (study, organ): the grounded model's organ embeddings (each organ cropped as the "
                "model was trained) and a 'whole_study' row; query heatmaps of a few studies in the metadata.",
)
def study_embeddings(context: dg.AssetExecutionContext, config: EmbeddingSettings, data: DataRoot, grounded_model: dict) -> dg.MaterializeResult:
    # torch and MONAI load here, not at import: a process that only loads the Definitions (a step worker, the UI's
    # code server, a Celery worker) does not pay for them
    from model.inference import InferenceOptions, StudyInput, heatmap_png, infer
    root = data.root()
    model_path = verified_model(grounded_model)
    # the table keeps embeddings only: no zero-shot dictionary scores, whose ~3,000 prompts cost more than
    # embedding the demo's studies (`python -m model.infer` writes them per study)
    options = InferenceOptions(queries=tuple(config.queries), device=config.device, precision=config.precision,
                               text_cache_dir=str(root / "cache" / "text"), dictionary_scores=False)
    inputs, shard_of, skipped = [], {}, []
    for shard in context.partition_keys:
        studies = pd.read_parquet(table_path("ct_studies", root, shard), columns=["study_id", "volume_path"])
        for sid, vpath in zip(studies["study_id"], studies["volume_path"]):
            mask = root / "masks" / f"{sid}.nii.gz"
            if not mask.is_file():  # rejected by segmentation: recorded there
                skipped.append(sid)
                continue
            inputs.append(StudyInput(sid, volume=str(resolve_path(vpath, root)), mask=str(mask), heatmaps=len(inputs) < config.heatmap_studies))
            shard_of[sid] = shard
    rows, pictures = {shard: [] for shard in context.partition_keys}, {}
    for result in infer(model_path, inputs, options):  # one model load for every shard of the run (a study without organs raises)
        rows[shard_of[result.study_id]].append(result.embeddings.assign(study_id=result.study_id)[COLUMNS])
        for query, heat in result.heatmaps.items():
            pictures[f"heatmap_{len(pictures)}"] = image_md(heatmap_png(result.grid.array, heat, f"{result.study_id}: {query}"), query)
        context.log.info(f"{result.study_id} embedded ({len(result.embeddings) - 1} organs), {len(shard_of)} studies in the run")
    tables = []
    for shard, parts in rows.items():
        table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
        write_table(table, "study_embeddings", root, shard)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    meta = table_metadata(table.assign(embedding=table["embedding"].map(lambda e: f"[{len(e)} floats]")), table_path("study_embeddings", root))
    meta.update(studies=int(table["study_id"].nunique()), without_mask=len(skipped), model_sha256=grounded_model["sha256"], **pictures)
    return dg.MaterializeResult(metadata=meta)
