"""A trained model on new studies: one entry, ``infer(checkpoint, studies, options)``.

Each study goes through the pipeline's own ingest steps (NIfTI or one DICOM series read into RAS,
the HU check, resampling to the checkpoint's spacing), gets an organ label map (a given mask, or the
configured segmenter: TotalSegmentator by default), and each organ is cropped the way the checkpoint was
trained (``model.checkpoint.preprocessing_of`` -> ``model.preprocess.organ_crop``: centred, at its class's
scale). A study without any organ cannot be embedded by an organ-crop model and is refused with the reason.
From each organ's crop:

- one embedding per organ (``CTGlip.encode_organs``) and one for the whole study (the normalised mean of its
  organs', as the global model is trained);
- zero-shot scores for every abnormality the dictionary (``pipeline/report/data/abnormalities.yaml``)
  allows for each organ: cos(e, abnormal prompts) - cos(e, normal prompts), each side the average of
  the evaluation's paraphrases (``model.prompts``), and the two-way softmax at the model's logit
  scale as ``probability``;
- per text query, the cosine of each organ crop's feature-map cells with the text (each cell embedded as if it were
  the whole organ region), brought back to the canonical grid inside the organ's pooling region (the highest where
  regions overlap); outside every organ the map holds its lowest value.

``write_outputs`` stores one result: ``embeddings.parquet`` (organ, embedding), ``scores.json``,
``heatmaps/<query>.nii.gz`` + ``.png`` and ``summary.json`` (timings, grid, organs).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from model.checkpoint import config_of, load_checkpoint, load_model, preprocessing_of, read_config, resolve_model_path
from model.network import CTGlip
from model.precision import autocast
from model.preprocess import OrganBoxes, Preprocessing, organ_crop
from model.prompts import abnormality_prompts, prompt_embeddings
from model.text import build_text_states
from pipeline.atomic import write_bytes, write_json, write_parquet
from pipeline.dicom.errors import IngestError
from pipeline.ingest import read_nifti, to_canonical
from pipeline.resample import ResampleOptions
from pipeline.segment import SegmenterConfig, segment, to_grid_of
from pipeline.vocab import class_map
from pipeline.volume import Volume, load_nifti, save_nifti

log = logging.getLogger(__name__)

STUDY = "whole_study"  # the `organ` of the whole-study embedding row
MAX_VOXELS = (
    1024**3
)  # a header claiming more voxels than this is refused before anything is read (a 512^2 x 4096 study fits)
MIN_MASK_INSIDE = 0.5  # a mask whose labelled voxels fall less than this share inside the volume is refused


class NotCTError(ValueError):
    """The input's values are not CT Hounsfield units (the pipeline's HU check says why)."""


@dataclass(frozen=True)
class StudyInput:
    """One study: a NIfTI file or a DICOM folder holding one series, and optionally its label map."""

    study_id: str  # a pseudonymous id: it names rows and logs, never a patient
    volume: str | None = None  # NIfTI path (HU)
    dicom: str | None = None  # folder of one DICOM series
    mask: str | None = None  # NIfTI label map (TotalSegmentator `total` v2 indices), any grid covering the volume
    heatmaps: bool = True  # compute the query heatmaps for this study
    # a NIfTI manifest row's corrections (pipeline.ingest.MANIFEST_OPTIONAL: rescale to HU, affine of a blank
    # header) as (column, value) pairs, applied on reading the volume the way ingest applies them
    manifest: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if (self.volume is None) == (self.dicom is None):
            raise ValueError(f"{self.study_id}: give exactly one of a volume (NIfTI) or a DICOM folder")


@dataclass(frozen=True)
class InferenceOptions:
    queries: tuple[str, ...] = ()  # texts whose voxel-similarity heatmaps are computed
    # used where a study has no mask; None: no organ map, such a study gets its whole-study embedding only
    segmenter: SegmenterConfig | None = SegmenterConfig(backend="totalsegmentator")
    dictionary_scores: bool = True  # score every organ against the abnormality dictionary (StudyResult.scores)
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    precision: str = "float32"  # or "bf16": autocast of the image encoder
    batch_size: int = 16  # organ crops per encoder call
    min_organ_voxels: int | None = None  # None: the checkpoint's own minimum
    text_cache_dir: str | None = (
        None  # on-disk cache of the frozen text layers' states: the dictionary's prompts are read once, not per run
    )

    def __post_init__(self) -> None:
        if self.precision not in ("float32", "bf16"):
            raise ValueError(f"precision must be 'float32' or 'bf16', not {self.precision!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")


@dataclass(frozen=True)
class StudyResult:
    study_id: str
    grid: Volume  # the canonical volume (HU, int16) on which masks and heatmaps lie
    labels: np.ndarray  # (D, H, W) uint8 organ label map on the canonical grid
    embeddings: pd.DataFrame  # organ, index_v2, voxels, whole (in its crop), embedding (whole study last, index_v2 -1)
    scores: dict  # organ -> abnormality -> {"score", "probability"}
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)  # query -> (D, H, W) float32 cosine
    timings: dict[str, float] = field(
        default_factory=dict
    )  # seconds: ingest, segmentation, encoder, zero_shot, heatmaps


@dataclass(frozen=True)
class LoadedModel:
    """A model loaded once for many calls of ``infer`` (and for encoding texts with the same model)."""

    path: Path
    model: CTGlip
    pre: Preprocessing
    device: torch.device


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA device (use 'cpu' or 'auto')")
    return dev


def infer(
    checkpoint: str | os.PathLike | LoadedModel,
    studies: Sequence[StudyInput],
    options: InferenceOptions = InferenceOptions(),
) -> Iterator[StudyResult]:
    """Embed, score and (with queries) map each study with the trained model at ``checkpoint``
    (an exported model folder, a step checkpoint, or one ``load_for_inference`` returned); the model
    loads once, studies follow lazily."""
    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load_for_inference(checkpoint, options)
    queries = _text(loaded.model, [[q] for q in options.queries]) if options.queries else None
    for study in studies:
        yield _infer_one(loaded.model, loaded.pre, study, options, loaded.device, queries)


def load_for_inference(checkpoint: str | os.PathLike, options: InferenceOptions = InferenceOptions()) -> LoadedModel:
    """The model at ``checkpoint`` on ``options.device``, with its preprocessing record, ready for ``infer``."""
    path = resolve_model_path(checkpoint)
    pre = preprocessing_of(path)  # checks the format first: a model of another version is refused with its version
    device = resolve_device(options.device)
    text = None
    if options.text_cache_dir:
        ckpt = load_checkpoint(path) if path.suffix == ".pt" else read_config(path)
        text = build_text_states(config_of(ckpt).model, options.text_cache_dir)
    return LoadedModel(path, load_model(path, map_location=device, text_states=text), pre, device)


# --- one study -------------------------------------------------------------------------------


def _ingest(study: StudyInput, pre: Preprocessing) -> Volume:
    """The pipeline's own steps, as archive ingest takes them: read into RAS (``load_dicom_series`` or ``read_nifti``
    with the manifest's corrections), then ``to_canonical`` (image and HU checks, resampling) at the checkpoint's
    spacing. A NIfTI that is no volume is a ``ValueError``, values that are no CT image a ``NotCTError``; a DICOM
    series that cannot be read stays the pipeline's ``IngestError``."""
    if study.dicom is not None:
        from pipeline.dicom.load import load_dicom_series  # pydicom only when a DICOM study comes

        if not Path(study.dicom).is_dir():
            raise FileNotFoundError(f"{study.study_id}: DICOM folder {study.dicom} not found")
        volume = load_dicom_series(study.dicom)
    else:
        path = study.volume
        assert path is not None  # StudyInput holds exactly one of a volume and a DICOM folder
        if not Path(path).is_file():
            raise FileNotFoundError(f"{study.study_id}: volume {path} not found")
        _check_header(study.study_id, "volume", path)
        try:
            volume = read_nifti(path, dict(study.manifest))
        except IngestError as err:
            raise ValueError(f"{study.study_id}: the volume cannot be read: {err.reason} ({err.detail})") from None
    spacing = pre.spacing_mm if pre.spacing_mm is not None else min(volume.spacing)
    try:
        return to_canonical(volume, ResampleOptions(spacing=(spacing,) * 3))[0]
    except IngestError as err:
        said = (
            err.detail
            if err.reason in ("non_finite", "constant_volume")
            else (f"the volume does not look like CT in Hounsfield units ({err.reason}: {err.detail})")
        )
        raise NotCTError(f"{study.study_id}: {said}") from None


