"""Nearest-neighbour resampling of label maps through world (RAS mm) coordinates.

A label map from anywhere (a LAS NIfTI, a DICOM-SEG on its source frames, a mask at another
spacing) lands on a target grid by mapping each target voxel centre to the source voxel that
contains it: ``src_ijk = inv(A_src) @ A_tgt @ tgt_ijk``. Voxels outside the source become 0.
Axis flips and permutations with integer offsets (the common case) take an exact slicing path.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipeline.volume import Volume

_TOL = 1e-3  # voxels: how close to an integer a flip/permutation offset must be for the slicing path


def index_map(source_affine: np.ndarray, target_affine: np.ndarray) -> np.ndarray:
    """The 4x4 matrix taking target voxel indices to (fractional) source voxel indices."""
    return np.linalg.inv(np.asarray(source_affine, float)) @ np.asarray(target_affine, float)


def _signed_permutation(m: np.ndarray) -> tuple[list[int], list[int], np.ndarray] | None:
    """(source axis per target axis, sign per target axis, integer offset) if ``m`` is a grid-aligned map."""
    lin, off = m[:3, :3], m[:3, 3]
    rounded = np.round(lin)
    if not np.allclose(lin, rounded, atol=_TOL / 100) or not np.allclose(off, np.round(off), atol=_TOL):
        return None
    if sorted(np.abs(rounded).sum(axis=0).tolist()) != [1, 1, 1] or not np.all(np.abs(rounded).sum(axis=1) == 1):
        return None
    axes = [int(np.flatnonzero(rounded[:, c])[0]) for c in range(3)]
    signs = [int(rounded[axes[c], c]) for c in range(3)]
    return axes, signs, np.round(off).astype(int)


def _permute_crop(src: np.ndarray, shape: tuple[int, int, int], axes, signs, off) -> np.ndarray:
    out = np.zeros(shape, dtype=src.dtype)
    dst_sl, src_sl = [], []
    for c in range(3):
        n_src, n_tgt, s, o = src.shape[axes[c]], shape[c], signs[c], int(off[axes[c]])
        t = np.arange(n_tgt)
        idx = o + s * t  # source index along axes[c] for each target index
        ok = np.flatnonzero((idx >= 0) & (idx < n_src))
        if ok.size == 0:
            return out
        t0, t1 = int(ok[0]), int(ok[-1])
        dst_sl.append(slice(t0, t1 + 1))
        a, b = int(idx[t0]), int(idx[t1])
        src_sl.append(slice(a, b + 1) if s > 0 else slice(a, (b - 1) if b > 0 else None, -1))
    view = src.transpose(axes)
    out[tuple(dst_sl)] = view[tuple(src_sl)]
    return out


def resample_nearest(source: Volume, shape: tuple[int, int, int], affine: np.ndarray) -> Volume:
    """``source`` (labels) on the grid (``shape``, ``affine``), nearest neighbour in world coordinates."""
    ni, nj, nk = (int(s) for s in shape)
    shape = (ni, nj, nk)
    src = np.asarray(source.array)
    if src.ndim != 3:
        raise ValueError(f"expected a 3-D label map, got shape {src.shape}")
    m = index_map(source.affine, affine)
    aligned = _signed_permutation(m)
    if aligned is not None:
        out = _permute_crop(src, shape, *aligned)
    else:
        out = ndimage.affine_transform(
            src,
            m[:3, :3],
            offset=m[:3, 3],
            output_shape=shape,
            order=0,
            mode="grid-constant",
            cval=0,
            prefilter=False,
        )
    return Volume(array=out, affine=np.asarray(affine, float).copy(), meta=dict(source.meta))


def to_grid_of(source: Volume, like: Volume) -> Volume:
    """``source`` resampled onto ``like``'s grid (its shape and affine)."""
    return resample_nearest(source, like.shape, like.affine)
