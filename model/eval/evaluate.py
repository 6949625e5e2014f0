"""``evaluate``: the protocols for several models on one test split, all on organ crops.

``models`` maps a method name to a model-like object (the CT-GLIP interface) or ``None`` for random initialisation.

- OR (zero-shot organ recognition) over the organ classes of the test split;
- AD (zero-shot abnormality detection): the K most frequent (organ, abnormality) tasks of train that validation can
  score; score = cos(organ, affirmed prompts) - cos(organ, negated prompts), thresholds chosen on validation;
- TD (tumor detection) per organ of the tumor classes, zero-shot with the tumor word's prompts (``model.eval.tumor``);
- TS (tumor segmentation): a decoder on the encoder's stride-2 map, fine-tuned on the tumor classes' training crops;
- probes: logistic regressions on every model's frozen organ embeddings (``probe_<name>``), fitted on train with the
  image truth, scored on the same AD and TD items (``model.eval.probe``).

The zero-shot protocols need an image-text model, so the random row reports only TS (and its probe row).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from model import prompts
from model.eval.data import EvalData
from model.eval.features import organ_embeddings, randomly_initialised
from model.eval.probe import fitted_method
from model.eval.results import DETAIL, HEADLINE, EvalResult, MethodResult
from model.eval.segmentation import SegBudget, from_model, segmentation_protocol
from model.eval.tumor import TDResult, tumor_organs, tumor_word, zero_shot_tumor_detection
from model.eval.zero_shot import ADResult, ORResult, abnormality_detection, organ_recognition, select_ad_tasks
from model.prompts import prompt_embeddings

if TYPE_CHECKING:
    from model.network import CTGlip

log = logging.getLogger(__name__)

PROTOCOLS = ("or", "ad", "td", "ts", "probe")
__all__ = ["DETAIL", "HEADLINE", "PROTOCOLS", "EvalConfig", "EvalResult", "MethodResult", "evaluate"]


@dataclass(frozen=True)
class EvalConfig:
    protocols: tuple[str, ...] = PROTOCOLS  # which of "or", "ad", "td", "ts", "probe" to run
    train_split: str = "train"
    val_split: str = "val"  # AD thresholds are chosen here
    test_split: str = "test"
    organ_templates: tuple[str, ...] = prompts.ORGAN_TEMPLATES
    normal_templates: tuple[str, ...] = prompts.NORMAL_TEMPLATES
    abnormal_templates: tuple[str, ...] = prompts.ABNORMAL_TEMPLATES
    k_abnormalities: int = 16  # AD macro over the K most frequent (organ, abnormality) pairs (CT-GLIP: 16)
    ad_negatives: str = "normal"  # "normal" organs of the same class, or "other" (any without the abnormality)
    probe_l2: float = 1e-2  # linear probe penalty
    tumor_organs: tuple[str, ...] | None = None  # TD / TS classes; None = those with a lesion in train
    ts_budget: SegBudget = SegBudget()
    n_bootstrap: int = 1000
    seed: int = 0
    random_model: Callable[[], CTGlip] | None = field(default=None, compare=False)
    """Builds the random-initialisation model; default: a pretrained model's architecture with every parameter drawn
    afresh (``features.randomly_initialised``), a new draw per protocol (under ``seed``) and per TS repeat."""


def _random_factory(models: Mapping[str, CTGlip | None], config: EvalConfig) -> Callable[[], CTGlip]:
    if config.random_model is not None:
        return config.random_model
    template = next((m for m in models.values() if m is not None), None)
    if template is None:
        raise ValueError("a random-initialisation row needs EvalConfig.random_model or one pretrained model to copy")
    return lambda: randomly_initialised(template)  # from torch's random state: each protocol and repeat seeds it


def _itself(model: CTGlip) -> Callable[[], CTGlip]:
    """A factory that returns ``model`` itself (a pretrained row evaluates the model as given)."""
    return lambda: model


def evaluate(models: Mapping[str, CTGlip | None], data: EvalData, config: EvalConfig = EvalConfig()) -> EvalResult:
    """Run the configured protocols for every model on ``data``'s test split."""
    unknown = set(config.protocols) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocols {sorted(unknown)}; choose from {PROTOCOLS}")
    splits = {"train": config.train_split, "val": config.val_split, "test": config.test_split}
    rows = {k: data.organ_rows(s) for k, s in splits.items()}
    tr, va, te = rows["train"], rows["val"], rows["test"]
    classes = tuple(te.sort_values("index_v2")["organ"].drop_duplicates())
    # chosen without test labels: the most frequent pairs of train that validation can score
    tasks = tuple(select_ad_tasks(va, config.k_abnormalities, config.ad_negatives, frequency_rows=tr))
    tumor = tuple(config.tumor_organs if config.tumor_organs is not None else tumor_organs(tr))
    notes: list[str] = []
    if any(m is None for m in models.values()):
        notes.append("random initialisation: zero-shot OR, AD and TD are not applicable (no image-text alignment)")
    if "ad" in config.protocols and not tasks:
        notes.append("AD: no (organ, abnormality) pair of train with positives and negatives in the validation split")
    ts_train = tr.loc[tr["organ"].isin(tumor) & tr["row"].isin(list(data.crops.blocks)), "row"].to_numpy()
    ts_test_rows = te[te["organ"].isin(tumor) & te["row"].isin(list(data.crops.blocks))]
    ts_test = ts_test_rows["row"].to_numpy()

    results: dict[str, MethodResult] = {}
    for name, model in models.items():
        log.info("evaluating %s", name)
        pretrained = model is not None
        make = _itself(model) if model is not None else _random_factory(models, config)
        torch.manual_seed(config.seed)
        encoder = make()
        if hasattr(encoder, "eval"):
            encoder.eval()
        need = {"train", "val", "test"} if "probe" in config.protocols else {"val", "test"} if pretrained else set()
        emb = {k: organ_embeddings(encoder, data, rows[k]) for k in sorted(need)}
        orr = ad = td = ts = None
        if model is not None and "or" in config.protocols and len(te):
            orr = _organ_recognition(model, emb, te, classes, config)
        if model is not None and "ad" in config.protocols and tasks:
            ad = _abnormality_detection(model, emb, rows, tasks, config)
        if model is not None and "td" in config.protocols and tumor:
            td = _tumor_detection(model, emb, rows, tumor, config)
        if "ts" in config.protocols:
            if len(ts_train) and len(ts_test):
                ts = segmentation_protocol(
                    from_model(encoder) if pretrained else make,
                    data,
                    ts_train,
                    ts_test,
                    config.ts_budget,
                    ts_test_rows["patient_id"].to_numpy(),
                    config.n_bootstrap,
                )
            elif name == next(iter(models)):
                notes.append("TS: no training or test organ with a lesion")
        results[name] = MethodResult(name, pretrained, orr, ad, td, ts)
        if "probe" in config.protocols:
            results[f"probe_{name}"] = fitted_method(
                f"probe_{name}",
                emb,
                rows,
                tasks,
                tumor,
                "image",
                config.ad_negatives,
                config.probe_l2,
                config.n_bootstrap,
                config.seed,
            )
    provenance = dict(data.provenance) | {
        "tumor_organs": list(tumor),
        "ts_cases": {"train": int(len(ts_train)), "test": int(len(ts_test))},
    }
    return EvalResult(results, config, tasks, tumor, tuple(notes), provenance)


