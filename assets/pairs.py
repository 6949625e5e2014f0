"""Grounded pairs: the tables users query first, and the checks that guard training."""


from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from assets.metadata import table_metadata
from assets.privacy import phi_check
from assets.queues import CPU
from assets.resources import DataRoot
from pipeline.pairs import CutRule, PairConfig, PairInputs, mine_pairs
from pipeline.tables import read_table, resolve_path, write_table
from sql import query

GROUP = "pairs"
UPSTREAM = ["ct_studies", "organ_stats", "report_findings", "report_index"]


class PairSettings(dg.Config):
    normal_template: str = Field(default=PairConfig.normal_template, description="Text for organs in the image the report does not mention; {organ} is filled in.")
    split_ratios: list[float] = Field(default=list(PairConfig.split_ratios), description="Train/val/test fractions, by patient.")
    split_salt: str = Field(default=PairConfig.split_salt, description="Salt of the stable patient hash that assigns splits.")
    n_negatives: int = Field(default=PairConfig.n_negatives, description="Dictionary negatives per abnormality pair.")
    seed: int = Field(default=PairConfig.seed, description="Seed for drawing dictionary negatives.")
    cut_organs: CutRule = Field(
        default=PairConfig.cut_organs,
        description="Organs cut by the field of view: exclude (to pair_exclusions), keep_flagged (all kept, cut_by_fov "
        "recorded in grounded_pairs), keep_if_inside (kept when cut_face_ratio <= max_cut_face_ratio).",
    )
    max_cut_face_ratio: float = Field(
        default=PairConfig.max_cut_face_ratio, ge=0.0, le=1.0,
        description="keep_if_inside: largest kept ratio of the organ's area on the cut face to its largest parallel "
        "cross-section (small = it tapers out inside the scan). At 0.5 the cut organs kept had a median 0.97 of "
        "their volume inside on synthetic anatomy and 0.96 on crops of a real segmentation (bench/cut_organs.py).",
    )

    def to_config(self) -> PairConfig:
        return PairConfig(
            normal_template=self.normal_template, split_ratios=tuple(self.split_ratios), split_salt=self.split_salt,
            n_negatives=self.n_negatives, seed=self.seed, cut_organs=self.cut_organs,
            max_cut_face_ratio=self.max_cut_face_ratio,
        )


def _negatives_for(organ: str) -> list[str]:
    from pipeline.report import abnormalities_for_organ

    return [a.name for a in abnormalities_for_organ(organ)]


def load_pair_inputs(root: Path) -> PairInputs:
    """Read the upstream tables, naming the asset to materialize first when one is missing."""
    missing = [name for name in UPSTREAM if not _exists(name, root)]
    if missing:
        raise dg.Failure(
            description=(
                f"grounded_pairs needs {', '.join(missing)} first. Run `make run`, or step by step:\n"
                "  dagster asset materialize --select source_archive\n"
                "  dagster asset materialize --select ct_studies,rejected_studies,canonical_volumes --partition-range shard-00...shard-07\n"
                "  dagster asset materialize --select 'group:segmentation' --partition-range shard-00...shard-07\n"
                "  dagster asset materialize --select report_findings,report_index"
            )
        )
    studies = read_table("ct_studies", root)
    masks = {s: f"masks/{s}.nii.gz" for s in studies["study_id"]}  # relative to the data root, as volume_path
    index = read_table("report_index", root)
    readable = frozenset(index.loc[index["has_text"], "report_id"])
    return PairInputs(studies, read_table("organ_stats", root), read_table("report_findings", root), readable, masks)


def _exists(name: str, root: Path) -> bool:
    try:
        read_table(name, root, columns=[])
        return True
    except FileNotFoundError:
        return False


@dg.multi_asset(
    specs=[
        dg.AssetSpec("grounded_pairs", group_name=GROUP, deps=UPSTREAM, description="One row per (study, organ): organ-level text, mask reference, status, split."),
        dg.AssetSpec("abnormality_pairs", group_name=GROUP, deps=UPSTREAM, description="One row per (study, organ, abnormality) with dictionary negatives."),
        dg.AssetSpec("pair_exclusions", group_name=GROUP, deps=UPSTREAM, description="Every organ not paired, with its reason."),
        dg.AssetSpec("study_texts", group_name=GROUP, deps=UPSTREAM, description="Whole-report text per study (findings + impression) for the global CLIP baseline."),
    ],
    can_subset=True,
    op_tags=CPU,
)
def pair_tables(context: dg.AssetExecutionContext, config: PairSettings, data: DataRoot):
    root = data.root()
    tables = mine_pairs(load_pair_inputs(root), config.to_config(), negatives_for=_negatives_for)
    selected = {k.to_user_string() for k in context.selected_asset_keys}
    for name in ("grounded_pairs", "abnormality_pairs", "pair_exclusions", "study_texts"):
        if name not in selected:
            continue
        df: pd.DataFrame = getattr(tables, name)
        path = write_table(df, name, root)
        meta = table_metadata(df, path)
        if name == "grounded_pairs":
            meta["text_source"] = dg.MetadataValue.json(df["text_source"].value_counts().to_dict())
            meta["status"] = dg.MetadataValue.json(df["status"].value_counts().to_dict())
            meta["split"] = dg.MetadataValue.json(df["split"].value_counts().to_dict())
            meta["cut_rule"] = config.to_config().cut_rule
            meta["cut_by_fov_kept"] = int(df["cut_by_fov"].sum())
        if name == "pair_exclusions":
            meta["reasons"] = dg.MetadataValue.json(df["reason"].value_counts().to_dict())
        context.log.info(f"{name}: {len(df)} rows -> {path}")
        yield dg.MaterializeResult(asset_key=name, metadata=meta)


