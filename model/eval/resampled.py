"""Bootstrap resamples as weights, and the headline metrics over many resamples at once.

A bootstrap resample (of cases, or of whole patients) is the multiset of cases it drew: one count per
case, so ``B`` resamples are a ``(B, n)`` matrix of counts. A metric of the resampled arrays equals the
same metric with those counts as sample weights, which numpy computes for every resample in one pass
from confusion counts (F1, accuracy) or a rank sum (ROC AUC, ties half). scikit-learn has no form over
many resamples, and calling it ~10^5 times per evaluation cost more than everything else
(bench/eval_speed.py); the point estimates stay scikit-learn's, and tests/test_eval_metrics.py checks
these forms against scikit-learn on every resample.

Every function returns ``(B,)`` values with ``nan`` where the metric is undefined on that resample,
with the conventions of ``model.eval.metrics``.
"""

from __future__ import annotations

import numpy as np


def counts(size: int, n: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """``(n, size)`` draw counts of ``n`` bootstrap resamples of ``size`` cases; with ``groups``, whole
    groups are drawn (a cluster bootstrap) and every member of a group takes its group's count."""
    rng = np.random.default_rng(seed)
    if groups is None:
        picks = rng.integers(0, size, size=(n, size)) if size else np.zeros((n, 0), int)
        return _bincount_rows(picks, size)
    groups = np.asarray(groups)
    if len(groups) != size:
        raise ValueError("groups must have one entry per case")
    if not size:
        return np.zeros((n, 0))
    _, inverse = np.unique(groups, return_inverse=True)
    k = int(inverse.max()) + 1
    return _bincount_rows(rng.integers(0, k, size=(n, k)), k)[:, inverse]


def _bincount_rows(picks: np.ndarray, size: int) -> np.ndarray:
    rows = np.arange(len(picks))[:, None]
    out = np.zeros((len(picks), size))
    np.add.at(out, (np.broadcast_to(rows, picks.shape), picks), 1.0)
    return out


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def accuracy(w: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    return _divide(w @ (np.asarray(y_true) == np.asarray(y_pred)), w.sum(1))


def f1_binary(w: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """F1 of the positive class; ``nan`` with no positive in truth or prediction."""
    t, p = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    tp, fp, fn = w @ (t & p), w @ (~t & p), w @ (t & ~p)
    return _divide(2 * tp, 2 * tp + fp + fn)


def macro_f1(w: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean one-vs-rest F1 over the classes present in each resample's truth."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    eye = np.eye(n_classes)
    truth, pred = eye[y_true], eye[y_pred]  # (n, k) one-hot
    tp = w @ (truth * (y_true == y_pred)[:, None])
    support, predicted = w @ truth, w @ pred
    f1 = np.nan_to_num(_divide(2 * tp, support + predicted))
    present = support > 0
    return _divide((f1 * present).sum(1), present.sum(1).astype(float))


def roc_auc(w: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney: P(score of a positive > score of a negative), ties counted half;
    ``nan`` where a resample holds one class only."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels).astype(bool)
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.zeros(0, int)
    ws = w[:, order]
    pos = np.add.reduceat(ws * labels[order], starts, axis=1) if len(s) else np.zeros((len(w), 0))
    neg = np.add.reduceat(ws * ~labels[order], starts, axis=1) if len(s) else np.zeros((len(w), 0))
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each distinct score
    return _divide((pos * (below + 0.5 * neg)).sum(1), pos.sum(1) * neg.sum(1))


def nanmean(w: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mean of the finite values; ``nan`` where a resample holds none."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    return _divide(w[:, finite] @ values[finite], w[:, finite].sum(1))


def macro_over_tasks(per_task, w: np.ndarray, task: np.ndarray, *arrays: np.ndarray) -> np.ndarray:
    """Mean over tasks of ``per_task`` on each task's cases, tasks where it is ``nan`` left out."""
    task = np.asarray(task)
    rows = [per_task(w[:, task == t], *(np.asarray(a)[task == t] for a in arrays)) for t in np.unique(task)]
    return mean_finite(np.stack(rows)) if rows else np.full(len(w), np.nan)


def macro_over_columns(per_column, w: np.ndarray, *arrays: np.ndarray) -> np.ndarray:
    """Mean over the columns of ``(n, k)`` arrays of ``per_column`` on each column, ``nan`` ones left out."""
    k = np.asarray(arrays[0]).shape[1]
    rows = [per_column(w, *(np.asarray(a)[:, j] for a in arrays)) for j in range(k)]
    return mean_finite(np.stack(rows)) if rows else np.full(len(w), np.nan)


def mean_finite(values: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of the finite entries; ``nan`` where there is none."""
    finite = np.isfinite(values)
    return _divide(np.where(finite, values, 0.0).sum(0), finite.sum(0).astype(float))
