"""CT-RATE zero-shot abnormality detection: the 18 labels, scored per volume by a trained model.

One entry, ``evaluate_ctrate(checkpoint, data, options)``; ``write_results`` stores what it returns;
the command line is ``python -m model.eval.ctrate``.

- Volumes: every usable volume of the split with a label row (``volumes="all"``, each reconstruction
  counts, as CT-CLIP scores its validation set), or one per scan (``"chosen"``, ``pipeline.ctrate``'s
  choice). Unreadable, unlabelled or non-CT volumes are left out and listed with their reason.
- Embedding: ``model.inference.infer`` on each volume (the checkpoint's spacing, organ crops and HU window;
  ``pipeline.ctrate``'s rescale and affine corrections applied on reading). The whole-study embedding is the mean
  of the organ embeddings, so a volume without an organ map (no mask, no segmenter) is skipped with its reason.
- CT-CLIP prompts: the whole-study embedding against "{label} is present." / "{label} is not present."
  (CT-CLIP's pair, one sentence each).
- Organ-aware prompts (grounded models, given organ masks): per label the organs of
  ``pipeline.report.labels.label_organs`` (the label mapping and the abnormality dictionary), each organ's
  embedding against ``model.prompts``' paraphrase pairs "{label} is present in the {organ}." / "...
  is not present ..." (each side the mean of its paraphrase embeddings); the volume's score is the
  maximum over the label's organs found in its mask (present in any of them). A volume whose mask holds
  none of them, or has no mask, is scored on its whole-study embedding with the same prompts (counted as
  ``n_fallback``); a label with no organ (medical material, lymphadenopathy, pleural effusion: regions)
  keeps the CT-CLIP pair on the whole study. A mask is placed by its own NIfTI header; for a first-release
  volume with a blank header (geometry from the metadata CSV) a mask written from that file carries the blank
  header too and would not line up: segment such volumes from ingest's corrected copies instead.
- Score: one per volume and label, the two-way softmax at the model's logit scale of the present and
  not-present cosines (the probability of "present"); AUC and thresholds use its logit,
  scale * (cos present - cos not present), which orders volumes the same way without saturating.
- Metrics: per-label ROC AUC, and F1 and accuracy at a threshold chosen (maximum F1) on another split's
  scores, never the evaluated one's; macro averages over the labels with both classes present; 95%
  percentile bootstrap intervals resampling patients. A label with one class only in the split is n/a.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model.eval import metrics
from model.eval.metrics import Estimate
from model.inference import (
    STUDY,
    InferenceOptions,
    LoadedModel,
    NotCTError,
    StudyInput,
    infer,
    load_for_inference,
    logit_scale,
)
from model.prompts import abnormality_prompts, prompt_embeddings
from pipeline.atomic import atomic_path, write_json, write_parquet
from pipeline.ctrate import SPLITS, scan_ctrate
from pipeline.report.labels import label_organs
from pipeline.segment import SegmenterDependencyError, WeightsMissingError
from pipeline.vocab import CTRATE_LABELS

log = logging.getLogger("model.eval.ctrate")  # the same name when run as __main__

ANCHORS = {
    "CT-CLIP": 0.733,
    "fVLM": 0.778,
    "source": "fVLM paper (Shui et al., ICLR 2025), zero-shot macro AUC on CT-RATE",
}
CTCLIP_PRESENT, CTCLIP_ABSENT = "{label} is present.", "{label} is not present."
SCORE_RULE = (
    "one score per volume and label: the two-way softmax, at the model's logit scale, of the cosines of the "
    "embedding with the 'present' and 'not present' prompts; AUC and thresholds use its logit"
)
CTCLIP_RULE = "whole-study embedding (the mean of its organs) vs '{label} is present.' / '{label} is not present.'"
ORGAN_RULE = (
    "each organ of the label (pipeline.report.labels.label_organs) found in the volume's mask vs the paraphrase "
    "pairs '{label} is present in the {organ}.' / '... is not present ...'; the maximum over those organs; "
    "no such organ in the mask (or no mask): the whole-study embedding with the same prompts (n_fallback); "
    "a label without organs: the CT-CLIP pair on the whole study"
)
VOLUMES = ("all", "chosen")


@dataclass(frozen=True)
class CtrateEvalOptions:
    split: str = "valid"  # the split evaluated: train or valid
    threshold_split: str | None = "train"  # F1/accuracy thresholds are chosen here; None: no thresholds, AUC only
    threshold_volumes: int = 1000  # volumes of the threshold split scored (whole patients, a seeded sample); 0: all
    volumes: str = "all"  # "all": every reconstruction; "chosen": one per scan
    masks_dir: str | None = None  # organ label maps named <volume_name>.nii.gz (TotalSegmentator 'total' v2)
    # embeddings kept per volume, keyed by the model, the volume and mask files and the options that shape them,
    # so a re-run (or one stopped half-way) embeds only what changed; None: no cache
    cache_dir: str | None = None
    n_boot: int = 1000  # bootstrap resamples of patients
    seed: int = 0  # bootstrap and threshold-sample seed
    # segmenter: for volumes without a file in masks_dir (None: none, those fall back to the whole study)
    inference: InferenceOptions = InferenceOptions(segmenter=None, dictionary_scores=False)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {self.split!r}")
        if self.threshold_split is not None and self.threshold_split not in SPLITS:
            raise ValueError(f"threshold_split must be one of {sorted(SPLITS)} or None, got {self.threshold_split!r}")
        if self.threshold_split == self.split:
            raise ValueError(f"thresholds must come from another split than the evaluated one ({self.split!r})")
        if self.volumes not in VOLUMES:
            raise ValueError(f"volumes must be one of {VOLUMES}, got {self.volumes!r}")
        if self.threshold_volumes < 0 or self.n_boot < 1:
            raise ValueError("threshold_volumes must be >= 0 and n_boot >= 1")


@dataclass(frozen=True)
class LabelResult:
    label: str
    n_pos: int
    n_neg: int
    auc: Estimate  # nan: n/a (one class only in the split)
    f1: Estimate
    accuracy: Estimate
    threshold: float | None  # on the logit; None: no thresholds, or no positive in the threshold split
    organs: tuple[str, ...] = ()  # organ-aware variant: the label's organs
    n_fallback: int = 0  # organ-aware variant: evaluated volumes scored on the whole study


@dataclass(frozen=True)
class VariantResult:
    name: str  # "ct-clip" or "organ-aware"
    rule: str
    labels: tuple[LabelResult, ...]
    macro_auc: Estimate
    macro_f1: Estimate


@dataclass(frozen=True)
class CtrateResult:
    checkpoint: str
    model_kind: str
    split: str
    volumes: str
    n_volumes: int
    n_patients: int
    threshold_split: str | None
    n_threshold_volumes: int
    variants: tuple[VariantResult, ...]
    organ_aware_not_run: str  # why there is no organ-aware variant ("" when there is)
    n_with_mask: int  # evaluated volumes whose label map holds at least one organ
    skipped: pd.DataFrame  # split, volume_name, reason
    scores: pd.DataFrame  # split, volume_name, patient_key, variant, label, truth, probability, logit, source
    n_boot: int = 1000

    def to_json(self) -> dict:
        main = self.variants[0]
        return {
            "checkpoint": self.checkpoint,
            "model_kind": self.model_kind,
            "split": self.split,
            "volumes": self.volumes,
            "n_volumes": self.n_volumes,
            "n_patients": self.n_patients,
            "score_rule": SCORE_RULE,
            "prompts": main.rule,
            "bootstrap": {"resamples": self.n_boot, "unit": "patient (patient_key)", "interval": "95% percentile"},
            "thresholds": (
                {
                    "split": self.threshold_split,
                    "n_volumes": self.n_threshold_volumes,
                    "rule": "per label, the logit maximising F1 on the threshold split's volumes",
                }
                if self.threshold_split
                else None
            ),
            **_variant_json(main),
            "organ_aware": _variant_json(self.variants[1])
            | {"prompts": self.variants[1].rule, "n_volumes_with_mask": self.n_with_mask}
            if len(self.variants) > 1
            else {"not_run": self.organ_aware_not_run},
            "skipped": self.skipped.to_dict("records"),
            "anchors": ANCHORS,
        }


def evaluate_ctrate(
    checkpoint: str | os.PathLike, data: str | os.PathLike, options: CtrateEvalOptions = CtrateEvalOptions()
) -> CtrateResult:
    """Zero-shot CT-RATE labels of the ``options.split`` volumes under ``data`` by the model at ``checkpoint``."""
    if not Path(checkpoint).exists():
        raise FileNotFoundError(
            f"no trained model at {checkpoint}: expected an exported model folder (model.safetensors, config.json) "
            "or a step_*.pt"
        )
    evaluated, skipped = _volumes(data, options.split, options)
    if options.threshold_split:
        try:
            tuning, tuning_skipped = _volumes(data, options.threshold_split, options)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{err}; the F1/accuracy thresholds come from the {options.threshold_split} split "
                "(threshold_split=None, --threshold-split none: AUC only)"
            ) from None
        tuning = _sample(tuning, options.threshold_volumes, options.seed)
        skipped += tuning_skipped
    else:
        tuning = evaluated.iloc[:0]
    loaded = load_for_inference(checkpoint, options.inference)
    kind = loaded.model.config.kind
    not_run = ""
    if kind != "grounded":
        not_run = f"the model is {kind} (whole-volume alignment): organ-aware prompts are for grounded models"
    elif options.masks_dir is None and options.inference.segmenter is None:
        not_run = "no organ masks (give a masks folder or a segmenter)"
    prompts = _Prompts(loaded, organ_aware=not not_run)

    frames, with_organs = [], 0
    for name, frame in ((options.split, evaluated), (options.threshold_split, tuning)):
        if frame.empty:
            continue
        emb, problems = _embed(loaded, frame, options)
        skipped += problems
        if name == options.split:
            with_organs = sum(len(e) > 1 for e in emb.values())  # an organ row besides the whole study
        frames.append(_score(prompts, frame[frame["volume_name"].isin(emb)], emb))
    scores = pd.concat(frames, ignore_index=True)
    ev = scores[scores["split"] == options.split]
    if ev.empty:
        raise ValueError(f"no {options.split} volume could be scored: {skipped[:3]}")
    variants = tuple(
        _metrics(scores, v, options, rule)
        for v, rule in (("ct-clip", CTCLIP_RULE), *((("organ-aware", ORGAN_RULE),) if not not_run else ()))
    )
    volumes = ev.drop_duplicates("volume_name")
    return CtrateResult(
        checkpoint=str(checkpoint),
        model_kind=kind,
        split=options.split,
        volumes=options.volumes,
        n_volumes=len(volumes),
        n_patients=volumes["patient_key"].nunique(),
        threshold_split=options.threshold_split,
        n_threshold_volumes=int(scores.loc[scores["split"] == options.threshold_split, "volume_name"].nunique()),
        variants=variants,
        organ_aware_not_run=not_run,
        n_with_mask=int(with_organs),
        skipped=pd.DataFrame(skipped, columns=["split", "volume_name", "reason"]),
        scores=scores,
        n_boot=options.n_boot,
    )


def write_results(result: CtrateResult, out: str | os.PathLike) -> tuple[Path, Path]:
    """``out`` (results JSON) and, beside it, ``<stem>.scores.csv`` (one row per volume, variant and label); atomic."""
    out = Path(out)
    table = out.with_name(f"{out.stem}.scores.csv")
    with atomic_path(table, suffix=".csv") as tmp:
        result.scores.to_csv(tmp, index=False)
    return write_json(result.to_json(), out), table


# --- volumes ---------------------------------------------------------------------------------


def _volumes(data: str | os.PathLike, split: str, options: CtrateEvalOptions) -> tuple[pd.DataFrame, list[dict]]:
    frame = scan_ctrate(data, split)
    if frame.empty:
        raise FileNotFoundError(f"no {split} volumes under {data} (expected {split}/<patient>/<scan>/*.nii.gz)")
    skipped = [
        {"split": split, "volume_name": r.volume_name, "reason": r.problem} for r in frame.itertuples() if r.problem
    ]
    frame = frame[frame["problem"] == ""]
    unlabelled = frame[list(CTRATE_LABELS)].isna().any(axis=1)
    skipped += [
        {"split": split, "volume_name": n, "reason": "no label row"} for n in frame.loc[unlabelled, "volume_name"]
    ]
    frame = frame[~unlabelled]
    if options.volumes == "chosen":
        frame = frame[frame["chosen"]]
    return frame.reset_index(drop=True), skipped


def _sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """About ``n`` volumes of whole patients, drawn in a seeded order (all when ``n`` is 0 or enough)."""
    if n == 0 or len(frame) <= n:
        return frame
    patients = frame["patient_key"].drop_duplicates().to_numpy()
    order = np.random.default_rng(seed).permutation(len(patients))
    sizes = frame.groupby("patient_key").size()
    keep, total = [], 0
    for i in order:
        if total >= n:
            break
        keep.append(patients[i])
        total += int(sizes[patients[i]])
    return frame[frame["patient_key"].isin(keep)].reset_index(drop=True)


def _embed(
    loaded: LoadedModel, frame: pd.DataFrame, options: CtrateEvalOptions
) -> tuple[dict[str, pd.DataFrame], list[dict]]:
    """volume_name -> its embeddings (organ, embedding; whole study last), and the volumes that failed."""
    out: dict[str, pd.DataFrame] = {}
    problems: list[dict] = []
    cached = 0
    model_key = (
        _files_key(*sorted(p for p in Path(loaded.path).rglob("*") if p.is_file()))
        if Path(loaded.path).is_dir()
        else _files_key(loaded.path)
    )
    for k, row in enumerate(frame.itertuples(), start=1):
        mask = Path(options.masks_dir) / f"{row.volume_name}.nii.gz" if options.masks_dir else None
        mask = mask if mask is not None and mask.is_file() else None
        manifest = (
            ("rescale_slope", str(row.rescale_slope)),
            ("rescale_intercept", str(row.rescale_intercept)),
            ("affine", row.affine),
        )
        study = StudyInput(
            row.volume_name, volume=row.volume_path, mask=str(mask) if mask else None, heatmaps=False, manifest=manifest
        )
        opts = options.inference
        key = hashlib.sha256(
            repr(
                (
                    model_key,
                    _files_key(row.volume_path, *([mask] if mask else [])),
                    manifest,
                    opts.segmenter,
                    opts.precision,
                    opts.batch_size,
                    opts.min_organ_voxels,
                )
            ).encode()
        ).hexdigest()[:24]
        path = Path(options.cache_dir) / f"{row.volume_name}.{key}.parquet" if options.cache_dir else None
        if path is not None and path.is_file():
            out[row.volume_name] = pd.read_parquet(path)
            cached += 1
            continue
        try:
            (result,) = infer(loaded, [study], opts)
        except (WeightsMissingError, SegmenterDependencyError):
            raise  # the configuration, not this volume
        except (NotCTError, ValueError, OSError, EOFError) as err:
            problems.append(
                {
                    "split": row.split,
                    "volume_name": row.volume_name,
                    "reason": f"{type(err).__name__}: {str(err)[:200]}",
                }
            )
            continue
        out[row.volume_name] = result.embeddings[["organ", "embedding"]]
        if path is not None:
            write_parquet(out[row.volume_name], path)
        if k % 25 == 0 or k == len(frame):
            log.info("%s: %d/%d volumes embedded", row.split, k, len(frame))
    log.info(
        "%s: %d volumes embedded, %d from the cache, %d failed",
        frame["split"].iloc[0],
        len(out) - cached,
        cached,
        len(problems),
    )
    return out, problems


def _files_key(*paths: str | os.PathLike) -> tuple:
    """What says a file is unchanged without reading it: path, size, modification time."""
    return tuple((str(Path(p).resolve()), (st := Path(p).stat()).st_size, st.st_mtime_ns) for p in paths)


# --- scores ----------------------------------------------------------------------------------


class _Prompts:
    """Prompt embeddings of the model, encoded once: CT-CLIP's pair per label, organ-aware pairs per (label, organ)."""

    def __init__(self, loaded: LoadedModel, organ_aware: bool) -> None:
        model = loaded.model
        self.scale = logit_scale(model)
        sets = [[t.format(label=label)] for label in CTRATE_LABELS for t in (CTCLIP_PRESENT, CTCLIP_ABSENT)]
        emb = prompt_embeddings(model, sets)
        # label -> (present, absent)
        self.ctclip = {label: (emb[2 * i], emb[2 * i + 1]) for i, label in enumerate(CTRATE_LABELS)}
        self.organs = {label: label_organs(label) for label in CTRATE_LABELS} if organ_aware else {}
        pairs = [(label, organ) for label, organs in self.organs.items() for organ in organs]
        self.organ = {}
        if pairs:
            normal, abnormal = zip(*(abnormality_prompts(o, label) for label, o in pairs))
            emb = prompt_embeddings(model, [*abnormal, *normal])
            self.organ = {p: (emb[i], emb[len(pairs) + i]) for i, p in enumerate(pairs)}


