"""Segmentation assets: organ label maps on the canonical grid and per-organ statistics."""


from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from assets.io import MATERIALIZED_WITH
from assets.metadata import image_md
from assets.partitions import N_SHARDS, SHARDS, SINGLE_RUN
from assets.queues import CPU, GPU
from assets.resources import ArchiveSource, DataRoot
from pipeline.ids import pseudonym
from pipeline.ingest import REJECTED_COLUMNS as INGEST_REJECTED
from pipeline.ingest import shard_of
from pipeline.segment import MaskNotFoundError, SegmenterConfig, StatsConfig, coverage_png, manifest_problems, overlay_png, segment
from pipeline.segment.batch import REJECTED_COLUMNS, SegmentJob, segment_studies
from pipeline.tables import read_table, resolve_path, write_table
from pipeline.volume import Volume, load_nifti, save_nifti

GROUP = "segmentation"
CANONICAL_VOLUMES = dg.AssetKey("canonical_volumes")  # files, not a table: a dependency, not an input
# segmentation's rejections, stored beside ingest's with their columns (all text; the shard is in the path)
REJECTED_FILE = pa.schema([(c, pa.string()) for c in INGEST_REJECTED if c != "shard"])


class Segmenter(dg.ConfigurableResource):
    """Which segmenter fills organ_masks: masks that came with the studies, or TotalSegmentator."""

    backend: Literal["precomputed", "totalsegmentator"] = Field(
        default="precomputed",
        description="precomputed: masks listed in the source's masks manifest; totalsegmentator: run it (needs its weights, docs/OWN_ARCHIVE.md).",
    )
    label_space: Literal["v2", "v1"] = Field(default="v2", description="Index space of precomputed multilabel NIfTI masks (v1 = total_v1, relabelled).")
    fast: bool = Field(default=True, description="TotalSegmentator: the 3 mm 'fast' model.")
    device: str = Field(default="auto", description="TotalSegmentator: 'auto' (GPU when available), 'gpu', 'cpu'.")

    def to_config(self, manifest: str | None) -> SegmenterConfig:
        return SegmenterConfig(backend=self.backend, manifest=manifest, label_space=self.label_space, fast=self.fast, device=self.device)


class SegmentationSettings(dg.Config):
    workers: int = Field(default=2, description="Processes for per-study work.")
    min_volume_ml: float = Field(default=StatsConfig.min_volume_ml, description="Organs below this volume are flagged too_small.")
    min_largest_component: float = Field(default=StatsConfig.min_largest_component, description="Organs whose largest component holds less than this share are flagged fragmented.")
    preview_studies: int = Field(default=3, description="Studies shown in the overlay picture.")


@dg.multi_asset(
    outs={
        "organ_masks": dg.AssetOut(group_name=GROUP, dagster_type=dg.Nothing, description="Organ label map per study on the canonical grid (uint8, TotalSegmentator v2 indices), masks/<study_id>.nii.gz."),
        "organ_stats": dg.AssetOut(group_name=GROUP, io_manager_key="table_io", metadata={MATERIALIZED_WITH: "organ_masks,organ_stats"}, description="Per study and organ: volume, bbox, centroid, HU, cut-by-FOV and quality flags."),
    },
    ins={"ct_studies": dg.AssetIn()},
    deps=[CANONICAL_VOLUMES],
    partitions_def=SHARDS,
    backfill_policy=SINGLE_RUN,
    op_tags=GPU,
)
def segmentation(context: dg.AssetExecutionContext, config: SegmentationSettings, data: DataRoot, source: ArchiveSource,
                 segmenter: Segmenter, ct_studies: pd.DataFrame):
    root = data.root()
    manifest = source.paths(root).masks_manifest
    seg_config = segmenter.to_config(str(manifest) if manifest else None)
    stats_config = StatsConfig(min_volume_ml=config.min_volume_ml, min_largest_component=config.min_largest_component)
    all_stats, n_rejected, n_unchanged = [], 0, 0
    bad_rows = _manifest_rejections(root, manifest) if segmenter.backend == "precomputed" else pd.DataFrame(columns=REJECTED_COLUMNS)
    for detail in bad_rows["detail"]:
        context.log.error(f"masks manifest: {detail}")
    for shard in context.partition_keys:
        studies = ct_studies[ct_studies["shard"] == shard]
        jobs = [SegmentJob(s, v, r or "") for s, v, r in zip(studies["study_id"], studies["volume_path"], studies["series_id"])]
        result = segment_studies(
            jobs, root / "masks", seg_config, stats_config, workers=config.workers, data_root=root,
            progress=lambda done, total: context.log.info(f"{shard}: segmented {done}/{total} studies"),
        )
        rejected = pd.concat([result.rejected, bad_rows[bad_rows["shard"] == shard].drop(columns="shard")], ignore_index=True)
        # the one table with two writers: segmentation's rejections sit beside ingest's in each shard's folder
        # (rejected_studies/shard=<key>/segmentation.parquet), with ingest's columns, so the table reads as one
        write_table(rejected.assign(source_format="").reindex(columns=REJECTED_FILE.names), "rejected_studies", root, shard,
                    part="segmentation", schema=REJECTED_FILE)
        all_stats.append(result.organ_stats.assign(shard=shard))
        n_rejected += len(rejected)
        n_unchanged += result.n_unchanged
    stats = pd.concat(all_stats, ignore_index=True)
    studies_done = stats["study_id"].unique().tolist()
    pictures = {}
    if studies_done:
        shown = []
        for sid in studies_done[: config.preview_studies]:
            shown.append((sid, load_nifti(root / "volumes" / f"{sid}.nii.gz"), load_nifti(root / "masks" / f"{sid}.nii.gz")))
        pictures["overlay"] = image_md(overlay_png(shown), "organ overlay")
        pictures["coverage"] = image_md(coverage_png(stats), "organ coverage")
    yield dg.Output(None, output_name="organ_masks", metadata={
        "studies": len(studies_done), "rejected": n_rejected, "unchanged_skipped": n_unchanged,
        "masks_manifest_problems": len(bad_rows), "folder": dg.MetadataValue.path(str(root / "masks")), **pictures})
    meta = {}
    if len(stats):
        meta["organs"] = int(stats["organ"].nunique())
        meta["cut_by_fov"] = int(stats["cut_by_fov"].sum())
    yield dg.Output(stats, output_name="organ_stats", metadata=meta)


