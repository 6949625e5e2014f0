"""What the evaluation protocols read: one row per evaluated (study, organ), and its organ crop.

``load_eval_data`` builds it from the data root: ``tables/grounded_pairs`` (the paired organs with split, status and
abnormalities), ``volumes/``, ``masks/`` and ``lesions/<study_id>.nii.gz``. Every organ goes through the one
preprocessing path of training (``model.preprocess.organ_crop``) with the evaluated checkpoint's own record, so each is
seen centred, at its class's scale. Ribs and vertebrae (``pipeline.vocab.counted``: named by counting from a landmark an
organ crop does not show) are left out unless asked for.

Labels: pairs are mined from reports, and reports miss findings and mention some the image does not show (the benchmark
cohort does so on purpose). Where the source carries the image truth (``source/truth/organ_gold.parquet`` of the
synthetic cohort), each organ's ``status`` and ``abnormalities`` are taken from it (``labels="image"``); the report's
stay beside them as ``report_status`` and ``report_abnormalities`` (what a model trained on reports was told).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from model.files import fingerprint
from model.preprocess import OrganBoxes, OrganCrop, Preprocessing, SourceBlock, organ_crop
from pipeline.pool import one_thread, process_map
from pipeline.vocab import STATUS_RANK, counted

log = logging.getLogger(__name__)

ORGAN_COLUMNS = [
    "study_id",
    "patient_id",
    "split",
    "organ",
    "index_v2",
    "status",
    "abnormalities",
    "report_status",
    "report_abnormalities",
    "cut_by_fov",
]
SPLIT_ALIASES = {"validation": "val", "valid": "val", "training": "train"}


@dataclass(frozen=True)
class CropStore:
    """The organ crops of every evaluated row, compactly (intensities as float16, shares as bytes)."""

    volume: np.ndarray  # (n, D, D, D) float16 in [-1, 1]
    mask: np.ndarray  # (n, D, D, D) uint8: organ share * 255
    region: np.ndarray  # (n, D, D, D) uint8: pooling-region share * 255
    size: np.ndarray  # (n, 4) float32
    whole: np.ndarray  # (n,) bool: the whole organ is in the crop
    source_voxels: np.ndarray  # (n,) int: canonical voxels per axis the crop covers
    # row -> the crop's window on the canonical grid (intensities as float16), for the rows whose organ has a lesion:
    # what tumor segmentation trains and is scored on
    blocks: dict[int, SourceBlock] = field(default_factory=dict)

    def tensors(self, rows: np.ndarray, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The network's inputs of ``rows``: volume (n, 1, D, D, D), mask, region (n, D, D, D), size (n, 4)."""
        rows = np.asarray(rows, dtype=int)

        def as_t(a: np.ndarray, scale: float = 1.0) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a[rows])).to(device=device, dtype=torch.float32) * scale

        return {
            "volume": as_t(self.volume)[:, None],
            "mask": as_t(self.mask, 1 / 255),
            "region": as_t(self.region, 1 / 255),
            "size": as_t(self.size),
        }


@dataclass(frozen=True)
class EvalData:
    organs: pd.DataFrame  # ORGAN_COLUMNS + row (into crops), whole, lesion_mm (largest lesion's diameter, 0 = none)
    crops: CropStore
    preprocessing: Preprocessing
    provenance: dict = field(default_factory=dict)  # data root, table fingerprints, preprocessing, ...

    def organ_rows(self, name: str) -> pd.DataFrame:
        return self.organs[self.organs["split"] == name].reset_index(drop=True)


