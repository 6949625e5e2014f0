"""Round trip of the synthetic DICOM writer: read back with pydicom alone and rebuild HU and the RAS affine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pipeline.synthetic.dicom_writer import SeriesHeader, write_ct_series
from pipeline.synthetic.series import coronal_reformat, scout

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _header(**kw) -> SeriesHeader:
    base = dict(
        patient_name="DOE^JANE^Q",
        patient_id="MRN00412345",
        patient_birth_date="19560311",
        patient_sex="F",
        accession_number="ACC20230001",
        study_instance_uid=pydicom.uid.generate_uid(entropy_srcs=["study"]),
        series_instance_uid=pydicom.uid.generate_uid(entropy_srcs=["series"]),
        frame_of_reference_uid=pydicom.uid.generate_uid(entropy_srcs=["for"]),
        study_date="20230405",
    )
    base.update(kw)
    return SeriesHeader(**base)


def _read_back(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Independent reader: sort by position along the normal, stack, apply the rescale, build RAS."""
    dss = [pydicom.dcmread(p) for p in paths]
    iop = np.array(dss[0].ImageOrientationPatient, dtype=float)
    row_cos, col_cos = iop[:3], iop[3:]
    normal = np.cross(row_cos, col_cos)
    dss.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, dtype=float), normal)))
    hu = np.stack(
        [d.pixel_array.T.astype(np.float64) * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss],
        axis=-1,
    )
    dr, dc = (float(v) for v in dss[0].PixelSpacing)
    first = np.array(dss[0].ImagePositionPatient, dtype=float)
    if len(dss) > 1:
        slice_vec = (np.array(dss[-1].ImagePositionPatient, dtype=float) - first) / (len(dss) - 1)
    else:
        slice_vec = normal * float(dss[0].SliceThickness)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row_cos * dc, col_cos * dr, slice_vec, first
    ras = np.eye(4)
    ras[:3] = LPS_TO_RAS @ lps[:3]
    return hu, ras


def _phantom(shape=(24, 20, 7)) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(-1024, 1500, size=shape).astype(np.int16)


@pytest.mark.parametrize("intercept", [-1024.0, 0.0])
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_axial_round_trip(tmp_path, intercept, syntax):
    hu = _phantom()
    # DICOM-natural axial grid (i -> patient left, j -> posterior), k running inferior
    affine = np.array([[-0.75, 0, 0, 90.0], [0, -0.75, 0, 60.5], [0, 0, -2.5, 300.0], [0, 0, 0, 1]])
    paths = write_ct_series(hu, affine, tmp_path, _header(rescale_intercept=intercept), file_order_seed=7,
                            transfer_syntax=syntax)
    assert len(paths) == hu.shape[2] and len({p.name for p in paths}) == hu.shape[2]
    assert not any(p.suffix for p in paths)  # random names without extension
    back, ras = _read_back(sorted(tmp_path.iterdir()))
    # the reader sorts along the normal (superior first here), so compare in that order
    np.testing.assert_array_equal(back[:, :, ::-1], hu)
    flipped = affine.copy()
    flipped[:3, 3] = affine[:3, 3] + affine[:3, 2] * (hu.shape[2] - 1)
    flipped[:3, 2] = -affine[:3, 2]
    np.testing.assert_allclose(ras, flipped, atol=1e-9)
    ds = pydicom.dcmread(paths[0])
    assert ds.SOPClassUID == CTImageStorage and ds.Modality == "CT" and ds.InstanceNumber == 1
    assert ds.PatientName == "DOE^JANE^Q" and ds.AccessionNumber == "ACC20230001"
    assert float(ds.SliceThickness) == 2.5 and [float(v) for v in ds.PixelSpacing] == [0.75, 0.75]


def test_deterministic_bytes(tmp_path):
    hu, affine = _phantom((8, 8, 3)), np.diag([-0.8, -0.8, 3.0, 1.0])
    a = write_ct_series(hu, affine, tmp_path / "a", _header())
    b = write_ct_series(hu, affine, tmp_path / "b", _header())
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_coronal_and_localizer(tmp_path):
    hu = _phantom((16, 20, 12))
    affine = np.array([[-0.9, 0, 0, 10.0], [0, -0.9, 0, 20.0], [0, 0, 2.0, -100.0], [0, 0, 0, 1]])
    cor, cor_aff = coronal_reformat(hu, affine, slab_mm=3.6)
    paths = write_ct_series(cor, cor_aff, tmp_path / "cor", _header(image_type=("DERIVED", "SECONDARY", "CORONAL")))
    back, ras = _read_back(paths)
    np.testing.assert_allclose(ras, cor_aff, atol=1e-9)
    np.testing.assert_array_equal(back, cor)
    iop = np.array(pydicom.dcmread(paths[0]).ImageOrientationPatient, dtype=float)
    np.testing.assert_allclose(iop, [1, 0, 0, 0, 0, -1], atol=1e-12)  # standard coronal
    # voxel (0, 0, 0) of the reformat sits at the top of the volume, in the middle of the first slab
    top = affine @ np.array([0, 0, hu.shape[2] - 1, 1.0])
    np.testing.assert_allclose(cor_aff[:3, 3], top[:3] + affine[:3, 1] * 1.5)

    loc, loc_aff = scout(hu, affine)
    paths = write_ct_series(loc, loc_aff, tmp_path / "loc", _header(image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")))
    assert len(paths) == 1
    back, ras = _read_back(paths)
    np.testing.assert_array_equal(back, loc)
    assert "LOCALIZER" in pydicom.dcmread(paths[0]).ImageType