def _score(prompts: _Prompts, frame: pd.DataFrame, embeddings: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for vol in frame.itertuples():
        emb = embeddings[vol.volume_name].set_index("organ")["embedding"].map(np.asarray)
        study = emb[STUDY]
        base = {"split": vol.split, "volume_name": vol.volume_name, "patient_key": vol.patient_key}
        for label in CTRATE_LABELS:
            truth = int(frame.at[vol.Index, label])
            present, absent = prompts.ctclip[label]
            rows.append(
                {
                    **base,
                    "variant": "ct-clip",
                    "label": label,
                    "truth": truth,
                    "logit": prompts.scale * float(study @ present - study @ absent),
                    "source": STUDY,
                }
            )
            if not prompts.organs:
                continue
            organs = prompts.organs[label]
            if not organs:
                rows.append({**rows[-1], "variant": "organ-aware"})
                continue
            found = [o for o in organs if o in emb.index]
            source, vectors = (
                (",".join(found), [emb[o] for o in found]) if found else ("fallback:" + STUDY, [study] * len(organs))
            )
            logit = max(
                float(v @ prompts.organ[(label, o)][0] - v @ prompts.organ[(label, o)][1])
                for v, o in zip(vectors, found or organs)
            )
            rows.append(
                {
                    **base,
                    "variant": "organ-aware",
                    "label": label,
                    "truth": truth,
                    "logit": prompts.scale * logit,
                    "source": source,
                }
            )
    out = pd.DataFrame(
        rows, columns=["split", "volume_name", "patient_key", "variant", "label", "truth", "logit", "source"]
    )
    out.insert(out.columns.get_loc("logit"), "probability", 1 / (1 + np.exp(-out["logit"].to_numpy(dtype=float))))
    return out


# --- metrics ---------------------------------------------------------------------------------


def _metrics(scores: pd.DataFrame, variant: str, options: CtrateEvalOptions, rule: str) -> VariantResult:
    part = scores[scores["variant"] == variant]

    def matrix(split: str | None, column: str) -> pd.DataFrame:
        rows = part[part["split"] == split]
        return rows.pivot(index="volume_name", columns="label", values=column).reindex(columns=list(CTRATE_LABELS))

    logit, truth = matrix(options.split, "logit"), matrix(options.split, "truth").astype(int)
    groups = (
        part[part["split"] == options.split]
        .drop_duplicates("volume_name")
        .set_index("volume_name")
        .loc[logit.index, "patient_key"]
        .to_numpy()
    )
    tuned = options.threshold_split is not None and bool((part["split"] == options.threshold_split).any())
    tune_logit, tune_truth = (matrix(options.threshold_split, c) for c in ("logit", "truth")) if tuned else (None, None)
    boot = dict(n=options.n_boot, seed=options.seed, groups=groups)
    labels, preds, scored = [], {}, []
    for label in CTRATE_LABELS:
        s, y = logit[label].to_numpy(float), truth[label].to_numpy(int)
        n_pos = int(y.sum())
        threshold = None
        if tune_logit is not None and tune_truth is not None:  # tuned
            t = metrics.choose_threshold(tune_logit[label].to_numpy(float), tune_truth[label].to_numpy(int))
            threshold = t if math.isfinite(t) else None
        pred = (s >= threshold).astype(int) if threshold is not None else np.zeros_like(y)
        sources = part[(part["split"] == options.split) & (part["label"] == label)]["source"]
        organ_aware = variant == "organ-aware"
        organs = label_organs(label) if organ_aware else ()
        n_fallback = int(sources.str.startswith("fallback").sum()) if organ_aware else 0
        if 0 < n_pos < len(y):
            scored.append(label)
            preds[label] = pred
            auc = metrics.estimate(metrics.ROC_AUC, s, y, **boot)
            f1 = metrics.estimate(metrics.F1, y, pred, **boot) if tuned else Estimate.missing()
            acc = metrics.estimate(metrics.ACCURACY, y, pred, **boot) if tuned else Estimate.missing()
        else:
            auc = f1 = acc = Estimate.missing()
        labels.append(LabelResult(label, n_pos, len(y) - n_pos, auc, f1, acc, threshold, organs, n_fallback))
    if scored:
        s, y = logit[scored].to_numpy(float), truth[scored].to_numpy(int)
        macro_auc = metrics.estimate(metrics.macro_over_columns(metrics.ROC_AUC), s, y, **boot)
        p = np.stack([preds[label] for label in scored], axis=1)
        macro_f1 = (
            metrics.estimate(metrics.macro_over_columns(metrics.F1), y, p, **boot) if tuned else Estimate.missing()
        )
    else:
        macro_auc = macro_f1 = Estimate.missing()
    return VariantResult(variant, rule, tuple(labels), macro_auc, macro_f1)


def _estimate_json(e: Estimate) -> dict | str:
    return e.to_dict() if e.applicable else "n/a"


def _variant_json(v: VariantResult) -> dict:
    labels = {}
    for r in v.labels:
        entry: dict[str, Any] = {
            "auc": _estimate_json(r.auc),
            "f1": _estimate_json(r.f1),
            "accuracy": _estimate_json(r.accuracy),
            "threshold": r.threshold,
            "n_pos": r.n_pos,
            "n_neg": r.n_neg,
        }
        if not r.auc.applicable:
            entry["why"] = "one class only in the split" if r.n_pos + r.n_neg else "no volume"
        if v.name == "organ-aware":
            entry.update(organs=list(r.organs), n_fallback=r.n_fallback)
        labels[r.label] = entry
    n_scored = sum(r.auc.applicable for r in v.labels)
    return {
        "labels": labels,
        "macro_auc": _estimate_json(v.macro_auc),
        "macro_f1": _estimate_json(v.macro_f1),
        "n_labels_in_macro": n_scored,
    }


__all__ = [
    "ANCHORS",
    "CtrateEvalOptions",
    "CtrateResult",
    "LabelResult",
    "VariantResult",
    "evaluate_ctrate",
    "write_results",
]


# --- command line ----------------------------------------------------------------------------

EPILOG = (
    "\n".join(
        textwrap.fill(text, 115)
        for text in (
            f"Score: {SCORE_RULE}.",
            f"CT-CLIP prompts: {CTCLIP_RULE}.",
            f"Organ-aware prompts (grounded models, with --masks or --segmenter): {ORGAN_RULE}.",
        )
    )
    + f"""

Volumes: every usable, labelled volume of the split (--volumes all: each reconstruction, as CT-CLIP scores its
validation set) or one per scan (--volumes chosen). A model embeds a study through its organs, and CT-RATE ships no
organ masks: a volume without a mask (and without --segmenter) is listed as skipped. --masks DIR holds
TotalSegmentator 'total' label maps named <volume_name>.nii.gz on the volume's own grid; --segmenter totalsegmentator
segments volumes without one (it needs TotalSegmentator's weights, and stops naming what is missing where they are not
installed).

Thresholds (F1, accuracy) are chosen on --threshold-split (default: the other split), never on the evaluated one;
AUC needs none. 95% intervals: percentile bootstrap over patients. A label with one class only in the split is n/a.

Writes OUT (JSON: per-label and macro AUC, F1, accuracy with intervals, thresholds, skipped volumes, the published
anchors) and OUT's stem + .scores.csv beside it (one row per volume, prompt variant and label); the embeddings are
kept in --cache, so running the command again embeds only what changed.
Published anchors, zero-shot macro AUC on CT-RATE (fVLM paper): CT-CLIP {ANCHORS["CT-CLIP"]}, fVLM {ANCHORS["fVLM"]}.

Example:
  python -m model.eval.ctrate --checkpoint data/models/grounded-XXXX/model --data /data/CT-RATE \\
      --split valid --out results.json
Exit status: 0 done, 2 bad input (missing model or split, a model of another version, missing segmenter weights),
1 else.
"""
)


def parser():
    import argparse

    from model.infer import add_model_options

    p = argparse.ArgumentParser(
        prog="python -m model.eval.ctrate",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data", required=True, help="CT-RATE release folder ({train,valid}/<patient>/<scan>/*.nii.gz and its CSVs)"
    )
    p.add_argument("--split", choices=sorted(SPLITS), default="valid", help="split evaluated (default: valid)")
    p.add_argument("--out", required=True, help="results JSON to write (its .scores.csv is written beside it)")
    p.add_argument(
        "--threshold-split",
        choices=[*sorted(SPLITS), "none"],
        default=None,
        help="split whose scores choose the F1/accuracy thresholds; 'none': AUC only (default: the other split)",
    )
    p.add_argument(
        "--threshold-volumes",
        type=int,
        default=1000,
        help="volumes of the threshold split scored, whole patients in a seeded order; 0 = all (default: 1000)",
    )
    p.add_argument(
        "--volumes",
        choices=VOLUMES,
        default="all",
        help="'all' reconstructions or one 'chosen' per scan (default: all)",
    )
    p.add_argument(
        "--masks",
        help="folder of organ label maps named <volume_name>.nii.gz, for the organ-aware prompts (default: none)",
    )
    p.add_argument(
        "--segmenter",
        choices=("none", "totalsegmentator"),
        default="none",
        help="segment volumes without a mask in --masks (default: none: they use the whole study)",
    )
    p.add_argument("--segmenter-device", default="auto", help="TotalSegmentator's device (default: auto)")
    p.add_argument(
        "--cache",
        default=None,
        help="folder keeping each volume's embeddings, so a re-run embeds only volumes, masks or models that changed "
        "(default: OUT's stem + .embeddings beside OUT; '' = none)",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of patients (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap and threshold-sample seed (default: 0)")
    add_model_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: list[str] | None = None) -> int:
    import sys

    from model.checkpoint import LegacyCheckpointError
    from pipeline.segment import SegmenterConfig

    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("model.inference").setLevel(logging.WARNING)  # a line per volume is too many; ours say progress
    other = next(s for s in sorted(SPLITS) if s != args.split)
    threshold = (
        other if args.threshold_split is None else (None if args.threshold_split == "none" else args.threshold_split)
    )
    segmenter = (
        None if args.segmenter == "none" else SegmenterConfig(backend="totalsegmentator", device=args.segmenter_device)
    )
    try:
        options = CtrateEvalOptions(
            split=args.split,
            threshold_split=threshold,
            threshold_volumes=args.threshold_volumes,
            volumes=args.volumes,
            masks_dir=args.masks,
            n_boot=args.bootstrap,
            seed=args.seed,
            cache_dir=str(Path(args.out).with_name(f"{Path(args.out).stem}.embeddings"))
            if args.cache is None
            else (args.cache or None),
            inference=InferenceOptions(
                segmenter=segmenter,
                dictionary_scores=False,
                device=args.device,
                precision=args.precision,
                batch_size=args.batch_size,
                text_cache_dir=args.text_cache or None,
            ),
        )
        if args.masks and not Path(args.masks).is_dir():
            raise FileNotFoundError(f"no masks folder at {args.masks}")
        result = evaluate_ctrate(args.checkpoint, args.data, options)
    except (FileNotFoundError, LegacyCheckpointError, WeightsMissingError, SegmenterDependencyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    written = write_results(result, args.out)
    print(
        f"CT-RATE {result.split}: {result.n_volumes} volumes of {result.n_patients} patients, "
        f"{len(result.skipped)} left out; thresholds from {result.threshold_split or 'nowhere (AUC only)'} "
        f"({result.n_threshold_volumes} volumes)"
    )
    for variant in result.variants:
        print(
            f"  {variant.name}: macro AUC {_fmt(variant.macro_auc)} "
            f"over {sum(r.auc.applicable for r in variant.labels)} labels, "
            f"macro F1 {_fmt(variant.macro_f1)}"
        )
    print(f"  published (fVLM paper): CT-CLIP {ANCHORS['CT-CLIP']}, fVLM {ANCHORS['fVLM']}")
    for path in written:
        print(f"  {path}")
    return 0


def _fmt(e: Estimate) -> str:
    return f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}]" if e.applicable else "n/a"


if __name__ == "__main__":
    raise SystemExit(main())
