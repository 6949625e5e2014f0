"""Organ-level scoring of report findings against the hand-made CT-RATE gold (tests/data/ctrate_dev_organ_gold.csv).

A finding and a gold row are compared as (report_id, organ-or-region, status, abnormality) tuples: the
organ where there is one, else the region ("lymph_node", "pleura", ...); the abnormality is empty for
normal rows. Both sides are sets (duplicates from several sentences count once), and precision, recall
and F1 are micro figures over all tuples of the gold's reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import hashlib

import pandas as pd

GOLD_CSV = Path(__file__).resolve().parent / "data" / "ctrate_dev_organ_gold.csv"
STATUSES = ("normal", "abnormal", "uncertain")

Key = tuple[str, str, str, str]  # report_id, organ or region, status, abnormality ("" for normal)


@dataclass(frozen=True)
class Score:
    precision: float
    recall: float
    f1: float
    n_gold: int
    n_pred: int
    missed: frozenset[Key]  # in the gold, not predicted
    extra: frozenset[Key]  # predicted, not in the gold


def select_reports(reports: pd.DataFrame, n_random: int = 25, n_rich: int = 15, min_labels: int = 6) -> list[str]:
    """The gold's reports: order the development set by sha256(report_id); take the first `n_random`,
    then the first `n_rich` of the rest with at least `min_labels` positive CT-RATE labels (so that the
    gold is not mostly normal)."""
    labels = reports.drop(columns=["report_id", "report_text"])
    n_pos = dict(zip(reports["report_id"], labels.sum(axis=1)))
    order = sorted(reports["report_id"], key=lambda rid: hashlib.sha256(rid.encode()).hexdigest())
    rich = [rid for rid in order[n_random:] if n_pos[rid] >= min_labels]
    return order[:n_random] + rich[:n_rich]


def read_gold(path: Path = GOLD_CSV) -> pd.DataFrame:
    """The gold table with empty cells as "" (not NaN)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def gold_keys(gold: pd.DataFrame) -> set[Key]:
    return {(r.report_id, r.organ or r.region, r.status, r.abnormality if r.status != "normal" else "")
            for r in gold.itertuples(index=False)}


def finding_keys(report_id: str, findings: Iterable) -> set[Key]:
    """Tuples of one report's findings. `region` is read with getattr: Findings without that field
    (the rules before organ-less findings existed) score as organ-only."""
    keys = set()
    for f in findings:
        target = f.organ or getattr(f, "region", None)
        if not target:
            continue
        keys.add((report_id, target, f.status, (f.abnormality or "") if f.status != "normal" else ""))
    return keys


def score(gold: set[Key], pred: set[Key]) -> Score:
    tp = len(gold & pred)
    p = tp / len(pred) if pred else 0.0
    r = tp / len(gold) if gold else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return Score(p, r, f1, len(gold), len(pred), frozenset(gold - pred), frozenset(pred - gold))
