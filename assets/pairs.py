"""Grounded pairs: the tables users query first, and the checks that guard training."""


from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from assets.privacy import phi_check_all
from assets.queues import CPU
from assets.resources import DataRoot
from pipeline.pairs import CutRule, PairConfig, PairInputs, mine_pairs
from pipeline.tables import read_table, resolve_path
from sql import query

GROUP = "pairs"
UPSTREAM = ["ct_studies", "organ_stats", "report_findings", "report_index"]  # the tables pair_tables takes as inputs
ORGAN_MASKS = dg.AssetKey("organ_masks")


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


def pair_inputs(ct_studies: pd.DataFrame, organ_stats: pd.DataFrame, report_findings: pd.DataFrame,
                report_index: pd.DataFrame) -> PairInputs:
    masks = {s: f"masks/{s}.nii.gz" for s in ct_studies["study_id"]}  # relative to the data root, as volume_path
    readable = frozenset(report_index.loc[report_index["has_text"].astype(bool), "report_id"])
    return PairInputs(ct_studies, organ_stats, report_findings, readable, masks)


def load_pair_inputs(root: Path) -> PairInputs:
    """The upstream tables read from a data root, for scripts outside Dagster (bench/cut_organs.py)."""
    return pair_inputs(*(read_table(name, root) for name in UPSTREAM))


@dg.multi_asset(
    outs={name: dg.AssetOut(group_name=GROUP, io_manager_key="table_io", is_required=False, description=text) for name, text in (
        ("grounded_pairs", "One row per (study, organ): organ-level text, mask reference, status, split."),
        ("abnormality_pairs", "One row per (study, organ, abnormality) with dictionary negatives."),
        ("pair_exclusions", "Every organ not paired, with its reason."),
        ("study_texts", "Whole-report text per study (findings + impression) for the global CLIP baseline."),
    )},
    ins={name: dg.AssetIn() for name in UPSTREAM},
    deps=[ORGAN_MASKS],  # the pairs point at the label maps (mask_path): files, not a table
    can_subset=True,
    op_tags=CPU,
)
def pair_tables(context: dg.AssetExecutionContext, config: PairSettings, ct_studies: pd.DataFrame, organ_stats: pd.DataFrame,
                report_findings: pd.DataFrame, report_index: pd.DataFrame):
    inputs = pair_inputs(ct_studies, organ_stats, report_findings, report_index)
    tables = mine_pairs(inputs, config.to_config(), negatives_for=_negatives_for)
    selected = {k.to_user_string() for k in context.selected_asset_keys}
    for name in ("grounded_pairs", "abnormality_pairs", "pair_exclusions", "study_texts"):
        if name not in selected:
            continue
        df: pd.DataFrame = getattr(tables, name)
        meta = {}  # rows, schema, preview and path: the table IO manager's
        if name == "grounded_pairs":
            meta["text_source"] = dg.MetadataValue.json(df["text_source"].value_counts().to_dict())
            meta["status"] = dg.MetadataValue.json(df["status"].value_counts().to_dict())
            meta["split"] = dg.MetadataValue.json(df["split"].value_counts().to_dict())
            meta["cut_rule"] = config.to_config().cut_rule
            meta["cut_by_fov_kept"] = int(df["cut_by_fov"].sum())
        if name == "pair_exclusions":
            meta["reasons"] = dg.MetadataValue.json(df["reason"].value_counts().to_dict())
        context.log.info(f"{name}: {len(df)} rows")
        yield dg.Output(df, output_name=name, metadata=meta)


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
def has_pairs(grounded_pairs: pd.DataFrame, data: DataRoot) -> dg.AssetCheckResult:
    n = len(grounded_pairs)
    if n:
        return dg.AssetCheckResult(passed=True, metadata={"pairs": n})
    root = data.root()  # only to say why there is none: the exclusions, and the rejected studies where ingest ran
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
def mask_files_exist(grounded_pairs: pd.DataFrame, data: DataRoot) -> dg.AssetCheckResult:
    root = data.root()
    pairs = grounded_pairs[["study_id", "volume_path", "mask_path"]].drop_duplicates("study_id")
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
    return phi_check_all(data.root())


CHECKS = [has_pairs, no_patient_leakage, no_empty_text, mask_files_exist, no_phi_in_tables]
