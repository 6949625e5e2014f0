"""Report assembly: the paper-shaped table, the per-abnormality table, pictures and a JSON record.

Rows: the no-learning rows, random / CLIP / grounded and their probe rows (any method names; known ones first in that
order). Columns: OR acc, AD F1, AD AUC, TD AUC, TS DSC (the paper's), TS DSC on lesions of 10 mm or more, and AD AUC
per task group (size, diffuse, focal), each "value [low, high]" with the 95% bootstrap interval; "n/a" where a protocol
does not apply (zero-shot for random initialisation) or was not run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from model.eval import metrics as M
from model.eval.metrics import Estimate
from model.eval.plots import grouped_bars_png, roc_png
from model.eval.results import HEADLINE, EvalResult
from model.files import fingerprint

COLUMNS = {
    "or_acc": "OR acc",
    "ad_f1": "AD F1",
    "ad_auc": "AD AUC",
    "td_auc": "TD AUC",
    "ts_dsc": "TS DSC",
    "ts_dsc_ge10": "TS DSC >= 10 mm",
    "ad_auc_size": "AD AUC size",
    "ad_auc_diffuse": "AD AUC diffuse",
    "ad_auc_focal": "AD AUC focal",
}
PREFERRED_ORDER = (
    "no_learning",
    "no_learning_report",
    "random",
    "probe_random",
    "clip",
    "global",
    "probe_clip",
    "grounded",
    "ct-glip",
    "probe_grounded",
)


def fmt(e: Estimate, digits: int = 3) -> str:
    if not e.applicable:
        return "n/a"
    if not (np.isfinite(e.low) and np.isfinite(e.high)):
        return f"{e.value:.{digits}f}"
    return f"{e.value:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"


def method_order(names: Sequence[str]) -> list[str]:
    rank = {n: i for i, n in enumerate(PREFERRED_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n.lower(), len(rank)), list(names).index(n)))


def results_table(metrics: Mapping[str, Mapping[str, Estimate]]) -> pd.DataFrame:
    """The paper's table: one row per method, ``COLUMNS`` as columns, formatted cells."""
    rows = method_order(list(metrics))
    data = [[fmt(metrics[m].get(k, Estimate.missing())) for k in COLUMNS] for m in rows]
    return pd.DataFrame(data, index=pd.Index(rows, name="method"), columns=list(COLUMNS.values()))


def abnormality_table(result: EvalResult) -> pd.DataFrame:
    """One row per scored (organ, abnormality): n_pos, n_neg, and AUC / F1 of every pretrained method."""
    rows = []
    for organ, abn in result.ad_tasks:
        row: dict[str, object] = {"organ": organ, "abnormality": abn}
        scored = {n: m.abnormality_detection for n, m in result.methods.items() if m.abnormality_detection is not None}
        for name in method_order(list(scored)):
            ad = scored[name]
            pair = next((p for p in ad.pairs if (p.organ, p.abnormality) == (organ, abn)), None)
            if pair is not None:
                row["n_pos"], row["n_neg"] = pair.n_pos, pair.n_neg
            row[f"{name} AUC"] = fmt(pair.auc) if pair else "n/a"
            row[f"{name} F1"] = fmt(pair.f1) if pair else "n/a"
        rows.append(row)
    cols = ["organ", "abnormality", "n_pos", "n_neg"]
    df = pd.DataFrame(rows)
    return df[[c for c in cols if c in df] + [c for c in df if c not in cols]] if rows else pd.DataFrame(columns=cols)


def _roc_curves(result: EvalResult) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray, float]]]:
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray, float]]] = {}
    for name in method_order(list(result.methods)):
        m = result.methods[name]
        series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if m.abnormality_detection and m.abnormality_detection.pairs:
            series["AD (pooled pairs)"] = m.abnormality_detection.pooled()
        if m.tumor_detection and "organ" in m.tumor_detection.scores:
            series["TD (organs, lesions >= 10 mm)"] = m.tumor_detection.scores["organ"]
        for task, (s, y) in series.items():
            if 0 < np.sum(y) < len(y):
                fpr, tpr, _ = M.roc_curve(s, y)
                curves.setdefault(task, {})[name] = (fpr, tpr, M.roc_auc(s, y))
    return curves


def _organ_bars(result: EvalResult) -> dict[str, dict[str, float]]:
    return {
        name: dict(m.organ_recognition.per_class_accuracy)
        for name, m in result.methods.items()
        if m.organ_recognition is not None
    }


