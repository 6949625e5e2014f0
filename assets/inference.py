"""The trained model applied to the archive: per-organ and whole-study embeddings of every ingested study."""

from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.metadata import image_md
from assets.partitions import SHARDS, SINGLE_RUN
from assets.queues import GPU
from assets.resources import DataRoot
from assets.training import verified_model
from pipeline.tables import resolve_path

GROUP = "inference"
COLUMNS = ["study_id", "organ", "embedding", "shard"]  # the shard goes into the path, tables/study_embeddings/shard=<key>/


class EmbeddingSettings(dg.Config):
    queries: list[str] = Field(default=["mass of the liver", "the spleen"], description="Texts mapped onto the first studies as heatmaps, shown in the UI.")
    heatmap_studies: int = Field(default=2, ge=0, description="Studies of the run whose query heatmaps are computed and shown.")
    device: str = Field(default="auto", description="'auto' (CUDA when present), 'cpu' or 'cuda[:N]'.")
    precision: Literal["float32", "bf16"] = Field(default="float32", description="bf16 autocasts the image encoder (GPU).")


@dg.asset(
    group_name=GROUP, ins={"ct_studies": dg.AssetIn(), "grounded_model": dg.AssetIn()}, deps=[dg.AssetKey("organ_masks")],
    io_manager_key="table_io", partitions_def=SHARDS, backfill_policy=SINGLE_RUN, kinds={"pytorch"}, op_tags=GPU,  # runs the image encoder
    description="Per shard, one row per (study, organ): the grounded model's organ embeddings (each organ cropped as the "
                "model was trained) and a 'whole_study' row; query heatmaps of a few studies in the metadata.",
)
def study_embeddings(context: dg.AssetExecutionContext, config: EmbeddingSettings, data: DataRoot, ct_studies: pd.DataFrame,
                     grounded_model: dict) -> dg.Output[pd.DataFrame]:
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
    for sid, vpath, shard in zip(ct_studies["study_id"], ct_studies["volume_path"], ct_studies["shard"]):
        mask = root / "masks" / f"{sid}.nii.gz"
        if not mask.is_file():  # rejected by segmentation: recorded there
            skipped.append(sid)
            continue
        inputs.append(StudyInput(sid, volume=str(resolve_path(vpath, root)), mask=str(mask), heatmaps=len(inputs) < config.heatmap_studies))
        shard_of[sid] = shard
    rows, pictures = [], {}
    for result in infer(model_path, inputs, options):  # one model load for every shard of the run (a study without organs raises)
        rows.append(result.embeddings.assign(study_id=result.study_id, shard=shard_of[result.study_id])[COLUMNS])
        for query, heat in result.heatmaps.items():
            pictures[f"heatmap_{len(pictures)}"] = image_md(heatmap_png(result.grid.array, heat, f"{result.study_id}: {query}"), query)
        context.log.info(f"{result.study_id} embedded ({len(result.embeddings) - 1} organs), {len(shard_of)} studies in the run")
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=COLUMNS)
    # the table IO manager writes each shard of the run (an empty one where it has no study) and records the schema
    return dg.Output(table, metadata={"studies": int(table["study_id"].nunique()), "without_mask": len(skipped),
                                      "model_sha256": grounded_model["sha256"], **pictures})