def _merge_rows(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per (study, organ): worst status, union of abnormalities."""
    df = pairs.copy()
    df["split"] = df["split"].map(lambda s: SPLIT_ALIASES.get(s, s))
    df["abnormalities"] = df["abnormalities"].map(lambda a: sorted(set(a)) if a is not None and len(a) else [])
    df["_rank"] = df["status"].map(STATUS_RANK).fillna(0)
    if "cut_by_fov" not in df:
        df["cut_by_fov"] = False
    agg = (
        df.sort_values("_rank")
        .groupby(["study_id", "organ"], sort=False)
        .agg(
            patient_id=("patient_id", "first"),
            split=("split", "first"),
            index_v2=("index_v2", "first"),
            status=("status", "last"),
            abnormalities=("abnormalities", lambda s: sorted({a for lst in s for a in lst})),
            cut_by_fov=("cut_by_fov", "first"),
        )
        .reset_index()
    )
    agg["report_status"], agg["report_abnormalities"] = agg["status"], agg["abnormalities"]
    return agg[ORGAN_COLUMNS]


def _resolve(root: Path, path: str | None, default: Path) -> Path:
    if path is None or (isinstance(path, float) and np.isnan(path)):
        return default
    p = Path(path)
    return p if p.is_absolute() else root / p


def lesion_diameter_mm(lesion: np.ndarray | None, spacing_mm: float) -> float:
    """The largest connected lesion's volume-equivalent diameter in mm (0 without a lesion)."""
    if lesion is None or not lesion.any():
        return 0.0
    parts, n = ndimage.label(lesion)
    voxels = np.bincount(parts.ravel())[1:].max()
    return float((6.0 * voxels * spacing_mm**3 / math.pi) ** (1 / 3))


def load_eval_data(
    data_root: str | os.PathLike,
    preprocessing: Preprocessing,
    splits: tuple[str, ...] = ("train", "val", "test"),
    max_cases_per_split: int | None = None,
    labels: str = "image",
    counted_structures: bool = False,
    workers: int | None = None,
) -> EvalData:
    """Read the organ rows of ``splits`` from the data root and crop each with ``preprocessing`` -- pass the evaluated
    checkpoint's own record (``model.checkpoint.preprocessing_of``); organs with fewer than ``min_organ_voxels`` are
    left out. A study without ``lesions/<study_id>.nii.gz`` is taken as lesion-free.

    Only rows of ``splits`` are read from ``grounded_pairs`` (a parquet filter), so a caller that leaves ``"test"`` out
    never loads a test study's labels or images. ``labels``: ``"image"`` takes status and abnormalities from the
    source's image truth where there is one (only the rows of ``splits`` are read from it), ``"report"`` keeps the
    reports'. ``counted_structures``: keep ribs and vertebrae. Studies are cropped by ``workers`` processes (default:
    one per CPU)."""
    if labels not in ("image", "report"):
        raise ValueError(f"labels must be 'image' or 'report', not {labels!r}")
    from pipeline.tables import table_path

    root = Path(data_root).resolve()
    pairs = _read_pairs(root, splits)
    rows = _merge_rows(pairs)
    rows = rows[rows["split"].isin(splits)]
    if not counted_structures:
        rows = rows[~rows["organ"].map(counted)]
    n_from_image = 0
    if labels == "image":
        rows, n_from_image = image_truth_labels(root, rows)
    paths = pairs.drop_duplicates("study_id").set_index("study_id")[["volume_path", "mask_path"]]
    jobs = []
    for split in splits:
        studies = sorted(rows.loc[rows["split"] == split, "study_id"].unique())
        if max_cases_per_split is not None:
            studies = studies[:max_cases_per_split]
        for sid in studies:
            organs = rows[rows["study_id"] == sid].sort_values("index_v2")
            jobs.append(
                StudyJob(
                    str(sid),
                    _resolve(root, paths.at[sid, "volume_path"], root / "volumes" / f"{sid}.nii.gz"),
                    _resolve(root, paths.at[sid, "mask_path"], root / "masks" / f"{sid}.nii.gz"),
                    root / "lesions" / f"{sid}.nii.gz",
                    tuple(organs.index),
                    tuple(organs["index_v2"].astype(int)),
                    tuple(organs["organ"].astype(str)),
                    preprocessing,
                )
            )
    organs, crops, n_missing = crop_rows(rows, jobs, preprocessing, workers)
    in_scan = ~organs["cut_by_fov"].astype(bool) if len(organs) else pd.Series(dtype=bool)
    provenance = {
        "data_root": str(root),
        "grounded_pairs_sha256": fingerprint(table_path("grounded_pairs", root)),
        "preprocessing": preprocessing.to_record(),
        "splits": list(splits),
        "n_cases": {s: int(organs.loc[organs["split"] == s, "study_id"].nunique()) for s in splits},
        "n_organs": {s: int((organs["split"] == s).sum()) for s in splits},
        "counted_structures": counted_structures,
        "missing_lesion_masks": n_missing,
        "whole_in_view": float(organs.loc[in_scan, "whole"].mean()) if in_scan.any() else None,
        "labels": "image truth (source/truth/organ_gold.parquet)" if n_from_image else "reports (grounded_pairs)",
        "organ_rows_from_image_truth": n_from_image,
    }
    return EvalData(organs, crops, preprocessing, provenance)


@dataclass(frozen=True)
class StudyJob:
    """One study's organ rows to crop: its canonical volume, label map and lesion mask (absent: lesion-free)."""

    study_id: str
    volume: Path
    mask: Path
    lesion: Path
    rows: tuple[int, ...]  # the organ rows' index
    labels: tuple[int, ...]
    names: tuple[str, ...]
    preprocessing: Preprocessing


def _crop_study(job: StudyJob) -> tuple[list[tuple[int, OrganCrop]], int]:
    """One study's organ crops (rows with too few voxels left out), and 1 if it has no lesion mask. Runs in a worker."""
    from pipeline.volume import load_nifti

    ct, lab = load_nifti(job.volume), np.asarray(load_nifti(job.mask).array)
    les = np.asarray(load_nifti(job.lesion).array) > 0 if job.lesion.exists() else None
    boxes = OrganBoxes.of(lab)
    out = []
    for index, label, name in zip(job.rows, job.labels, job.names):
        if label in boxes.boxes and boxes.counts[label] >= job.preprocessing.min_organ_voxels:
            out.append(
                (index, organ_crop(ct, lab, label, name, job.preprocessing, boxes, lesion=les, study_id=job.study_id))
            )
    return out, int(les is None)


def crop_rows(
    rows: pd.DataFrame, jobs: list[StudyJob], preprocessing: Preprocessing, workers: int | None = None
) -> tuple[pd.DataFrame, CropStore, int]:
    """Crop every organ row of ``jobs`` (``rows`` indexed as the jobs name them): the kept rows with ``row`` (into the
    crops), ``whole`` and ``lesion_mm``, their ``CropStore``, and how many studies had no lesion mask."""
    arrays: dict[str, list] = {k: [] for k in ("volume", "mask", "region", "size", "whole", "source_voxels")}
    blocks: dict[int, SourceBlock] = {}
    kept: list[int] = []
    lesion_mm: list[float] = []
    n_missing = 0
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    for study_crops, missing in process_map(
        _crop_study, jobs, workers=workers, preload=["model.eval.data"], initializer=one_thread, chunksize=4
    ):
        n_missing += missing
        for index, c in study_crops:
            n = len(kept)
            arrays["volume"].append(c.volume.astype(np.float16))
            arrays["mask"].append(np.rint(c.mask * 255).astype(np.uint8))
            arrays["region"].append(np.rint(c.region * 255).astype(np.uint8))
            arrays["size"].append(c.size)
            arrays["whole"].append(c.whole)
            arrays["source_voxels"].append(c.source_voxels)
            if c.source is not None:
                blocks[n] = dataclasses.replace(c.source, volume=c.source.volume.astype(np.float16))
            lesion_mm.append(lesion_diameter_mm(c.source.lesion if c.source else None, preprocessing.base_mm))
            kept.append(index)
    if n_missing:
        log.info("%d studies have no lesion mask: taken as lesion-free", n_missing)
    organs = rows.loc[kept].reset_index(drop=True) if kept else pd.DataFrame(columns=ORGAN_COLUMNS)
    organs["row"] = np.arange(len(organs))
    organs["whole"] = np.array(arrays["whole"], dtype=bool)
    organs["lesion_mm"] = np.array(lesion_mm, dtype=float)
    d = preprocessing.crop_voxels
    stack = lambda k, shape, dtype: np.stack(arrays[k]) if arrays[k] else np.zeros((0, *shape), dtype)  # noqa: E731
    crops = CropStore(
        stack("volume", (d, d, d), np.float16),
        stack("mask", (d, d, d), np.uint8),
        stack("region", (d, d, d), np.uint8),
        stack("size", (4,), np.float32),
        np.array(arrays["whole"], dtype=bool),
        np.array(arrays["source_voxels"], dtype=int),
        blocks,
    )
    return organs, crops, n_missing


def merge_eval_data(parts: list[EvalData], splits: tuple[str, ...] | None = None) -> EvalData:
    """One ``EvalData`` of several (each part's rows of ``splits``, all where None), their crops renumbered; the parts
    must have been cropped with one preprocessing. Provenance: the first part's, with every part's under ``parts``."""
    if len({p.preprocessing for p in parts}) != 1:
        raise ValueError("the parts were cropped with different preprocessing records")
    frames, picks, blocks = [], [], {}
    offset = 0
    for part in parts:
        organs = part.organs if splits is None else part.organs[part.organs["split"].isin(splits)]
        old = organs["row"].to_numpy(dtype=int)
        new = np.arange(offset, offset + len(old))
        blocks.update({int(n): part.crops.blocks[int(o)] for o, n in zip(old, new) if int(o) in part.crops.blocks})
        frames.append(organs.assign(row=new))
        picks.append(old)
        offset += len(old)
    cat = lambda name: np.concatenate([getattr(p.crops, name)[rows] for p, rows in zip(parts, picks)])  # noqa: E731
    crops = CropStore(
        cat("volume"), cat("mask"), cat("region"), cat("size"), cat("whole"), cat("source_voxels"), blocks
    )
    organs = pd.concat(frames, ignore_index=True)
    provenance = dict(parts[0].provenance) | {
        "parts": [p.provenance for p in parts],
        "splits": sorted(set(organs["split"])),
        "n_cases": organs.groupby("split")["study_id"].nunique().to_dict(),
        "n_organs": organs["split"].value_counts().to_dict(),
    }
    return EvalData(organs, crops, parts[0].preprocessing, provenance)


def _read_pairs(root: Path, splits: tuple[str, ...]) -> pd.DataFrame:
    """``grounded_pairs`` rows of ``splits`` only (and their aliases), filtered while reading."""
    from pipeline.tables import table_path

    path = table_path("grounded_pairs", root)
    if not path.exists():
        from pipeline.tables import read_table

        return read_table("grounded_pairs", root)  # raises its clear error
    names = sorted({*splits, *(a for a, s in SPLIT_ALIASES.items() if s in splits)})
    return pd.read_parquet(path, filters=[("split", "in", names)])


def image_truth_labels(root: Path, rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``rows`` with status and abnormalities from the image truth of ``root/source/truth/organ_gold.parquet``
    where it has the (study, organ), and how many rows it had. Only the gold rows of ``rows``' studies are read
    (matched by the study pseudonym, under this process's key), so a caller without test rows reads no test label."""
    from pipeline.ids import pseudonym

    path = root / "source" / "truth" / "organ_gold.parquet"
    if not path.is_file() or rows.empty:
        return rows, 0
    uids = pd.read_parquet(path, columns=["study_uid"])["study_uid"].dropna().unique()
    wanted = set(rows["study_id"])
    keep = [u for u in uids if pseudonym("study", u) in wanted]
    if not keep:
        return rows, 0
    gold = pd.read_parquet(
        path, columns=["study_uid", "organ", "image_status", "abnormalities"], filters=[("study_uid", "in", keep)]
    )
    gold["study_id"] = gold["study_uid"].map(lambda u: pseudonym("study", u))
    truth = gold.set_index(["study_id", "organ"])
    keys = pd.MultiIndex.from_arrays([rows["study_id"], rows["organ"]])
    hit = keys.isin(truth.index)
    out = rows.copy()
    matched = truth.reindex(keys[hit])
    out.loc[hit, "status"] = matched["image_status"].to_numpy()
    out.loc[hit, "abnormalities"] = pd.Series(
        [sorted(a) if a is not None else [] for a in matched["abnormalities"]], index=out.index[hit], dtype=object
    )
    return out, int(hit.sum())
