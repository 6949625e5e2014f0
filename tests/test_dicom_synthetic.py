"""DICOM ingest on series written by the synthetic DICOM writer (real DICOM files, known truth)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from pydicom.uid import generate_uid

from pipeline.dicom import GeometryOptions, IngestError, load_dicom_series
from pipeline.hu import check_hu
from pipeline.ids import pseudonym
from pipeline.ingest import IngestConfig, body_region, ingest_archive, shard_of
from pipeline.synthetic.dicom_writer import SeriesHeader, write_ct_series
from pipeline.synthetic.series import coronal_reformat, scout
from pipeline.volume import Volume, save_nifti


def _header(patient: str = "DOE^JANE", mrn: str = "MRN0001234", acc: str = "ACC778899", study_uid: str | None = None, **kw) -> SeriesHeader:
    return SeriesHeader(
        patient_name=patient,
        patient_id=mrn,
        patient_birth_date="19580317",
        patient_sex="F",
        accession_number=acc,
        study_instance_uid=study_uid or generate_uid(),
        series_instance_uid=generate_uid(),
        frame_of_reference_uid=generate_uid(),
        study_date="20230405",
        **kw,
    )


def _phantom(shape=(48, 40, 24), seed: int = 0) -> np.ndarray:
    """Air around a water-ish body with a bone block and noise: int16 HU."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    hu = np.full(shape, -1000, np.int16)
    body = (i**2 / 0.8 + j**2 / 0.6) < 1
    hu[body] = 40
    hu[body & (np.abs(i) < 0.15) & (j > 0.3)] = 900
    hu += rng.integers(-20, 20, size=shape).astype(np.int16)
    hu[:, :, 0] += 7  # make slices distinguishable
    return hu


def _affine(spacing=(0.8, 0.9, 2.5), origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    a = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS-like array, as scanners store it
    a[:3, 3] = origin
    return a


def _roundtrip_equal(vol: Volume, hu: np.ndarray, affine: np.ndarray) -> None:
    """Same voxels at the same world coordinates (the reader may order k differently)."""
    ijk = np.array([[0, 0, 0], [hu.shape[0] - 1, 3, 5], [7, hu.shape[1] - 1, hu.shape[2] - 1], [5, 6, 1]])
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    back = np.rint((world - vol.affine[:3, 3]) @ np.linalg.inv(vol.affine[:3, :3]).T).astype(int)
    for a, b in zip(ijk, back):
        assert vol.array[tuple(b)] == hu[tuple(a)]
    assert sorted(vol.shape) == sorted(hu.shape)
    assert np.array_equal(np.sort(vol.array.ravel()), np.sort(hu.ravel()))


def test_roundtrip_equals_source_with_shuffled_files(tmp_path):
    hu, aff = _phantom(), _affine()
    write_ct_series(hu, aff, tmp_path / "s", _header(), file_order_seed=3)
    vol = load_dicom_series(tmp_path / "s")
    assert vol.shape == hu.shape
    np.testing.assert_allclose(vol.affine, aff, atol=1e-4)
    np.testing.assert_array_equal(vol.array, hu)


def test_roundtrip_oblique_orientation(tmp_path):
    hu = _phantom(seed=1)
    theta = np.radians(20)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.7, -0.7, -3.0])  # rotated in-plane, j flipped, k running down
    aff[:3, 3] = (-5.0, 12.0, 80.0)
    write_ct_series(hu, aff, tmp_path / "s", _header(), file_order_seed=11)
    vol = load_dicom_series(tmp_path / "s")
    _roundtrip_equal(vol, hu, aff)


def test_rescale_faults_are_caught(tmp_path):
    hu = _phantom(seed=2)
    assert check_hu(hu).ok
    # missing rescale: the stored values (HU + 1024) arrive with intercept 0 -> air near 0..24
    write_ct_series(hu + 1024, _affine(), tmp_path / "raw", _header(rescale_intercept=0.0))
    check = check_hu(load_dicom_series(tmp_path / "raw").array)
    assert not check.ok and check.reason == "missing_rescale"
    # doubly applied: values already in HU get the -1024 intercept again -> air near -2048
    write_ct_series(hu - 1024, _affine(), tmp_path / "dbl", _header(rescale_intercept=0.0))
    check = check_hu(load_dicom_series(tmp_path / "dbl").array)
    assert not check.ok and check.reason == "double_rescale"


