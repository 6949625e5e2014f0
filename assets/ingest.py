"""Ingest assets: the source archive, the study table, rejected studies and canonical volumes."""


import json
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from assets.io import MATERIALIZED_WITH
from assets.metadata import image_md
from assets.partitions import N_SHARDS, SHARD_KEYS, SHARDS, SINGLE_RUN
from assets.pictures import montage_png
from assets.queues import CPU
from assets.resources import ArchiveSource, DataRoot
from pipeline.atomic import atomic_path, write_json
from pipeline.ctrate import write_ctrate_source
from pipeline.ingest import IngestConfig, ingest_archive
from pipeline.resample import DEMO_SPACING_MM, PAPER_SPACING_MM, ResampleOptions
from pipeline.synthetic.cohort import cohort_spec, generate_cohort
from pipeline.synthetic.implant import sources_in_folder, write_qa_set
from pipeline.tables import resolve_path
from pipeline.volume import load_nifti

GROUP = "ingest"
IDENTIFYING = ("patientname", "patient_name", "patientid", "birth", "accession", "mrn", "institution")


@dg.asset(group_name=GROUP, op_tags=CPU, description="The archive to ingest: generates the embedded synthetic cohort under <data>/source, or records your own archive.")
def source_archive(context: dg.AssetExecutionContext, data: DataRoot, source: ArchiveSource) -> dg.MaterializeResult:
    root = data.root()
    paths = source.paths(root)
    if source.kind == "ctrate":
        return _ctrate_source(context, source, root)
    if source.kind == "real_anatomy":
        return _real_anatomy_source(context, source, root)
    if source.kind != "synthetic":
        return dg.MaterializeResult(metadata={"kind": source.kind, "dicom_dir": str(paths.dicom_dir or ""), "nifti_manifest": str(paths.nifti_manifest or "")})
    spec = cohort_spec(source.preset, n_studies=source.n_studies, seed=source.seed, reserved_phrasing=source.reserved_phrasing,
                       **({"appearance": source.appearance} if source.appearance else {}),
                       **({"split_ratios": tuple(source.split_ratios)} if source.split_ratios else {}))
    stamp = root / "source" / "cohort.json"
    wanted = json.loads(json.dumps(asdict(spec)))
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        context.log.info("synthetic cohort unchanged; not regenerated")
    else:
        context.log.info(f"generating the synthetic cohort: {spec.n_studies} studies, seed {spec.seed}")
        generate_cohort(spec, root / "source")
        _write_lesion_manifest(root / "source")
        write_json(wanted, stamp)
    truth = pd.read_parquet(root / "source" / "truth" / "studies.parquet")
    return dg.MaterializeResult(metadata={
        "kind": "synthetic", "studies": len(truth), "seed": spec.seed,
        "folder": dg.MetadataValue.path(str(root / "source")),
        "fov": dg.MetadataValue.json(truth["fov"].value_counts().to_dict()) if "fov" in truth else None,
    })


def _ctrate_source(context: dg.AssetExecutionContext, source: ArchiveSource, root: Path) -> dg.MaterializeResult:
    """CT-RATE: one manifest row per chosen volume and its report, for the ingest and report stages."""
    manifest, reports, volumes = write_ctrate_source(Path(source.ctrate_dir).expanduser(), source.ctrate_split, source.ctrate_source(root))
    problems = volumes[volumes["problem"] != ""]
    for row in problems.itertuples():
        context.log.warning(f"CT-RATE volume {row.volume_name} left out: {row.problem}")
    return dg.MaterializeResult(metadata={
        "kind": "ctrate", "split": source.ctrate_split, "volumes": len(volumes), "studies": int(volumes["chosen"].sum()),
        "patients": int(volumes["patient_key"].nunique()), "left_out": len(problems),
        "left_out_volumes": dg.MetadataValue.md(problems[["volume_name", "problem"]].head(20).to_markdown(index=False) if len(problems) else "none"),
        "other_reconstructions": int(((volumes["problem"] == "") & ~volumes["chosen"]).sum()),
        "hu_rules": dg.MetadataValue.json(volumes["hu_rule"].value_counts().to_dict()),
        "spacing_rules": dg.MetadataValue.json(volumes["spacing_rule"].str.partition(" (")[0].value_counts().to_dict()),
        "manifest": dg.MetadataValue.path(str(manifest)), "reports": dg.MetadataValue.path(str(reports)),
    })


