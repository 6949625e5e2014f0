"""DICOM ingest on real public files (../shared/realdata; skipped where absent)."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest

from pipeline.dicom import IngestError, load_dicom_series, read_header
from pipeline.dicom.load import read_slice
from pipeline.ingest import IngestConfig, ingest_archive


def test_jpeg2000_series_decodes_to_hu(realdata):
    vol = load_dicom_series(realdata / "totalsegmentator" / "example_ct_dicom")
    assert vol.shape == (512, 512, 20)
    np.testing.assert_allclose(vol.spacing, (0.9765625, 0.9765625, 2.0), atol=1e-4)
    assert vol.array.min() == pytest.approx(-1024, abs=5)
    assert vol.array.max() == pytest.approx(1839, abs=5)
    assert vol.orientation[:2] == "LP"  # DICOM LPS rows/columns, converted to a RAS affine
    # voxel (0, 0, k) sits at the first slice's ImagePositionPatient (LPS -> RAS flips x, y)
    first = vol.affine[:3, 3]
    assert first[0] == pytest.approx(249.51, abs=0.01) and first[1] == pytest.approx(437.51, abs=0.01)


def test_gantry_tilt_head_ct_is_rejected_with_reason(realdata):
    with pytest.raises(IngestError) as exc:
        load_dicom_series(realdata / "dcm_qa_ct_GE_head_tilt" / "In_GE")
    err = exc.value
    assert err.stage == "geometry"
    assert err.reason == "uneven_spacing"
    assert "tilt 18.5" in err.detail and "1.08 to 7.00 mm" in err.detail


def test_single_slice_is_rejected(realdata, tmp_path):
    with pytest.raises(IngestError, match="too_few_slices"):
        load_dicom_series(realdata / "pydicom" / "CT_small.dcm")
    src = tmp_path / "source" / "dicom" / "x"
    src.mkdir(parents=True)
    shutil.copy(realdata / "pydicom" / "CT_small.dcm", src / "1.dcm")
    res = ingest_archive(IngestConfig.demo(tmp_path, workers=1))
    assert res.ct_studies.empty
    (row,) = res.rejected_studies.to_dict("records")
    assert row["reason"] == "too_few_slices" and "1 < 10" in row["detail"]


def test_three_slice_ge_series_sorted_along_normal(realdata):
    folder = realdata / "dcmqi_ct3slice_seg" / "ct-3slice"
    vol = load_dicom_series(folder)
    assert vol.shape == (512, 512, 3)
    # files 01..03 go down in z; the volume runs along +k = +z (superior), so slice 0 is file 03
    assert vol.affine[2, 2] > 0
    z = [read_header(folder / f"{n:02d}.dcm").position[2] for n in (1, 2, 3)]
    assert vol.affine[2, 3] == pytest.approx(min(z))
    ordered = [folder / "03.dcm", folder / "02.dcm", folder / "01.dcm"]
    for k, path in enumerate(ordered):
        ds = pydicom.dcmread(path)
        expected = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        np.testing.assert_array_equal(vol.array[:, :, k], expected.T)
    # the fast native read equals pydicom's pixel handler
    h = read_header(folder / "01.dcm")
    np.testing.assert_array_equal(read_slice(h), pydicom.dcmread(h.path).pixel_array)
