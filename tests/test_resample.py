"""Resampling to the canonical grid: volumes, centroids, landmarks and label maps survive."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.resample import _interp_general  # the oblique/foreign-grid path, forced
from pipeline.resample import Grid, ResampleOptions, canonical_grid, resample_to_grid, resample_volume
from pipeline.segment.grid import resample_nearest
from pipeline.volume import Volume, load_nifti, save_nifti


def _sphere(shape, affine, centre, radius, inside=60, outside=-1000):
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(np.float32)
    world = ijk @ affine[:3, :3].T.astype(np.float32) + affine[:3, 3].astype(np.float32)
    return np.where(np.linalg.norm(world - np.asarray(centre, np.float32), axis=-1) <= radius, inside, outside).astype(np.int16)


def _measure(mask: np.ndarray, affine: np.ndarray) -> tuple[float, np.ndarray]:
    idx = np.argwhere(mask)
    return len(idx) * abs(np.linalg.det(affine[:3, :3])), idx.mean(0) @ affine[:3, :3].T + affine[:3, 3]


@pytest.fixture(scope="module")
def anisotropic():
    """0.7 x 0.7 x 3 mm, stored LPS (i -> left, j -> posterior), a 25 mm sphere off centre."""
    shape = (160, 150, 40)
    aff = np.diag([-0.7, -0.7, 3.0, 1.0])
    aff[:3, 3] = (60.0, 40.0, -70.0)
    centre, radius = (5.0, -8.0, -12.0), 25.0
    return Volume(_sphere(shape, aff, centre, radius), aff), centre, radius


def test_sphere_keeps_volume_and_centroid(anisotropic):
    vol, centre, radius = anisotropic
    out = resample_volume(vol, ResampleOptions(spacing=(1.5, 1.5, 1.5)))
    assert out.orientation == "RAS" and out.array.dtype == np.int16
    np.testing.assert_allclose(out.spacing, (1.5, 1.5, 1.5))
    v_src, c_src = _measure(vol.array > -470, vol.affine)
    v_out, c_out = _measure(out.array > -470, out.affine)
    assert abs(v_out - v_src) / v_src < 0.02
    assert abs(v_out - 4 / 3 * np.pi * radius**3) / v_out < 0.02
    assert np.linalg.norm(c_out - c_src) < 1.5 and np.linalg.norm(c_out - np.asarray(centre)) < 1.5


def test_landmark_keeps_world_coordinates(anisotropic):
    vol, _, _ = anisotropic
    arr = np.full(vol.shape, -1000, np.int16)
    arr[40:43, 60:63, 10:12] = 2000  # a small bright marker
    src = Volume(arr, vol.affine)
    out = resample_volume(src, ResampleOptions(spacing=(1.5, 1.5, 1.5)))
    _, c_src = _measure(arr > 0, vol.affine)
    w = np.clip(out.array.astype(float) + 1000, 0, None)
    idx = np.argwhere(w > 0)
    c_out = (idx * w[tuple(idx.T)][:, None]).sum(0) / w[tuple(idx.T)].sum() @ out.affine[:3, :3].T + out.affine[:3, 3]
    assert np.linalg.norm(c_out - c_src) < 0.75  # half a target voxel


def test_clip_window_and_grid_reproducible(tmp_path, anisotropic):
    vol, _, _ = anisotropic
    arr = vol.array.copy()
    arr[0, 0, 0] = 5000
    arr[1, 1, 1] = -3024
    out = resample_volume(Volume(arr, vol.affine), ResampleOptions(spacing=(3.0, 3.0, 3.0), hu_window=(-1024, 3071)))
    assert out.array.min() >= -1024 and out.array.max() <= 3071
    path = save_nifti(out, tmp_path / "v.nii.gz", dtype=np.int16)
    grid = Grid.from_nifti(path)
    assert grid == canonical_grid(vol.shape, vol.affine, 3.0) == Grid.from_dict(grid.to_dict())
    assert load_nifti(path).array.dtype == np.int16


def test_fast_path_matches_world_coordinate_path(anisotropic):
    vol, _, _ = anisotropic
    grid = canonical_grid(vol.shape, vol.affine, 1.5)
    fast = resample_to_grid(vol.array, vol.affine, grid).numpy()
    general = _interp_general(vol.array, vol.affine, grid, fill=-1000).numpy()
    inner = (slice(2, -2),) * 3
    np.testing.assert_allclose(fast[inner], general[inner], atol=0.5)


def _labels_on(labels: np.ndarray, affine: np.ndarray, grid: Grid) -> np.ndarray:
    return resample_nearest(Volume(labels, affine), grid.shape, grid.matrix).array


def test_labels_follow_the_volume_through_world_coordinates(anisotropic):
    vol, centre, radius = anisotropic
    labels = (vol.array > 0).astype(np.uint8) * 5
    grid = canonical_grid(vol.shape, vol.affine, 1.5)
    on_grid = _labels_on(labels, vol.affine, grid)
    assert on_grid.dtype == np.uint8 and set(np.unique(on_grid)) == {0, 5}
    v_out, c_out = _measure(on_grid == 5, grid.matrix)
    assert abs(v_out - 4 / 3 * np.pi * radius**3) / v_out < 0.03
    # a label map on a different (rotated, coarser) grid comes back through world coordinates
    theta = np.radians(30)
    rot = np.eye(4)
    rot[:3, :3] = [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    other = rot @ np.diag([2.0, 2.0, 2.0, 1.0])
    other[:3, 3] = np.asarray(centre) - other[:3, :3] @ np.array([20.0, 20.0, 20.0])
    sph = (_sphere((41, 41, 41), other, centre, radius, inside=1, outside=0)).astype(np.uint8)
    back = _labels_on(sph, other, grid)
    v_b, c_b = _measure(back == 1, grid.matrix)
    assert abs(v_b - v_out) / v_out < 0.05 and np.linalg.norm(c_b - c_out) < 1.5