def _rows_check(name: str, root: Path) -> dg.AssetCheckResult:
    rows = query(name, root)
    return dg.AssetCheckResult(
        passed=rows.empty,
        metadata={"offending_rows": len(rows), "rows": dg.MetadataValue.md(rows.head(20).to_markdown(index=False) if len(rows) else "none")},
    )


_REASON_WORDS = {
    "cut_by_fov": "organs cut by the field of view",
    "described_not_segmented": "organs described but not segmented",
    "study_without_report": "organs or studies without a report",
}


def why_no_pairs(exclusions: pd.DataFrame, rejected: pd.DataFrame | None = None) -> str:
    """One line on why grounded_pairs is empty, from pair_exclusions' reasons (and rejected studies)."""
    parts = []
    if rejected is not None and len(rejected):
        parts.append(f"{rejected['study_id'].nunique()} studies rejected (see rejected_studies)")
    counts = exclusions["reason"].fillna("unknown").value_counts()
    for reason, n in counts.items():
        parts.append(f"{n} {_REASON_WORDS.get(reason, 'organs ' + reason.replace('_', ' '))}")
    if not parts:
        parts.append("no study has organ statistics (materialize organ_stats, or see rejected_studies)")
    return "0 pairs: " + ", ".join(parts) + "; see pair_exclusions"


@dg.asset_check(asset="grounded_pairs", blocking=True, op_tags=CPU, description="At least one pair; when none, says why from pair_exclusions.")
def has_pairs(data: DataRoot) -> dg.AssetCheckResult:
    root = data.root()
    n = len(read_table("grounded_pairs", root, columns=["pair_id"]))
    if n:
        return dg.AssetCheckResult(passed=True, metadata={"pairs": n})
    try:
        rejected = read_table("rejected_studies", root, columns=["study_id"])
    except FileNotFoundError:
        rejected = None
    exclusions = read_table("pair_exclusions", root, columns=["study_id", "reason"])
    return dg.AssetCheckResult(passed=False, description=why_no_pairs(exclusions, rejected), metadata={
        "pairs": 0, "reasons": dg.MetadataValue.json(exclusions["reason"].fillna("unknown").value_counts().to_dict())})


@dg.asset_check(asset="grounded_pairs", blocking=True, op_tags=CPU, description="No patient appears in two splits (sql/check_patient_leakage.sql).")
def no_patient_leakage(data: DataRoot) -> dg.AssetCheckResult:
    return _rows_check("check_patient_leakage", data.root())


@dg.asset_check(asset="grounded_pairs", blocking=True, op_tags=CPU, description="Every pair has non-empty text (sql/check_empty_text.sql).")
def no_empty_text(data: DataRoot) -> dg.AssetCheckResult:
    return _rows_check("check_empty_text", data.root())


def _is_file(path: object, root: Path) -> bool:
    return isinstance(path, str) and bool(path) and resolve_path(path, root).is_file()


@dg.asset_check(asset="grounded_pairs", blocking=True, op_tags=CPU, description="Every pair's volume and organ mask file exists.")
def mask_files_exist(data: DataRoot) -> dg.AssetCheckResult:
    root = data.root()
    pairs = read_table("grounded_pairs", root, columns=["study_id", "volume_path", "mask_path"]).drop_duplicates("study_id")
    # plain bool arrays: an empty frame's map() keeps the string dtype, on which ~ and | fail
    ok = np.array([_is_file(v, root) and _is_file(m, root) for v, m in zip(pairs["volume_path"].tolist(), pairs["mask_path"].tolist())], dtype=bool)
    missing = pairs[~ok]
    return dg.AssetCheckResult(
        passed=missing.empty,
        metadata={"studies_missing_files": len(missing), "rows": dg.MetadataValue.md(missing.head(20).to_markdown(index=False) if len(missing) else "none")},
    )


@dg.asset_check(asset="grounded_pairs", blocking=True, op_tags=CPU, description="No PHI pattern (names, dates, numbers, addresses, "
                "e-mail) in any text column of any table under the data root (pipeline.deid), before training reads them.")
def no_phi_in_tables(data: DataRoot) -> dg.AssetCheckResult:
    return phi_check(data.root())


CHECKS = [has_pairs, no_patient_leakage, no_empty_text, mask_files_exist, no_phi_in_tables]
