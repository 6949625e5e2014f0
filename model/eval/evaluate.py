"""``evaluate``: the four protocols (OR, AD, TD, TS) for several models on one test split.

``models`` maps a method name to a model-like object (the CT-GLIP interface) or ``None`` for
random initialisation. The zero-shot protocols need a pretrained image-text model, so the random
row reports them as not applicable (``Estimate.missing()``, ``nan``; ``None`` in JSON); TD and TS
train on top of the random encoder like on any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from model.eval import prompts
from model.eval.data import EvalData
from model.eval.features import organ_embeddings, prompt_embeddings, randomly_initialised
from model.eval.metrics import Estimate
from model.eval.segmentation import SegBudget, SegResult, from_model, segmentation_protocol
from model.eval.tumor import FinetuneBudget, TDResult, tumor_detection
from model.eval.zero_shot import ADResult, ORResult, abnormality_detection, organ_recognition, select_ad_tasks
from pipeline.vocab import counted

log = logging.getLogger(__name__)

PROTOCOLS = ("or", "ad", "td", "ts")
HEADLINE = ("or_acc", "ad_f1", "ad_auc", "td_auc", "ts_dsc")


@dataclass(frozen=True)
class EvalConfig:
    protocols: tuple[str, ...] = PROTOCOLS  # which of "or", "ad", "td", "ts" to run
    train_split: str = "train"
    val_split: str = "val"  # AD thresholds are chosen here
    test_split: str = "test"
    organ_templates: tuple[str, ...] = prompts.ORGAN_TEMPLATES
    normal_templates: tuple[str, ...] = prompts.NORMAL_TEMPLATES
    abnormal_templates: tuple[str, ...] = prompts.ABNORMAL_TEMPLATES
    k_abnormalities: int = 16  # AD macro over the K most frequent (organ, abnormality) pairs (CT-GLIP: 16)
    ad_negatives: str = "normal"  # "normal" organs of the same class, or "other" (any without the abnormality)
    td_l2: float = 1e-2  # linear probe penalty
    td_budget: FinetuneBudget | None = FinetuneBudget()  # None skips TD fine-tuning
    td_headline: str = "probe_study"  # which TD AUC fills the table's "TD AUC" column
    tumor_organs: tuple[str, ...] | None = None  # organ-level TD classes; None = those with a lesion in train
    ts_budget: SegBudget = SegBudget()
    ts_positive_only: bool = True  # TS trains and scores on cases with a lesion only
    ts_empty_dice: float = 1.0  # Dice of a case with neither lesion nor prediction
    n_bootstrap: int = 1000
    seed: int = 0
    random_model: Callable[[], nn.Module] | None = field(default=None, compare=False)
    """Builds the random-initialisation model; default: a pretrained model's architecture with every
    parameter drawn afresh (``features.randomly_initialised``), a new draw for TD (under ``seed``)
    and for every TS repeat (under the repeat's seed)."""


@dataclass(frozen=True)
class MethodResult:
    name: str
    pretrained: bool
    organ_recognition: ORResult | None = None
    abnormality_detection: ADResult | None = None
    tumor_detection: TDResult | None = None
    tumor_segmentation: SegResult | None = None
    organ_recognition_distinct: ORResult | None = None  # OR without ribs and vertebrae (``vocab.counted``)

    def metrics(self, td_headline: str = "probe_study") -> dict[str, Estimate]:
        """Headline metrics (``HEADLINE``) and the detail ones; missing = not applicable / not run."""
        miss = Estimate.missing()
        orr, ad, td, ts = self.organ_recognition, self.abnormality_detection, self.tumor_detection, self.tumor_segmentation
        out = {
            "or_acc": orr.accuracy if orr else miss,
            "ad_f1": ad.macro_f1 if ad else miss,
            "ad_auc": ad.macro_auc if ad else miss,
            "td_auc": td.auc.get(td_headline, miss) if td else miss,
            "ts_dsc": ts.dice if ts else miss,
            "or_macro_f1": orr.macro_f1 if orr else miss,
            "or_acc_distinct": self.organ_recognition_distinct.accuracy if self.organ_recognition_distinct else miss,
            "ad_f1_pooled_threshold": ad.macro_f1_pooled if ad else miss,
            "ad_f1_all_positive": ad.macro_f1_all_positive if ad else miss,
        }
        for key in ("probe_study", "probe_organ", "finetune_study", "finetune_organ"):
            out[f"td_auc_{key}"] = td.auc.get(key, miss) if td else miss
        return out


@dataclass(frozen=True)
class EvalResult:
    methods: dict[str, MethodResult]
    config: EvalConfig
    ad_tasks: tuple[tuple[str, str], ...]
    notes: tuple[str, ...] = ()
    provenance: dict = field(default_factory=dict)

    def metrics(self) -> dict[str, dict[str, Estimate]]:
        """method -> metric -> Estimate."""
        return {name: m.metrics(self.config.td_headline) for name, m in self.methods.items()}


def _random_factory(models: Mapping[str, object | None], config: EvalConfig) -> Callable[[], nn.Module]:
    if config.random_model is not None:
        return config.random_model
    template = next((m for m in models.values() if m is not None), None)
    if template is None:
        raise ValueError("a random-initialisation row needs EvalConfig.random_model or one pretrained model to copy")
    return lambda: randomly_initialised(template)  # from torch's random state: each protocol and repeat seeds it


def evaluate(models: Mapping[str, object | None], data: EvalData, config: EvalConfig = EvalConfig()) -> EvalResult:
    """Run the configured protocols for every model on ``data``'s test split."""
    unknown = set(config.protocols) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocols {sorted(unknown)}; choose from {PROTOCOLS}")
    train, test = data.split(config.train_split), data.split(config.test_split)
    tr_rows, va_rows, te_rows = (data.organ_rows(s) for s in (config.train_split, config.val_split, config.test_split))
    te_groups = te_rows["patient_id"].to_numpy()
    val = data.split(config.val_split)
    classes = tuple(te_rows.sort_values("index_v2")["organ"].drop_duplicates())
    # chosen without test labels: the most frequent pairs of train that validation can score (a test
    # pair without positives or negatives gets no AUC and drops out of the macro)
    tasks = tuple(select_ad_tasks(va_rows, config.k_abnormalities, config.ad_negatives, frequency_rows=tr_rows))
    notes: list[str] = []
    if any(m is None for m in models.values()):
        notes.append("random initialisation: zero-shot OR and AD are not applicable (no image-text alignment); reported as NaN")
    if "ad" in config.protocols and not tasks:
        notes.append("AD: no (organ, abnormality) pair of train with positives and negatives in the validation split")
    seg_train = [(c.volume, c.lesion) for c in train if c.lesion.any() or not config.ts_positive_only]
    seg_test_cases = [c for c in test if c.lesion.any() or not config.ts_positive_only]
    seg_test = [(c.volume, c.lesion) for c in seg_test_cases]
    seg_groups = np.array([c.patient_id for c in seg_test_cases])

    results: dict[str, MethodResult] = {}
    for name, model in models.items():
        log.info("evaluating %s", name)
        pretrained = model is not None
        make = (lambda m=model: m) if pretrained else _random_factory(models, config)
        torch.manual_seed(config.seed)
        encoder = make()
        orr = orr_distinct = ad = td = ts = None
        if pretrained and {"or", "ad"} & set(config.protocols) and len(te_rows):
            te_emb = organ_embeddings(model, test, te_rows)
            if "or" in config.protocols:
                cls_emb = prompt_embeddings(model, [prompts.organ_prompts(c, config.organ_templates) for c in classes])
                orr = organ_recognition(te_emb, te_rows["organ"].tolist(), cls_emb, classes, te_groups,
                                        config.n_bootstrap, config.seed)
                keep = [i for i, c in enumerate(classes) if not counted(c)]
                sel = np.flatnonzero(~te_rows["organ"].map(counted).to_numpy())
                if keep and len(sel):
                    orr_distinct = organ_recognition(te_emb[sel], te_rows["organ"].iloc[sel].tolist(), cls_emb[keep],
                                                     [classes[i] for i in keep], te_groups[sel], config.n_bootstrap, config.seed)
            if "ad" in config.protocols and tasks:
                va_emb = organ_embeddings(model, val, va_rows) if len(va_rows) else np.zeros((0, te_emb.shape[1]))
                sets = [prompts.abnormality_prompts(o, a, config.normal_templates, config.abnormal_templates) for o, a in tasks]
                emb = prompt_embeddings(model, [s for pair in sets for s in pair])
                prompt_emb = {t: (emb[2 * i], emb[2 * i + 1]) for i, t in enumerate(tasks)}
                ad = abnormality_detection(te_emb, te_rows, va_emb, va_rows, prompt_emb, tasks, config.ad_negatives,
                                           n_boot=config.n_bootstrap, seed=config.seed)
        if "td" in config.protocols:
            td = tumor_detection(encoder, train, tr_rows, test, te_rows, config.td_l2, config.td_budget,
                                 config.tumor_organs, config.n_bootstrap, config.seed)
        if "ts" in config.protocols:
            if seg_train and seg_test:
                # the random row draws a new network per repeat (segmentation_protocol seeds each one)
                ts = segmentation_protocol(from_model(encoder) if pretrained else make, seg_train, seg_test, config.ts_budget, seg_groups,
                                           config.ts_empty_dice, config.n_bootstrap)
            elif name == next(iter(models)):
                notes.append("TS: no training or test case with a lesion mask")
        results[name] = MethodResult(name, pretrained, orr, ad, td, ts, orr_distinct)
    return EvalResult(results, config, tasks, tuple(notes), dict(data.provenance))
