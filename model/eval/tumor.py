"""Tumor detection (TD) at organ level: does this organ hold a tumor? From the lesion masks.

The items are the organs of the tumor classes (those with a lesion in the training split: the test split chooses
nothing). The headline stratum asks for lesions of ``min_mm`` (10 mm) or more: its positives are organs whose largest
lesion reaches it, its negatives organs without any lesion; organs whose lesions are all smaller (5-10 mm) form the
reported ``small`` stratum against the same negatives. A pretrained model scores an organ zero-shot, with the AD form:
cos(organ, "<tumor word> is present in the <organ>." ...) minus cos with the negated prompts, where the tumor word is
"mass" or "nodule", whichever the training reports use more for the class. Zero-shot scores of different classes do not
share a scale (a lung's "nodule" score against a kidney's "mass" score), so before the classes are pooled into one AUC
each class's scores are standardised by the mean and spread of that class's scores over the validation organs (no
label is read). Fitted methods (probes, the no-learning row) score the same items (``model.eval.probe``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from model.eval import metrics
from model.eval.metrics import Estimate

TUMOR_WORDS = ("mass", "nodule")
MIN_MM = 10.0  # the headline stratum: lesions of 10 mm or more
STRATA = {"organ": (MIN_MM, np.inf), "organ_small": (0.0, MIN_MM)}  # largest lesion in [low, high) mm; > 0


@dataclass(frozen=True)
class TDResult:
    auc: dict[str, Estimate]  # "organ" (lesions >= 10 mm), "organ_small" (5-10 mm)
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # same keys: (scores, labels)
    groups: dict[str, np.ndarray | None] = field(default_factory=dict)  # same keys: bootstrap groups (patients)


def tumor_organs(train_rows: pd.DataFrame) -> list[str]:
    """The classes with a lesion in the training split."""
    return sorted(set(train_rows.loc[train_rows["lesion_mm"] > 0, "organ"]))


def tumor_word(organ: str, train_rows: pd.DataFrame) -> str:
    """'mass' or 'nodule': whichever the training reports give the class more often ('mass' on a tie)."""
    col = "report_abnormalities" if "report_abnormalities" in train_rows else "abnormalities"
    abn = train_rows.loc[train_rows["organ"] == organ, col]
    counts = {w: sum(w in a for a in abn) for w in TUMOR_WORDS}
    return max(TUMOR_WORDS, key=lambda w: (counts[w], w == "mass"))


def td_items(rows: pd.DataFrame, organs: Sequence[str], stratum: str = "organ") -> tuple[np.ndarray, np.ndarray]:
    """(positions in ``rows``, labels) of one stratum: the tumor classes' organs with their largest lesion in the
    stratum's size range (1) or without any lesion (0)."""
    low, high = STRATA[stratum]
    size = rows["lesion_mm"].to_numpy(dtype=float)
    ours = rows["organ"].isin(list(organs)).to_numpy()
    pos = ours & (size > 0) & (size >= low) & (size < high)
    take = np.flatnonzero(pos | (ours & (size == 0)))
    return take, pos[take].astype(int)


def td_result(
    scores: Mapping[str, np.ndarray], rows: pd.DataFrame, organs: Sequence[str], n_boot: int = 1000, seed: int = 0
) -> TDResult:
    """AUC per stratum of ``scores[stratum]`` (one score per ``td_items`` row of that stratum)."""
    auc, out, groups = {}, {}, {}
    for stratum in STRATA:
        take, y = td_items(rows, organs, stratum)
        s = np.asarray(scores[stratum], dtype=float)
        g = rows["patient_id"].to_numpy()[take] if "patient_id" in rows else None
        out[stratum], groups[stratum] = (s, y), g
        auc[stratum] = (
            metrics.estimate(metrics.ROC_AUC, s, y, n=n_boot, seed=seed, groups=g) if len(y) else Estimate.missing()
        )
    return TDResult(auc, out, groups)


def zero_shot_tumor_detection(
    test_emb: np.ndarray,
    test_rows: pd.DataFrame,
    val_emb: np.ndarray,
    val_rows: pd.DataFrame,
    organs: Sequence[str],
    prompt_emb: Mapping[str, tuple[np.ndarray, np.ndarray]],
    n_boot: int = 1000,
    seed: int = 0,
) -> TDResult:
    """TD from zero-shot scores: ``prompt_emb[organ]`` = (negated, affirmed) prompt embedding of its tumor word; each
    class's scores standardised by its validation organs' scores (``val_emb``, ``val_rows``; labels unread)."""
    from model.eval.zero_shot import ad_scores

    organ, val_organ = test_rows["organ"].to_numpy(), val_rows["organ"].to_numpy()
    scale = {}
    for o in organs:
        v = ad_scores(val_emb[val_organ == o], *prompt_emb[o]) if (val_organ == o).any() else np.zeros(0)
        scale[o] = (float(v.mean()), float(v.std()) or 1.0) if len(v) > 1 else (0.0, 1.0)
    scores = {}
    for stratum in STRATA:
        take, _ = td_items(test_rows, organs, stratum)
        s = np.zeros(len(take))
        for o in organs:
            sel = organ[take] == o
            if sel.any():
                mean, sd = scale[o]
                s[sel] = (ad_scores(test_emb[take[sel]], *prompt_emb[o]) - mean) / sd
        scores[stratum] = s
    return td_result(scores, test_rows, organs, n_boot, seed)
