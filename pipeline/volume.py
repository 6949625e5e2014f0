"""The in-memory volume shared by every stage, and its NIfTI storage.

Convention (nibabel's): ``array[i, j, k]`` with ``affine @ (i, j, k, 1)`` giving RAS+ world
coordinates in millimetres. DICOM's LPS coordinates are converted on read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np

from pipeline.atomic import atomic_path


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along i, j, k: the lengths of the affine's first three columns (oblique grids too)."""
    si, sj, sk = (float(s) for s in np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0))
    return (si, sj, sk)


def read_image(path: str | os.PathLike) -> nib.Nifti1Image:
    """``nib.load`` (the header now, the array on first use), typed as the NIfTI image it is for the files read
    here (a NIfTI-2 image is a subclass)."""
    return cast(nib.Nifti1Image, nib.load(str(path)))


@dataclass(frozen=True)
class Volume:
    array: np.ndarray  # (i, j, k)
    affine: np.ndarray  # (4, 4) voxel index -> RAS mm
    meta: dict = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return spacing_of(self.affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        return cast("tuple[int, int, int]", tuple(int(s) for s in self.array.shape))  # 3-D by contract

    @property
    def orientation(self) -> str:
        return "".join(nib.aff2axcodes(self.affine))

    def world(self, ijk: np.ndarray) -> np.ndarray:
        """World (RAS mm) coordinates of voxel indices, shape (n, 3)."""
        ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]


def save_nifti(volume: Volume, path: str | os.PathLike, dtype: np.dtype | type | None = None) -> Path:
    """Write atomically as NIfTI (``.nii.gz``), optionally casting (e.g. int16 HU, uint8 labels)."""
    array = volume.array if dtype is None else volume.array.astype(dtype, copy=False)
    img = nib.Nifti1Image(array, volume.affine)
    img.set_qform(volume.affine, code=1)
    img.set_sform(volume.affine, code=1)
    with atomic_path(path, suffix=".nii.gz") as tmp:
        nib.save(img, tmp)
    return Path(path)


def load_nifti(path: str | os.PathLike, dtype: np.dtype | type | None = None) -> Volume:
    img = read_image(path)
    array = np.asanyarray(img.dataobj)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    return Volume(array=array, affine=np.asarray(img.affine, dtype=float), meta={"path": str(path)})
