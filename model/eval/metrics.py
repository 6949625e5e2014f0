"""Evaluation metrics from kept libraries (scikit-learn, MONAI), with bootstrap confidence intervals.

The hand-written versions these replaced live on as test oracles (tests/metric_oracles.py).

Conventions:
- labels are integer arrays; binary scores are "higher = more likely positive";
- a metric that is undefined on its input (AUC with one class present, F1 with no positives
  predicted or present) returns ``nan`` rather than a made-up number;
- Dice of two empty masks is ``empty`` (default 1.0: nothing to find, nothing found), the
  convention of MONAI's ``DiceMetric(ignore_empty=False)``; pass ``empty=nan`` to leave such
  cases out of a mean.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import cast

import numpy as np
from sklearn import metrics as _sk
from sklearn.metrics import accuracy_score

from model.eval import resampled

__all__ = [
    "top1_accuracy",
    "confusion_matrix",
    "per_class_f1",
    "macro_f1",
    "roc_curve",
    "roc_auc",
    "f1_binary",
    "f1_at_threshold",
    "choose_threshold",
    "dice",
    "mean_dice",
    "Metric",
    "ACCURACY",
    "ROC_AUC",
    "F1",
    "NANMEAN",
    "macro_over_tasks",
    "macro_over_columns",
    "macro_f1_of",
    "resampled_values",
    "bootstrap_ci",
    "Estimate",
    "estimate",
]


def top1_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(accuracy_score(y_true, y_pred)) if y_true.size else float("nan")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """``cm[i, j]`` = number of items of true class ``i`` predicted as ``j`` (classes 0..n-1)."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if n_classes is None:
        n_classes = int(max(y_true.max(initial=-1), y_pred.max(initial=-1)) + 1)
    return _sk.confusion_matrix(y_true, y_pred, labels=np.arange(n_classes)) if n_classes else np.zeros((0, 0), int)


def per_class_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """F1 of each class (one-vs-rest); ``nan`` for a class neither present nor predicted."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    f1 = (
        _sk.f1_score(
            np.asarray(y_true, int), np.asarray(y_pred, int), labels=np.arange(len(cm)), average=None, zero_division=0.0
        )
        if len(cm)
        else np.zeros(0)
    )
    return np.where(cm.sum(0) + cm.sum(1) > 0, f1, np.nan)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> float:
    """Mean F1 over the classes present in ``y_true`` (a predicted-only class counts as a false
    positive of the others but gets no F1 row of its own, like scikit-learn with ``labels=present``)."""
    y_true = np.asarray(y_true, dtype=int)
    if y_true.size == 0:
        return float("nan")
    f1 = per_class_f1(y_true, y_pred, n_classes)
    return float(np.mean(f1[np.unique(y_true)]))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), thresholds descending, starting at +inf; tied scores form one step
    (scikit-learn's ``roc_curve`` with every point kept)."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():  # one class: the missing rate is undefined
        order = np.unique(scores)[::-1]
        n_pos, n_neg = labels.sum(), (~labels).sum()
        tp = np.array([(labels & (scores >= t)).sum() for t in order], float)
        fp = np.array([(~labels & (scores >= t)).sum() for t in order], float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos], np.r_[np.inf, order]
    fpr, tpr, thr = _sk.roc_curve(labels, scores, drop_intermediate=False)
    return fpr, tpr, np.r_[np.inf, thr[1:]]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (scikit-learn; ties count half); ``nan`` when only one class is present."""
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(_sk.roc_auc_score(labels, np.asarray(scores, dtype=float)))


def f1_binary(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of the positive class (scikit-learn); ``nan`` when there are no positives in truth or prediction."""
    y_true, y_pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    if not (y_true.any() or y_pred.any()):
        return float("nan")
    return float(_sk.f1_score(y_true, y_pred, zero_division=0.0))


def f1_at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """F1 of predicting positive where ``score >= threshold``."""
    return f1_binary(labels, np.asarray(scores, dtype=float) >= threshold)


def choose_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold maximising F1 on (validation) scores; ties go to the highest threshold.

    Candidates are the observed scores (predict positive where ``score >= t``). With no positive
    label, returns ``+inf`` (predict nothing positive).
    """
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels).astype(bool)
    if scores.size == 0 or not labels.any():
        return float("inf")
    fpr, tpr, thr = roc_curve(scores, labels)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    tp = tpr[1:] * n_pos
    fp = (fpr[1:] * n_neg) if n_neg else np.zeros_like(tp)
    f1 = 2 * tp / (tp + fp + n_pos)
    return float(thr[1:][int(np.argmax(f1))])  # argmax takes the first = highest threshold


def dice(pred: np.ndarray, truth: np.ndarray, empty: float = 1.0) -> float:
    """Dice of two binary masks (MONAI ``DiceMetric``); ``empty`` when both are empty (see module docstring)."""
    import torch
    from monai.metrics import DiceMetric

    pred, truth = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    if not (pred.any() or truth.any()):
        return float(empty)
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]  # noqa: E731
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    scores = cast(torch.Tensor, metric(as_tensor(pred), as_tensor(truth)))  # reduction="none": (batch, class)
    return float(scores[0, 0])


