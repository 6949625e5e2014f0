"""Resampling to the canonical grid: RAS axes, a target spacing, HU clipped to a window, int16.

The canonical grid of a volume is defined by its world bounding box alone: the box spanned by the
source voxels' outer edges, tiled from its RAS-minimum corner by cells of the target spacing
(``shape = floor(extent / spacing)``, first voxel centre half a cell inside). A `Grid` (shape +
affine) describes it completely, so any stage can rebuild it from the stored NIfTI
(`Grid.from_nifti`) and put its own arrays on it (label maps: `pipeline.segment.grid.resample_nearest`,
the one label resampler).

Interpolation is torch's trilinear: ``F.interpolate`` when the source is axis-aligned and the target grid
tiles its edges (the common case, exact and fast), otherwise ``F.grid_sample`` through world coordinates
in slabs (oblique or gantry-tilted stacks, foreign grids).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.volume import Volume, read_image, spacing_of

log = logging.getLogger(__name__)

_SLAB_POINTS = 1 << 21  # target points per grid_sample call (bounds the coordinate buffer)

# The canonical grid's isotropic spacing, one per preset; ingest, training, evaluation and the test data refer
# to these. The demo's coarser grid keeps `make run` to minutes on two CPU cores; 1.5 mm is CT-GLIP's.
DEMO_SPACING_MM = 3.0
PAPER_SPACING_MM = 1.5


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` and the (4, 4) voxel -> RAS mm ``affine`` (stored as nested tuples)."""

    shape: tuple[int, int, int]
    affine: tuple[tuple[float, ...], ...]

    @staticmethod
    def make(shape, affine) -> Grid:
        # rounded to 0.1 um so a grid read back from NIfTI (float32 affine) equals the one written
        a = np.round(np.asarray(affine, dtype=float), 4) + 0.0
        ni, nj, nk = (int(s) for s in shape)
        return Grid((ni, nj, nk), tuple(tuple(float(v) for v in row) for row in a))

    @staticmethod
    def of(volume: Volume) -> Grid:
        return Grid.make(volume.shape, volume.affine)

    @staticmethod
    def from_nifti(path: str | os.PathLike) -> Grid:
        img = read_image(path)
        return Grid.make(img.shape[:3], img.affine)

    @staticmethod
    def from_dict(d: dict) -> Grid:
        return Grid.make(d["shape"], d["affine"])

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "affine": [list(r) for r in self.affine]}

    @property
    def matrix(self) -> np.ndarray:
        return np.array(self.affine, dtype=float)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return spacing_of(self.matrix)


@dataclass(frozen=True)
class ResampleOptions:
    spacing: tuple[float, float, float] = (PAPER_SPACING_MM,) * 3  # mm
    hu_window: tuple[int, int] = (-1024, 3071)  # clip before the int16 cast

    @staticmethod
    def paper() -> ResampleOptions:
        return ResampleOptions()

    @staticmethod
    def demo() -> ResampleOptions:
        return ResampleOptions(spacing=(DEMO_SPACING_MM,) * 3)


def canonical_grid(shape, affine: np.ndarray, spacing: tuple[float, float, float] | float) -> Grid:
    """The RAS grid of ``spacing`` that tiles the world bounding box of a ``shape`` volume with ``affine``."""
    sp = np.broadcast_to(np.asarray(spacing, dtype=float), (3,))
    shape = np.asarray(shape[:3], dtype=float)
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in shape], indexing="ij")).reshape(3, -1).T
    world = corners @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
    lo, hi = world.min(0), world.max(0)
    n_out = np.maximum(1, np.floor((hi - lo) / sp + 1e-6)).astype(int)
    out = np.eye(4)
    out[:3, :3] = np.diag(sp)
    out[:3, 3] = lo + sp / 2.0
    return Grid.make(n_out, out)


