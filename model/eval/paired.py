"""Statistics over pretraining seeds and paired differences between methods, resampling patients.

Every metric is a function of per-item arrays that all methods share (the same test organs or lesion cases, in the
same order): ``model.eval.results.metric_items`` returns them. A method trained with
several seeds is scored as the mean of its seeds' metrics; the interval resamples patients (the
same resample for every seed), and a paired difference A - B uses the same resample for both
methods, so the spread of the test cohort largely cancels from the difference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from model.eval import metrics, resampled
from model.eval.metrics import Estimate
from model.eval.results import Items, MethodResult, metric_items


def _seed_mean(items: Sequence[Items], w: np.ndarray | None = None) -> float | np.ndarray:
    """The mean over seeds of each seed's metric (seeds where it is undefined left out): on all items,
    or on each resample of the ``(B, n)`` counts ``w``."""
    if w is None:
        vals = [fn(*arrays) for fn, arrays, _ in items]
        vals = [v for v in vals if np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")
    return resampled.mean_finite(np.stack([metrics.resampled_values(fn, w, *arrays) for fn, arrays, _ in items]))


def _interval(
    stat: Callable[[np.ndarray | None], float | np.ndarray], groups: np.ndarray, n: int, seed: int
) -> Estimate:
    value = float(stat(None))  # on all items: one number
    boots = np.asarray(stat(resampled.counts(len(groups), n, seed, groups))) if len(groups) else np.zeros(0)
    boots = boots[np.isfinite(boots)]
    if not np.isfinite(value) or not boots.size:
        return Estimate(value, float("nan"), float("nan"))
    low, high = np.percentile(boots, [2.5, 97.5])
    return Estimate(value, float(low), float(high))


def _items(runs: Sequence[MethodResult], metric: str) -> list[Items]:
    found = [metric_items(r, metric) for r in runs]
    return [f for f in found if f is not None]


def _check_aligned(a: Sequence[Items], b: Sequence[Items] = ()) -> np.ndarray:
    groups = a[0][2]
    for _, _, g in [*a, *b]:
        if len(g) != len(groups) or not np.array_equal(np.asarray(g).astype(str), np.asarray(groups).astype(str)):
            raise ValueError("paired statistics need the same test items, in the same order, for every run")
    return np.asarray(groups)


def seed_estimate(runs: Sequence[MethodResult], metric: str, n: int = 1000, seed: int = 0) -> Estimate:
    """A method's metric over its pretraining seeds (``runs``, one per seed): the mean of the seeds'
    values, with a patient bootstrap of that mean."""
    items = _items(runs, metric)
    if not items:
        return Estimate.missing()
    groups = _check_aligned(items)
    return _interval(lambda w: _seed_mean(items, w), groups, n, seed)


def paired_difference(
    runs_a: Sequence[MethodResult], runs_b: Sequence[MethodResult], metric: str, n: int = 1000, seed: int = 0
) -> Estimate:
    """A - B of the seed-mean metric, with a paired patient bootstrap (one resample for both)."""
    a, b = _items(runs_a, metric), _items(runs_b, metric)
    if not a or not b:
        return Estimate.missing()
    groups = _check_aligned(a, b)
    return _interval(lambda w: _seed_mean(a, w) - _seed_mean(b, w), groups, n, seed)


def seed_values(runs: Sequence[MethodResult], metric: str) -> list[float]:
    """Each seed's own value of the metric (its spread over seeds)."""
    return [float(_seed_mean([it])) for it in _items(runs, metric)]
