"""One preprocessing path: how an organ of a study becomes the network's input, for training, evaluation and inference.

Every organ is seen in a crop of its own: ``crop_voxels`` cubed, centred on the organ's box, at a millimetre scale
fixed per organ class (``Preprocessing.organ_spacing``). A class's scale is the smallest multiple of half a millimetre,
never finer than the canonical grid, at which its largest training instance, dilated and with a margin, fits
(``organ_scales``), so every instance of the class is seen at one scale and its size shows in the crop. The crop is
area-averaged from the canonical grid (HU first, then windowed), and comes with the organ's mask, the pooling region
(the mask dilated by ``dilation_mm``: peri-organ fluid and capsule lesions lie inside it), an optional lesion mask,
and the whole organ's size (log volume, log box extents), measured on the full label map so that it holds where the
crop does not.

``Preprocessing`` is the record of what the network consumes, held by the training config
(``DataConfig.preprocessing``). Training fills in the organ scales and writes the config into every checkpoint;
evaluation and inference read the record back with ``model.checkpoint.preprocessing_of`` and call ``organ_crop``, so a
checkpoint is always fed the way it was trained.
Random augmentation (a shift of the crop, an intensity jitter) stays in ``model.data``, around this deterministic part.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from pipeline.resample import DEMO_SPACING_MM

if TYPE_CHECKING:
    from pipeline.volume import Volume

AIR_HU = -1024
RECORD = "organ-crops/1"  # the kind of record; older checkpoints (whole-study crops) have none
SCALE_STEP_MM = 0.5  # organ scales are multiples of this
SIZE_FEATURES = 4  # log volume (ml), log box extent (mm) along i, j, k


def option(default: Any, help: str) -> Any:  # `help` shadows the builtin: it mirrors argparse
    """A dataclass field with its description (``model.config.describe`` lists every one)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Preprocessing:
    crop_voxels: int = option(32, "every organ crop is crop_voxels^3 voxels, at its organ class's spacing")
    spacing_mm: float | None = option(
        DEMO_SPACING_MM,
        "isotropic spacing the canonical volumes must have (demo 3 mm, paper 1.5 mm); None = not checked",
    )
    organ_spacing: tuple[tuple[str, float], ...] = option(
        (),
        "(organ class, crop spacing in mm) pairs; empty: training chooses them on its split (organ_scales) and "
        "writes them with the checkpoint; a class not listed is fitted per instance",
    )
    dilation_mm: float = option(
        6.0,
        "the pooling region is the organ mask dilated by this much: peri-organ fluid "
        "(pleural effusion lies outside the lobe's label) and capsule lesions fall inside it",
    )
    margin_mm: float = option(
        6.0,
        "room around the dilated organ when an organ class's crop scale is chosen (the training shift moves within it)",
    )
    hu_window: tuple[float, float] = option(
        (-1000.0, 1000.0),
        "HU clipped to this window and scaled to [-1, 1]: the network's input (its extra windows are computed from it)",
    )
    min_organ_voxels: int = option(8, "an organ with fewer voxels in its label map is not paired, cropped or embedded")
    air_hu: float = option(AIR_HU, "HU of the padding outside the volume")

    def __post_init__(self) -> None:
        if self.crop_voxels < 8 or self.crop_voxels % 4:
            raise ValueError(f"crop_voxels must be a multiple of 4, at least 8, not {self.crop_voxels}")

    @property
    def base_mm(self) -> float:
        return float(self.spacing_mm or 1.0)

    def crop_spacing(self, organ: str, extent_mm: float) -> float:
        """The crop spacing of ``organ``: its class's (``organ_spacing``), else the scale that fits this instance."""
        table = dict(self.organ_spacing)
        return float(table[organ]) if organ in table else fitting_spacing(extent_mm, self)

    def to_record(self) -> dict[str, Any]:
        """JSON-able and versioned: evaluation records it (ct-glip/2 files held it as ``io["preprocessing"]``)."""
        return {
            "kind": RECORD,
            "crop_voxels": self.crop_voxels,
            "spacing_mm": self.spacing_mm,
            "organ_spacing": {o: s for o, s in self.organ_spacing},
            "dilation_mm": self.dilation_mm,
            "margin_mm": self.margin_mm,
            "hu_window": list(self.hu_window),
            "min_organ_voxels": self.min_organ_voxels,
            "air_hu": self.air_hu,
            "crop": "centred on the organ's box, area-averaged from the canonical grid to the class's spacing",
            "channels": ["HU window scaled to [-1, 1]", "organ mask fraction"],
            "value_range": [-1.0, 1.0],
            "axes": "RAS voxel order (i, j, k), no flips",
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Preprocessing:
        if record.get("kind") != RECORD:
            raise ValueError(
                f"preprocessing record of kind {record.get('kind')!r}; this version reads {RECORD!r} "
                "(organ crops): the model was trained by an older ct-glip and must be trained again"
            )
        return cls(
            int(record["crop_voxels"]),
            record.get("spacing_mm"),
            tuple(sorted((str(o), float(s)) for o, s in record["organ_spacing"].items())),
            float(record["dilation_mm"]),
            float(record["margin_mm"]),
            cast("tuple[float, float]", tuple(float(w) for w in record["hu_window"])),
            int(record["min_organ_voxels"]),
            float(record.get("air_hu", AIR_HU)),
        )


def fitting_spacing(extent_mm: float, pre: Preprocessing) -> float:
    """The finest spacing (a multiple of ``SCALE_STEP_MM``, at least the canonical one) at which an organ of
    ``extent_mm`` (its box's longest side), dilated and with the margin on both sides, fits in the crop."""
    need = (float(extent_mm) + 2 * (pre.dilation_mm + pre.margin_mm)) / pre.crop_voxels
    return max(pre.base_mm, math.ceil(need / SCALE_STEP_MM - 1e-9) * SCALE_STEP_MM)


def organ_scales(extents: Mapping[str, Sequence[float]], pre: Preprocessing) -> tuple[tuple[str, float], ...]:
    """Per organ class, the spacing at which its largest instance in ``extents`` (box sides in mm, of organs that the
    scan does not cut) fits: the ``organ_spacing`` of a record made from the training split."""
    return tuple(sorted((o, fitting_spacing(max(v), pre)) for o, v in extents.items() if len(v)))


def window(hu: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    """HU clipped to ``hu_window`` and scaled to [-1, 1], float32 (MONAI's ``ScaleIntensityRange`` with ``clip=True``
    computes the same; in numpy, since its tensor and metadata round trip cost more than the crop itself)."""
    lo, hi = hu_window
    out = np.asarray(hu, dtype=np.float32) - np.float32(lo)
    out *= np.float32(2.0 / (hi - lo))
    out -= np.float32(1.0)
    return np.clip(out, -1.0, 1.0, out=out)


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


@dataclass(frozen=True)
class OrganBoxes:
    """Every label's box and voxel count in one label map (one pass), so each organ's crop starts from its box."""

    boxes: dict[int, tuple[slice, slice, slice]]
    counts: np.ndarray  # (256,) voxels per label
    shape: tuple[int, int, int]

    @classmethod
    def of(cls, labels: np.ndarray) -> OrganBoxes:
        lab = np.asarray(labels)
        found = ndimage.find_objects(lab.astype(np.int32, copy=False))
        boxes = {i + 1: b for i, b in enumerate(found) if b is not None}
        return cls(boxes, np.bincount(lab.ravel().astype(np.int64), minlength=256), tuple(lab.shape))

    def present(self, minimum: int) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.counts[1:] >= minimum) + 1 if int(i) in self.boxes]