def _real_anatomy_source(context: dg.AssetExecutionContext, source: ArchiveSource, root: Path) -> dg.MaterializeResult:
    """Real anatomy: lesions painted into each real CT of ``anatomy_dir``, a set the NIfTI route reads as it is."""
    scans = sources_in_folder(Path(source.anatomy_dir).expanduser())
    if not scans:
        raise ValueError(f"no <name>.nii.gz with <name>_seg.nii.gz or <name>_seg/ beside it in {source.anatomy_dir}")
    made = write_qa_set(scans, root / "source", source.n_studies, seed=source.seed, progress=context.log.info)
    return dg.MaterializeResult(metadata={
        "kind": "real_anatomy", "scans": len(scans), "studies": len(made.studies), "lesions": len(made.lesions),
        "written": made.n_written, "unchanged": made.n_skipped, "folder": dg.MetadataValue.path(str(made.out_dir)),
        "lesions_by_kind": dg.MetadataValue.json(made.lesions["kind"].value_counts().to_dict()),
    })


def _write_lesion_manifest(source_dir: Path) -> None:
    """Lesion masks reach the canonical grid through the same precomputed-mask path as organs."""
    lesions = sorted((source_dir / "truth" / "lesions").glob("*.nii.gz"))
    rows = [{"StudyInstanceUID": p.name[: -len(".nii.gz")], "mask_path": f"../truth/lesions/{p.name}", "format": "nifti_multilabel"} for p in lesions]
    with atomic_path(source_dir / "masks" / "lesions_manifest.csv", suffix=".csv") as tmp:
        pd.DataFrame(rows, columns=["StudyInstanceUID", "mask_path", "format"]).to_csv(tmp, index=False)


class IngestSettings(dg.Config):
    spacing_mm: float = Field(default=DEMO_SPACING_MM, description=f"Canonical isotropic spacing in mm (paper scale: "
                              f"{PAPER_SPACING_MM}; the demo default {DEMO_SPACING_MM} keeps `make run` quick).")
    hu_min: int = Field(default=ResampleOptions().hu_window[0], description="HU clip floor before the int16 cast.")
    hu_max: int = Field(default=ResampleOptions().hu_window[1], description="HU clip ceiling before the int16 cast.")
    workers: int = Field(default=2, description="Processes for per-study work.")
    montage_studies: int = Field(default=4, description="Volumes shown in the montage picture.")


STEP = {MATERIALIZED_WITH: "ct_studies,rejected_studies,canonical_volumes"}  # one step makes the three


