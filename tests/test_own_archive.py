"""The "Your own archive" route on real studies: the configs exactly as README.md and docs/OWN_ARCHIVE.md show
them, the real Dagster CLI through ``python -m launch.run_all --until pairs``, and tables that account for every organ.

The real series in ../shared (TotalSegmentator's example, 20 slices) has blank StudyInstanceUID, PatientID and
AccessionNumber; the end-to-end test sets them on a copy, and a second test keeps them blank and names the
study in the masks manifest by the study_id ingest reports.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import yaml
from pydicom.uid import generate_uid

from assets.pairs import has_pairs
from assets.resources import DataRoot
from pipeline.ingest import IngestConfig, ingest_archive
from pipeline.segment import SegmenterConfig, manifest_problems
from pipeline.segment.batch import SegmentJob, segment_studies
from pipeline.tables import read_table

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/OWN_ARCHIVE.md")  # the DICOM config in the README, the NIfTI one in docs/OWN_ARCHIVE.md


def readme_config(name: str, archive: Path) -> dict:
    """The YAML block the README or docs/OWN_ARCHIVE.md shows as ``# <name>`` (in one of them only), its /archive/
    paths moved under ``archive``."""
    pattern = rf"```yaml\n# {re.escape(name)}\n(.*?)```"
    found = [(doc, m) for doc in DOCS for m in re.finditer(pattern, (REPO / doc).read_text(), re.S)]
    assert found, f"neither of {DOCS} shows a ```yaml block starting '# {name}'"
    assert len(found) == 1, f"'# {name}' is shown {len(found)} times ({', '.join(d for d, _ in found)}): keep one home"
    block = found[0][1]
    config = yaml.safe_load(block.group(1))
    for key, value in config["resources"]["source"]["config"].items():
        if isinstance(value, str) and value.startswith("/archive/"):
            config["resources"]["source"]["config"][key] = str(archive / value.removeprefix("/archive/"))
    return config


def real_report(realdata: Path, row: int = 0) -> str:
    reports = pd.read_csv(realdata / "reports_ctrate_dev" / "ctrate_reports_labels.csv")
    return str(reports["report_text"].iloc[row])


def copy_series(src: Path, dst: Path, **tags: str) -> None:
    """Copy a DICOM series, setting ``tags`` on every file (pixel data untouched)."""
    dst.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(f)
        for tag, value in tags.items():
            setattr(ds, tag, value)
        ds.save_as(dst / f.name)


def run_until_pairs(config: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "my_archive.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "CTGLIP_DATA": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    return subprocess.run([sys.executable, "-m", "launch.run_all", "--config", str(path), "--until", "pairs"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)


def assert_every_organ_accounted_for(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    studies = read_table("ct_studies", root)
    assert len(studies) == 1, read_table("rejected_studies", root)
    stats = read_table("organ_stats", root)
    pairs = read_table("grounded_pairs", root)
    excluded = read_table("pair_exclusions", root)
    findings = read_table("report_findings", root)
    assert len(stats) > 10  # the real segmentation reached the canonical grid

    segmented = set(stats["organ"])
    paired = set(pairs["organ"])
    # findings without an organ mask (lymph nodes, pleura, ...) are accounted for by region, not organ
    regions = excluded[excluded["reason"] == "region_without_mask"]
    assert regions["organ"].isna().all() and regions["region"].notna().all()
    assert set(regions["region"]) == set(findings["region"].dropna())
    excluded = excluded[excluded["reason"] != "region_without_mask"]
    refused = excluded[excluded["reason"] != "described_not_segmented"]
    assert not paired & set(refused["organ"])
    assert paired | set(refused["organ"]) == segmented, "every segmented organ is paired or excluded with a reason"
    described = set(findings["organ"].dropna())
    assert described <= paired | set(excluded["organ"])
    assert set(excluded.loc[excluded["reason"] == "described_not_segmented", "organ"]) == described - segmented

    # the cut-organ rule in force is recorded, and it did what it says
    cut = stats.set_index("organ")
    assert (pairs["cut_rule"] == "keep_if_inside:0.5").all()
    for row in pairs.itertuples():
        assert row.cut_by_fov == cut.loc[row.organ, "cut_by_fov"]
        assert not row.cut_by_fov or row.cut_face_ratio <= 0.5
    for organ in refused.loc[refused["reason"] == "cut_by_fov", "organ"]:
        assert cut.loc[organ, "cut_by_fov"] and cut.loc[organ, "cut_face_ratio"] > 0.5
    assert read_table("study_texts", root)["text"].str.len().iloc[0] > 100  # the real report reached the pairs
    return pairs, excluded


@pytest.mark.slow
def test_readme_dicom_archive_until_pairs(realdata, tmp_path):
    archive = tmp_path / "archive"
    uid = generate_uid(entropy_srcs=["ct-glip test study"])
    copy_series(realdata / "totalsegmentator" / "example_ct_dicom", archive / "ct" / "series1",
                StudyInstanceUID=uid, PatientID="TEST-PATIENT-1", AccessionNumber="TEST-ACC-1")
    pd.DataFrame({"AccessionNumber": ["TEST-ACC-1"], "ReportText": [real_report(realdata)]}).to_csv(archive / "ris_export.csv", index=False)
    seg = realdata / "totalsegmentator" / "example_seg_dicom.nii.gz"
    # line 3 names a study that is not in the archive: recorded, and the good study goes on
    pd.DataFrame({"StudyInstanceUID": [uid, "1.2.826.0.1.999"], "mask_path": [str(seg)] * 2,
                  "format": ["nifti_multilabel"] * 2}).to_csv(archive / "masks.csv", index=False)

    config = readme_config("my_archive.yaml", archive)
    done = run_until_pairs(config, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    root = tmp_path / "data"
    pairs, excluded = assert_every_organ_accounted_for(root)
    rejected = read_table("rejected_studies", root)
    assert list(rejected["reason"]) == ["masks_manifest_row"]
    assert rejected["detail"].iloc[0] == f"{archive / 'masks.csv'}, line 3: its study key matches no ingested study"
    stats = read_table("organ_stats", root)
    assert stats["cut_by_fov"].all() and (excluded["reason"] == "cut_by_fov").any()  # a 4 cm slab cuts every organ

    # the same study with cut organs excluded: no pair survives; the pairs step writes every table, and the
    # blocking check fails (the run with it) saying why instead of crashing
    path = tmp_path / "exclude_cut.yaml"
    path.write_text(yaml.safe_dump({**config, "ops": {"pair_tables": {"config": {"cut_organs": "exclude"}}}}))
    env = {**os.environ, "CTGLIP_DATA": str(root), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run([str(dagster), "asset", "materialize", "-m", "assets.definitions", "--select", "group:pairs", "-c", str(path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode != 0 and "has_pairs" in done.stdout + done.stderr
    assert read_table("grounded_pairs", root).empty
    excluded = read_table("pair_exclusions", root)
    assert set(excluded.loc[excluded["reason"] == "cut_by_fov", "organ"]) == set(stats["organ"])
    check = has_pairs(grounded_pairs=read_table("grounded_pairs", root), data=DataRoot(path=str(root)))
    n_described = int((excluded["reason"] == "described_not_segmented").sum())
    assert not check.passed
    assert check.description.startswith("0 pairs: ") and check.description.endswith("; see pair_exclusions")
    assert f"{len(stats)} organs cut by the field of view" in check.description
    assert f"{n_described} organs described but not segmented" in check.description


@pytest.mark.slow
def test_readme_nifti_archive_until_pairs(realdata, tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    ts = realdata / "totalsegmentator"
    pd.DataFrame({"scan_path": [str(ts / "example_ct_sm.nii.gz")], "patient_key": ["P1"], "study_key": ["S1"],
                  "report_key": ["R1"]}).to_csv(archive / "scans.csv", index=False)
    pd.DataFrame({"AccessionNumber": ["R1"], "ReportText": [real_report(realdata, 1)]}).to_csv(archive / "ris_export.csv", index=False)
    pd.DataFrame({"study_key": ["S1"], "mask_path": [str(ts / "example_seg.nii.gz")], "format": ["nifti_multilabel"]}).to_csv(archive / "masks.csv", index=False)

    done = run_until_pairs(readme_config("my_nifti_archive.yaml", archive), tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pairs, excluded = assert_every_organ_accounted_for(tmp_path / "data")
    assert pairs["cut_by_fov"].any() and (excluded["reason"] == "cut_by_fov").any()  # the rule kept some, not all


def test_study_without_uids_gets_masks_by_study_id(realdata, tmp_path):
    """Blank StudyInstanceUID, PatientID and AccessionNumber, as the real export has them: ingest groups the
    study by its folder, and the masks manifest names it by the study_id ingest reported."""
    series = realdata / "totalsegmentator" / "example_ct_dicom"
    assert not str(pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True).get("StudyInstanceUID", "")).strip()
    copy_series(series, tmp_path / "ct" / "anon")
    result = ingest_archive(IngestConfig(data_root=tmp_path / "data", dicom_root=tmp_path / "ct", workers=1))
    assert len(result.ct_studies) == 1 and result.rejected_studies.empty
    study = result.ct_studies.iloc[0]

    seg = realdata / "totalsegmentator" / "example_seg_dicom.nii.gz"
    manifest = tmp_path / "masks.csv"
    pd.DataFrame({
        "StudyInstanceUID": ["", "", "1.2.3.4.5"],
        "study_id": [study["study_id"], "", ""],
        "mask_path": [str(seg)] * 3,
        "format": ["nifti_multilabel"] * 3,
    }).to_csv(manifest, index=False)
    done = segment_studies([SegmentJob(study["study_id"], study["volume_path"], study["series_id"])], tmp_path / "masks",
                           SegmenterConfig(manifest=str(manifest)), workers=1, data_root=tmp_path / "data")
    assert done.rejected.empty and len(done.organ_stats) > 10

    problems = manifest_problems(manifest, {study["study_id"]}, {study["series_id"]})
    assert [p.line for p in problems] == [3, 4]
    assert all(str(manifest) in p.detail for p in problems)
    assert "names no study" in problems[0].detail and "matches no ingested study" in problems[1].detail
    assert "1.2.3.4.5" not in problems[1].detail  # identifiers stay out of messages
