"""Keys (issue 29): a study claimed twice, a scan under two studies, one report of two patients and one
StudyInstanceUID of two patients are refused with a rejected_studies row naming every claimant; nothing merges."""

from __future__ import annotations

import numpy as np
import pandas as pd
from test_dicom_synthetic import _affine, _header, _phantom

from pipeline.ids import pseudonym
from pipeline.ingest import IngestConfig, ingest_archive
from pipeline.synthetic.dicom_writer import write_ct_series
from pipeline.volume import Volume, save_nifti


def _scans(tmp_path, rows: list[tuple[str, str, str, str]]):
    """NIfTI scans a.nii.gz, b.nii.gz, c.nii.gz and a scans.csv of ``rows`` (scan_path, patient, study, report)."""
    for n, name in enumerate("abc"):
        save_nifti(Volume(_phantom(shape=(24, 20, 12), seed=n), _affine()), tmp_path / "scans" / f"{name}.nii.gz")
    manifest = tmp_path / "scans.csv"
    pd.DataFrame(rows, columns=["scan_path", "patient_key", "study_key", "report_key"]).to_csv(manifest, index=False)
    return ingest_archive(IngestConfig.demo(tmp_path / "data", nifti_manifest=manifest, workers=1))


def test_duplicate_study_key_is_refused_naming_both_rows(tmp_path):
    res = _scans(tmp_path, [("scans/a.nii.gz", "P1", "S1", "R1"), ("scans/b.nii.gz", "P2", "S1", "R2"), ("scans/c.nii.gz", "P3", "S3", "R3")])
    assert res.ct_studies["study_id"].tolist() == [pseudonym("study", "S3")]  # the good row goes on
    assert res.ct_studies["study_id"].is_unique
    (rej,) = res.rejected_studies.to_dict("records")
    assert rej["study_id"] == pseudonym("study", "S1") and rej["reason"] == "duplicate_study_key"
    assert "scans.csv line 2 and scans.csv line 3" in rej["detail"] and "2 different patients" in rej["detail"]
    for secret in ("P1", "P2", "S1", "R1", "a.nii.gz"):  # rows are named by line, never by key
        assert secret not in rej["detail"]


def test_one_scan_under_two_studies_and_one_report_of_two_patients(tmp_path):
    res = _scans(tmp_path, [("scans/a.nii.gz", "P1", "S1", "R1"), ("scans/a.nii.gz", "P2", "S2", "R2"),
                            ("scans/b.nii.gz", "P3", "S3", "R9"), ("scans/c.nii.gz", "P4", "S4", "R9")])
    assert res.ct_studies.empty
    reasons = res.rejected_studies.set_index("study_id")["reason"].to_dict()
    assert reasons == {pseudonym("study", "S1"): "duplicate_scan", pseudonym("study", "S2"): "duplicate_scan",
                       pseudonym("study", "S3"): "report_of_two_patients", pseudonym("study", "S4"): "report_of_two_patients"}
    assert set(res.rejected_studies["detail"].str.contains("scans.csv line 4 and scans.csv line 5")) == {True, False}


def test_row_without_study_key_is_one_rejection(tmp_path):
    res = _scans(tmp_path, [("scans/a.nii.gz", "P1", "", "R1"), ("scans/b.nii.gz", "P2", "S2", "R2")])
    assert res.ct_studies["study_id"].tolist() == [pseudonym("study", "S2")]
    (rej,) = res.rejected_studies.to_dict("records")
    assert rej["reason"] == "missing_study_key" and rej["detail"] == "scans.csv line 2 has no study_key"


def test_dicom_study_of_two_patients_is_refused(tmp_path):
    src = tmp_path / "data" / "source" / "dicom"
    first = _header(patient="DOE^JANE", mrn="MRN1")
    write_ct_series(_phantom(shape=(24, 20, 12)), _affine(), src / "a", first)
    # the same StudyInstanceUID reused for another patient's series
    write_ct_series(_phantom(shape=(24, 20, 12), seed=1), _affine(), src / "b", _header(patient="ROE^RICHARD", mrn="MRN2", study_uid=first.study_instance_uid))
    good = _header(mrn="MRN3", acc="ACC3")
    write_ct_series(_phantom(shape=(24, 20, 12), seed=2), _affine(), src / "c", good)
    res = ingest_archive(IngestConfig.demo(tmp_path / "data", workers=1))
    assert res.ct_studies["study_id"].tolist() == [pseudonym("study", good.study_instance_uid)]
    (rej,) = res.rejected_studies.to_dict("records")
    assert rej["study_id"] == pseudonym("study", first.study_instance_uid) and rej["reason"] == "conflicting_patients"
    assert pseudonym("patient", "MRN1") in rej["detail"] and pseudonym("patient", "MRN2") in rej["detail"]
    assert "MRN" not in rej["detail"]


def test_study_in_the_archive_and_the_manifest_is_refused(tmp_path):
    hdr = _header(mrn="MRN1", acc="ACC1")
    write_ct_series(_phantom(shape=(24, 20, 12)), _affine(), tmp_path / "data" / "source" / "dicom" / "a", hdr)
    save_nifti(Volume(_phantom(shape=(24, 20, 12), seed=1), _affine()), tmp_path / "scans" / "x.nii.gz")
    manifest = tmp_path / "scans.csv"
    manifest.write_text(f"scan_path,patient_key,study_key,report_key\nscans/x.nii.gz,P9,{hdr.study_instance_uid},R9\n")
    res = ingest_archive(IngestConfig.demo(tmp_path / "data", nifti_manifest=manifest, workers=1))
    assert res.ct_studies.empty
    (rej,) = res.rejected_studies.drop_duplicates("study_id").to_dict("records")
    assert rej["reason"] == "duplicate_study_key" and "the DICOM archive" in rej["detail"] and "scans.csv line 2" in rej["detail"]
    assert np.all(res.rejected_studies["study_id"] == pseudonym("study", hdr.study_instance_uid))
