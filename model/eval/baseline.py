"""The no-learning row: what an intensity histogram and a ruler already tell, with no image model.

Per AD task (organ, abnormality) and for TD, a logistic regression (``tumor.linear_probe``,
scikit-learn) on ``organ_stats`` features -- HU mean and spread, volume, bounding box -- fitted on
the training split, AD thresholds chosen on validation, scored on the same test items as the
models, so its row and the paired differences read like the others. OR and TS do not apply.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from model.eval.data import EvalData
from model.eval.evaluate import EvalConfig, MethodResult
from model.eval.tumor import TDResult, linear_probe, organ_tumor, study_tumor, tumor_organ_rows
from model.eval.zero_shot import ad_from_scores, ad_labels
from model.eval import metrics

FEATURES = ("hu_mean", "hu_std", "volume_ml", "bbox_i0", "bbox_j0", "bbox_k0", "bbox_i1", "bbox_j1", "bbox_k1")


def stats_features(stats: pd.DataFrame) -> pd.DataFrame:
    """``organ_stats`` rows -> one row per (study_id, index_v2) with the ``FEATURES`` columns."""
    box = pd.DataFrame(stats["bbox_mm"].map(lambda b: list(b) if b is not None else [np.nan] * 6).tolist(),
                       columns=list(FEATURES[3:]), index=stats.index)
    out = pd.concat([stats[["study_id", "index_v2", "hu_mean", "hu_std", "volume_ml"]], box], axis=1)
    out["index_v2"] = out["index_v2"].astype(int)
    return out.drop_duplicates(["study_id", "index_v2"]).set_index(["study_id", "index_v2"])[list(FEATURES)]


def read_features(data_root: str | os.PathLike, study_ids: Sequence[str]) -> pd.DataFrame:
    """``stats_features`` of ``study_ids``: from the ``organ_stats`` table where it exists, else computed by ``pipeline.segment.stats.organ_stats`` -- the
    function that writes that table -- from the studies' volumes and label maps."""
    from pipeline.tables import read_table, table_path

    root = Path(data_root)
    ids = sorted(set(map(str, study_ids)))
    if table_path("organ_stats", root).exists():  # sharded; a shard of a study without organs has null-typed columns
        stats = read_table("organ_stats", root)
        return stats_features(stats[stats["study_id"].isin(ids)].reset_index(drop=True))
    from pipeline.segment.stats import organ_stats
    from pipeline.volume import load_nifti

    pairs = pd.read_parquet(table_path("grounded_pairs", root), columns=["study_id", "volume_path", "mask_path"],
                            filters=[("study_id", "in", ids)]).drop_duplicates("study_id")

    def resolve(p: str) -> Path:
        return Path(p) if Path(p).is_absolute() else root / p

    frames = [organ_stats(r.study_id, load_nifti(resolve(r.mask_path)), load_nifti(resolve(r.volume_path)))
              for r in pairs.itertuples()]
    return stats_features(pd.concat(frames, ignore_index=True))


def _organ_x(features: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    keys = pd.MultiIndex.from_arrays([rows["study_id"].astype(str), rows["index_v2"].astype(int)])
    return features.reindex(keys).to_numpy(dtype=float)  # (n, FEATURES); NaN where a study lacks the organ


def _study_x(features: pd.DataFrame, study_ids: Sequence[str], organs: Sequence[int]) -> np.ndarray:
    """Per study, the features of each tumor organ side by side (NaN where absent)."""
    blocks = [_organ_x(features, pd.DataFrame({"study_id": list(study_ids), "index_v2": [o] * len(study_ids)})) for o in organs]
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(study_ids), 0))


def _fill(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Missing values -> the training column mean (0 where a column is empty in training)."""
    with np.errstate(all="ignore"):
        mean = np.nan_to_num(np.nanmean(train, axis=0) if len(train) else np.zeros(train.shape[1]))
    return [np.where(np.isnan(a), mean, a) for a in (train, *others)]


def no_learning(data: EvalData, features: pd.DataFrame, tasks: Sequence[tuple[str, str]], config: EvalConfig,
                name: str = "no_learning") -> MethodResult:
    """AD and TD of the logistic regression on ``features`` (``stats_features``), on ``data``'s splits."""
    tr_rows, va_rows, te_rows = (data.organ_rows(s) for s in (config.train_split, config.val_split, config.test_split))
    scores = {}
    for organ, abn in tasks:
        parts = []
        for rows in (tr_rows, te_rows, va_rows):
            take, y = ad_labels(rows, organ, abn, config.ad_negatives)
            parts.append((_organ_x(features, rows.iloc[take]), y))
        (x_tr, y_tr), (x_te, _), (x_va, _) = parts
        x_tr, x_te, x_va = _fill(x_tr, x_te, x_va)
        both = linear_probe(x_tr, y_tr, np.concatenate([x_te, x_va]), config.td_l2)
        scores[(organ, abn)] = (both[: len(x_te)], both[len(x_te):])
    ad = ad_from_scores(scores, te_rows, va_rows, tasks, config.ad_negatives, n_boot=config.n_bootstrap, seed=config.seed) \
        if tasks else None

    train, test = data.split(config.train_split), data.split(config.test_split)
    organs = config.tumor_organs
    if organs is None:  # as tumor.tumor_detection: the organs with a lesion in train
        organs = tumor_organ_rows(train, tr_rows)["organ"].unique().tolist()
    index = sorted({int(i) for o, i in zip(te_rows["organ"], te_rows["index_v2"]) if o in organs}
                   | {int(i) for o, i in zip(tr_rows["organ"], tr_rows["index_v2"]) if o in organs})
    auc, td_scores, td_groups = {}, {}, {}
    if len(train) and len(test):
        x_tr, x_te = _fill(_study_x(features, [c.study_id for c in train], index),
                           _study_x(features, [c.study_id for c in test], index))
        s, y, g = linear_probe(x_tr, study_tumor(train), x_te, config.td_l2), study_tumor(test), np.array([c.patient_id for c in test])
        td_scores["probe_study"], td_groups["probe_study"] = (s, y), g
        auc["probe_study"] = metrics.estimate(metrics.ROC_AUC, s, y, n=config.n_bootstrap, seed=config.seed, groups=g)
    tr_t, te_t = tumor_organ_rows(train, tr_rows, organs), tumor_organ_rows(test, te_rows, organs)
    if len(tr_t) and len(te_t):
        x_tr, x_te = _fill(_organ_x(features, tr_t), _organ_x(features, te_t))
        s, y, g = linear_probe(x_tr, organ_tumor(train, tr_t), x_te, config.td_l2), organ_tumor(test, te_t), te_t["patient_id"].to_numpy()
        td_scores["probe_organ"], td_groups["probe_organ"] = (s, y), g
        auc["probe_organ"] = metrics.estimate(metrics.ROC_AUC, s, y, n=config.n_bootstrap, seed=config.seed, groups=g)
    td = TDResult(auc, td_scores, td_groups) if auc else None
    return MethodResult(name, pretrained=False, abnormality_detection=ad, tumor_detection=td)