def test_missing_slice_is_rejected(tmp_path):
    paths = write_ct_series(_phantom(), _affine(), tmp_path / "s", _header())
    paths[10].unlink()
    with pytest.raises(IngestError) as exc:
        load_dicom_series(tmp_path / "s")
    assert exc.value.reason == "missing_slices" and "1 slice(s) missing" in exc.value.detail


def _archive(tmp_path):
    """Three good studies (one with a scout and a coronal reformat), a truncated one, an MR one, an empty folder."""
    src = tmp_path / "source" / "dicom"
    secrets = []
    good = []
    for n in range(3):
        hdr = _header(patient=f"SMITH^ANNA{n}", mrn=f"MRN55500{n}", acc=f"ACC4242{n}")
        secrets += [hdr.patient_name, hdr.patient_id, hdr.accession_number, hdr.patient_birth_date, hdr.study_instance_uid]
        hu, aff = _phantom(seed=n), _affine()
        folder = src / f"{hdr.patient_name.replace('^', '_')}_{hdr.patient_id}"  # identifying folder names, as in real exports
        write_ct_series(hu, aff, folder / "axial", hdr, file_order_seed=n)
        good.append(hdr)
        if n == 0:
            h2 = _header(study_uid=hdr.study_instance_uid, mrn=hdr.patient_id, acc=hdr.accession_number, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), series_number=1)
            write_ct_series(*scout(hu, aff), folder / "scout", h2)
            h3 = _header(study_uid=hdr.study_instance_uid, mrn=hdr.patient_id, acc=hdr.accession_number, series_number=3, image_type=("DERIVED", "SECONDARY", "MPR"))
            write_ct_series(*coronal_reformat(hu, aff), folder / "coronal", h3)
    bad = _header(mrn="MRN999", acc="ACC999")
    paths = write_ct_series(_phantom(), _affine(), src / "trunc", bad)
    data = paths[5].read_bytes()
    paths[5].write_bytes(data[: len(data) - 1500])
    mr = _header(mrn="MRN888", acc="ACC888", modality="MR")
    write_ct_series(_phantom(), _affine(), src / "mr", mr)
    (src / "empty_folder").mkdir()
    return good, bad, mr, secrets


def test_archive_rejections_do_not_take_good_studies_down(tmp_path):
    good, bad, mr, secrets = _archive(tmp_path)
    res = ingest_archive(IngestConfig.demo(tmp_path, workers=1))
    ct, rej = res.ct_studies, res.rejected_studies
    assert sorted(ct.study_id) == sorted(pseudonym("study", h.study_instance_uid) for h in good)
    assert set(ct.report_id) == {pseudonym("report", h.accession_number) for h in good}
    assert set(ct.patient_id) == {pseudonym("patient", h.patient_id) for h in good}
    by_study = {r["study_id"]: r for r in rej.to_dict("records")}
    assert by_study[pseudonym("study", bad.study_instance_uid)]["reason"] == "truncated_file"
    assert by_study[pseudonym("study", mr.study_instance_uid)]["reason"] == "no_ct_series"
    assert "empty_folder" in set(rej.reason)
    # the study with a scout and a coronal reformat chose the axial series and said why it skipped the others
    row = ct[ct.study_id == pseudonym("study", good[0].study_instance_uid)].iloc[0]
    skipped = " ".join(row.skipped_series)
    assert "localizer/scout" in skipped
    assert len(row.skipped_series) == 2  # the scout and the (short) coronal reformat
    # canonical volumes: RAS, 3 mm, int16, the fingerprint beside it
    for r in ct.itertuples():
        assert r.volume_path == f"volumes/{r.study_id}.nii.gz"  # relative to the data root: the folder can move
        img = nib.load(tmp_path / r.volume_path)
        assert img.get_data_dtype() == np.int16
        assert "".join(nib.aff2axcodes(img.affine)) == "RAS"
        np.testing.assert_allclose(img.header.get_zooms(), (3.0, 3.0, 3.0))
        assert (r.shape_x, r.shape_y, r.shape_z) == img.shape
        assert json.loads((tmp_path / "volumes" / f"{r.study_id}.json").read_text())["fingerprint"] == r.fingerprint
    # privacy: no identifying value in any table cell or file name
    text = pd.concat([ct.astype(str), rej.astype(str)]).to_csv() + " ".join(p.name for p in (tmp_path / "volumes").iterdir())
    for s in secrets + ["SMITH", "MRN"]:
        assert s not in text
    # re-run: nothing changed -> nothing recomputed, same tables
    again = ingest_archive(IngestConfig.demo(tmp_path, workers=1))
    assert again.n_unchanged == len(good) + 2
    pd.testing.assert_frame_equal(again.ct_studies, ct)


