"""One preprocessing path: how a study becomes the network's input, for training, evaluation and inference.

``Preprocessing`` is the record of what the network consumes (crop, spacing, HU window, minimum
organ voxels, fill value). Training writes it into every checkpoint (``io["preprocessing"]``,
``model.config.io_metadata``); evaluation and inference read it back with
``model.checkpoint.preprocessing_of`` and call ``prepare_study``, so a checkpoint is always fed the
way it was trained. Random augmentation (a shift of the crop centre, an intensity jitter) stays in
``model.data``: it is applied around this deterministic part, never inside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from model.config import DataConfig
    from pipeline.volume import Volume

AIR_HU = -1024


@dataclass(frozen=True)
class Preprocessing:
    crop_size: tuple[int, int, int] = (64, 64, 64)  # (i, j, k) voxels, padded with `air_hu` / background outside the volume
    spacing_mm: float | None = 3.0  # isotropic spacing the canonical volume must have; None = not checked
    hu_window: tuple[float, float] = (-1000.0, 1000.0)  # HU clipped to this window and scaled to [-1, 1]
    min_organ_voxels: int = 8  # an organ with fewer voxels inside the crop is left out
    air_hu: float = AIR_HU  # HU of the padding outside the volume

    @classmethod
    def of(cls, data: DataConfig) -> Preprocessing:
        """The deterministic part of a training ``DataConfig``."""
        return cls(tuple(data.crop_size), data.spacing_mm, tuple(data.hu_window), data.min_organ_voxels)

    def to_record(self) -> dict[str, Any]:
        """JSON-able, as stored in checkpoints (``io["preprocessing"]``)."""
        return {"crop_size": list(self.crop_size), "spacing_mm": self.spacing_mm, "hu_window": list(self.hu_window),
                "min_organ_voxels": self.min_organ_voxels, "air_hu": self.air_hu,
                "crop_centre": "box of the study's paired organs (training may draw one organ and shift it)",
                "value_range": [-1.0, 1.0], "axes": "RAS voxel order (i, j, k), no flips"}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Preprocessing:
        return cls(tuple(int(s) for s in record["crop_size"]), record.get("spacing_mm"),
                   tuple(float(w) for w in record["hu_window"]), int(record["min_organ_voxels"]),
                   float(record.get("air_hu", AIR_HU)))


@dataclass(frozen=True)
class Prepared:
    volume: np.ndarray  # (D, H, W) float32 in [-1, 1]: the network's input channel
    labels: np.ndarray  # (D, H, W) int64, `total` (v2) indices, 0 outside the volume
    lesion: np.ndarray | None  # (D, H, W) bool, when a lesion mask was given
    kept: tuple[int, ...]  # the requested organs with at least `min_organ_voxels` voxels in the crop
    start: tuple[int, int, int]  # first voxel of the crop in the source grid (may be negative)


def crop_centre(labels: np.ndarray, organs: Sequence[int], hu: np.ndarray | None = None) -> np.ndarray:
    """Centre of the box of ``organs``' voxels; without any, of the body (HU > -500), else of the grid."""
    where = np.argwhere(np.isin(labels, list(organs))) if len(organs) else np.zeros((0, 3), int)
    if not len(where) and hu is not None:
        where = np.argwhere(hu > -500)
    return (where.min(0) + where.max(0)) / 2.0 if len(where) else np.array(labels.shape) / 2.0


def crop_pad(array: np.ndarray, start: Sequence[int], size: Sequence[int], fill: float) -> np.ndarray:
    """``array[start : start + size]`` on every axis, with ``fill`` outside the array."""
    out = np.full(tuple(size), fill, dtype=array.dtype)
    src, dst = [], []
    for st, sz, n in zip(start, size, array.shape):
        lo, hi = max(st, 0), min(st + sz, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - st, hi - st))
    out[tuple(dst)] = array[tuple(src)]
    return out


def window(hu: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    """HU clipped to ``hu_window`` and scaled to [-1, 1], float32 (MONAI's ``ScaleIntensityRange`` with
    ``clip=True`` computes the same; in numpy, since MONAI's tensor and metadata round trip cost more than
    the crop itself on every training item)."""
    lo, hi = hu_window
    out = np.asarray(hu, dtype=np.float32) - np.float32(lo)
    out *= np.float32(2.0 / (hi - lo))
    out -= np.float32(1.0)
    return np.clip(out, -1.0, 1.0, out=out)


def prepare_study(
    ct: Volume,
    labels: Volume,
    organs: Sequence[int],
    pre: Preprocessing,
    lesion: np.ndarray | None = None,
    centre: np.ndarray | None = None,
    study_id: str = "",
) -> Prepared:
    """The network's input of one study: check spacing and grids, crop ``pre.crop_size`` around
    ``centre`` (default: the box of ``organs``), pad with air / background, window HU, and list the
    ``organs`` that keep at least ``pre.min_organ_voxels`` voxels in the crop."""
    if pre.spacing_mm is not None and not np.allclose(ct.spacing, pre.spacing_mm, atol=1e-3):
        raise ValueError(f"{study_id}: spacing {tuple(ct.spacing)} mm, the checkpoint expects {pre.spacing_mm} mm")
    hu, lab = ct.array, labels.array
    if hu.shape != lab.shape or (lesion is not None and lesion.shape != lab.shape):
        raise ValueError(f"{study_id}: volume {hu.shape}, mask {lab.shape}"
                         + (f" and lesion {lesion.shape}" if lesion is not None else "") + " differ")
    centre = crop_centre(lab, organs, hu) if centre is None else np.asarray(centre, dtype=float)
    start = tuple(int(round(c)) - s // 2 for c, s in zip(centre, pre.crop_size))
    lab = crop_pad(lab, start, pre.crop_size, 0).astype(np.int64)
    counts = np.bincount(lab.ravel(), minlength=256)
    kept = tuple(int(o) for o in organs if int(o) < len(counts) and counts[int(o)] >= pre.min_organ_voxels)
    return Prepared(
        volume=window(crop_pad(hu, start, pre.crop_size, pre.air_hu), pre.hu_window),
        labels=lab,
        lesion=None if lesion is None else crop_pad(np.asarray(lesion, bool), start, pre.crop_size, False),
        kept=kept,
        start=start,
    )
