"""What an evaluation returns: one ``MethodResult`` per method, and how each metric is read from it.

Every metric is a function of per-item arrays that all methods share (the same test organs or lesion cases, in the same
order): ``metric_items`` returns them, so one definition serves a method's value, its bootstrap interval, the mean over
pretraining seeds and the paired difference of two methods (``model.eval.paired``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from model.eval import metrics
from model.eval.metrics import Estimate

if TYPE_CHECKING:
    from model.eval.segmentation import SegResult
    from model.eval.tumor import TDResult
    from model.eval.zero_shot import ADResult, ORResult

HEADLINE = ("or_acc", "ad_f1", "ad_auc", "td_auc", "ts_dsc", "ts_dsc_ge10")
DETAIL = (
    "or_macro_f1",
    "ad_auc_size",
    "ad_auc_diffuse",
    "ad_auc_focal",
    "ad_f1_pooled_threshold",
    "ad_f1_all_positive",
    "td_auc_small",
    "ts_dsc_lt10",
)
LESION_BIN_MM = 10.0  # TS size bins: lesions under 10 mm (drawn 5-10 mm), and 10 mm or more
Items = tuple[metrics.Metric, tuple[np.ndarray, ...], np.ndarray]  # (metric, per-item arrays, patient groups)


@dataclass(frozen=True)
class MethodResult:
    name: str
    pretrained: bool
    organ_recognition: ORResult | None = None
    abnormality_detection: ADResult | None = None
    tumor_detection: TDResult | None = None
    tumor_segmentation: SegResult | None = None

    def metrics(self, n_boot: int = 1000, seed: int = 0) -> dict[str, Estimate]:
        """Every metric (``HEADLINE`` and ``DETAIL``) with its patient bootstrap; missing = not applicable / not run."""
        out = {}
        for name in (*HEADLINE, *DETAIL):
            found = metric_items(self, name)
            out[name] = (
                Estimate.missing()
                if found is None
                else metrics.estimate(found[0], *found[1], n=n_boot, seed=seed, groups=found[2])
            )
        return out


@dataclass(frozen=True)
class EvalResult:
    methods: dict[str, MethodResult]
    config: Any
    ad_tasks: tuple[tuple[str, str], ...]
    tumor_organs: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    provenance: dict = field(default_factory=dict)

    def metrics(self) -> dict[str, dict[str, Estimate]]:
        """method -> metric -> Estimate."""
        return {name: m.metrics(self.config.n_bootstrap, self.config.seed) for name, m in self.methods.items()}


def _groups(g: np.ndarray | None, n: int) -> np.ndarray:
    return np.asarray(g) if g is not None else np.arange(n)


def metric_items(m: MethodResult, metric: str) -> Items | None:
    """The per-item arrays behind one metric of ``m`` (None: not run or not applicable)."""
    from model.eval.zero_shot import task_group

    orr, ad, td, ts = m.organ_recognition, m.abnormality_detection, m.tumor_detection, m.tumor_segmentation
    if metric in ("or_acc", "or_macro_f1"):
        if orr is None:
            return None
        fn = metrics.ACCURACY if metric == "or_acc" else metrics.macro_f1_of(len(orr.classes))
        return fn, (orr.y_true, orr.y_pred), _groups(orr.groups, len(orr.y_true))
    if metric.startswith("ad_") and ad is not None and ad.pairs:
        pairs = ad.pairs
        if metric.startswith("ad_auc_"):
            pairs = tuple(p for p in pairs if task_group(p.abnormality) == metric.removeprefix("ad_auc_"))
            if not pairs:
                return None
        task = np.concatenate([np.full(len(p.labels), t) for t, p in enumerate(pairs)])
        y = np.concatenate([p.labels for p in pairs])
        s = np.concatenate([p.scores for p in pairs])
        g = np.concatenate([_groups(p.groups, len(p.labels)) for p in pairs])
        if metric == "ad_auc" or metric.startswith("ad_auc_"):
            return metrics.macro_over_tasks(metrics.ROC_AUC), (task, s, y), g
        if metric == "ad_f1":
            pred = np.concatenate([(p.scores >= p.threshold).astype(int) for p in pairs])
        elif metric == "ad_f1_pooled_threshold":
            pred = (s >= ad.pooled_threshold).astype(int)
        elif metric == "ad_f1_all_positive":
            pred = np.ones_like(y)
        else:
            return None
        return metrics.macro_over_tasks(metrics.F1), (task, y, pred), g
    if metric in ("td_auc", "td_auc_small") and td is not None:
        key = "organ" if metric == "td_auc" else "organ_small"
        if key not in td.scores or not len(td.scores[key][1]):
            return None
        s, y = td.scores[key]
        return metrics.ROC_AUC, (s, y), _groups(td.groups.get(key), len(y))
    if metric in ("ts_dsc", "ts_dsc_ge10", "ts_dsc_lt10") and ts is not None and len(ts.per_case):
        per_case = {
            "ts_dsc": ts.per_case,
            "ts_dsc_ge10": ts.in_bin(LESION_BIN_MM),
            "ts_dsc_lt10": ts.in_bin(0.0, LESION_BIN_MM),
        }[metric]
        if not np.isfinite(per_case).any():
            return None
        return metrics.NANMEAN, (per_case,), _groups(ts.groups, len(per_case))
    return None