def test_parallel_workers_and_shards(tmp_path):
    src = tmp_path / "source" / "dicom"
    hdrs = [_header(mrn=f"M{n}", acc=f"A{n}") for n in range(4)]
    for n, h in enumerate(hdrs):
        write_ct_series(_phantom(shape=(24, 20, 12), seed=n), _affine(), src / f"s{n}", h)
    ids = sorted(pseudonym("study", h.study_instance_uid) for h in hdrs)
    assert shard_of(ids[0], 2) == shard_of(ids[0], 2) and shard_of(ids[0], 2) in {"shard-00", "shard-01"}
    seen = []
    for shard in ("shard-00", "shard-01"):  # partitions run independently
        res = ingest_archive(IngestConfig.demo(tmp_path / "sharded", dicom_root=src, workers=1, n_shards=2), shard=shard)
        assert set(res.ct_studies.shard) <= {shard}
        seen += list(res.ct_studies.study_id)
    assert sorted(seen) == ids
    calls = []
    par = ingest_archive(IngestConfig.demo(tmp_path / "par", dicom_root=src, workers=2), progress=lambda d, t: calls.append((d, t)))
    assert list(par.ct_studies.study_id) == ids and calls[-1] == (4, 4)


def test_nifti_manifest_rows(tmp_path):
    hu, aff = _phantom(seed=4), _affine()
    save_nifti(Volume(hu, aff), tmp_path / "scans" / "a.nii.gz")
    save_nifti(Volume(hu + 1024, aff), tmp_path / "scans" / "b.nii.gz")  # raw values: must be rejected
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("scan_path,patient_key,study_key,report_key\nscans/a.nii.gz,P1,S1,R1\nscans/b.nii.gz,P2,S2,R2\n")
    res = ingest_archive(IngestConfig.demo(tmp_path, workers=1, nifti_manifest=manifest))
    (row,) = res.ct_studies.to_dict("records")
    assert row["study_id"] == pseudonym("study", "S1") and row["report_id"] == pseudonym("report", "R1")
    assert row["source_format"] == "nifti"
    (rej,) = res.rejected_studies.to_dict("records")
    assert rej["study_id"] == pseudonym("study", "S2") and rej["reason"] == "missing_rescale"


def test_gantry_tilt_with_even_spacing_is_corrected_or_rejected(tmp_path):
    hu = _phantom(seed=5)
    aff = _affine()
    aff[1, 2] = np.tan(np.radians(15)) * aff[2, 2]  # every slice shifted along y: a 15 deg sheared stack
    write_ct_series(hu, aff, tmp_path / "s", _header(), file_order_seed=1)
    vol = load_dicom_series(tmp_path / "s")
    np.testing.assert_allclose(vol.affine, aff, atol=1e-4)  # slices at their true positions
    np.testing.assert_array_equal(vol.array, hu)
    assert any("gantry tilt 15.0 deg" in c and "corrected" in c for c in vol.meta["corrections"])
    with pytest.raises(IngestError, match="gantry_tilt"):
        load_dicom_series(tmp_path / "s", GeometryOptions(tilt_policy="reject"))


def test_body_region():
    assert body_region("CHEST", 300.0) == "chest"
    assert body_region("ABDOMEN_PELVIS", 400.0) == "abdomen_pelvis"
    assert body_region("", 700.0) == "chest_abdomen_pelvis"
    assert body_region("", 200.0) == "unknown"