def _labels(study: StudyInput, canon: Volume, segmenter: SegmenterConfig | None) -> np.ndarray:
    if study.mask is None:
        if segmenter is None:
            return np.zeros(canon.shape, dtype=np.uint8)
        return np.asarray(segment(study.study_id, canon, segmenter).array, dtype=np.uint8)
    if not Path(study.mask).is_file():
        raise FileNotFoundError(f"{study.study_id}: mask {study.mask} not found")
    _check_header(study.study_id, "mask", study.mask)
    mask = load_nifti(study.mask)
    placed = np.asarray(to_grid_of(mask, canon).array, dtype=np.uint8)
    given = float(np.count_nonzero(mask.array)) * float(
        np.prod(mask.spacing)
    )  # labelled mm^3, before and after placing
    inside = float(np.count_nonzero(placed)) * float(np.prod(canon.spacing))
    if given > 0 and inside < MIN_MASK_INSIDE * given:  # an empty mask is refused later, as a study without organs
        share = inside / given
        raise ValueError(
            f"{study.study_id}: the mask {Path(study.mask).name} does not lie on the volume: {share:.0%} of its "
            f"labelled voxels fall inside it (at least {MIN_MASK_INSIDE:.0%} needed; is it another study's mask?)"
        )
    return placed


def _check_header(study_id: str, what: str, path: str) -> None:
    """Refuse a NIfTI whose header claims more than ``MAX_VOXELS`` voxels, before reading its data."""
    from pipeline.volume import read_image

    try:
        shape = read_image(path).header.get_data_shape()
    except Exception as err:  # noqa: BLE001 - any unreadable header is the same answer for the user
        raise ValueError(f"{study_id}: the {what} {Path(path).name} is not a readable NIfTI file ({err})") from None
    if int(np.prod(shape, dtype=np.float64)) > MAX_VOXELS:
        raise ValueError(
            f"{study_id}: the {what} {Path(path).name} claims {' x '.join(map(str, shape))} voxels, more than "
            f"{MAX_VOXELS:,} (refused before reading)"
        )