def checkpoint_provenance(path: str | os.PathLike) -> dict[str, str]:
    """``{"path", "sha256"}`` of a checkpoint file, for the ``provenance`` argument."""
    return {"path": str(path), "sha256": fingerprint(path)}


def _jsonable(obj: object) -> Any:  # a JSON value, as json.loads gives it
    return json.loads(json.dumps(obj, default=str, allow_nan=False))


def _config_dict(result: EvalResult) -> dict:
    cfg = result.config
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if callable(v) and not dataclasses.is_dataclass(v):
            v = getattr(v, "__qualname__", repr(v))
        out[f.name] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
    return out


def report_json(result: EvalResult, provenance: Mapping[str, object] | None = None) -> dict:
    """JSON-able record for ``evaluation_report.json``: ``methods`` (method -> metric ->
    {value, low, high}, ``None`` = not applicable), the per-abnormality results, notes, config
    and provenance (the caller's checkpoint paths/hashes and data versions, plus the data's own)."""
    methods = {name: {k: e.to_dict() for k, e in ms.items()} for name, ms in result.metrics().items()}
    per_abn = []
    for name, m in result.methods.items():
        for p in m.abnormality_detection.pairs if m.abnormality_detection else ():
            per_abn.append(
                {
                    "method": name,
                    "organ": p.organ,
                    "abnormality": p.abnormality,
                    "n_pos": p.n_pos,
                    "n_neg": p.n_neg,
                    "threshold": p.threshold if np.isfinite(p.threshold) else None,
                    "auc": p.auc.to_dict(),
                    "f1": p.f1.to_dict(),
                }
            )
    return _jsonable(
        {
            "headline_metrics": list(HEADLINE),
            "methods": methods,
            "pretrained": {name: m.pretrained for name, m in result.methods.items()},
            "per_abnormality": per_abn,
            "ad_tasks": [list(t) for t in result.ad_tasks],
            "tumor_organs": list(result.tumor_organs),
            # TS Dice of each fine-tuning run (seeds seed, seed + 1, ...); the table shows their per-case mean
            "ts_dsc_per_run": {
                name: [d if np.isfinite(d) else None for d in m.tumor_segmentation.per_run]
                for name, m in result.methods.items()
                if m.tumor_segmentation is not None
            },
            "notes": list(result.notes),
            "config": _config_dict(result),
            "provenance": {"data": result.provenance, **{k: v for k, v in (provenance or {}).items()}},
        }
    )


def metrics_from_json(record: Mapping) -> dict[str, dict[str, Estimate]]:
    """Inverse of the ``methods`` part of ``report_json`` (e.g. to redraw a table from a stored report)."""
    return {name: {k: Estimate.from_dict(d) for k, d in ms.items()} for name, ms in record["methods"].items()}


@dataclass(frozen=True)
class Report:
    table: pd.DataFrame
    table_markdown: str
    abnormality_table: pd.DataFrame
    abnormality_markdown: str
    roc_png: bytes
    organ_bars_png: bytes
    confusion_pngs: dict[str, bytes] = field(default_factory=dict)  # method -> OR confusion matrix
    json: dict = field(default_factory=dict)


def ad_f1_floor(result: EvalResult) -> Estimate:
    """The AD F1 of calling every instance abnormal (the same pairs for every method, so one figure)."""
    for m in result.methods.values():
        if m.abnormality_detection is not None:
            return m.metrics(result.config.n_bootstrap, result.config.seed)["ad_f1_all_positive"]
    return Estimate.missing()


def build_report(result: EvalResult, provenance: Mapping[str, object] | None = None) -> Report:
    table = results_table(result.metrics())
    abn = abnormality_table(result)
    floor = ad_f1_floor(result)
    notes = "".join(f"\n- {n}" for n in result.notes)
    if floor.applicable:
        notes += f"\n- AD F1 of calling every organ abnormal (no model): {fmt(floor)}"
    md = table.to_markdown() + "\n\nCells: value [95% bootstrap interval]; n/a = not applicable or not run." + notes
    return Report(
        table=table,
        table_markdown=md,
        abnormality_table=abn,
        abnormality_markdown=abn.to_markdown(index=False) if len(abn) else "(no abnormality pair scored)",
        roc_png=roc_png(_roc_curves(result)),
        organ_bars_png=grouped_bars_png(_organ_bars(result), "top-1 accuracy", "zero-shot organ recognition per organ"),
        confusion_pngs={
            name: m.organ_recognition.confusion_png(f"organ recognition: {name}")
            for name, m in result.methods.items()
            if m.organ_recognition is not None
        },
        json=report_json(result, provenance),
    )
