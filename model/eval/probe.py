"""Fitted methods: a logistic regression per AD task and for TD on given organ features, fitted on the training split.

One implementation for every fitted row, so they read alike: linear probes on a model's frozen organ embeddings
(``probe_grounded``, ``probe_clip``, ``probe_random``) and the no-learning rows on ``organ_stats``
(``model.eval.baseline``).
The fit's labels are the image truth (``labels="image"``) or what the reports say (``"report"``: like the pretrained
models, which only ever read reports); every method is scored against the image truth on the same test items, with AD
thresholds chosen on validation, so the rows and their paired differences are like for like.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from model.eval.results import MethodResult
from model.eval.tumor import STRATA, TUMOR_WORDS, td_items, td_result
from model.eval.zero_shot import ad_from_scores, ad_labels


def linear_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, l2: float = 1e-2, max_iter: int = 2000
) -> np.ndarray:
    """scikit-learn ``LogisticRegression`` on standardised features, penalty ``l2 * |w|^2`` added to the mean log-loss
    (``C = 1 / (2 l2 n)``); returns test probabilities. With one class in training, every test score is its
    frequency."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_y = np.asarray(train_y, dtype=int)
    if len(np.unique(train_y)) < 2:
        return np.full(len(test_x), float(train_y.mean()) if len(train_y) else 0.5)
    fit = make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / (2.0 * l2 * len(train_y)), max_iter=max_iter))
    fit.fit(np.asarray(train_x, dtype=np.float64), train_y)
    return fit.predict_proba(np.asarray(test_x, dtype=np.float64))[:, 1] if len(test_x) else np.zeros(0)


def report_view(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows as the reports describe them (status and abnormalities from ``report_status``,
    ``report_abnormalities``)."""
    out = rows.copy()
    out["status"], out["abnormalities"] = rows["report_status"], rows["report_abnormalities"]
    return out


def _fill(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Missing values -> the training column mean (0 where a column is empty in training)."""
    with np.errstate(all="ignore"):
        mean = np.nan_to_num(np.nanmean(train, axis=0) if len(train) else np.zeros(train.shape[1]))
    return [np.where(np.isnan(a), mean, a) for a in (train, *others)]


def fitted_method(
    name: str,
    features: Mapping[str, np.ndarray],
    rows: Mapping[str, pd.DataFrame],
    tasks: Sequence[tuple[str, str]],
    tumor_classes: Sequence[str],
    labels: str = "image",
    negatives: str = "normal",
    l2: float = 1e-2,
    n_boot: int = 1000,
    seed: int = 0,
) -> MethodResult:
    """AD and TD of logistic regressions on ``features[split]`` (aligned with ``rows[split]``, splits "train", "val",
    "test"), fitted on train with ``labels`` ("image" or "report")."""
    if labels not in ("image", "report"):
        raise ValueError(f"labels must be 'image' or 'report', not {labels!r}")
    tr, va, te = rows["train"], rows["val"], rows["test"]
    fit_rows = tr if labels == "image" else report_view(tr)
    x_tr_all, x_va_all, x_te_all = _fill(features["train"], features["val"], features["test"])
    scores = {}
    for organ, abn in tasks:
        take, y = ad_labels(fit_rows, organ, abn, negatives)
        te_take, _ = ad_labels(te, organ, abn, negatives)
        va_take, _ = ad_labels(va, organ, abn, negatives)
        both = linear_probe(x_tr_all[take], y, np.concatenate([x_te_all[te_take], x_va_all[va_take]]), l2)
        scores[(organ, abn)] = (both[: len(te_take)], both[len(te_take) :])
    ad = ad_from_scores(scores, te, va, tasks, negatives, n_boot=n_boot, seed=seed) if tasks else None
    td = None
    if tumor_classes:
        if labels == "image":
            fit_take = np.flatnonzero(tr["organ"].isin(list(tumor_classes)).to_numpy())
            fit_y = (tr["lesion_mm"].to_numpy()[fit_take] > 0).astype(int)
        else:
            fit_take = np.flatnonzero(tr["organ"].isin(list(tumor_classes)).to_numpy())
            told = tr["report_abnormalities"].map(lambda a: any(w in a for w in TUMOR_WORDS)).to_numpy()
            fit_y = told[fit_take].astype(int)
        td_scores = {}
        for stratum in STRATA:
            take, _ = td_items(te, tumor_classes, stratum)
            td_scores[stratum] = linear_probe(x_tr_all[fit_take], fit_y, x_te_all[take], l2)
        td = td_result(td_scores, te, tumor_classes, n_boot, seed)
    return MethodResult(name, pretrained=False, abnormality_detection=ad, tumor_detection=td)