@dataclass(frozen=True)
class SourceBlock:
    """An organ crop's window at the canonical spacing: what tumor segmentation reads and is scored on."""

    volume: np.ndarray  # (m, m, m) float32 in [-1, 1]
    mask: np.ndarray  # (m, m, m) bool: the organ
    region: np.ndarray  # (m, m, m) bool: the organ dilated by ``dilation_mm``
    lesion: np.ndarray  # (m, m, m) bool: the organ's lesions


@dataclass(frozen=True)
class OrganCrop:
    volume: np.ndarray  # (n, n, n) float32 in [-1, 1]: the windowed HU
    mask: np.ndarray  # (n, n, n) float32: share of each crop voxel inside the organ
    region: np.ndarray  # (n, n, n) float32: share inside the organ dilated by ``dilation_mm`` (the pooling region)
    lesion: np.ndarray | None  # (n, n, n) float32: share inside the organ's lesions, when a lesion mask was given
    source: (
        SourceBlock | None
    )  # the crop's window on the canonical grid, kept where the organ has a lesion (segmentation)
    size: np.ndarray  # (SIZE_FEATURES,) float32: log volume (ml) and log box extents (mm) of the whole organ
    spacing_mm: float  # the crop's spacing
    start: tuple[int, int, int]  # first canonical voxel the crop covers (may be negative)
    source_voxels: int  # canonical voxels per axis the crop covers
    whole: bool  # the whole organ lies inside the crop