def _organ_recognition(
    model: CTGlip, emb: dict[str, np.ndarray], te: pd.DataFrame, classes: tuple[str, ...], config: EvalConfig
) -> ORResult:
    """Zero-shot OR: each test organ's embedding against every class's prompt embedding."""
    cls_emb = prompt_embeddings(model, [prompts.organ_prompts(c, config.organ_templates) for c in classes])
    groups = te["patient_id"].to_numpy()
    return organ_recognition(
        emb["test"], te["organ"].tolist(), cls_emb, classes, groups, config.n_bootstrap, config.seed
    )


def _abnormality_detection(
    model: CTGlip,
    emb: dict[str, np.ndarray],
    rows: dict[str, pd.DataFrame],
    tasks: tuple[tuple[str, str], ...],
    config: EvalConfig,
) -> ADResult:
    """Zero-shot AD: per task, the normal and abnormal prompts scored on the test organs (thresholds from val)."""
    sets = [prompts.abnormality_prompts(o, a, config.normal_templates, config.abnormal_templates) for o, a in tasks]
    pe = prompt_embeddings(model, [s for pair in sets for s in pair])
    prompt_emb = {t: (pe[2 * i], pe[2 * i + 1]) for i, t in enumerate(tasks)}
    return abnormality_detection(
        emb["test"],
        rows["test"],
        emb["val"],
        rows["val"],
        prompt_emb,
        tasks,
        config.ad_negatives,
        n_boot=config.n_bootstrap,
        seed=config.seed,
    )


def _tumor_detection(
    model: CTGlip,
    emb: dict[str, np.ndarray],
    rows: dict[str, pd.DataFrame],
    tumor: tuple[str, ...],
    config: EvalConfig,
) -> TDResult:
    """Zero-shot TD: per tumor organ, its normal and tumor prompts (the training split's word for its tumor)."""
    sets = [
        prompts.abnormality_prompts(o, tumor_word(o, rows["train"]), config.normal_templates, config.abnormal_templates)
        for o in tumor
    ]
    pe = prompt_embeddings(model, [s for pair in sets for s in pair])
    return zero_shot_tumor_detection(
        emb["test"],
        rows["test"],
        emb["val"],
        rows["val"],
        tumor,
        {o: (pe[2 * i], pe[2 * i + 1]) for i, o in enumerate(tumor)},
        config.n_bootstrap,
        config.seed,
    )
