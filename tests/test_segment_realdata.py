"""Real public masks land on real DICOM grids in world coordinates; organ statistics on a real CT."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy import ndimage
from pydicom.pixels import apply_modality_lut

from pipeline import vocab
from pipeline.ids import pseudonym
from pipeline.segment import SegmenterConfig, organ_stats, segment
from pipeline.volume import Volume, load_nifti

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_series(folder: Path) -> tuple[Volume, str]:
    """A small local reader: one axial series -> (RAS Volume of HU, StudyInstanceUID)."""
    slices = [pydicom.dcmread(f) for f in sorted(folder.iterdir()) if f.is_file()]
    iop = np.array(slices[0].ImageOrientationPatient, float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    slices.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, float))))
    first, last = (np.array(d.ImagePositionPatient, float) for d in (slices[0], slices[-1]))
    dr, dc = (float(v) for v in slices[0].PixelSpacing)  # row spacing, column spacing
    affine = np.eye(4)
    affine[:3, 0] = row * dc  # i runs along a row (columns of the pixel array)
    affine[:3, 1] = col * dr  # j runs down the rows
    affine[:3, 2] = (last - first) / max(1, len(slices) - 1) if len(slices) > 1 else normal
    affine[:3, 3] = first
    array = np.stack([apply_modality_lut(d.pixel_array, d).T for d in slices], axis=-1)
    uid = str(slices[0].get("StudyInstanceUID", "")) or f"anonymized-{folder.name}"  # blank upstream
    return Volume(array.astype(np.int16), LPS_TO_RAS @ affine), uid


def _manifest(tmp_path: Path, uid: str, path: Path, fmt: str) -> SegmenterConfig:
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"StudyInstanceUID": [uid], "mask_path": [str(path)], "format": [fmt]}).to_csv(manifest, index=False)
    return SegmenterConfig(manifest=str(manifest))


def test_totalsegmentator_nifti_lands_on_dicom_grid(realdata, tmp_path):
    ts = realdata / "totalsegmentator"
    ct, uid = read_series(ts / "example_ct_dicom")
    assert ct.shape == (512, 512, 20)
    seg_path = ts / "example_seg_dicom.nii.gz"
    config = _manifest(tmp_path, uid, seg_path, "nifti_multilabel")
    labels = segment(pseudonym("study", uid), ct, config)
    assert labels.shape == ct.shape and labels.array.dtype == np.uint8

    # independent: centroids straight from the NIfTI array and its own affine
    img = nib.load(str(seg_path))
    assert nib.aff2axcodes(img.affine) == ("L", "A", "S")
    src = np.asarray(img.dataobj).astype(np.int64)
    present = [int(v) for v in np.unique(src) if v]
    assert len(present) > 10
    got = labels.array
    voxel = max(ct.spacing)
    want = ndimage.center_of_mass(np.ones(src.shape), src, present)
    want = np.asarray(want) @ img.affine[:3, :3].T + img.affine[:3, 3]
    mine = ct.world(np.asarray(ndimage.center_of_mass(np.ones(got.shape), got, present)))
    distance = np.linalg.norm(mine - want, axis=1)
    names = vocab.class_map("total")
    assert distance.max() <= voxel, [(names[i], d) for i, d in zip(present, distance) if d > voxel]
    assert np.isin(np.unique(got), [0, *present]).all()


def _nrrd_volume(path: Path) -> Volume:
    data, header = nrrd.read(str(path))
    assert header["space"] == "left-posterior-superior"
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(header["space directions"], float).T  # row a = direction of axis a
    affine[:3, 3] = header["space origin"]
    return Volume(data, LPS_TO_RAS @ affine)


def test_dicom_seg_matches_nrrd(realdata, tmp_path):
    qi = realdata / "dcmqi_ct3slice_seg"
    ct, uid = read_series(qi / "ct-3slice")
    config = _manifest(tmp_path, uid, qi / "liver.dcm", "dicom_seg")
    labels = segment(pseudonym("study", uid), ct, config)
    liver = labels.array == vocab.organ("liver").index_v2
    assert set(np.unique(labels.array)) <= {0, vocab.organ("liver").index_v2}

    ref = _nrrd_volume(qi / "liver_seg.nrrd")
    # the NRRD sits on the CT grid up to a world-coordinate reorientation: compare voxel by voxel in world space
    ijk = np.argwhere(ref.array > 0)
    target = np.rint((np.linalg.inv(ct.affine) @ np.c_[ref.world(ijk), np.ones(len(ijk))].T)[:3].T).astype(int)
    expected = np.zeros(ct.shape, bool)
    expected[tuple(target.T)] = True
    dice = 2 * (liver & expected).sum() / (liver.sum() + expected.sum())
    assert liver.sum() > 1000 and dice >= 0.99


def test_dicom_seg_label_overrides(realdata, tmp_path):
    qi = realdata / "dcmqi_ct3slice_seg"
    ct, uid = read_series(qi / "ct-3slice")
    config = _manifest(tmp_path, uid, qi / "partial_overlaps.dcm", "dicom_seg")
    study = pseudonym("study", uid)
    assert not segment(study, ct, config).array.any()  # colour names match no organ: dropped
    config = SegmenterConfig(manifest=config.manifest, seg_labels=(("GREEN", "liver"), ("orange", "aorta")))
    found = set(np.unique(segment(study, ct, config).array)) - {0}
    assert found == {vocab.organ("liver").index_v2, vocab.organ("aorta").index_v2}


def test_organ_stats_on_real_segmentation(realdata):
    ts = realdata / "totalsegmentator"
    labels = load_nifti(ts / "example_seg.nii.gz")
    ct = load_nifti(ts / "example_ct_sm.nii.gz")
    df = organ_stats("stu-test", labels, ct)
    assert len(df) == 41 and df["organ"].is_unique
    assert {"liver", "spleen", "kidney_left", "kidney_right", "aorta", "vertebrae_L1"} <= set(df["organ"])

    arr = np.asarray(labels.array)
    n_slices = arr.shape[2]
    assert n_slices == 30
    for row in df.itertuples():
        mask = arr == row.index_v2
        touches = mask[:, :, 0].any() or mask[:, :, -1].any() or mask[0].any() or mask[-1].any() \
            or mask[:, 0].any() or mask[:, -1].any()
        assert row.cut_by_fov == touches, row.organ
        assert ("cut_by_fov" in row.quality_flags) == touches
        assert row.voxels == mask.sum()
        i0, j0, k0, i1, j1, k1 = row.bbox_vox
        idx = np.argwhere(mask)
        assert (i0, j0, k0) == tuple(idx.min(axis=0)) and (i1, j1, k1) == tuple(idx.max(axis=0) + 1)
        hu = np.asarray(ct.array)[mask].astype(float)
        assert row.hu_mean == pytest.approx(hu.mean(), abs=1e-6)
        assert row.hu_std == pytest.approx(hu.std(), abs=1e-4)
    liver = df.set_index("organ").loc["liver"]
    assert liver.cut_by_fov and 500 < liver.volume_ml < 3000 and 0 < liver.hu_mean < 150
    assert not df.set_index("organ").loc["gallbladder"].cut_by_fov