def size_features(voxels: int, box: tuple[slice, ...], base_mm: float) -> np.ndarray:
    """Log volume in ml and log box extents in mm of an organ (scaled to about unit range)."""
    ml = voxels * base_mm**3 / 1000.0
    sides = [(s.stop - s.start) * base_mm for s in box]
    return np.array([(math.log(ml + 1e-3) - 4.0) / 2.0, *((math.log(x) - 4.0) for x in sides)], dtype=np.float32)


def _area(block: np.ndarray, n: int) -> np.ndarray:
    """A cube of source voxels averaged down to ``n`` cubed (adaptive average pooling: exact area means when the
    sizes divide, overlapping near-equal windows otherwise)."""
    if block.shape[0] == n:
        return block.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))[None, None]
    return F.adaptive_avg_pool3d(t, n)[0, 0].numpy()


def organ_lesions(lesion: np.ndarray, organ: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The lesion components that touch the organ, kept inside its region: a neighbour's lesion in the dilated region
    (a pancreatic mass beside the duodenum) is not this organ's."""
    if not lesion.any():
        return lesion
    parts, _ = ndimage.label(lesion)
    ours = np.unique(parts[organ & lesion])
    return np.isin(parts, ours[ours > 0]) & region


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by ``radius`` voxels along each axis: a cube, which a separable maximum filter computes in a few
    milliseconds (a ball's binary dilation took ten times longer: a tenth of a training step)."""
    return ndimage.maximum_filter(mask, size=2 * radius + 1) if radius > 0 else mask


def organ_crop(
    ct: Volume,
    labels: np.ndarray,
    organ: int,
    name: str,
    pre: Preprocessing,
    boxes: OrganBoxes | None = None,
    lesion: np.ndarray | None = None,
    shift: Sequence[int] | np.ndarray = (0, 0, 0),
    study_id: str = "",
) -> OrganCrop:
    """The network's input for one organ (v2 label ``organ``, class name ``name``) of one study: check the spacing,
    crop ``crop_voxels`` cubed around the organ's box at its class's scale (``shift`` crop voxels off centre), pad with
    air / background, area-average, window, and measure the organ."""
    if pre.spacing_mm is not None and not np.allclose(ct.spacing, pre.spacing_mm, atol=1e-3):
        raise ValueError(f"{study_id}: spacing {tuple(ct.spacing)} mm, the checkpoint expects {pre.spacing_mm} mm")
    labels = np.asarray(labels)
    if ct.array.shape != labels.shape or (lesion is not None and np.shape(lesion) != labels.shape):
        raise ValueError(
            f"{study_id}: volume {ct.array.shape}, mask {labels.shape}"
            + (f" and lesion {np.shape(lesion)}" if lesion is not None else "")
            + " differ"
        )
    boxes = boxes or OrganBoxes.of(labels)
    if organ not in boxes.boxes:
        raise ValueError(f"{study_id}: organ {name} (label {organ}) is not in the label map")
    box = boxes.boxes[organ]
    base = pre.base_mm
    extent = max(s.stop - s.start for s in box) * base
    spacing = pre.crop_spacing(name, extent)
    n = pre.crop_voxels
    src = max(n, int(round(n * spacing / base)))
    factor = src / n
    centre = [(s.start + s.stop - 1) / 2.0 + d * factor for s, d in zip(box, shift)]
    i0, j0, k0 = (int(round(c - (src - 1) / 2.0)) for c in centre)
    start = (i0, j0, k0)
    size = (src,) * 3
    hu = crop_pad(np.asarray(ct.array), start, size, pre.air_hu)
    inside = crop_pad(labels, start, size, 0) == organ
    grown = dilate(inside, int(round(pre.dilation_mm / base)))
    les, block = None, None
    if lesion is not None:
        found = organ_lesions(crop_pad(np.asarray(lesion) > 0, start, size, False), inside, grown)
        les = _area(found, n)
        if found.any():
            block = SourceBlock(window(hu, pre.hu_window), inside, grown, found)
    whole = all(st <= s.start and s.stop <= st + src for st, s in zip(start, box))
    return OrganCrop(
        volume=window(_area(hu, n), pre.hu_window),
        mask=_area(inside, n),
        region=_area(grown, n),
        lesion=les,
        source=block,
        size=size_features(int(boxes.counts[organ]), box, base),
        spacing_mm=spacing,
        start=start,
        source_voxels=src,
        whole=bool(whole),
    )