def _to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(view of ``array`` with axes permuted/flipped to RAS, its affine, whether that affine is diagonal)."""
    ornt = nib.io_orientation(affine)
    view = nib.orientations.apply_orientation(array, ornt)
    new = np.asarray(affine) @ nib.orientations.inv_ornt_aff(ornt, array.shape)
    lin = new[:3, :3]
    diag = np.abs(lin - np.diag(np.diag(lin))).max() < 1e-4 * np.abs(np.diag(lin)).min() and bool(
        np.all(np.diag(lin) > 0)
    )
    return view, new, diag


def _as_tensor(view: np.ndarray, dtype=np.float32) -> tuple[torch.Tensor, tuple[int, ...]]:
    """A contiguous float tensor of ``view`` in its memory order (cheapest copy) and that axis order."""
    perm = tuple(int(a) for a in np.argsort([-abs(s) for s in view.strides], kind="stable"))
    data = np.ascontiguousarray(view.transpose(perm), dtype=dtype)
    return torch.from_numpy(data), perm


def _fast_scales(shape, ras_affine: np.ndarray, grid: Grid) -> tuple[float, ...] | None:
    """Per-axis scale factors if ``F.interpolate`` maps exactly onto ``grid``, else None."""
    g = grid.matrix
    glin = g[:3, :3]
    if np.abs(glin - np.diag(np.diag(glin))).max() > 1e-9 or np.any(np.diag(glin) <= 0):
        return None
    ss, ts = np.diag(ras_affine[:3, :3]), np.diag(glin)
    scales = []
    for ax in range(3):
        expected_origin = ras_affine[ax, 3] - ss[ax] / 2 + ts[ax] / 2
        if abs(g[ax, 3] - expected_origin) > 1e-3 * ts[ax]:
            return None
        s = float(ss[ax] / ts[ax])
        if math.floor(float(shape[ax]) * s) < grid.shape[ax]:
            return None
        scales.append(s)
    return tuple(scales)


def _interp_fast(view: np.ndarray, scales, grid: Grid) -> torch.Tensor:
    t, perm = _as_tensor(view)
    sc = tuple(scales[p] for p in perm)
    out = F.interpolate(
        t[None, None], scale_factor=sc, mode="trilinear", recompute_scale_factor=False, align_corners=False
    )[0, 0]
    out = out.permute(*np.argsort(perm).tolist())
    return out[: grid.shape[0], : grid.shape[1], : grid.shape[2]]


def _interp_general(array: np.ndarray, affine: np.ndarray, grid: Grid, fill: float) -> torch.Tensor:
    t, perm = _as_tensor(array)
    if fill:
        t = t - fill
    src_shape = [array.shape[p] for p in perm]
    # target voxel -> source voxel (in the tensor's permuted axis order)
    m = np.linalg.inv(np.asarray(affine)) @ grid.matrix
    m = m[list(perm) + [3]]
    denom = torch.tensor([max(n - 1, 1) for n in src_shape], dtype=torch.float32)
    out = torch.empty(grid.shape, dtype=torch.float32)
    nx, ny, nz = grid.shape
    step = max(1, _SLAB_POINTS // max(ny * nz, 1))
    lin = torch.from_numpy(m[:3, :3].astype(np.float32))
    off = torch.from_numpy(m[:3, 3].astype(np.float32))
    jj, kk = torch.meshgrid(torch.arange(ny, dtype=torch.float32), torch.arange(nz, dtype=torch.float32), indexing="ij")
    for x0 in range(0, nx, step):
        ii = torch.arange(x0, min(nx, x0 + step), dtype=torch.float32)
        pts = torch.stack(torch.broadcast_tensors(ii[:, None, None], jj[None], kk[None]), dim=-1)  # (sx, ny, nz, 3)
        src = pts @ lin.T + off  # source index per tensor axis (d, h, w)
        norm = src / denom * 2 - 1
        g = norm.flip(-1)[None]  # grid_sample wants (w, h, d) = (x, y, z)
        out[x0 : x0 + step] = F.grid_sample(
            t[None, None], g, mode="bilinear", padding_mode="zeros", align_corners=True
        )[0, 0]
    if fill:
        out += fill
    return out


def resample_to_grid(array: np.ndarray, affine: np.ndarray, grid: Grid, fill: float = 0.0) -> torch.Tensor:
    """``array`` (voxel -> RAS ``affine``) sampled trilinearly at ``grid``'s voxel centres, as a float32 tensor.

    Points outside the source get ``fill`` (the fast path replicates the edge voxel instead, which only
    touches the outer half cell).
    """
    view, ras, diag = _to_ras(np.asarray(array), affine)
    scales = _fast_scales(view.shape, ras, grid) if diag else None
    if scales is not None:
        return _interp_fast(view, scales, grid)
    return _interp_general(np.asarray(array), affine, grid, fill)


def resample_volume(volume: Volume, options: ResampleOptions = ResampleOptions(), grid: Grid | None = None) -> Volume:
    """The stage entry: HU ``volume`` -> canonical grid (RAS, ``options.spacing``), clipped, int16."""
    grid = grid or canonical_grid(volume.shape, volume.affine, options.spacing)
    lo, hi = options.hu_window
    out = resample_to_grid(volume.array, volume.affine, grid, fill=float(lo))
    hu = out.clamp_(lo, hi).round_().to(torch.int16).numpy()
    meta = dict(volume.meta, grid=grid.to_dict(), hu_window=[int(lo), int(hi)])
    return Volume(array=hu, affine=grid.matrix, meta=meta)