def _text(model: CTGlip, prompt_sets: list[list[str]]) -> np.ndarray:
    return prompt_embeddings(model, prompt_sets)  # (n, e): paraphrases averaged, normalised


@torch.no_grad()
def _infer_one(
    model: CTGlip,
    pre: Preprocessing,
    study: StudyInput,
    options: InferenceOptions,
    device: torch.device,
    queries: np.ndarray | None,
) -> StudyResult:
    timings: dict[str, float] = {}
    t0 = perf_counter()
    canon = _ingest(study, pre)
    timings["ingest"] = perf_counter() - t0
    t0 = perf_counter()
    labels = _labels(study, canon, options.segmenter)
    timings["segmentation"] = perf_counter() - t0

    t0 = perf_counter()
    boxes = OrganBoxes.of(labels)
    minimum = pre.min_organ_voxels if options.min_organ_voxels is None else options.min_organ_voxels
    names = class_map()
    present = [i for i in boxes.present(minimum) if i in names]
    if not present:
        raise ValueError(
            f"{study.study_id}: no organ of at least {minimum} voxels in the label map: an organ-crop model "
            "embeds organs (give a mask, or a segmenter)"
        )
    crops = [organ_crop(canon, labels, i, names[i], pre, boxes, study_id=study.study_id) for i in present]
    organ_parts: list[torch.Tensor] = []
    heat_parts: list[torch.Tensor] = []
    for at in range(0, len(crops), options.batch_size):
        part = crops[at : at + options.batch_size]
        x = {
            k: torch.from_numpy(np.stack([getattr(c, k) for c in part])).to(device)
            for k in ("volume", "mask", "region", "size")
        }
        with autocast(device, options.precision):
            fmap = model.feature_map(x["volume"][:, None], x["mask"]).float()  # (n, c, d, h, w)
        organ_parts.append(model.encode_organs(x["volume"][:, None], x["mask"], x["region"], x["size"], fmap=fmap))
        if queries is not None and study.heatmaps:
            cells = model.cell_embeddings(fmap, x["size"])  # (n, d, h, w, e)
            heat_parts.append(torch.einsum("ndhwe,qe->nqdhw", cells, torch.from_numpy(queries).to(cells)).cpu())
    organ_emb = torch.cat(organ_parts)  # (n, e)
    study_emb = model.study_embeddings(
        organ_emb, torch.zeros(len(present), dtype=torch.long, device=organ_emb.device), 1
    )[0]
    timings["encoder"] = perf_counter() - t0

    organ_names = [names[i] for i in present]
    rows = [
        {"organ": n, "index_v2": i, "voxels": int(boxes.counts[i]), "whole": c.whole, "embedding": e.tolist()}
        for n, i, c, e in zip(organ_names, present, crops, organ_emb.float().cpu().numpy())
    ]
    rows.append(
        {
            "organ": STUDY,
            "index_v2": -1,
            "voxels": int(np.prod(canon.shape)),
            "whole": True,
            "embedding": study_emb.float().cpu().numpy().tolist(),
        }
    )
    embeddings = pd.DataFrame(rows, columns=["organ", "index_v2", "voxels", "whole", "embedding"])
    t0 = perf_counter()
    scores = _scores(model, organ_names, organ_emb.float().cpu().numpy()) if options.dictionary_scores else {}
    timings["zero_shot"] = perf_counter() - t0

    t0 = perf_counter()
    heatmaps: dict[str, np.ndarray] = {}
    if heat_parts:
        heatmaps = _paste(torch.cat(heat_parts), crops, canon.shape, options.queries)
    timings["heatmaps"] = perf_counter() - t0
    log.info(
        "study %s: %d organs, %s", study.study_id, len(present), ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
    )
    return StudyResult(study.study_id, canon, labels.astype(np.uint8), embeddings, scores, heatmaps, timings)