@dg.multi_asset(
    outs={
        "ct_studies": dg.AssetOut(group_name=GROUP, io_manager_key="table_io", metadata=STEP, description="One row per ingested study: pseudonymous ids, geometry, scanner, HU range, shard."),
        "rejected_studies": dg.AssetOut(group_name=GROUP, io_manager_key="table_io", metadata=STEP, description="Every study or folder that could not be used, with stage and reason (segmentation adds its own, beside ingest's, per shard)."),
        "canonical_volumes": dg.AssetOut(group_name=GROUP, dagster_type=dg.Nothing, description="Resampled volumes: RAS, isotropic spacing, int16 HU NIfTI, volumes/<study_id>.nii.gz."),
    },
    deps=[source_archive],
    partitions_def=SHARDS,
    backfill_policy=SINGLE_RUN,
    op_tags=CPU,
)
def ingest(context: dg.AssetExecutionContext, config: IngestSettings, data: DataRoot, source: ArchiveSource):
    root = data.root()
    paths = source.paths(root)
    ingest_config = IngestConfig(
        data_root=root, dicom_root=paths.dicom_dir, nifti_manifest=paths.nifti_manifest,
        resample=ResampleOptions(spacing=(config.spacing_mm,) * 3, hu_window=(config.hu_min, config.hu_max)),
        workers=config.workers, n_shards=N_SHARDS,
    )
    keys = list(context.partition_keys)
    progress = lambda done, total: context.log.info(f"ingested {done}/{total} studies")  # noqa: E731
    # One scan serves every shard of the run; a single shard scans and keeps only its own studies.
    results = [ingest_archive(ingest_config, None if keys == SHARD_KEYS else key, progress) for key in ([None] if keys == SHARD_KEYS else keys)]
    studies = pd.concat([r.ct_studies for r in results], ignore_index=True)
    rejected = pd.concat([r.rejected_studies for r in results], ignore_index=True)
    unchanged = sum(r.n_unchanged for r in results)
    timings: dict[str, float] = {}
    for r in results:  # one call per shard when only some shards run: sum their step times
        for k, v in r.timings.items():
            timings[k] = round(timings.get(k, 0.0) + v, 2)
    context.log.info(f"{len(studies)} studies, {len(rejected)} rejected, {unchanged} unchanged and skipped")

    # the table IO manager stores each shard's rows (by their `shard` column) and records rows, schema and a preview
    yield dg.Output(studies, output_name="ct_studies", metadata={"unchanged_skipped": unchanged, "seconds": dg.MetadataValue.json(timings)})
    shown = rejected[[c for c in ("study_id", "stage", "reason", "detail") if c in rejected]].head(20)
    yield dg.Output(rejected, output_name="rejected_studies", metadata={
        "reasons": dg.MetadataValue.json(rejected["reason"].value_counts().to_dict()),
        "rejections": dg.MetadataValue.md(shown.to_markdown(index=False) if len(shown) else "none")})
    vmeta: dict = {"volumes": len(studies), "folder": dg.MetadataValue.path(str(root / "volumes"))}
    if len(studies):
        shown = [load_nifti(resolve_path(p, root)) for p in studies["volume_path"].head(config.montage_studies)]
        vmeta["montage"] = image_md(montage_png(shown, list(studies["study_id"].head(config.montage_studies))), "canonical volumes")
    yield dg.Output(None, output_name="canonical_volumes", metadata=vmeta)


@dg.asset_check(asset="ct_studies", op_tags=CPU, description="Every canonical volume has the configured spacing.")
def spacing_is_target(config: IngestSettings, ct_studies: pd.DataFrame) -> dg.AssetCheckResult:
    sp = ct_studies[["spacing_x", "spacing_y", "spacing_z"]].to_numpy(dtype=float)
    bad = ct_studies[~np.isclose(sp, config.spacing_mm, atol=1e-3).all(axis=1)]
    return dg.AssetCheckResult(passed=bad.empty, metadata={"off_target": len(bad), "target_mm": config.spacing_mm})


@dg.asset_check(asset="ct_studies", op_tags=CPU, description="HU range of every volume is plausible CT (air near -1000, no missing or double rescale).")
def hu_range_sane(ct_studies: pd.DataFrame) -> dg.AssetCheckResult:
    studies = ct_studies
    bad = studies[(studies["hu_min"] < -1100) | (studies["hu_min"] > -500) | (studies["hu_max"] > 4000) | (studies["hu_max"] < 100)]
    return dg.AssetCheckResult(passed=bad.empty, metadata={"implausible": len(bad), "hu_min": float(studies["hu_min"].min()) if len(studies) else 0.0, "hu_max": float(studies["hu_max"].max()) if len(studies) else 0.0})


def identifying_columns(df: pd.DataFrame) -> list[str]:
    """Columns whose name suggests a direct identifier, or id columns holding values that are not pseudonyms."""
    bad = [c for c in df.columns if any(w in c.lower().replace(" ", "") for w in IDENTIFYING)]
    for col, prefix in (("patient_id", "pat-"), ("study_id", "stu-"), ("report_id", "rep-")):
        if col in df and not df[col].dropna().astype(str).str.startswith(prefix).all():
            bad.append(col)
    return bad


@dg.asset_check(asset="ct_studies", additional_ins={"rejected_studies": dg.AssetIn()}, blocking=True, op_tags=CPU,
                description="No identifying columns or raw identifiers in ct_studies and rejected_studies.")
def no_identifying_columns(ct_studies: pd.DataFrame, rejected_studies: pd.DataFrame) -> dg.AssetCheckResult:
    found = {"ct_studies": identifying_columns(ct_studies), "rejected_studies": identifying_columns(rejected_studies)}
    return dg.AssetCheckResult(passed=not any(found.values()), metadata={"found": dg.MetadataValue.json(found)})


CHECKS = [spacing_is_target, hu_range_sane, no_identifying_columns]
