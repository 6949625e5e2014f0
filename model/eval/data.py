"""What the evaluation protocols read: cases (volume, organ label map, lesion mask) and organ rows.

``load_eval_data`` builds it from the data root: ``tables/grounded_pairs`` (one row per kept
(study, organ) with split, status and abnormality list), ``volumes/``, ``masks/`` and
``lesions/<study_id>.nii.gz``. Volumes are cropped (or padded) to one shape around the organs so
they batch, and HU are windowed to the model's input range.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ORGAN_COLUMNS = ["study_id", "patient_id", "split", "organ", "index_v2", "status", "abnormalities"]
SPLIT_ALIASES = {"validation": "val", "valid": "val", "training": "train"}


@dataclass(frozen=True)
class EvalCase:
    study_id: str
    patient_id: str
    split: str  # "train" / "val" / "test"
    volume: np.ndarray  # (D, H, W) float32, the model's input intensities
    labels: np.ndarray  # (D, H, W) int, `total` (v2) indices
    lesion: np.ndarray  # (D, H, W) bool


@dataclass(frozen=True)
class EvalData:
    cases: tuple[EvalCase, ...]
    organs: pd.DataFrame  # ORGAN_COLUMNS: one row per (study, organ) whose label is in the case's label map
    provenance: dict = field(default_factory=dict)  # data root, table fingerprints, crop, ...

    def split(self, name: str) -> tuple[EvalCase, ...]:
        return tuple(c for c in self.cases if c.split == name)

    def organ_rows(self, name: str) -> pd.DataFrame:
        return self.organs[self.organs["split"] == name].reset_index(drop=True)


def window_hu(array: np.ndarray, window: tuple[float, float] = (-1000.0, 1000.0)) -> np.ndarray:
    """HU clipped to ``window`` and scaled to [-1, 1] (float32), as ``model.config.DataConfig.hu_window``."""
    low, high = window
    a = np.clip(np.asarray(array, dtype=np.float32), low, high)
    return 2.0 * (a - low) / (high - low) - 1.0


def crop_box(labels: np.ndarray, shape: tuple[int, int, int], organs: Sequence[int] | None = None) -> tuple[slice, ...]:
    """A ``shape`` window (may run past the edges) centred on the box of ``organs``' labels (default:
    every label), the same centre and rounding as training (``model.data``, ``crop_center="organs"``)."""
    fg = np.argwhere(np.isin(labels, list(organs)) if organs is not None else labels > 0)
    centre = (fg.min(0) + fg.max(0)) / 2.0 if fg.size else np.array(labels.shape) / 2.0
    starts = [int(round(c)) - s // 2 for c, s in zip(centre, shape)]
    return tuple(slice(b, b + s) for b, s in zip(starts, shape))


def crop_or_pad(array: np.ndarray, box: tuple[slice, ...], fill: float) -> np.ndarray:
    """The window ``box`` of ``array``; parts outside the array are ``fill``."""
    out = np.full([s.stop - s.start for s in box], fill, dtype=array.dtype)
    src, dst = [], []
    for s, n in zip(box, array.shape):
        lo, hi = max(s.start, 0), min(s.stop, n)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - s.start, lo - s.start + max(hi - lo, 0)))
    out[tuple(dst)] = array[tuple(src)]
    return out


def _merge_rows(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per (study, organ): worst status, union of abnormalities."""
    rank = {"normal": 0, "uncertain": 1, "abnormal": 2}
    df = pairs.copy()
    df["split"] = df["split"].map(lambda s: SPLIT_ALIASES.get(s, s))
    df["abnormalities"] = df["abnormalities"].map(lambda a: sorted(set(a)) if a is not None and len(a) else [])
    df["_rank"] = df["status"].map(rank).fillna(0)
    agg = df.sort_values("_rank").groupby(["study_id", "organ"], sort=False).agg(
        patient_id=("patient_id", "first"),
        split=("split", "first"),
        index_v2=("index_v2", "first"),
        status=("status", "last"),
        abnormalities=("abnormalities", lambda s: sorted({a for lst in s for a in lst})),
    )
    return agg.reset_index()[ORGAN_COLUMNS]