def _paste(sim: torch.Tensor, crops: list, shape: tuple[int, ...], queries: Sequence[str]) -> dict[str, np.ndarray]:
    """(n organs, q, d, h, w) cell cosines -> one (D, H, W) map per query on the canonical grid: each organ's cells
    brought up to the voxels its crop covers, kept inside its pooling region, the highest where regions overlap; the
    map's lowest value outside every organ."""
    out = np.full((len(queries), *shape), -np.inf, dtype=np.float32)
    for n, c in enumerate(crops):
        size = (c.source_voxels,) * 3
        up = F.interpolate(sim[n][None].float(), size=size, mode="trilinear", align_corners=False)[
            0
        ].numpy()  # (q, m, m, m)
        inside = (
            F.interpolate(torch.from_numpy(c.region)[None, None], size=size, mode="trilinear", align_corners=False)[
                0, 0
            ].numpy()
            > 0.5
        )
        src, dst = [], []
        for st, m, n_ax in zip(c.start, size, shape):
            lo, hi = max(st, 0), min(st + m, n_ax)
            src.append(slice(lo - st, hi - st))
            dst.append(slice(lo, hi))
        if any(s.stop <= s.start for s in src):
            continue
        region = inside[tuple(src)]
        for q in range(len(queries)):
            view = out[q][tuple(dst)]
            np.maximum(view, np.where(region, up[q][tuple(src)], -np.inf), out=view)
    result = {}
    for q, query in enumerate(queries):
        heat = out[q]
        finite = np.isfinite(heat)
        heat[~finite] = heat[finite].min() if finite.any() else 0.0
        result[query] = np.ascontiguousarray(heat)
    return result


def logit_scale(model: CTGlip) -> float:
    """The model's softmax temperature as trained (exp of the learnt log scale, capped as in training)."""
    return float(model.scale().detach())


