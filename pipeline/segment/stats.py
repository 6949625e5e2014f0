"""Per-organ statistics of a label map: size, extent, position, HU and quality flags.

One pass over the labelled voxels builds, per axis, a (position x label) histogram with
``np.bincount``; voxel counts, bounding boxes and centroids all follow from those three marginals,
and HU sums from two weighted bincounts. Only the connected-component check looks at organs one by one, inside their
boxes.

Conventions: ``bbox_vox`` = (i0, j0, k0, i1, j1, k1), half-open like Python slices
(``labels[i0:i1, j0:j1, k0:k1]`` is the organ's box); ``bbox_mm`` = (x0, y0, z0, x1, y1, z1), the RAS
extent of the box's outer voxel faces; ``centroid_mm`` = RAS centre of mass of the voxel centres.
``cut_face_ratio`` = for an organ cut by the field of view, its area on the outermost slice at each face it
touches over its largest area on a slice parallel to that face, the largest over those faces (0 when not cut):
near 1 where the organ goes on at full width beyond the edge, small where it tapers out inside the scan.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from pipeline import vocab
from pipeline.segment.config import StatsConfig
from pipeline.volume import Volume

COLUMNS = (
    "study_id",
    "organ",
    "index_v2",
    "voxels",
    "volume_ml",
    "bbox_vox",
    "bbox_mm",
    "centroid_mm",
    "hu_mean",
    "hu_std",
    "cut_by_fov",
    "cut_face_ratio",
    "quality_flags",
)
_CHUNK = 1 << 22  # voxels per chunk: bounds the temporary index arrays to a few 10 MB
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def _marginals(lab: np.ndarray, n_labels: int, hu: np.ndarray | None):
    """Per-axis (position, label) histograms and per-label HU sums / squared sums, over labelled voxels only."""
    shape = lab.shape
    hists = [np.zeros(n * n_labels, np.int64) for n in shape]
    s1 = np.zeros(n_labels)
    s2 = np.zeros(n_labels)
    plane = shape[1] * shape[2]
    step = max(1, _CHUNK // max(1, plane))
    for i0 in range(0, shape[0], step):
        flat = lab[i0 : i0 + step].reshape(-1)
        nz = np.flatnonzero(flat)
        if nz.size == 0:
            continue
        v = flat[nz].astype(np.int64)
        i, rest = np.divmod(nz, plane)
        j, k = np.divmod(rest, shape[2])
        for h, pos in zip(hists, (i + i0, j, k)):
            h += np.bincount(pos * n_labels + v, minlength=h.size)
        if hu is not None:
            w = hu[i0 : i0 + step].reshape(-1)[nz].astype(np.float64)
            s1 += np.bincount(v, weights=w, minlength=n_labels)
            s2 += np.bincount(v, weights=w * w, minlength=n_labels)
    return [h.reshape(n, n_labels) for h, n in zip(hists, shape)], s1, s2


def _largest_fraction(lab: np.ndarray, index: int, box: tuple[slice, ...]) -> float:
    comp, n = ndimage.label(lab[box] == index, structure=_CONNECTIVITY)
    if n <= 1:
        return 1.0
    sizes = np.bincount(comp.ravel())[1:]
    return float(sizes.max() / sizes.sum())


def _cut_face_ratios(hists, present: list[int], lo, hi, low, high) -> np.ndarray:
    """Per present organ: the largest, over the faces it touches, of its area on its outermost slice at that
    face over its largest area on a slice parallel to that face (0 where it touches none)."""
    out = np.zeros(len(present))
    for axis, h in enumerate(hists):
        areas = h[:, present]  # (positions along this axis, organs): the organ's area on each slice
        peak = areas.max(axis=0)
        cols = np.arange(len(present))
        for touched, pos in ((low[:, axis], lo[:, axis]), (high[:, axis], hi[:, axis] - 1)):
            ratio = areas[pos, cols] / np.maximum(peak, 1)
            out = np.where(touched, np.maximum(out, ratio), out)
    return out


_DTYPES = {
    "index_v2": "int64",
    "voxels": "int64",
    "volume_ml": "float64",
    "hu_mean": "float64",
    "hu_std": "float64",
    "cut_by_fov": "bool",
    "cut_face_ratio": "float64",
}


def empty_stats() -> pd.DataFrame:
    """The ``organ_stats`` table with no rows (a study without any organ)."""
    return pd.DataFrame({c: pd.Series(dtype=_DTYPES.get(c, object)) for c in COLUMNS})


def organ_stats(study_id: str, labels: Volume, ct: Volume | None, config: StatsConfig = StatsConfig()) -> pd.DataFrame:
    """One row per organ present in ``labels`` (v2 indices); HU from ``ct`` on the same grid (NaN without)."""
    lab = np.asarray(labels.array)
    if lab.ndim != 3 or lab.dtype.kind not in "ui":
        raise ValueError(f"labels must be a 3-D integer array, got {lab.dtype} {lab.shape}")
    hu = None
    if ct is not None:
        if ct.shape != labels.shape or not np.allclose(ct.affine, labels.affine, atol=1e-3):
            raise ValueError(
                f"{study_id}: CT grid {ct.shape} differs from the label map's {labels.shape}; resample first"
            )
        hu = np.asarray(ct.array)
    names = vocab.class_map(vocab.V2_TASK)
    n_labels = max(names) + 1
    if lab.size and (lab.min() < 0 or lab.max() >= n_labels):
        lab = np.where((lab < 0) | (lab >= n_labels), 0, lab)
    (h0, h1, h2), s1, s2 = _marginals(lab, n_labels, hu)
    voxels = h0.sum(axis=0)
    present = [int(x) for x in np.flatnonzero(voxels) if x != 0]
    if not present:
        return empty_stats()

    def extent(h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nz = h[:, present] > 0
        first = nz.argmax(axis=0)
        last = h.shape[0] - nz[::-1].argmax(axis=0)  # exclusive end
        centre = (np.arange(h.shape[0]) @ h[:, present]) / voxels[present]
        return first, last, centre

    (i0, i1, ci), (j0, j1, cj), (k0, k1, ck) = extent(h0), extent(h1), extent(h2)
    lo = np.stack([i0, j0, k0], axis=1)
    hi = np.stack([i1, j1, k1], axis=1)
    centroid_mm = labels.world(np.stack([ci, cj, ck], axis=1))
    # world box from the 8 corners of the voxel-face box
    corners = np.stack(
        [
            np.stack([a, b, c], 1)
            for a in (i0 - 0.5, i1 - 0.5)
            for b in (j0 - 0.5, j1 - 0.5)
            for c in (k0 - 0.5, k1 - 0.5)
        ],
        axis=1,
    )  # (n, 8, 3)
    world = labels.world(corners.reshape(-1, 3)).reshape(len(present), 8, 3)
    bbox_mm = np.concatenate([world.min(axis=1), world.max(axis=1)], axis=1)
    voxel_ml = abs(float(np.linalg.det(labels.affine[:3, :3]))) / 1000.0
    shape = np.array(lab.shape)
    m = config.fov_margin
    low, high = lo <= m, hi >= shape - m
    cut = np.asarray(low.any(axis=1) | high.any(axis=1))
    face_ratio = _cut_face_ratios((h0, h1, h2), present, lo, hi, low, high)

    rows = []
    for n, index in enumerate(present):
        count = int(voxels[index])
        ml = count * voxel_ml
        flags = []
        if ml < config.min_volume_ml:
            flags.append("too_small")
        if config.check_fragments:
            box = tuple(slice(int(a), int(b)) for a, b in zip(lo[n], hi[n]))
            if _largest_fraction(lab, index, box) < config.min_largest_component:
                flags.append("fragmented")
        if cut[n]:
            flags.append("cut_by_fov")
        mean = s1[index] / count if hu is not None else np.nan
        var = max(s2[index] / count - mean * mean, 0.0) if hu is not None else np.nan
        rows.append(
            {
                "study_id": study_id,
                "organ": names[index],
                "index_v2": index,
                "voxels": count,
                "volume_ml": ml,
                "bbox_vox": [int(v) for v in (*lo[n], *hi[n])],
                "bbox_mm": [float(v) for v in bbox_mm[n]],
                "centroid_mm": [float(v) for v in centroid_mm[n]],
                "hu_mean": float(mean),
                "hu_std": float(np.sqrt(var)),
                "cut_by_fov": bool(cut[n]),
                "cut_face_ratio": float(face_ratio[n]),
                "quality_flags": flags,
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))
