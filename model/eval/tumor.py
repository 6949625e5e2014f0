"""Tumor detection (TD): tumor present/absent per study and per organ, from the lesion masks.

Two protocols on the same items: (a) a linear probe (L2-regularised logistic regression) on
frozen features, (b) fine-tuning a linear head together with the encoder for a fixed budget.
Study features are ``encode_global(volume)``; organ features are mask-pooled ``pool_organs``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from model.eval import metrics
from model.eval.data import EvalCase
from model.eval.features import _volume, model_device, organ_embeddings, organ_embeddings_of_case, study_embeddings
from model.eval.metrics import Estimate


@dataclass(frozen=True)
class FinetuneBudget:
    steps: int = 10  # optimisation steps
    batch_size: int = 2  # items per step
    lr: float = 1e-3  # head learning rate
    encoder_lr: float = 1e-4  # encoder learning rate (0 freezes the encoder)
    seed: int = 0


# --- targets ------------------------------------------------------------------------------


def study_tumor(cases: Sequence[EvalCase]) -> np.ndarray:
    """1 where the case's lesion mask has any voxel."""
    return np.array([int(c.lesion.any()) for c in cases], dtype=int)


def organ_tumor(cases: Sequence[EvalCase], rows: pd.DataFrame) -> np.ndarray:
    """1 where the lesion mask overlaps the organ's label (rows: study_id, index_v2)."""
    by_id = {c.study_id: c for c in cases}
    return np.array(
        [int(np.any(by_id[s].lesion & (by_id[s].labels == int(i)))) for s, i in zip(rows["study_id"], rows["index_v2"])],
        dtype=int,
    )


def tumor_organ_rows(cases: Sequence[EvalCase], rows: pd.DataFrame, organs: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of the organ classes that can carry a tumor: ``organs`` if given, else every class
    with a lesion in at least one of ``rows`` (scoring spleens for tumors would measure organ identity)."""
    if organs is None:
        y = organ_tumor(cases, rows)
        organs = sorted(set(rows["organ"].to_numpy()[y == 1]))
    return rows[rows["organ"].isin(list(organs))].reset_index(drop=True)


# --- (a) linear probe ---------------------------------------------------------------------


def linear_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, l2: float = 1e-2, max_iter: int = 1000
) -> np.ndarray:
    """scikit-learn ``LogisticRegression`` on standardised features, penalty ``l2 * |w|^2`` added to
    the mean log-loss (``C = 1 / (2 l2 n)``); returns test probabilities. With one class in
    training, every test score is that class's frequency."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_y = np.asarray(train_y, dtype=int)
    if len(np.unique(train_y)) < 2:
        return np.full(len(test_x), float(train_y.mean()) if len(train_y) else 0.5)
    fit = make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / (2.0 * l2 * len(train_y)), max_iter=max_iter))
    fit.fit(np.asarray(train_x, dtype=np.float64), train_y)
    return fit.predict_proba(np.asarray(test_x, dtype=np.float64))[:, 1] if len(test_x) else np.zeros(0)


# --- (b) fine-tuning ----------------------------------------------------------------------


def _embed(model: object, case: EvalCase, index_v2: Sequence[int] | None, device: torch.device) -> torch.Tensor:
    if index_v2 is None:
        return model.encode_global(_volume(case, device))  # (1, dim)
    return organ_embeddings_of_case(model, case, index_v2, device)  # (n, dim)


