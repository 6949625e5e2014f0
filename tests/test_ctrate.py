"""CT-RATE as a source: the release layout and CSV columns (synthetic content) read by `scan_ctrate`, and
ingested through the NIfTI manifest path: raw-valued and HU-valued volumes, header scaling, blank headers,
reconstructions of one scan, patients, reports."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pipeline.ctrate import decide_geometry, scan_ctrate, write_ctrate_source
from pipeline.ingest import IngestConfig, ingest_archive
from pipeline.volume import load_nifti, spacing_of

from ctrate_release import METADATA_COLUMNS, XY, Z, meta_row, phantom_hu, ras_affine, save, write_release


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """A CT-RATE release folder: dataset/{train,valid}/<patient>/<scan>/<volume>.nii.gz and the four CSV kinds."""
    return write_release(tmp_path_factory.mktemp("ctrate"))


def test_release_layout_ids_reports_labels(release):
    frame = scan_ctrate(release, "train").set_index("volume_name")
    assert list(frame.index) == ["train_1_a_1", "train_1_a_2", "train_2_a_1", "train_3_a_1", "train_4_b_1", "train_5_a_1"]
    assert frame.loc["train_1_a_2", "patient_key"] == "train_1" and frame.loc["train_1_a_2", "study_key"] == "train_1_a"
    assert frame.loc["train_4_b_1", "patient_key"] == "train_4" and frame.loc["train_4_b_1", "study_key"] == "train_4_b"
    assert frame.loc["train_1_a_1", "report_text"] == "FINDINGS: Findings of train_1_a. The heart is enlarged.\nIMPRESSION: Cardiomegaly."
    assert frame.loc["train_4_b_1", "report_text"] == "FINDINGS: Findings of train_4_b. The heart is enlarged."  # "Not given." dropped
    assert frame.loc["train_1_a_1", "Cardiomegaly"] == 1 and frame.loc["train_1_a_1", "Emphysema"] == 0
    assert frame["Cardiomegaly"].isna().tolist() == [False, False, False, False, True, True]  # no label rows for these
    assert (frame["problem"].drop("train_5_a_1") == "").all() and frame.loc["train_5_a_1", "problem"] != ""
    assert not frame.loc["train_5_a_1", "chosen"]
    valid = scan_ctrate(release, "valid")
    assert valid["volume_name"].tolist() == ["valid_1_a_1"] and valid["report_text"].iloc[0] == "FINDINGS: Normal.\nIMPRESSION: Normal."


def test_one_reconstruction_per_scan(release):
    frame = scan_ctrate(release, "train").set_index("volume_name")
    assert frame[frame["problem"] == ""].groupby("study_key")["chosen"].sum().eq(1).all()
    assert frame.loc["train_1_a_1", "chosen"] and not frame.loc["train_1_a_2", "chosen"]
    assert "train_1_a_1" in frame.loc["train_1_a_2", "choice"]


def test_hu_decided_per_volume_and_never_twice(release):
    frame = scan_ctrate(release, "train").set_index("volume_name")
    rules = frame[["hu_rule", "rescale_slope", "rescale_intercept"]].to_dict("index")
    # HU as stored: the metadata's intercept -1024 must not be applied (CT-RATE v2, CT-CLIP issue 50)
    assert rules["train_1_a_1"] == {"hu_rule": "stored_hu", "rescale_slope": 1.0, "rescale_intercept": 0.0}
    # raw values: the metadata rescale is applied, once
    assert rules["train_2_a_1"] == {"hu_rule": "metadata_rescale", "rescale_slope": 1.0, "rescale_intercept": -1024.0}
    # the NIfTI header rescales already
    assert rules["train_3_a_1"] == {"hu_rule": "nifti_scaling", "rescale_slope": 1.0, "rescale_intercept": 0.0}


def test_spacing_rule_says_which_wins(release):
    frame = scan_ctrate(release, "train").set_index("volume_name")
    assert frame.loc["train_1_a_1", "spacing_rule"] == "header (metadata agrees)" and frame.loc["train_1_a_1", "affine"] == ""
    blank = frame.loc["train_2_a_1"]
    assert blank["spacing_rule"].startswith("metadata (blank NIfTI header")
    assert (blank["spacing_x"], blank["spacing_y"], blank["spacing_z"]) == pytest.approx((XY, XY, Z))
    affine = np.array(json.loads(blank["affine"]))
    assert nib.aff2axcodes(affine) == ("L", "P", "S")  # DICOM's default row/column directions, in RAS terms
    assert affine[:3, 3] == pytest.approx([150.0, 160.0, -300.0])
    off = frame.loc["train_4_b_1"]
    assert off["spacing_rule"].startswith("header (metadata XYSpacing/ZSpacing") and off["spacing_x"] == pytest.approx(0.8)


def test_header_without_geometry_codes_is_blank_too(tmp_path):
    save(tmp_path / "v.nii.gz", phantom_hu(), None)  # no qform/sform, unit voxels
    info = pd.Series(meta_row("v"), index=METADATA_COLUMNS)
    affine, rule = decide_geometry(nib.load(str(tmp_path / "v.nii.gz")), info)
    assert rule.startswith("metadata (blank NIfTI header") and spacing_of(affine) == pytest.approx([XY, XY, Z])
    affine, rule = decide_geometry(nib.load(str(tmp_path / "v.nii.gz")), None)
    assert rule.startswith("unknown")


def test_flat_folder_of_volumes(tmp_path, release):
    for name in ("train_1_a_1", "valid_1_a_1"):
        src = next(release.rglob(f"{name}.nii.gz"))
        (tmp_path / src.name).write_bytes(src.read_bytes())
    save(tmp_path / "case07.nii.gz", (phantom_hu().astype(np.int32) + 1024).astype(np.int16), ras_affine())
    frame = scan_ctrate(tmp_path, "train").set_index("volume_name")
    assert sorted(frame.index) == ["case07", "train_1_a_1"]  # the valid volume stays out of train
    assert frame.loc["train_1_a_1", "hu_rule"] == "stored_hu" and frame.loc["train_1_a_1", "report_text"] == ""
    # raw values and no metadata to rescale them: not called HU; ingest's HU check judges
    assert frame.loc["case07", "hu_rule"] == "stored_unverified" and frame.loc["case07", "study_key"] == "case07"


def test_ingest_takes_ctrate_through_the_nifti_manifest(release, tmp_path):
    manifest, reports, frame = write_ctrate_source(release, "train", tmp_path / "source")
    assert len(pd.read_csv(manifest)) == 4 and set(pd.read_csv(reports).columns) == {"AccessionNumber", "ReportText"}
    result = ingest_archive(IngestConfig.demo(tmp_path / "data", nifti_manifest=manifest, workers=1))
    assert result.rejected_studies.empty, result.rejected_studies.to_dict("records")
    studies = result.ct_studies
    assert len(studies) == 4 and studies["patient_id"].nunique() == 4
    for row in studies.itertuples():
        hu = load_nifti(tmp_path / "data" / row.volume_path).array  # stored relative to the data root
        # every volume, raw or HU, header-scaled or not, ends with air at -1000 and soft tissue at 40
        air = np.mean((hu >= -1030) & (hu <= -970))
        assert air > 0.2 and 30 <= hu.max() <= 50, (row.corrections, air, hu.max())
    corrections = sorted(" | ".join(c) for c in studies["corrections"])
    assert any("rescale from manifest: slope 1, intercept -1024" in c and "hu rule: metadata_rescale" in c for c in corrections)
    assert sum("hu rule: nifti_scaling" in c for c in corrections) == 1
    # a re-run with the same manifest skips everything
    again = ingest_archive(IngestConfig.demo(tmp_path / "data", nifti_manifest=manifest, workers=1))
    assert again.n_unchanged == 4


def test_source_resource_kind_ctrate(release, tmp_path):
    from assets.ingest import ingest, source_archive
    from assets.io import ParquetIOManager
    from assets.partitions import SHARD_KEYS
    from assets.reports import read_reports
    from assets.resources import ArchiveSource, DataRoot
    from pipeline.tables import read_table

    source = ArchiveSource(kind="ctrate", ctrate_dir=str(release), ctrate_split="train")
    resources = {"data": DataRoot(path=str(tmp_path)), "source": source, "table_io": ParquetIOManager(path=str(tmp_path))}
    result = dg.materialize([source_archive], resources=resources)
    meta = result.asset_materializations_for_node("source_archive")[0].metadata
    assert meta["studies"].value == 4 and meta["volumes"].value == 6 and meta["patients"].value == 5
    assert meta["left_out"].value == 1 and "train_5_a_1" in meta["left_out_volumes"].value and meta["other_reconstructions"].value == 1
    paths = source.paths(tmp_path)
    assert paths.nifti_manifest.is_file() and paths.reports_csv.is_file() and paths.dicom_dir is None
    # the existing ingest stage, all shards in one run, as `make run` does
    shards = {"dagster/asset_partition_range_start": SHARD_KEYS[0], "dagster/asset_partition_range_end": SHARD_KEYS[-1]}
    assert dg.materialize([ingest], resources=resources, tags=shards, run_config={"ops": {"ingest": {"config": {"workers": 1}}}}).success
    studies = read_table("ct_studies", tmp_path)
    assert len(studies) == 4 and read_table("rejected_studies", tmp_path).empty
    reports = read_reports(paths.reports_csv, "ReportText", "AccessionNumber")
    assert set(studies["report_id"]) == set(reports["report_id"])  # every study finds its report
    with pytest.raises(ValueError, match="ctrate_dir"):
        ArchiveSource(kind="ctrate").paths(tmp_path)


def test_reader_says_what_is_wrong(release, tmp_path):
    """Issue 29: a non-numeric rescale, a cut-off volume and a volume without a report row each get a problem
    (each had problem "" before: HU off by 1,024, an EOFError at ingest, report_text "")."""
    import shutil

    root = tmp_path / "release"
    shutil.copytree(release, root)
    meta_csv = root / "dataset" / "metadata" / "train_metadata.csv"
    meta = pd.read_csv(meta_csv, dtype=str, keep_default_na=False)
    meta.loc[meta["VolumeName"] == "train_2_a_1.nii.gz", "RescaleIntercept"] = "minus 1024"
    meta.to_csv(meta_csv, index=False)
    cut = next(root.rglob("train_1_a_1.nii.gz"))
    cut.write_bytes(cut.read_bytes()[: int(cut.stat().st_size * 0.6)])
    reports_csv = root / "dataset" / "radiology_text_reports" / "train_reports.csv"
    reports = pd.read_csv(reports_csv, dtype=str, keep_default_na=False)
    reports[reports["VolumeName"] != "train_4_b_1.nii.gz"].to_csv(reports_csv, index=False)

    frame = scan_ctrate(root, "train").set_index("volume_name")
    problem = frame["problem"]
    assert "RescaleIntercept is not a number ('minus 1024')" in problem["train_2_a_1"]
    assert "truncated or corrupt" in problem["train_1_a_1"]
    assert problem["train_4_b_1"] == "no report row for this volume"
    assert problem["train_3_a_1"] == "" and problem["train_1_a_2"] == ""
    assert not frame.loc[["train_2_a_1", "train_1_a_1", "train_4_b_1"], "chosen"].any()
    # the other reconstruction of the cut-off scan is chosen instead
    assert frame.loc["train_1_a_2", "chosen"]


def test_volume_problem_reads_sizes_not_voxels(tmp_path):
    from pipeline.ctrate import volume_problem

    save(tmp_path / "v.nii.gz", phantom_hu(), ras_affine())
    save(tmp_path / "v.nii", phantom_hu(), ras_affine())
    for name in ("v.nii.gz", "v.nii"):
        assert volume_problem(tmp_path / name, nib.load(str(tmp_path / name))) == ""
    img = nib.load(str(tmp_path / "v.nii"))
    (tmp_path / "v.nii").write_bytes((tmp_path / "v.nii").read_bytes()[:-100])
    assert volume_problem(tmp_path / "v.nii", img).startswith("truncated: the file holds")