def _manifest_rejections(root, manifest) -> pd.DataFrame:
    """One rejection row per bad masks-manifest row (no key, duplicate, matches no ingested study), each in the
    shard of its own id so that every shard's run writes it once. Rows are matched against every shard's studies:
    so these read the whole of ct_studies and rejected_studies, not the run's shards that come in as the input."""
    cols = [*REJECTED_COLUMNS, "shard"]
    if manifest is None or not manifest.is_file():
        return pd.DataFrame(columns=cols)
    studies = read_table("ct_studies", root, columns=["study_id", "series_id"])
    try:
        rejected = set(read_table("rejected_studies", root, columns=["study_id"])["study_id"])
    except FileNotFoundError:
        rejected = set()
    problems = manifest_problems(manifest, set(studies["study_id"]) | rejected, set(studies["series_id"].dropna()) - {""})
    rows = []
    for p in problems:
        sid = pseudonym("study", f"masks-manifest:{manifest}:{p.line}")
        rows.append({"study_id": sid, "stage": "segmentation", "reason": "masks_manifest_row", "detail": p.detail, "shard": shard_of(sid, N_SHARDS)})
    return pd.DataFrame(rows, columns=cols)


@dg.asset(
    group_name=GROUP, ins={"ct_studies": dg.AssetIn()}, deps=[CANONICAL_VOLUMES], partitions_def=SHARDS,
    backfill_policy=SINGLE_RUN, op_tags=CPU,
    description="Tumor masks on the canonical grid (lesions/<study_id>.nii.gz) for the segmentation benchmark, through the precomputed path.",
)
def lesion_masks(context: dg.AssetExecutionContext, data: DataRoot, source: ArchiveSource, ct_studies: pd.DataFrame) -> dg.MaterializeResult:
    root = data.root()
    manifest = source.paths(root).masks_manifest
    lesions = manifest.with_name("lesions_manifest.csv") if manifest else None
    if lesions is None or not lesions.is_file():
        context.log.warning("no lesions manifest beside the masks manifest; tumor segmentation will see no lesions")
        return dg.MaterializeResult(metadata={"studies": 0, "note": "no lesions manifest"})
    config = SegmenterConfig(backend="precomputed", manifest=str(lesions))
    n, missing = 0, 0
    for sid, vpath in zip(ct_studies["study_id"], ct_studies["volume_path"]):
        try:
            mask = segment(sid, load_nifti(resolve_path(vpath, root)), config)
        except MaskNotFoundError:
            missing += 1
            continue
        save_nifti(Volume((mask.array > 0).astype(np.uint8), mask.affine), root / "lesions" / f"{sid}.nii.gz")
        n += 1
    return dg.MaterializeResult(metadata={"studies": n, "without_lesion_file": missing, "folder": dg.MetadataValue.path(str(root / "lesions"))})