def finetune_classifier(
    model: nn.Module,
    train_cases: Sequence[EvalCase],
    train_items: pd.DataFrame,
    train_y: np.ndarray,
    test_cases: Sequence[EvalCase],
    test_items: pd.DataFrame,
    budget: FinetuneBudget = FinetuneBudget(),
) -> np.ndarray:
    """Fine-tune a copy of ``model`` with a linear head for ``budget.steps`` steps; return test probabilities.

    Items are rows with ``study_id`` and, for organ level, ``index_v2`` (a study-level item has no
    ``index_v2`` column). ``model`` itself is left untouched.
    """
    torch.manual_seed(budget.seed)
    rng = np.random.default_rng(budget.seed)
    net = copy.deepcopy(model)
    device = model_device(net)
    organ_level = "index_v2" in train_items.columns
    train_by_id = {c.study_id: c for c in train_cases}
    test_by_id = {c.study_id: c for c in test_cases}

    def forward(by_id: dict, items: pd.DataFrame) -> torch.Tensor:
        outs = []
        for sid, grp in items.groupby("study_id", sort=False):
            idx = grp["index_v2"].astype(int).tolist() if organ_level else None
            outs.append((grp.index.to_numpy(), _embed(net, by_id[sid], idx, device)))
        order = np.concatenate([o[0] for o in outs])
        emb = torch.cat([o[1] for o in outs])
        return emb[torch.as_tensor(np.argsort(order), device=device)]  # back in item order

    with torch.no_grad():
        dim = forward(train_by_id, train_items.iloc[:1].reset_index(drop=True)).shape[1]
    head = nn.Linear(dim, 1).to(device)
    groups = [{"params": head.parameters(), "lr": budget.lr}]
    if budget.encoder_lr > 0:
        groups.append({"params": [p for p in net.parameters() if p.requires_grad], "lr": budget.encoder_lr})
    opt = torch.optim.Adam(groups)
    y_all = torch.as_tensor(np.asarray(train_y, dtype=np.float32), device=device)
    net.train()
    for _ in range(budget.steps):
        pick = rng.choice(len(train_items), size=min(budget.batch_size, len(train_items)), replace=False)
        batch = train_items.iloc[pick].reset_index(drop=True)
        logits = head(forward(train_by_id, batch))[:, 0]
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y_all[torch.as_tensor(pick, device=device)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        scores = [torch.sigmoid(head(forward(test_by_id, test_items.iloc[i : i + 16].reset_index(drop=True))))[:, 0]
                  for i in range(0, len(test_items), 16)]
    return torch.cat(scores).float().cpu().numpy() if scores else np.zeros(0)


# --- the protocol -------------------------------------------------------------------------


@dataclass(frozen=True)
class TDResult:
    auc: dict[str, Estimate]  # "probe_study", "probe_organ", "finetune_study", "finetune_organ"
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # same keys: (scores, labels)
    groups: dict[str, np.ndarray | None] = field(default_factory=dict)  # same keys: bootstrap groups (patients)


def tumor_detection(
    model: nn.Module,
    train_cases: Sequence[EvalCase],
    train_rows: pd.DataFrame,
    test_cases: Sequence[EvalCase],
    test_rows: pd.DataFrame,
    l2: float = 1e-2,
    budget: FinetuneBudget | None = FinetuneBudget(),
    tumor_organs: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> TDResult:
    """AUC of tumor present/absent, per study and per organ, by linear probe and (unless
    ``budget`` is None) by fine-tuning. Bootstrap groups: patients (study level: studies' patients)."""
    auc: dict[str, Estimate] = {}
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    item_groups: dict[str, np.ndarray | None] = {}
    tr_y, te_y = study_tumor(train_cases), study_tumor(test_cases)
    study_groups = np.array([c.patient_id for c in test_cases])
    tr_items = pd.DataFrame({"study_id": [c.study_id for c in train_cases]})
    te_items = pd.DataFrame({"study_id": [c.study_id for c in test_cases]})

    organs = tumor_organs
    if organs is None:  # from the training split's lesions: the test split chooses nothing
        organs = tumor_organ_rows(train_cases, train_rows)["organ"].unique().tolist()
    tr_rows = tumor_organ_rows(train_cases, train_rows, organs)
    te_rows = tumor_organ_rows(test_cases, test_rows, organs)
    tr_oy, te_oy = organ_tumor(train_cases, tr_rows), organ_tumor(test_cases, te_rows)
    organ_groups = te_rows["patient_id"].to_numpy() if "patient_id" in te_rows else None

    def record(key: str, s: np.ndarray, y: np.ndarray, g: np.ndarray | None) -> None:
        scores[key] = (np.asarray(s, dtype=float), y)
        item_groups[key] = g
        auc[key] = metrics.estimate(metrics.ROC_AUC, s, y, n=n_boot, seed=seed, groups=g) if len(y) else Estimate.missing()

    if len(train_cases) and len(test_cases):
        record("probe_study", linear_probe(study_embeddings(model, train_cases), tr_y,
                                           study_embeddings(model, test_cases), l2), te_y, study_groups)
    if len(tr_rows) and len(te_rows):
        record("probe_organ", linear_probe(organ_embeddings(model, train_cases, tr_rows), tr_oy,
                                           organ_embeddings(model, test_cases, te_rows), l2), te_oy, organ_groups)
    if budget is not None:
        if len(train_cases) and len(test_cases):
            record("finetune_study", finetune_classifier(model, train_cases, tr_items, tr_y, test_cases, te_items, budget),
                   te_y, study_groups)
        if len(tr_rows) and len(te_rows):
            cols = ["study_id", "index_v2"]
            record("finetune_organ", finetune_classifier(model, train_cases, tr_rows[cols], tr_oy, test_cases,
                                                         te_rows[cols], budget), te_oy, organ_groups)
    return TDResult(auc, scores, item_groups)
