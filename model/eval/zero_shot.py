"""Zero-shot protocols on precomputed embeddings (so they score any model, grounded or global).

- Organ recognition (OR): each test organ's mask-pooled visual embedding against one prompt
  embedding per organ class present in the test split; the class of highest cosine is the answer.
- Abnormality detection (AD): per (organ, abnormality), an organ instance's score is
  cos(e, abnormal prompt) - cos(e, normal prompt) (the two-way softmax of CLIP is a monotone
  function of this difference, so AUC is the same); F1 uses a threshold chosen on the validation
  split. Positives: instances of the organ whose report lists the abnormality; negatives: normal
  instances of the organ (``negatives="normal"``) or every instance without it (``"other"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from model.eval import metrics
from model.eval.metrics import Estimate
from model.eval.plots import confusion_png
from model.prompts import unit_rows

# --- organ recognition ----------------------------------------------------------------------


@dataclass(frozen=True)
class ORResult:
    classes: tuple[str, ...]
    y_true: np.ndarray  # (n,) class index
    y_pred: np.ndarray  # (n,) class index
    accuracy: Estimate
    macro_f1: Estimate
    confusion: np.ndarray  # (k, k), rows true
    per_class_accuracy: dict[str, float]  # recall of each organ
    groups: np.ndarray | None = None  # (n,) bootstrap groups (patients), for paired comparisons

    def confusion_png(self, title: str = "organ recognition") -> bytes:
        return confusion_png(self.confusion, list(self.classes), title)


def organ_recognition(
    organ_emb: np.ndarray,
    organ_names: Sequence[str],
    class_emb: np.ndarray,
    classes: Sequence[str],
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> ORResult:
    """Top-1 organ recognition. ``organ_emb`` (n, dim) with true names ``organ_names``;
    ``class_emb`` (k, dim), one (prompt-averaged) embedding per entry of ``classes``;
    ``groups`` (e.g. patient ids) for a cluster bootstrap."""
    classes = tuple(classes)
    index = {c: i for i, c in enumerate(classes)}
    missing = sorted(set(organ_names) - set(index))
    if missing:
        raise ValueError(f"organs without a class prompt: {missing}")
    y_true = np.array([index[o] for o in organ_names], dtype=int)
    sims = unit_rows(organ_emb) @ unit_rows(class_emb).T  # (n, k)
    y_pred = sims.argmax(1) if len(y_true) else np.zeros(0, int)
    k = len(classes)
    cm = metrics.confusion_matrix(y_true, y_pred, k)
    recall = {c: float(cm[i, i] / cm[i].sum()) for i, c in enumerate(classes) if cm[i].sum()}
    return ORResult(
        classes=classes,
        y_true=y_true,
        y_pred=y_pred,
        accuracy=metrics.estimate(metrics.ACCURACY, y_true, y_pred, n=n_boot, seed=seed, groups=groups),
        macro_f1=metrics.estimate(metrics.macro_f1_of(k), y_true, y_pred, n=n_boot, seed=seed, groups=groups),
        confusion=cm,
        per_class_accuracy=recall,
        groups=None if groups is None else np.asarray(groups),
    )


# --- abnormality detection ------------------------------------------------------------------


def ad_labels(
    rows: pd.DataFrame, organ: str, abnormality: str, negatives: str = "normal"
) -> tuple[np.ndarray, np.ndarray]:
    """(positions of ``rows`` in the task, their labels 1/0) for one (organ, abnormality)."""
    if negatives not in ("normal", "other"):
        raise ValueError(f"negatives must be 'normal' or 'other', got {negatives!r}")
    same = (rows["organ"] == organ).to_numpy()
    pos = same & rows["abnormalities"].map(lambda a: abnormality in a).to_numpy()
    if negatives == "normal":
        neg = same & (rows["status"] == "normal").to_numpy()
    else:
        neg = same & ~pos & (rows["status"] != "uncertain").to_numpy()
    take = np.flatnonzero(pos | neg)
    return take, pos[take].astype(int)


def select_ad_tasks(
    test_rows: pd.DataFrame,
    k: int = 16,
    negatives: str = "normal",
    frequency_rows: pd.DataFrame | None = None,
) -> list[tuple[str, str]]:
    """The ``k`` most frequent (organ, abnormality) pairs that the test split can score (at least
    one positive and one negative). Frequency = positives in ``frequency_rows`` (default: the test
    rows); ties broken by name, so the choice is deterministic."""
    freq_src = test_rows if frequency_rows is None else frequency_rows
    freq: dict[tuple[str, str], int] = {}
    for organ, abns in zip(freq_src["organ"], freq_src["abnormalities"]):
        for a in abns:
            freq[(organ, a)] = freq.get((organ, a), 0) + 1
    scorable = []
    for organ, abn in freq:
        _, y = ad_labels(test_rows, organ, abn, negatives)
        if 0 < y.sum() < len(y):
            scorable.append((organ, abn))
    scorable.sort(key=lambda t: (-freq[t], t))
    return scorable[:k]


@dataclass(frozen=True)
class ADPairResult:
    organ: str
    abnormality: str
    n_pos: int
    n_neg: int
    threshold: float  # chosen on the validation split
    auc: Estimate
    f1: Estimate
    scores: np.ndarray  # test scores
    labels: np.ndarray  # test labels
    groups: np.ndarray | None = None  # test bootstrap groups (patients)


@dataclass(frozen=True)
class ADResult:
    pairs: tuple[ADPairResult, ...]
    # one threshold for every pair, chosen on the validation scores of all pairs together: a pair's own threshold
    # rests on a few validation positives (``ad_f1_pooled_threshold``)
    pooled_threshold: float = float("nan")

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """All test (score, label) of the pairs together, for a pooled ROC curve."""
        if not self.pairs:
            return np.zeros(0), np.zeros(0, int)
        return np.concatenate([p.scores for p in self.pairs]), np.concatenate([p.labels for p in self.pairs])


# AD tasks by what tells them: an organ's size, a change of the whole organ, or something in one place of it
SIZE_FINDINGS = frozenset({"hepatomegaly", "splenomegaly", "cardiomegaly", "aneurysm", "lymphadenopathy"})
DIFFUSE_FINDINGS = frozenset({"steatosis", "pleural effusion", "emphysema", "atelectasis", "consolidation"})


def task_group(abnormality: str) -> str:
    """'size', 'diffuse' or 'focal' (masses, cysts, stones, nodules, fractures and the rest)."""
    return "size" if abnormality in SIZE_FINDINGS else "diffuse" if abnormality in DIFFUSE_FINDINGS else "focal"


def ad_scores(emb: np.ndarray, normal_emb: np.ndarray, abnormal_emb: np.ndarray) -> np.ndarray:
    """cos(e, abnormal) - cos(e, normal) for each row of ``emb``."""
    e = unit_rows(emb)
    return e @ unit_rows(abnormal_emb) - e @ unit_rows(normal_emb)


def abnormality_detection(
    test_emb: np.ndarray,
    test_rows: pd.DataFrame,
    val_emb: np.ndarray,
    val_rows: pd.DataFrame,
    prompt_emb: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    tasks: Sequence[tuple[str, str]],
    negatives: str = "normal",
    group_col: str = "patient_id",
    n_boot: int = 1000,
    seed: int = 0,
) -> ADResult:
    """AUC and F1 per (organ, abnormality) of ``tasks`` and their macro averages.

    ``test_emb``/``val_emb`` are organ embeddings aligned with ``test_rows``/``val_rows``
    (columns organ, status, abnormalities and ``group_col``); ``prompt_emb[(organ, abn)]`` is the
    (normal, abnormal) prompt embedding pair. A task without validation positives gets the
    threshold +inf (predicts no positive, F1 = 0 if the test split has positives).
    """

    def score(emb: np.ndarray, rows: pd.DataFrame, task: tuple[str, str]) -> np.ndarray:
        take, _ = ad_labels(rows, *task, negatives)
        return ad_scores(emb[take], *prompt_emb[task]) if len(take) else np.zeros(0)

    scores = {t: (score(test_emb, test_rows, t), score(val_emb, val_rows, t)) for t in tasks}
    return ad_from_scores(scores, test_rows, val_rows, tasks, negatives, group_col, n_boot, seed)


def ad_from_scores(
    scores: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    test_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    tasks: Sequence[tuple[str, str]],
    negatives: str = "normal",
    group_col: str = "patient_id",
    n_boot: int = 1000,
    seed: int = 0,
) -> ADResult:
    """AD results from any scorer: ``scores[(organ, abn)]`` = (test scores, validation scores) of the task's items
    (``ad_labels`` order); thresholds are chosen on validation."""
    results: list[ADPairResult] = []
    val_pooled: list[tuple[np.ndarray, np.ndarray]] = []
    for organ, abn in tasks:
        take, y = ad_labels(test_rows, organ, abn, negatives)
        _, vy = ad_labels(val_rows, organ, abn, negatives)
        s, vs = (np.asarray(a, dtype=float) for a in scores[(organ, abn)])
        val_pooled.append((vs, vy))
        thr = metrics.choose_threshold(vs, vy)
        g = test_rows[group_col].to_numpy()[take] if group_col in test_rows else None
        results.append(
            ADPairResult(
                organ,
                abn,
                int(y.sum()),
                int(len(y) - y.sum()),
                thr,
                auc=metrics.estimate(metrics.ROC_AUC, s, y, n=n_boot, seed=seed, groups=g),
                f1=metrics.estimate(metrics.F1, y, (s >= thr).astype(int), n=n_boot, seed=seed, groups=g),
                scores=s,
                labels=y,
                groups=g,
            )
        )
    if not results:
        return ADResult(())
    one = metrics.choose_threshold(*(np.concatenate(parts) for parts in zip(*val_pooled)))
    return ADResult(tuple(results), one)
