"""The no-learning rows: what an intensity histogram and a ruler already tell, with no image model.

Per AD task (organ, abnormality) and for TD, a logistic regression (``model.eval.probe``, scikit-learn) on
``organ_stats`` features -- HU mean and spread, volume, bounding box -- fitted on the training split, AD thresholds
chosen on validation, scored on the same test items as the models, so its rows and the paired differences read like the
others. Fitted twice: on the image truth (``no_learning``, a ceiling no model trained on reports is given) and on the
reports' labels (``no_learning_report``, like the models). OR and TS do not apply.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from model.eval.data import EvalData
from model.eval.probe import fitted_method
from model.eval.results import EvalResult, MethodResult

FEATURES = ("hu_mean", "hu_std", "volume_ml", "bbox_i0", "bbox_j0", "bbox_k0", "bbox_i1", "bbox_j1", "bbox_k1")


def stats_features(stats: pd.DataFrame) -> pd.DataFrame:
    """``organ_stats`` rows -> one row per (study_id, index_v2) with the ``FEATURES`` columns."""
    box = pd.DataFrame(
        stats["bbox_mm"].map(lambda b: list(b) if b is not None else [np.nan] * 6).tolist(),
        columns=list(FEATURES[3:]),
        index=stats.index,
    )
    out = pd.concat([stats[["study_id", "index_v2", "hu_mean", "hu_std", "volume_ml"]], box], axis=1)
    out["index_v2"] = out["index_v2"].astype(int)
    return out.drop_duplicates(["study_id", "index_v2"]).set_index(["study_id", "index_v2"])[list(FEATURES)]


def read_features(data_root: str | os.PathLike, study_ids: Sequence[str]) -> pd.DataFrame:
    """``stats_features`` of ``study_ids``: from the ``organ_stats`` table where it exists, else computed by
    ``pipeline.segment.stats.organ_stats`` -- the function that writes that table -- from the studies' volumes and
    label maps."""
    from pipeline.tables import read_table, table_path

    root = Path(data_root)
    ids = sorted(set(map(str, study_ids)))
    if table_path("organ_stats", root).exists():  # sharded; a shard of a study without organs has null-typed columns
        stats = read_table("organ_stats", root)
        return stats_features(stats[stats["study_id"].isin(ids)].reset_index(drop=True))
    from pipeline.segment.stats import organ_stats
    from pipeline.volume import load_nifti

    pairs = pd.read_parquet(
        table_path("grounded_pairs", root),
        columns=["study_id", "volume_path", "mask_path"],
        filters=[("study_id", "in", ids)],
    ).drop_duplicates("study_id")

    def resolve(p: str) -> Path:
        return Path(p) if Path(p).is_absolute() else root / p

    frames = [
        organ_stats(r.study_id, load_nifti(resolve(r.mask_path)), load_nifti(resolve(r.volume_path)))
        for r in pairs.itertuples()
    ]
    return stats_features(pd.concat(frames, ignore_index=True))


def _organ_x(features: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    keys = pd.MultiIndex.from_arrays([rows["study_id"].astype(str), rows["index_v2"].astype(int)])
    return features.reindex(keys).to_numpy(dtype=float)  # (n, FEATURES); NaN where a study lacks the organ


def no_learning(
    data: EvalData, features: pd.DataFrame, result: EvalResult, labels: str = "image", name: str | None = None
) -> MethodResult:
    """AD and TD of the logistic regression on ``features`` (``stats_features``), on ``data``'s splits, for the tasks
    and tumor classes ``result`` scored; fitted on the image truth (``labels="image"``: a ceiling, the models never see
    it) or on what the reports say (``"report"``: like the models)."""
    config = result.config
    rows = {
        k: data.organ_rows(s)
        for k, s in (("train", config.train_split), ("val", config.val_split), ("test", config.test_split))
    }
    x = {k: _organ_x(features, r) for k, r in rows.items()}
    name = name or ("no_learning" if labels == "image" else "no_learning_report")
    return fitted_method(
        name,
        x,
        rows,
        result.ad_tasks,
        result.tumor_organs,
        labels,
        config.ad_negatives,
        config.probe_l2,
        config.n_bootstrap,
        config.seed,
    )
