"""DICOM readers say what is wrong (issue 29, item 5): a stray localizer slice inside an axial series is
dropped and recorded (the study stays), a repeated SOPInstanceUID keeps one file and is recorded, and a
cut-off file is named truncated_file wherever it was cut."""

from __future__ import annotations

import shutil

import pydicom
import pytest
from pydicom.uid import generate_uid
from test_dicom_synthetic import _affine, _header, _phantom

from pipeline.ids import pseudonym
from pipeline.ingest import IngestConfig, ingest_archive
from pipeline.synthetic.dicom_writer import write_ct_series
from pipeline.synthetic.series import coronal_reformat, scout

SHAPE = (24, 20, 20)


def _ingest(root):
    res = ingest_archive(IngestConfig.demo(root, workers=1))
    return res.ct_studies, res.rejected_studies


def _into_series(paths, series_of, folder):
    """Move files into ``folder``, filed under the series (and study) of ``series_of``, each its own SOP UID."""
    folder.mkdir(parents=True)
    ref = pydicom.dcmread(series_of, stop_before_pixels=True)
    for n, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID, ds.StudyInstanceUID = ref.SeriesInstanceUID, ref.StudyInstanceUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / f"stray{n}.dcm")


def test_a_localizer_slice_filed_under_the_axial_series_is_dropped(tmp_path):
    hu, aff = _phantom(SHAPE), _affine()
    src = tmp_path / "source" / "dicom"
    hdr = _header()
    axial = write_ct_series(hu, aff, src / "axial", hdr)
    loc = write_ct_series(*scout(hu, aff), tmp_path / "loc", _header(study_uid=hdr.study_instance_uid, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")))
    _into_series(loc, axial[0], src / "axial" / "extra")
    ct, rej = _ingest(tmp_path)
    assert rej.empty, rej.to_dict("records")  # was: the whole study rejected as mixed_orientation
    (row,) = ct.to_dict("records")
    assert row["n_slices"] == SHAPE[2]
    assert any("dropped 1 stray slice(s)" in c and "localizer" in c and "other 20" in c for c in row["corrections"])


def test_many_differing_slices_are_a_mixed_series_not_strays(tmp_path):
    hu, aff = _phantom(SHAPE), _affine()
    src = tmp_path / "source" / "dicom"
    hdr = _header()
    axial = write_ct_series(hu, aff, src / "axial", hdr)
    cor = write_ct_series(*coronal_reformat(hu, aff), tmp_path / "cor", _header(study_uid=hdr.study_instance_uid))
    _into_series(cor[:5], axial[0], src / "axial" / "extra")  # 5 of 25 differ: more than the 10% taken as strays
    ct, rej = _ingest(tmp_path)
    assert ct.empty and rej["reason"].tolist() == ["mixed_orientation"]


def test_a_repeated_sop_instance_uid_keeps_one_file_and_is_recorded(tmp_path):
    hu, aff = _phantom(SHAPE), _affine()
    src = tmp_path / "source" / "dicom"
    paths = write_ct_series(hu, aff, src / "s", _header())
    shutil.copy(paths[3], src / "s" / "copy_of_3.dcm")  # the same instance sent twice
    # another file carrying the last slice's SOPInstanceUID, one slice further on
    ds = pydicom.dcmread(paths[-1])
    ds.ImagePositionPatient = [float(v) + float(d) for v, d in zip(ds.ImagePositionPatient, (0, 0, aff[2, 2]))]
    ds.save_as(src / "s" / "zz_same_uid_elsewhere.dcm")
    ct, rej = _ingest(tmp_path)
    assert rej.empty
    (row,) = ct.to_dict("records")
    assert row["n_slices"] == SHAPE[2]  # was 21: the file with a repeated UID became a slice of its own
    assert "2 file(s) repeat a SOPInstanceUID of the series: one file kept of each" in row["corrections"]


@pytest.mark.parametrize("cut", [300, 1200, 1300, 1400, 2000])
def test_a_cut_off_file_is_named_truncated(tmp_path, cut):
    src = tmp_path / "source" / "dicom"
    hdr = _header()
    paths = write_ct_series(_phantom((24, 20, 12)), _affine(), src / "s", hdr)
    paths[5].write_bytes(paths[5].read_bytes()[:cut])  # before, inside and just after the header; inside the pixels
    ct, rej = _ingest(tmp_path)
    assert ct.empty
    assert "truncated_file" in set(rej["reason"])  # was missing_geometry, no_pixel_data, no_ct_series, ...
    if cut >= 1200:  # the study's own identity was read: its one rejection says truncated
        (r,) = rej.to_dict("records")
        assert r["study_id"] == pseudonym("study", hdr.study_instance_uid) and r["reason"] == "truncated_file"
        assert "end early" in r["detail"]


def test_a_cut_off_compressed_real_slice_is_named_truncated(realdata, tmp_path):
    series = realdata / "totalsegmentator" / "example_ct_dicom"
    src = tmp_path / "source" / "dicom" / "s"
    shutil.copytree(series, src)
    victim = sorted(p for p in src.iterdir() if p.is_file())[10]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    ct, rej = _ingest(tmp_path)
    (r,) = rej.to_dict("records")
    assert r["reason"] == "truncated_file" and "compressed pixel data" in r["detail"]  # was internal/unexpected_error (AttributeError 'Rows')
