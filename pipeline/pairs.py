"""Pair mining: organ-level (grounded) CT-text pairs, abnormality pairs, and every refusal with its reason.

One public entry, ``mine_pairs``: tables in, tables out, vectorised with pandas so a CT-GLIP-sized
cohort (17,702 studies) runs in seconds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from pipeline import vocab

STATUS_RANK = {"normal": 0, "uncertain": 1, "abnormal": 2}


@dataclass(frozen=True)
class PairConfig:
    normal_template: str = "The {organ} is unremarkable."
    """Text for an organ in the image that the report does not mention (text_source = "template")."""
    split_ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    """Train / val / test fractions, assigned per patient by a stable hash."""
    split_salt: str = "ct-glip-split-v1"
    """Changing the salt reshuffles patients between splits; keep it fixed for comparable runs."""
    exclude_flags: tuple[str, ...] = ("too_small", "fragmented")
    """Organ quality flags (from organ_stats) that exclude an organ from pairing."""
    exclude_cut_by_fov: bool = True
    """Organs cut by the field of view are excluded (their mask and pooled feature are partial)."""
    n_negatives: int = 8
    """Dictionary negatives per abnormality pair."""
    seed: int = 0
    """Seed for drawing dictionary negatives."""


@dataclass(frozen=True)
class PairInputs:
    studies: pd.DataFrame  # ct_studies: study_id, patient_id, report_id, volume_path
    organ_stats: pd.DataFrame  # study_id, organ, index_v2, volume_ml, bbox_vox, bbox_mm, cut_by_fov, quality_flags
    findings: pd.DataFrame  # report_findings: report_id, organ, status, abnormality, sentence, section
    report_ids: frozenset[str]  # reports that exist and were readable
    mask_paths: dict[str, str] = field(default_factory=dict)  # study_id -> organ label map path


@dataclass(frozen=True)
class PairTables:
    grounded_pairs: pd.DataFrame
    abnormality_pairs: pd.DataFrame
    pair_exclusions: pd.DataFrame
    study_texts: pd.DataFrame


def readable(organ: str) -> str:
    """'kidney_left' -> 'left kidney', 'lung_lower_lobe_right' -> 'right lung lower lobe'."""
    o = vocab.organ(organ)
    words = organ.replace(f"_{o.side}", "").replace(f"{o.side}_", "").split("_") if o.side else organ.split("_")
    return " ".join(([o.side] if o.side else []) + words)


def assign_split(patient_ids: pd.Series, ratios: tuple[float, float, float], salt: str) -> pd.Series:
    """Stable patient-level split: the same patient always lands in the same split, whatever the cohort."""
    if not np.isclose(sum(ratios), 1.0):
        raise ValueError(f"split ratios must sum to 1, got {ratios}")
    unique = patient_ids.drop_duplicates()
    u = unique.map(lambda p: int(hashlib.sha256(f"{salt}:{p}".encode()).hexdigest()[:12], 16) / 16**12)
    edges = np.cumsum(ratios)
    labels = np.where(u < edges[0], "train", np.where(u < edges[1], "val", "test"))
    return patient_ids.map(dict(zip(unique, labels)))


def _organ_findings(findings: pd.DataFrame) -> pd.DataFrame:
    """Per (report_id, organ): status, abnormality list and the assembled text (sentences in order, deduplicated)."""
    if findings.empty:
        return pd.DataFrame(columns=["report_id", "organ", "status", "abnormalities", "text"])
    f = findings[["report_id", "organ", "status", "abnormality", "sentence"]].copy()
    f["rank"] = f["status"].map(STATUS_RANK).fillna(0).astype(int)
    g = f.groupby(["report_id", "organ"], sort=False)
    out = g["rank"].max().rename("rank").reset_index()
    out["status"] = out["rank"].map({v: k for k, v in STATUS_RANK.items()})
    abn = f[(f["status"] == "abnormal") & f["abnormality"].notna()]
    abn_lists = abn.groupby(["report_id", "organ"], sort=False)["abnormality"].agg(lambda s: sorted(set(s)))
    texts = g["sentence"].agg(lambda s: " ".join(dict.fromkeys(x.strip() for x in s if isinstance(x, str) and x.strip())))
    out = out.merge(abn_lists.rename("abnormalities").reset_index(), how="left", on=["report_id", "organ"])
    out = out.merge(texts.rename("text").reset_index(), how="left", on=["report_id", "organ"])
    out["abnormalities"] = out["abnormalities"].apply(lambda v: v if isinstance(v, list) else [])
    return out.drop(columns="rank")


def _exclusion_reason(row_flags: list, cut: bool, config: PairConfig) -> str | None:
    if cut and config.exclude_cut_by_fov:
        return "cut_by_fov"
    hits = [f for f in config.exclude_flags if f in (row_flags if row_flags is not None else [])]
    if "too_small" in hits:
        return "too_small"
    if hits:
        return "quality_flagged:" + ",".join(hits)
    return None


def _pair_id(*parts: str) -> str:
    return "pair-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def mine_pairs(
    inputs: PairInputs,
    config: PairConfig = PairConfig(),
    negatives_for: Callable[[str], list[str]] | None = None,
) -> PairTables:
    """Build grounded_pairs, abnormality_pairs, pair_exclusions and study_texts from the upstream tables."""
    studies = inputs.studies[["study_id", "patient_id", "report_id", "volume_path"]].drop_duplicates("study_id").copy()
    studies["split"] = assign_split(studies["patient_id"], config.split_ratios, config.split_salt)
    studies["has_report"] = studies["report_id"].isin(inputs.report_ids)
    studies["mask_path"] = studies["study_id"].map(inputs.mask_paths)

    stats = inputs.organ_stats.merge(studies, on="study_id", how="inner")
    per_organ = _organ_findings(inputs.findings)

    stats["reason"] = [
        "study_without_report" if not has else _exclusion_reason(flags, bool(cut), config)
        for has, flags, cut in zip(stats["has_report"], stats["quality_flags"], stats["cut_by_fov"])
    ]
    merged = stats.merge(per_organ, on=["report_id", "organ"], how="left")
    excluded = merged[merged["reason"].notna()]
    kept = merged[merged["reason"].isna()].copy()

    mentioned = kept["text"].notna() & (kept["text"].str.len() > 0)
    kept["text_source"] = np.where(mentioned, "report", "template")
    kept["text"] = np.where(mentioned, kept["text"], [config.normal_template.format(organ=readable(o)) for o in kept["organ"]])
    kept["status"] = kept["status"].where(mentioned, "normal")
    kept["abnormalities"] = [a if isinstance(a, list) else [] for a in kept["abnormalities"]]
    kept["group"] = kept["organ"].map(lambda o: vocab.organ(o).group)
    kept["index_v1"] = kept["organ"].map(lambda o: vocab.organ(o).index_v1).astype("Int64")
    kept["pair_id"] = [_pair_id(s, o) for s, o in zip(kept["study_id"], kept["organ"])]
    pair_cols = [
        "pair_id", "patient_id", "study_id", "organ", "group", "index_v2", "index_v1", "text", "text_source",
        "status", "abnormalities", "volume_path", "mask_path", "bbox_vox", "bbox_mm", "volume_ml",
        "quality_flags", "split",
    ]
    grounded = kept[pair_cols].sort_values(["study_id", "index_v2"]).reset_index(drop=True)

    # Organs the report describes that the segmentation does not have.
    seg_keys = stats[["report_id", "organ"]].drop_duplicates()
    described = per_organ.merge(studies[["study_id", "patient_id", "report_id", "split"]], on="report_id")
    described = described.merge(seg_keys, on=["report_id", "organ"], how="left", indicator=True)
    not_segmented = described[described["_merge"] == "left_only"].assign(reason="described_not_segmented")

    excl_cols = ["study_id", "patient_id", "organ", "reason", "status"]
    exclusions = pd.concat(
        [excluded.reindex(columns=excl_cols), not_segmented.reindex(columns=excl_cols)], ignore_index=True
    )
    no_report = studies[~studies["has_report"]]
    missing_stats = no_report[~no_report["study_id"].isin(stats["study_id"])]
    exclusions = pd.concat(
        [exclusions, missing_stats.assign(organ=None, reason="study_without_report", status=None).reindex(columns=excl_cols)],
        ignore_index=True,
    )

    abnormal = _abnormality_pairs(kept, inputs.findings, config, negatives_for)
    texts = _study_texts(inputs.findings, studies)
    return PairTables(grounded, abnormal, exclusions.reset_index(drop=True), texts)


def _abnormality_pairs(
    kept: pd.DataFrame, findings: pd.DataFrame, config: PairConfig, negatives_for: Callable[[str], list[str]] | None
) -> pd.DataFrame:
    cols = ["pair_id", "patient_id", "study_id", "organ", "index_v2", "abnormality", "positive_text", "negatives", "split"]
    rows = kept[kept["abnormalities"].map(len) > 0]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    rows = rows.explode("abnormalities").rename(columns={"abnormalities": "abnormality"})
    # the positive text is the organ's sentences that carry this abnormality
    f = findings[(findings["status"] == "abnormal") & findings["abnormality"].notna()]
    sentences = (
        f.groupby(["report_id", "organ", "abnormality"], sort=False)["sentence"]
        .agg(lambda s: " ".join(dict.fromkeys(s)))
        .rename("positive_text")
        .reset_index()
    )
    rows = rows.merge(sentences, on=["report_id", "organ", "abnormality"], how="left")
    rows["positive_text"] = rows["positive_text"].fillna(rows["text"])
    negatives = []
    for organ, pair, abnormality in zip(rows["organ"], rows["pair_id"], rows["abnormality"]):
        pool = [n for n in (negatives_for(organ) if negatives_for else []) if n != abnormality]
        digest = hashlib.sha256(f"{config.seed}:{pair}:{abnormality}".encode()).hexdigest()
        rng = np.random.default_rng(int(digest[:8], 16))
        k = min(config.n_negatives, len(pool))
        picks = [pool[i] for i in sorted(rng.choice(len(pool), size=k, replace=False))] if k else []
        negatives.append([f"{n} of the {readable(organ)}" for n in picks])
    rows["negatives"] = negatives
    rows["pair_id"] = [_pair_id(s, o, a) for s, o, a in zip(rows["study_id"], rows["organ"], rows["abnormality"])]
    return rows[cols].reset_index(drop=True)


def _study_texts(findings: pd.DataFrame, studies: pd.DataFrame) -> pd.DataFrame:
    """The whole-report text for the global baseline: findings and impression sentences, in order, deduplicated."""
    f = findings[findings["section"].isin(["findings", "impression", "FINDINGS", "IMPRESSION", None])]
    text = f.groupby("report_id", sort=False)["sentence"].agg(lambda s: " ".join(dict.fromkeys(x.strip() for x in s)))
    out = studies[studies["has_report"]][["study_id", "patient_id", "report_id", "split"]].copy()
    out["text"] = out["report_id"].map(text).fillna("")
    return out[["study_id", "patient_id", "text", "split"]].reset_index(drop=True)
