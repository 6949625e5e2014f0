"""Pair mining: organ-level (grounded) CT-text pairs, abnormality pairs, and every refusal with its reason.

One public entry, ``mine_pairs``: tables in, tables out, vectorised with pandas so a CT-GLIP-sized
cohort (17,702 studies: ~700,000 organ_stats rows, ~440,000 findings) runs in well under a minute
(``bench/pairs.py``). Per-group Python aggregations (``groupby().agg(lambda ...)``) are avoided on
purpose: they cost ~50 us a group; ``_grouped_lists`` collects a group's values in one pass instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import pandas as pd

from pipeline import vocab

CutRule = Literal["exclude", "keep_flagged", "keep_if_inside"]
CUT_RULES: tuple[str, ...] = get_args(CutRule)


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
    cut_organs: CutRule = "keep_if_inside"
    """Organs cut by the field of view: "exclude" them, "keep_flagged" (all kept, cut_by_fov recorded), or
    "keep_if_inside": kept when the organ tapers out inside the scan, i.e. its organ_stats cut_face_ratio (its
    area on the cut face over its largest parallel cross-section) is at most max_cut_face_ratio."""
    max_cut_face_ratio: float = 0.5
    """keep_if_inside: the largest cut_face_ratio kept (see bench/cut_organs.py for what it keeps)."""
    n_negatives: int = 8
    """Dictionary negatives per abnormality pair."""
    seed: int = 0
    """Seed for drawing dictionary negatives."""

    def __post_init__(self) -> None:
        if self.cut_organs not in CUT_RULES:
            raise ValueError(f"cut_organs must be one of {CUT_RULES}, got {self.cut_organs!r}")

    @property
    def cut_rule(self) -> str:
        """The rule as recorded in grounded_pairs.cut_rule."""
        return f"keep_if_inside:{self.max_cut_face_ratio:g}" if self.cut_organs == "keep_if_inside" else self.cut_organs


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


def assign_split(patient_ids: pd.Series, ratios: tuple[float, float, float], salt: str) -> pd.Series:
    """Stable patient-level split: the same patient always lands in the same split, whatever the cohort."""
    if not np.isclose(sum(ratios), 1.0):
        raise ValueError(f"split ratios must sum to 1, got {ratios}")
    unique = patient_ids.drop_duplicates()
    u = unique.map(lambda p: int(hashlib.sha256(f"{salt}:{p}".encode()).hexdigest()[:12], 16) / 16**12)
    edges = np.cumsum(ratios)
    labels = np.where(u < edges[0], "train", np.where(u < edges[1], "val", "test"))
    return patient_ids.map(dict(zip(unique, labels)))


def _grouped_lists(df: pd.DataFrame, keys: list[str], column: str) -> pd.DataFrame:
    """Per group of ``keys`` (in order of first appearance): the list of ``column``'s values in row order.

    One pass over plain arrays instead of a Python aggregation per group (which costs ~50 us a group:
    minutes at CT-GLIP's ~440,000 report findings). Rows with a missing key are dropped, as groupby does.
    """
    df = df.dropna(subset=keys)
    if df.empty:
        return pd.DataFrame({**{k: pd.Series(dtype=object) for k in keys}, column: pd.Series(dtype=object)})
    codes = df.groupby(keys, sort=False).ngroup().to_numpy()
    out = df.drop_duplicates(keys)[keys].reset_index(drop=True)  # first appearance == ngroup order (sort=False)
    buckets: list[list] = [[] for _ in range(len(out))]
    for code, value in zip(codes.tolist(), df[column].tolist()):
        buckets[code].append(value)
    out[column] = buckets
    return out


def _stripped_sentences(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with a non-empty sentence, the sentence stripped."""
    stripped = [x.strip() if isinstance(x, str) else "" for x in df["sentence"].tolist()]
    out = df.assign(sentence=pd.Series(stripped, index=df.index, dtype=object))
    return out[np.array([bool(x) for x in stripped], dtype=bool)]


def _organ_findings(findings: pd.DataFrame) -> pd.DataFrame:
    """Per (report_id, organ): status, abnormality list and the assembled text (sentences in order, deduplicated)."""
    if findings.empty:
        return pd.DataFrame(columns=["report_id", "organ", "status", "abnormalities", "text"])
    keys = ["report_id", "organ"]
    f = findings[["report_id", "organ", "status", "abnormality", "sentence"]].dropna(subset=keys)
    rank = f["status"].map(vocab.STATUS_RANK).fillna(0).astype(int)
    out = rank.groupby([f["report_id"], f["organ"]], sort=False).max().rename("rank").reset_index()
    out["status"] = out["rank"].map(dict(enumerate(vocab.STATUS_ORDER)))
    abn = f[(f["status"] == "abnormal") & f["abnormality"].notna()].drop_duplicates([*keys, "abnormality"])
    abn_lists = _grouped_lists(abn, keys, "abnormality")
    abn_lists["abnormality"] = [sorted(v) for v in abn_lists["abnormality"]]
    sentences = _stripped_sentences(f).drop_duplicates([*keys, "sentence"])
    texts = _grouped_lists(sentences, keys, "sentence")
    texts["sentence"] = [" ".join(v) for v in texts["sentence"]]
    out = out.merge(abn_lists.rename(columns={"abnormality": "abnormalities"}), how="left", on=keys)
    # a (report, organ) whose findings carry no sentence gets "" (as the per-group join gave)
    out = out.merge(texts.rename(columns={"sentence": "text"}), how="left", on=keys)
    out["text"] = out["text"].fillna("")
    out["abnormalities"] = [v if isinstance(v, list) else [] for v in out["abnormalities"].tolist()]
    return out.drop(columns="rank")


def _region_findings(findings: pd.DataFrame, studies: pd.DataFrame) -> pd.DataFrame:
    """Findings without an organ mask (lymph nodes, pleura, mediastinum, medical material, the spine named
    without a level): one exclusion row per (study, region) with the region's strongest status."""
    if findings.empty or "region" not in findings.columns:
        return pd.DataFrame(columns=["study_id", "patient_id", "organ", "reason", "status", "region"])
    f = findings[findings["organ"].isna() & findings["region"].notna()]
    rank = f["status"].map(vocab.STATUS_RANK).fillna(0).astype(int)
    out = rank.groupby([f["report_id"], f["region"]], sort=False).max().rename("rank").reset_index()
    out["status"] = out["rank"].map(dict(enumerate(vocab.STATUS_ORDER)))
    out = out.merge(studies[["study_id", "patient_id", "report_id"]], on="report_id")
    return out.assign(organ=None, reason="region_without_mask")


def _exclusion_reasons(stats: pd.DataFrame, config: PairConfig) -> np.ndarray:
    """Per organ_stats row, first that applies: study_without_report, cut_by_fov (if excluded), too_small,
    quality_flagged:<the other exclude_flags present, in config order>; None = paired."""
    n = len(stats)
    flags = stats["quality_flags"].explode()  # one row per flag, index = the stats row
    hit = {}
    for flag in config.exclude_flags:
        rows = flags.index[(flags == flag).fillna(False).to_numpy(dtype=bool)]
        hit[flag] = np.zeros(n, dtype=bool)
        hit[flag][stats.index.get_indexer(rows.unique())] = True
    others = [f for f in config.exclude_flags if f != "too_small"]
    flagged = np.full(n, "", dtype=object)
    for flag in others:
        flagged = np.where(hit[flag], flagged + "," + flag, flagged)
    flagged = np.array(["quality_flagged:" + x[1:] if x else None for x in flagged.tolist()], dtype=object)
    cut = stats["cut_by_fov"].fillna(False).astype(bool).to_numpy() & _cut_excluded(stats, config)
    too_small = hit.get("too_small", np.zeros(n, dtype=bool))
    reason = np.where(too_small, "too_small", flagged)
    reason = np.where(cut, "cut_by_fov", reason)
    return np.where(stats["has_report"].to_numpy(dtype=bool), reason, "study_without_report")


def _cut_excluded(stats: pd.DataFrame, config: PairConfig) -> np.ndarray:
    """Per row: would the cut-organ rule exclude this organ if it is cut (a missing ratio counts as fully cut)."""
    n = len(stats)
    if config.cut_organs == "exclude":
        return np.ones(n, dtype=bool)
    if config.cut_organs == "keep_flagged":
        return np.zeros(n, dtype=bool)
    ratio = pd.to_numeric(stats.get("cut_face_ratio", pd.Series(np.nan, index=stats.index)), errors="coerce")
    return ~(ratio.to_numpy(dtype=float) <= config.max_cut_face_ratio)


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
    report_ids = set(inputs.report_ids)
    studies["has_report"] = np.array([r in report_ids for r in studies["report_id"].tolist()], dtype=bool)
    studies["mask_path"] = studies["study_id"].map(inputs.mask_paths)

    stats = inputs.organ_stats.merge(studies, on="study_id", how="inner")
    per_organ = _organ_findings(inputs.findings)

    stats["reason"] = _exclusion_reasons(stats, config)
    merged = stats.merge(per_organ, on=["report_id", "organ"], how="left")
    excluded = merged[merged["reason"].notna()]
    kept = merged[merged["reason"].isna()].copy()

    mentioned = kept["text"].notna() & (kept["text"].str.len() > 0)
    kept["text_source"] = np.where(mentioned, "report", "template")
    organs = kept["organ"].unique().tolist()
    template = {o: config.normal_template.format(organ=vocab.readable(o)) for o in organs}
    kept["text"] = np.where(mentioned, kept["text"], kept["organ"].map(template))
    kept["status"] = kept["status"].where(mentioned, "normal")
    kept["abnormalities"] = [a if isinstance(a, list) else [] for a in kept["abnormalities"].tolist()]
    kept["group"] = kept["organ"].map({o: vocab.organ(o).group for o in organs})
    kept["index_v1"] = kept["organ"].map({o: vocab.organ(o).index_v1 for o in organs}).astype("Int64")
    kept["pair_id"] = [_pair_id(s, o) for s, o in zip(kept["study_id"].tolist(), kept["organ"].tolist())]
    kept["cut_by_fov"] = kept["cut_by_fov"].fillna(False).astype(bool)
    kept["cut_face_ratio"] = pd.to_numeric(
        kept.get("cut_face_ratio", pd.Series(np.nan, index=kept.index)), errors="coerce"
    ).astype(float)
    kept["cut_rule"] = config.cut_rule
    pair_cols = [
        "pair_id",
        "patient_id",
        "study_id",
        "organ",
        "group",
        "index_v2",
        "index_v1",
        "text",
        "text_source",
        "status",
        "abnormalities",
        "volume_path",
        "mask_path",
        "bbox_vox",
        "bbox_mm",
        "volume_ml",
        "quality_flags",
        "cut_by_fov",
        "cut_face_ratio",
        "cut_rule",
        "split",
    ]
    grounded = kept[pair_cols].sort_values(["study_id", "index_v2"]).reset_index(drop=True)

    # Organs the report describes that the segmentation does not have.
    seg_keys = stats[["report_id", "organ"]].drop_duplicates()
    described = per_organ.merge(studies[["study_id", "patient_id", "report_id", "split"]], on="report_id")
    described = described.merge(seg_keys, on=["report_id", "organ"], how="left", indicator=True)
    not_segmented = described[described["_merge"] == "left_only"].assign(reason="described_not_segmented")

    excl_cols = ["study_id", "patient_id", "organ", "reason", "status", "region"]
    exclusions = pd.concat(
        [
            excluded.reindex(columns=excl_cols),
            not_segmented.reindex(columns=excl_cols),
            _region_findings(inputs.findings, studies).reindex(columns=excl_cols),
        ],
        ignore_index=True,
    )
    no_report = studies[~studies["has_report"]]
    with_stats = set(stats["study_id"].unique().tolist())
    missing_stats = no_report[[s not in with_stats for s in no_report["study_id"].tolist()]]
    exclusions = pd.concat(
        [
            exclusions,
            missing_stats.assign(organ=None, reason="study_without_report", status=None).reindex(columns=excl_cols),
        ],
        ignore_index=True,
    )

    abnormal = _abnormality_pairs(kept, inputs.findings, config, negatives_for)
    texts = _study_texts(inputs.findings, studies)
    return PairTables(grounded, abnormal, exclusions.reset_index(drop=True), texts)


def _abnormality_pairs(
    kept: pd.DataFrame, findings: pd.DataFrame, config: PairConfig, negatives_for: Callable[[str], list[str]] | None
) -> pd.DataFrame:
    cols = [
        "pair_id",
        "patient_id",
        "study_id",
        "organ",
        "index_v2",
        "abnormality",
        "positive_text",
        "negatives",
        "split",
    ]
    rows = kept[kept["abnormalities"].map(len) > 0]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    rows = rows.explode("abnormalities").rename(columns={"abnormalities": "abnormality"})
    # the positive text is the organ's sentences that carry this abnormality
    keys = ["report_id", "organ", "abnormality"]
    f = findings[(findings["status"] == "abnormal") & findings["abnormality"].notna()]
    f = f[[isinstance(x, str) for x in f["sentence"].tolist()]].drop_duplicates([*keys, "sentence"])
    sentences = _grouped_lists(f[[*keys, "sentence"]], keys, "sentence")
    sentences["positive_text"] = [" ".join(v) for v in sentences.pop("sentence")]
    rows = rows.merge(sentences, on=keys, how="left")
    rows["positive_text"] = rows["positive_text"].fillna(rows["text"])
    pools: dict[str, list[str]] = {}  # negatives_for once per organ, not once per pair
    names: dict[str, str] = {}
    negatives: list[list[str]] = []
    for organ, pair, abnormality in zip(rows["organ"].tolist(), rows["pair_id"].tolist(), rows["abnormality"].tolist()):
        if organ not in pools:
            pools[organ] = list(negatives_for(organ)) if negatives_for else []
            names[organ] = vocab.readable(organ)
        pool = [n for n in pools[organ] if n != abnormality]
        k = min(config.n_negatives, len(pool))
        if not k:
            negatives.append([])
            continue
        digest = hashlib.sha256(f"{config.seed}:{pair}:{abnormality}".encode()).hexdigest()
        rng = np.random.default_rng(int(digest[:8], 16))
        negatives.append(
            [f"{pool[i]} of the {names[organ]}" for i in sorted(rng.choice(len(pool), size=k, replace=False))]
        )
    rows["negatives"] = negatives
    rows["pair_id"] = [
        _pair_id(s, o, a)
        for s, o, a in zip(rows["study_id"].tolist(), rows["organ"].tolist(), rows["abnormality"].tolist())
    ]
    return rows[cols].reset_index(drop=True)


def _study_texts(findings: pd.DataFrame, studies: pd.DataFrame) -> pd.DataFrame:
    """The whole-report text for the global baseline: findings and impression sentences, in order, deduplicated.
    A report without section headers has all its findings in "body" (real exports often do): those count too."""
    sections = {"findings", "impression", "body", "FINDINGS", "IMPRESSION"}
    in_text = [s is None or s != s or s in sections for s in findings["section"].tolist()]  # s != s: NaN
    f = findings.loc[in_text, ["report_id", "sentence"]]
    f = f.assign(sentence=[x.strip() if isinstance(x, str) else None for x in f["sentence"].tolist()])
    f = f.dropna(subset=["sentence"]).drop_duplicates(["report_id", "sentence"])
    joined = _grouped_lists(f, ["report_id"], "sentence")
    text = pd.Series([" ".join(v) for v in joined["sentence"]], index=joined["report_id"].tolist(), dtype=object)
    out = studies[studies["has_report"]][["study_id", "patient_id", "report_id", "split"]].copy()
    out["text"] = out["report_id"].map(text).fillna("")
    return out[["study_id", "patient_id", "text", "split"]].reset_index(drop=True)
