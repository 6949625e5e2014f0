"""Metrics of model/eval against values computed by hand on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.eval import metrics as M
from model.eval import resampled


def test_auc_hand_computed():
    assert M.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)


def test_auc_ties_count_half():
    # pos {0.5, 0.9} vs neg {0.2, 0.5}: 1 + 0.5 (tie) + 2 = 3.5 of 4
    assert M.roc_auc([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(0.875)
    assert M.roc_auc([0.5] * 4, [0, 1, 0, 1]) == pytest.approx(0.5)


def test_auc_one_class_is_nan():
    assert math.isnan(M.roc_auc([0.1, 0.2], [1, 1]))


def test_roc_curve_steps():
    fpr, tpr, thr = M.roc_curve([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1]
    assert tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    assert thr[0] == np.inf and thr[1:].tolist() == [0.8, 0.4, 0.35, 0.1]
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)


def test_accuracy_confusion_macro_f1():
    y, p = [0, 1, 2, 2], [0, 2, 2, 2]
    assert M.top1_accuracy(y, p) == pytest.approx(0.75)
    assert M.confusion_matrix(y, p, 3).tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 2]]
    # F1: class 0 = 1, class 1 = 0, class 2 = 2*2/(2*2+1) = 0.8
    assert M.per_class_f1(y, p, 3).tolist() == pytest.approx([1.0, 0.0, 0.8])
    assert M.macro_f1(y, p, 3) == pytest.approx(0.6)


def test_f1_at_threshold_and_choice():
    s, y = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert M.f1_at_threshold(s, y, 0.35) == pytest.approx(0.8)  # tp 2, fp 1
    assert M.f1_at_threshold(s, y, 0.5) == pytest.approx(2 / 3)  # tp 1, fn 1
    # candidates: 0.8 -> 2/3, 0.4 -> 1/2, 0.35 -> 0.8, 0.1 -> 2/3
    assert M.choose_threshold(s, y) == pytest.approx(0.35)
    assert M.choose_threshold(s, [0, 0, 0, 0]) == np.inf


def test_dice_and_empty_convention():
    assert M.dice([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert M.dice(np.zeros(4), np.zeros(4)) == 1.0
    assert math.isnan(M.dice(np.zeros(4), np.zeros(4), empty=float("nan")))
    assert M.dice([1, 0], [0, 0]) == 0.0
    mean, per_case = M.mean_dice([np.array([1, 1, 0, 0]), np.zeros(4)], [np.array([1, 0, 1, 0]), np.zeros(4)])
    assert per_case.tolist() == [0.5, 1.0] and mean == pytest.approx(0.75)
    mean, _ = M.mean_dice([np.array([1, 1, 0, 0]), np.zeros(4)], [np.array([1, 0, 1, 0]), np.zeros(4)], empty=float("nan"))
    assert mean == pytest.approx(0.5)


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    s = y + rng.normal(0, 1.0, 60)
    a = M.bootstrap_ci(M.roc_auc, s, y, n=200, seed=3)
    b = M.bootstrap_ci(M.roc_auc, s, y, n=200, seed=3)
    c = M.bootstrap_ci(M.roc_auc, s, y, n=200, seed=4)
    assert a == b and a != c
    value, low, high = a
    assert value == pytest.approx(M.roc_auc(s, y))
    assert low <= value <= high and high - low > 0


def test_bootstrap_groups_resample_whole_clusters():
    # two groups of identical values: every cluster resample has mean 0, 1/2 or 1, never 1/3
    x = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    g = np.array(["a", "a", "a", "b", "b", "b"])
    seen = set()

    def mean(v: np.ndarray) -> float:
        seen.add(round(float(v.mean()), 6))
        return float(v.mean())

    value, low, high = M.bootstrap_ci(mean, x, n=50, seed=0, groups=g)
    assert value == 0.5 and low == 0.0 and high == 1.0
    assert seen <= {0.0, 0.5, 1.0}


def test_bootstrap_degenerate_resamples_are_dropped():
    value, low, high = M.bootstrap_ci(M.roc_auc, np.array([0.1, 0.9]), np.array([0, 1]), n=100, seed=0)
    assert value == 1.0 and low == 1.0 and high == 1.0


def test_estimate_json_round_trip():
    e = M.Estimate(0.5, 0.4, float("nan"))
    assert e.to_dict() == {"value": 0.5, "low": 0.4, "high": None}
    back = M.Estimate.from_dict(e.to_dict())
    assert back.value == 0.5 and math.isnan(back.high)
    assert not M.Estimate.missing().applicable


def test_eval_package_does_not_import_dagster():
    from pathlib import Path

    import model.eval

    for path in Path(model.eval.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "import dagster" not in text and "from dagster" not in text, path


def test_library_metrics_agree_with_the_hand_written_oracles():
    import metric_oracles as oracle

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 40))
        y = rng.integers(0, 2, n)
        s = np.round(rng.normal(size=n) + y, 1)  # rounded: ties happen
        pred = rng.integers(0, 2, n)
        assert M.roc_auc(s, y) == pytest.approx(oracle.roc_auc(s, y), nan_ok=True)
        for a, b in zip(M.roc_curve(s, y), oracle.roc_curve(s, y)):
            np.testing.assert_allclose(a, b)
        assert M.f1_binary(y, pred) == pytest.approx(oracle.f1_binary(y, pred), nan_ok=True)
        k = int(rng.integers(2, 6))
        t, p = rng.integers(0, k, n), rng.integers(0, k, n)
        np.testing.assert_array_equal(M.confusion_matrix(t, p, k + 1), oracle.confusion_matrix(t, p, k + 1))
        np.testing.assert_allclose(M.per_class_f1(t, p, k + 1), oracle.per_class_f1(t, p, k + 1))
        assert M.macro_f1(t, p, k) == pytest.approx(oracle.macro_f1(t, p, k))
        assert M.top1_accuracy(t, p) == pytest.approx(oracle.top1_accuracy(t, p))
        a, b = rng.random((5, 6, 7)) > 0.7, rng.random((5, 6, 7)) > 0.6
        assert M.dice(a, b) == pytest.approx(oracle.dice(a, b))
    assert M.dice(np.zeros(3), np.zeros(3)) == 1.0 and np.isnan(M.roc_auc([1, 2], [1, 1]))


def _cases(seed: int, n: int = 40):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.round(y + rng.normal(0, 1.0, n), 1)  # rounded: ties inside and across classes
    groups = rng.integers(0, n // 3, n)  # patients with several cases
    task = rng.integers(0, 4, n)
    return y, s, groups, task


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resampled_metrics_equal_scikit_learn_on_every_resample(seed):
    # the one-pass forms against scikit-learn called on each resample's drawn cases (the generic loop)
    y, s, groups, task = _cases(seed)
    pred = (s > 0.5).astype(int)
    k = 5
    y_cls, p_cls = (y * 2 + task) % k, (pred * 2 + task + (s > 1.2)) % k
    dice = np.where(np.arange(len(y)) % 7 == 0, np.nan, np.abs(s) / 3)
    cases = [
        (M.ROC_AUC, (s, y)), (M.F1, (y, pred)), (M.ACCURACY, (y_cls, p_cls)), (M.macro_f1_of(k), (y_cls, p_cls)),
        (M.NANMEAN, (dice,)), (M.macro_over_tasks(M.ROC_AUC), (task, s, y)), (M.macro_over_tasks(M.F1), (task, y, pred)),
        (M.macro_over_columns(M.ROC_AUC), (np.stack([s, -s, s * task], 1), np.stack([y, y, pred], 1))),
        (M.macro_over_columns(M.F1), (np.stack([y, pred], 1), np.stack([pred, y], 1))),
    ]
    for g in (None, groups):
        w = resampled.counts(len(y), 60, seed, g)
        assert w.shape == (60, len(y)) and np.all(w.sum(1) > 0)
        if g is not None:  # a patient's cases are drawn together
            for patient in np.unique(g):
                assert np.all(w[:, g == patient] == w[:, g == patient][:, :1])
        else:
            assert np.all(w.sum(1) == len(y))
        for metric, arrays in cases:
            fast = M.resampled_values(metric, w, *arrays)
            slow = M.resampled_values(metric.fn, w, *arrays)
            np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12, equal_nan=True, err_msg=str(metric.fn))
            assert M.bootstrap_ci(metric, *arrays, n=60, seed=seed, groups=g) == pytest.approx(
                M.bootstrap_ci(metric.fn, *arrays, n=60, seed=seed, groups=g), nan_ok=True)


def test_resampled_metrics_are_nan_where_undefined():
    w = np.array([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    auc = resampled.roc_auc(w, np.array([0.1, 0.5, 0.9]), np.array([0, 1, 1]))
    assert np.isnan(auc[0]) and auc[1] == 1.0  # only a negative drawn: undefined
    f1 = resampled.f1_binary(w, np.array([0, 1, 1]), np.array([0, 1, 0]))
    assert np.isnan(f1[0]) and f1[1] == pytest.approx(2 / 3)
    assert resampled.nanmean(w, np.array([1.0, np.nan, np.nan]))[1] == 1.0
    assert np.isnan(resampled.nanmean(np.array([[0.0, 1.0, 1.0]]), np.array([1.0, np.nan, np.nan]))[0])
