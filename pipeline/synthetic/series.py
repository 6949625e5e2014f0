"""Companion series a scanner exports beside the diagnostic axial one: a coronal reformat and a scout.

Both take an axis-aligned volume (i along x, j along y, k along z, any signs) and return
``(hu, affine)`` ready for `dicom_writer.write_ct_series`; the ingest must learn to skip them.
"""

from __future__ import annotations

import numpy as np

from pipeline.volume import spacing_of


def _axis_signs(affine: np.ndarray) -> np.ndarray:
    """Sign of each voxel axis along its own world axis; rejects oblique grids."""
    lin = affine[:3, :3]
    off = lin - np.diag(np.diag(lin))
    if np.abs(off).max() > 1e-6:
        raise ValueError("companion series are only built from axis-aligned volumes")
    return np.sign(np.diag(lin))


def coronal_reformat(hu: np.ndarray, affine: np.ndarray, slab_mm: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Average slabs of ``slab_mm`` along y into coronal slices: rows run head to foot, as viewers show them.

    Returned array is ``(x, z, y-slab)``; its affine maps that to RAS like any other volume.
    """
    signs = _axis_signs(affine)
    spacing = spacing_of(affine)
    step = max(1, int(round(slab_mm / spacing[1])))
    n_slabs = hu.shape[1] // step
    trimmed = hu[:, : n_slabs * step, :].astype(np.float32)
    slabs = trimmed.reshape(hu.shape[0], n_slabs, step, hu.shape[2]).mean(axis=2)  # (x, slab, z)
    out = np.transpose(slabs, (0, 2, 1))  # (x, z, slab)
    new = np.eye(4)
    new[:3, 0] = affine[:3, 0]
    new[:3, 1] = affine[:3, 2]
    new[:3, 2] = affine[:3, 1] * step
    # slab centre: the mean of the voxel centres it averages
    new[:3, 3] = affine[:3, 3] + affine[:3, 1] * (step - 1) / 2.0
    if signs[2] > 0:  # make rows run inferior (DICOM coronal convention: column cosine -z)
        out = out[:, ::-1, :]
        new[:3, 3] = new[:3, 3] + new[:3, 1] * (out.shape[1] - 1)
        new[:3, 1] = -new[:3, 1]
    return np.rint(out).astype(np.int16), new


def scout(hu: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A one-slice AP localizer: the attenuation summed along y, scaled to a CT-like range."""
    signs = _axis_signs(affine)
    spacing = np.asarray(spacing_of(affine))  # float64: the scout's float32 sums are scaled in float64
    mu = np.clip(hu.astype(np.float32) + 1000.0, 0, None) / 1000.0  # relative attenuation
    line = mu.sum(axis=1) * spacing[1]  # (x, z) path length in water-equivalent mm
    image = np.clip(line * 6.0 - 1000.0, -1000, 3000)
    new = np.eye(4)
    new[:3, 0] = affine[:3, 0]
    new[:3, 1] = affine[:3, 2]
    new[:3, 2] = np.array([0.0, -1.0, 0.0])  # unit normal; a single slice has no spacing along it
    new[:3, 3] = affine[:3, 3] + affine[:3, 1] * (hu.shape[1] - 1) / 2.0
    if signs[2] > 0:
        image = image[:, ::-1]
        new[:3, 3] = new[:3, 3] + new[:3, 1] * (image.shape[1] - 1)
        new[:3, 1] = -new[:3, 1]
    return np.rint(image).astype(np.int16)[:, :, None], new