def _resolve(root: Path, path: str | None, default: Path) -> Path:
    if path is None or (isinstance(path, float) and np.isnan(path)):
        return default
    p = Path(path)
    return p if p.is_absolute() else root / p


def fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (as ``sha256sum``), or of a folder's files (relative names and bytes), for provenance."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(path)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def load_eval_data(
    data_root: str | os.PathLike,
    crop: tuple[int, int, int] | None = (64, 64, 64),
    splits: tuple[str, ...] = ("train", "val", "test"),
    hu_window: tuple[float, float] = (-1000.0, 1000.0),
    min_organ_voxels: int = 8,
    max_cases_per_split: int | None = None,
    missing_lesion: str = "empty",
) -> EvalData:
    """Read cases and organ rows of ``splits`` from the data root.

    ``crop``: every volume is cut (or padded with air / background) to this shape, centred on its
    labelled organs; ``None`` keeps native shapes (then batch size 1 everywhere).
    ``missing_lesion``: a study without ``lesions/<study_id>.nii.gz`` is taken as lesion-free
    (``"empty"``) or left out (``"exclude"``).
    ``crop``, ``hu_window`` and ``min_organ_voxels`` mean what they mean in ``model.config.DataConfig``
    (pass the trained model's values): organ rows with fewer voxels inside the crop are dropped.
    """
    from pipeline.tables import read_table, table_path
    from pipeline.volume import load_nifti

    root = Path(data_root).resolve()
    pairs = read_table("grounded_pairs", root)
    rows = _merge_rows(pairs)
    rows = rows[rows["split"].isin(splits)]
    paths = pairs.drop_duplicates("study_id").set_index("study_id")[["volume_path", "mask_path"]]

    cases: list[EvalCase] = []
    kept: list[pd.DataFrame] = []
    n_missing = 0
    for split in splits:
        studies = sorted(rows.loc[rows["split"] == split, "study_id"].unique())
        if max_cases_per_split is not None:
            studies = studies[:max_cases_per_split]
        for sid in studies:
            lesion_path = root / "lesions" / f"{sid}.nii.gz"
            if not lesion_path.exists():
                n_missing += 1
                if missing_lesion == "exclude":
                    continue
            vol = load_nifti(_resolve(root, paths.at[sid, "volume_path"], root / "volumes" / f"{sid}.nii.gz")).array
            lab = load_nifti(_resolve(root, paths.at[sid, "mask_path"], root / "masks" / f"{sid}.nii.gz")).array
            les = load_nifti(lesion_path).array > 0 if lesion_path.exists() else np.zeros(lab.shape, bool)
            r = rows[rows["study_id"] == sid]
            patient = str(r["patient_id"].iloc[0])
            if crop is not None:
                box = crop_box(lab, crop, r["index_v2"].astype(int).tolist())
                vol = crop_or_pad(vol, box, fill=-1024)
                lab = crop_or_pad(lab, box, fill=0)
                les = crop_or_pad(les, box, fill=False)
            counts = np.bincount(lab.ravel().astype(np.int64))
            r = r[[int(i) < len(counts) and counts[int(i)] >= min_organ_voxels for i in r["index_v2"]]]
            kept.append(r)
            cases.append(
                EvalCase(sid, patient, split,
                         window_hu(vol, hu_window), lab.astype(np.int64), les.astype(bool))
            )
    if n_missing:
        log.warning("%d studies have no lesion mask (%s)", n_missing, missing_lesion)
    organs = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=ORGAN_COLUMNS)
    provenance = {
        "data_root": str(root),
        "grounded_pairs_sha256": fingerprint(table_path("grounded_pairs", root)),
        "crop": list(crop) if crop else None,
        "hu_window": list(hu_window),
        "splits": list(splits),
        "n_cases": {s: sum(c.split == s for c in cases) for s in splits},
        "missing_lesion_masks": n_missing,
    }
    return EvalData(tuple(cases), organs.reset_index(drop=True), provenance)
