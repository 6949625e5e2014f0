"""Accuracy of report findings against an organ-level gold (the synthetic cohort's organ_gold.parquet).

Status: per (report, organ) of the gold, the aggregated organ_status of our findings (no finding ->
not_mentioned) against `report_status`; macro F1 over normal/abnormal/uncertain/not_mentioned.
Abnormality: canonical names per (report, organ) from abnormal and uncertain findings against the
gold `abnormalities`; micro precision/recall/F1 over (report, organ, name). The headline figure counts
only the names the gold can contain (the synthetic catalog); `abnormality_f1_all` counts every name we
emit ("atelectasis" next to a catalog pleural effusion is then a false positive the gold cannot know).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from pipeline.report.finding import ABNORMAL, NORMAL, NOT_MENTIONED, UNCERTAIN
from pipeline.vocab import STATUS_ORDER, STATUS_RANK

CLASSES = (NORMAL, ABNORMAL, UNCERTAIN, NOT_MENTIONED)
# canonical names of the synthetic catalog (docs/ARCHITECTURE.md)
CATALOG = frozenset(
    {
        "mass",
        "cyst",
        "hepatomegaly",
        "steatosis",
        "splenomegaly",
        "stone",
        "nodule",
        "pleural effusion",
        "aneurysm",
        "cardiomegaly",
        "fracture",
    }
)


@dataclass(frozen=True)
class Metrics:
    n_reports: int
    n_rows: int  # (report, organ) pairs scored
    status_macro_f1: float
    status_f1: dict[str, float]  # per class
    abnormality_precision: float
    abnormality_recall: float
    abnormality_f1: float  # catalog names only
    abnormality_f1_all: float  # every name we emit
    confusion: pd.DataFrame = field(repr=False)  # gold status (rows) x predicted status (columns)
    errors: pd.DataFrame = field(repr=False)  # one row per wrong (report, organ), with our sentences
    worst_sentences: pd.DataFrame = field(repr=False)  # sentences behind most errors

    def summary(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "n_reports",
                "n_rows",
                "status_macro_f1",
                "status_f1",
                "abnormality_precision",
                "abnormality_recall",
                "abnormality_f1",
                "abnormality_f1_all",
            )
        }


def _f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _as_set(v) -> frozenset[str]:
    if v is None or (isinstance(v, float) and v != v):
        return frozenset()
    return frozenset(str(x) for x in v)


def score(findings_df: pd.DataFrame, gold_df: pd.DataFrame, report_column: str = "accession") -> Metrics:
    """Compare findings (report_id, organ, status, abnormality, sentence) with the gold
    (accession, organ, report_status, abnormalities)."""
    f = findings_df.copy()
    f["report_id"] = f["report_id"].astype(str)
    gold = gold_df[[report_column, "organ", "report_status", "abnormalities"]].copy()
    gold[report_column] = gold[report_column].astype(str)
    f["_rank"] = f["status"].map(STATUS_RANK)
    pred = f.groupby(["report_id", "organ"])["_rank"].max().map(dict(enumerate(STATUS_ORDER)))
    abn = (
        f[f["status"].isin([ABNORMAL, UNCERTAIN]) & f["abnormality"].notna()]
        .groupby(["report_id", "organ"])["abnormality"]
        .agg(lambda s: frozenset(s))
    )
    sents = f.groupby(["report_id", "organ"])["sentence"].agg(lambda s: list(dict.fromkeys(s)))
    keys = list(zip(gold[report_column], gold["organ"]))
    gold["pred_status"] = [pred.get(k, NOT_MENTIONED) for k in keys]
    gold["gold_set"] = [_as_set(v) for v in gold["abnormalities"]]
    gold["pred_set"] = [abn.get(k, frozenset()) for k in keys]
    gold["sentences"] = [sents.get(k, []) for k in keys]

    f1s = {}
    for c in CLASSES:
        g, p = gold["report_status"] == c, gold["pred_status"] == c
        if g.any() or p.any():
            f1s[c] = _f1(int((g & p).sum()), int((~g & p).sum()), int((g & ~p).sum()))[2]
    counts = {"cat": [0, 0, 0], "all": [0, 0, 0]}
    for gs, ps in zip(gold["gold_set"], gold["pred_set"]):
        for name, pset in (("cat", ps & CATALOG), ("all", ps)):
            counts[name][0] += len(gs & pset)
            counts[name][1] += len(pset - gs)
            counts[name][2] += len(gs - pset)
    p, r, f1 = _f1(*counts["cat"])
    f1_all = _f1(*counts["all"])[2]

    abn_wrong = pd.Series([g != (ps & CATALOG) for g, ps in zip(gold["gold_set"], gold["pred_set"])], index=gold.index)
    wrong = (gold["report_status"] != gold["pred_status"]) | abn_wrong
    errors = gold[wrong].rename(columns={report_column: "report_id", "report_status": "gold_status"})
    errors = errors.assign(gold_set=errors["gold_set"].map(sorted), pred_set=errors["pred_set"].map(sorted))
    errors = errors[["report_id", "organ", "gold_status", "pred_status", "gold_set", "pred_set", "sentences"]]
    worst = (
        errors.explode("sentences")
        .dropna(subset=["sentences"])
        .groupby("sentences")
        .size()
        .sort_values(ascending=False)
        .rename("errors")
        .reset_index()
        .rename(columns={"sentences": "sentence"})
    )
    confusion = pd.crosstab(gold["report_status"], gold["pred_status"])
    return Metrics(
        n_reports=int(gold[report_column].nunique()),
        n_rows=len(gold),
        status_macro_f1=sum(f1s.values()) / len(f1s) if f1s else 1.0,
        status_f1=f1s,
        abnormality_precision=p,
        abnormality_recall=r,
        abnormality_f1=f1,
        abnormality_f1_all=f1_all,
        confusion=confusion,
        errors=errors.reset_index(drop=True),
        worst_sentences=worst,
    )
