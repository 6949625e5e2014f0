"""Statistics over pretraining seeds and paired differences between methods, resampling patients.

Every headline metric is a function of per-item arrays that all methods share (the same test organs,
studies or lesion cases, in the same order): ``metric_items`` returns them. A method trained with
several seeds is scored as the mean of its seeds' metrics; the interval resamples patients (the
same resample for every seed), and a paired difference A - B uses the same resample for both
methods, so the spread of the test cohort largely cancels from the difference.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from model.eval import metrics
from model.eval.evaluate import MethodResult
from model.eval.metrics import Estimate

Items = tuple[Callable[..., float], tuple[np.ndarray, ...], np.ndarray]  # (metric, per-item arrays, patient groups)


def _macro(fn: Callable[..., float]) -> Callable[..., float]:
    def metric(task: np.ndarray, *arrays: np.ndarray) -> float:
        vals = [fn(*(a[task == t] for a in arrays)) for t in np.unique(task)]
        vals = [v for v in vals if np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")

    return metric


def _nanmean(d: np.ndarray) -> float:
    return float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")


def metric_items(m: MethodResult, metric: str, td_headline: str = "probe_study") -> Items | None:
    """The per-item arrays behind one headline metric of ``m`` (None: not run or not applicable)."""
    if metric == "or_acc" and m.organ_recognition is not None and m.organ_recognition.groups is not None:
        r = m.organ_recognition
        return metrics.top1_accuracy, (r.y_true, r.y_pred), r.groups
    if metric in ("ad_auc", "ad_f1") and m.abnormality_detection is not None and m.abnormality_detection.pairs:
        pairs = m.abnormality_detection.pairs
        task = np.concatenate([np.full(len(p.labels), t) for t, p in enumerate(pairs)])
        y = np.concatenate([p.labels for p in pairs])
        s = np.concatenate([p.scores for p in pairs])
        g = np.concatenate([p.groups if p.groups is not None else np.zeros(len(p.labels)) for p in pairs])
        if metric == "ad_auc":
            return _macro(metrics.roc_auc), (task, s, y), g
        pred = np.concatenate([(p.scores >= p.threshold).astype(int) for p in pairs])
        return _macro(metrics.f1_binary), (task, y, pred), g
    if metric == "td_auc" and m.tumor_detection is not None and td_headline in m.tumor_detection.scores:
        s, y = m.tumor_detection.scores[td_headline]
        g = m.tumor_detection.groups.get(td_headline)
        return metrics.roc_auc, (s, y), g if g is not None else np.arange(len(y))
    if metric == "ts_dsc" and m.tumor_segmentation is not None and len(m.tumor_segmentation.per_case):
        ts = m.tumor_segmentation
        return _nanmean, (ts.per_case,), ts.groups if ts.groups is not None else np.arange(len(ts.per_case))
    return None


def _resample(groups: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """``n`` patient-level resamples: each a list of item indices."""
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(int(inverse.max()) + 1)] if len(groups) else []
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pick = rng.integers(0, len(members), size=len(members))
        out.append(np.concatenate([members[i] for i in pick]) if len(members) else np.zeros(0, int))
    return out


def _seed_mean(items: Sequence[Items], idx: np.ndarray | None = None) -> float:
    vals = [fn(*(a if idx is None else a[idx] for a in arrays)) for fn, arrays, _ in items]
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _interval(stat: Callable[[np.ndarray | None], float], groups: np.ndarray, n: int, seed: int) -> Estimate:
    value = stat(None)
    boots = np.array([stat(idx) for idx in _resample(groups, n, seed)]) if len(groups) else np.zeros(0)
    boots = boots[np.isfinite(boots)]
    if not np.isfinite(value) or not boots.size:
        return Estimate(value, float("nan"), float("nan"))
    low, high = np.percentile(boots, [2.5, 97.5])
    return Estimate(value, float(low), float(high))


def _items(runs: Sequence[MethodResult], metric: str, td_headline: str) -> list[Items]:
    found = [metric_items(r, metric, td_headline) for r in runs]
    return [f for f in found if f is not None]


def _check_aligned(a: Sequence[Items], b: Sequence[Items] = ()) -> np.ndarray:
    groups = a[0][2]
    for _, arrays, g in [*a, *b]:
        if len(g) != len(groups) or not np.array_equal(np.asarray(g).astype(str), np.asarray(groups).astype(str)):
            raise ValueError("paired statistics need the same test items, in the same order, for every run")
    return np.asarray(groups)


def seed_estimate(runs: Sequence[MethodResult], metric: str, td_headline: str = "probe_study", n: int = 1000,
                  seed: int = 0) -> Estimate:
    """A method's metric over its pretraining seeds (``runs``, one per seed): the mean of the seeds'
    values, with a patient bootstrap of that mean."""
    items = _items(runs, metric, td_headline)
    if not items:
        return Estimate.missing()
    groups = _check_aligned(items)
    return _interval(lambda idx: _seed_mean(items, idx), groups, n, seed)


def paired_difference(runs_a: Sequence[MethodResult], runs_b: Sequence[MethodResult], metric: str,
                      td_headline: str = "probe_study", n: int = 1000, seed: int = 0) -> Estimate:
    """A - B of the seed-mean metric, with a paired patient bootstrap (one resample for both)."""
    a, b = _items(runs_a, metric, td_headline), _items(runs_b, metric, td_headline)
    if not a or not b:
        return Estimate.missing()
    groups = _check_aligned(a, b)
    return _interval(lambda idx: _seed_mean(a, idx) - _seed_mean(b, idx), groups, n, seed)


def seed_values(runs: Sequence[MethodResult], metric: str, td_headline: str = "probe_study") -> list[float]:
    """Each seed's own value of the metric (its spread over seeds)."""
    return [_seed_mean([it]) for it in _items(runs, metric, td_headline)]