def _scores(model: CTGlip, organs: list[str], emb: np.ndarray) -> dict:
    """organ -> abnormality -> score (abnormal minus normal cosine) and its two-way softmax."""
    from pipeline.report.dictionary import abnormalities_for_organ

    pairs = [(i, o, a.canonical_for(o)) for i, o in enumerate(organs) for a in abnormalities_for_organ(o)]
    pairs = list(dict.fromkeys(pairs))
    if not pairs:
        return {}
    sets = [abnormality_prompts(o, a) for _, o, a in pairs]
    normal = _text(model, [n for n, _ in sets])  # (p, e)
    abnormal = _text(model, [a for _, a in sets])
    rows = emb[[i for i, _, _ in pairs]]  # (p, e)
    score = (rows * abnormal).sum(1) - (rows * normal).sum(1)
    scale = logit_scale(model)
    out: dict = {}
    for (_, organ, abn), s in zip(pairs, score):
        out.setdefault(organ, {})[abn] = {
            "score": round(float(s), 6),
            "probability": round(1 / (1 + math.exp(-scale * float(s))), 6),
        }
    return out


# --- outputs ---------------------------------------------------------------------------------


def query_slug(query: str) -> str:
    """A file name for a query: lower-case words joined by '_', at most 60 characters."""
    return re.sub(r"[^a-z0-9]+", "_", query.lower()).strip("_")[:60] or "query"


def heatmap_png(ct: np.ndarray, heat: np.ndarray, title: str) -> bytes:
    """Axial and coronal slices through the heatmap's peak: CT in grey, similarity in colour."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    i, j, k = np.unravel_index(int(np.argmax(heat)), heat.shape)
    lo, hi = float(np.percentile(heat, 50)), float(heat.max())
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
    # RAS arrays: an axial slice is (i, j) at k, a coronal one (i, k) at j; transposed so up is anterior / superior
    for ax, (img, hm, name) in zip(
        axes, ((ct[:, :, k], heat[:, :, k], f"axial k={k}"), (ct[:, j, :], heat[:, j, :], f"coronal j={j}"))
    ):
        ax.imshow(np.clip(img.T, -1000, 1000), cmap="gray", origin="lower")
        shown = ax.imshow(np.ma.masked_less(hm.T, lo), cmap="inferno", origin="lower", alpha=0.55, vmin=lo, vmax=hi)
        ax.set_title(name)
        ax.axis("off")
    fig.colorbar(shown, ax=axes, shrink=0.8, label="cosine with the text")
    fig.suptitle(title[:80])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(result: StudyResult, out: str | os.PathLike, checkpoint: str | os.PathLike = "") -> dict[str, Path]:
    """Write one study's result under ``out`` (every file atomically); returns what was written."""
    out = Path(out)
    written = {"embeddings": write_parquet(result.embeddings[["organ", "embedding"]], out / "embeddings.parquet")}
    written["scores"] = write_json(
        {
            "study_id": result.study_id,
            "checkpoint": str(checkpoint),
            "score": "cos(organ, abnormal prompts) - cos(organ, normal prompts), paraphrases averaged",
            "probability": "two-way softmax of the two cosines at the model's logit scale",
            "organs": result.scores,
        },
        out / "scores.json",
    )
    for query, heat in result.heatmaps.items():
        slug = query_slug(query)
        written[f"heatmap:{query}"] = save_nifti(
            Volume(heat, result.grid.affine), out / "heatmaps" / f"{slug}.nii.gz", dtype=np.float32
        )
        written[f"png:{query}"] = write_bytes(
            heatmap_png(result.grid.array, heat, query), out / "heatmaps" / f"{slug}.png"
        )
    written["summary"] = write_json(
        {
            "study_id": result.study_id,
            "grid_shape": list(result.grid.shape),
            "spacing_mm": list(result.grid.spacing),
            "affine": np.asarray(result.grid.affine).tolist(),
            "organs": result.embeddings["organ"].tolist(),
            "queries": {q: f"heatmaps/{query_slug(q)}.nii.gz" for q in result.heatmaps},
            "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        },
        out / "summary.json",
    )
    return written