def mean_dice(preds: list[np.ndarray], truths: list[np.ndarray], empty: float = 1.0) -> tuple[float, np.ndarray]:
    """(mean over cases, per-case Dice); cases whose Dice is ``nan`` (``empty=nan``) are left out of the mean."""
    per_case = np.array([dice(p, t, empty) for p, t in zip(preds, truths, strict=True)], dtype=float)
    mean = float(np.nanmean(per_case)) if np.isfinite(per_case).any() else float("nan")
    return mean, per_case


@dataclass(frozen=True)
class Metric:
    """A metric (``fn``, scikit-learn on one sample) with its form over bootstrap weights: ``weighted(w,
    *arrays)`` gives ``(B,)`` values for the ``(B, n)`` resample counts ``w`` (``model.eval.resampled``),
    so a bootstrap needs no call per resample."""

    fn: Callable[..., float]
    weighted: Callable[..., np.ndarray]

    def __call__(self, *arrays: np.ndarray) -> float:
        return self.fn(*arrays)


def _macro_over_tasks(fn: Callable[..., float]) -> Callable[..., float]:
    def metric(task: np.ndarray, *arrays: np.ndarray) -> float:
        vals = [fn(*(a[task == t] for a in arrays)) for t in np.unique(task)]
        vals = [v for v in vals if np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")

    return metric


def _macro_over_columns(fn: Callable[..., float]) -> Callable[..., float]:
    def metric(*arrays: np.ndarray) -> float:
        vals = [fn(*(a[:, j] for a in arrays)) for j in range(arrays[0].shape[1])]
        vals = [v for v in vals if np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")

    return metric


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


ACCURACY = Metric(top1_accuracy, resampled.accuracy)
ROC_AUC = Metric(roc_auc, resampled.roc_auc)
F1 = Metric(f1_binary, resampled.f1_binary)
NANMEAN = Metric(_nanmean, resampled.nanmean)  # e.g. per-case Dice, cases without a value left out


def macro_over_tasks(metric: Metric) -> Metric:
    """``metric`` on each task's cases (first array: the task of each case), averaged over the tasks
    where it is defined."""
    return Metric(_macro_over_tasks(metric.fn), partial(resampled.macro_over_tasks, metric.weighted))


def macro_over_columns(metric: Metric) -> Metric:
    """``metric`` on each column of ``(n, k)`` arrays (e.g. one column per label), averaged over the
    columns where it is defined."""
    return Metric(_macro_over_columns(metric.fn), partial(resampled.macro_over_columns, metric.weighted))


def macro_f1_of(n_classes: int) -> Metric:
    """``macro_f1`` over classes 0..n_classes-1 as a ``Metric``."""
    return Metric(partial(macro_f1, n_classes=n_classes), partial(resampled.macro_f1, n_classes=n_classes))


def resampled_values(metric_fn: Callable[..., float], w: np.ndarray, *arrays: np.ndarray) -> np.ndarray:
    """The metric on each resample of ``w`` (``(B, n)`` counts): in one pass for a ``Metric``,
    else one call per resample on the drawn cases."""
    if isinstance(metric_fn, Metric):
        return np.asarray(metric_fn.weighted(w, *arrays), dtype=float)
    cases = np.arange(w.shape[1])
    return np.array([metric_fn(*(a[np.repeat(cases, row.astype(int))] for a in arrays)) for row in w], dtype=float)


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: np.ndarray,
    n: int = 1000,
    seed: int = 0,
    groups: np.ndarray | None = None,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """(value, low, high): the metric on all cases and its percentile bootstrap interval.

    Cases (the first axis of every array) are resampled with replacement; with ``groups``
    (e.g. patient or study ids) whole groups are resampled (cluster bootstrap), so the interval
    respects correlated cases. Resamples where the metric is undefined (``nan``) are dropped;
    if none is left, the interval is (nan, nan). Deterministic for a given ``seed``. A ``Metric``
    is computed over all resamples at once; any other callable once per resample.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    size = len(arrays[0])
    if any(len(a) != size for a in arrays):
        raise ValueError("all arrays must have the same length")
    value = float(metric_fn(*arrays))
    if size == 0:
        return value, float("nan"), float("nan")
    stats = resampled_values(metric_fn, resampled.counts(size, n, seed, groups), *arrays)
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return value, float("nan"), float("nan")
    low, high = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return value, float(low), float(high)


@dataclass(frozen=True)
class Estimate:
    """A metric with its 95% bootstrap interval; ``nan`` everywhere means not applicable."""

    value: float
    low: float
    high: float

    @classmethod
    def missing(cls) -> Estimate:
        return cls(float("nan"), float("nan"), float("nan"))

    @property
    def applicable(self) -> bool:
        return bool(np.isfinite(self.value))

    def to_dict(self) -> dict[str, float | None]:
        """JSON-able: ``nan`` becomes ``None``."""
        return {
            k: (float(v) if np.isfinite(v) else None)
            for k, v in (("value", self.value), ("low", self.low), ("high", self.high))
        }

    @classmethod
    def from_dict(cls, d: dict) -> Estimate:
        return cls(*(float("nan") if d.get(k) is None else float(d[k]) for k in ("value", "low", "high")))


def estimate(
    metric_fn: Callable[..., float],
    *arrays: np.ndarray,
    n: int = 1000,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> Estimate:
    """``bootstrap_ci`` as an ``Estimate``."""
    return Estimate(*bootstrap_ci(metric_fn, *arrays, n=n, seed=seed, groups=groups))
