"""Every asset check on an empty table and on a table of one row: a verdict, never a crash.

The tables are written by the code that writes them in a run (ingest's columns, ``mine_pairs``), so an
empty table carries the dtypes a real empty run gives (pandas' string dtype included).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets import ingest, pairs, reports
from assets.definitions import defs
from assets.ingest import IngestSettings
from assets.resources import DataRoot
from pipeline.ingest import CT_STUDIES_COLUMNS, REJECTED_COLUMNS
from pipeline.pairs import PairConfig, PairInputs, mine_pairs
from pipeline.tables import read_table, write_table
from pipeline.volume import Volume, save_nifti


def test_every_check_is_covered_here():
    graph = defs.resolve_asset_graph()
    names = {k.name for k in graph.asset_check_keys}
    assert names == {c.check_specs_by_output_name[n].name for c in (*ingest.CHECKS, *reports.CHECKS, *pairs.CHECKS) for n in c.check_specs_by_output_name}
    assert names == {"spacing_is_target", "hu_range_sane", "no_identifying_columns", "has_pairs", "no_patient_leakage",
                     "no_empty_text", "mask_files_exist", "no_phi_in_reports", "no_phi_in_tables"}


# --- ingest checks --------------------------------------------------------------------------------------


def _study_row(tmp_path: Path, spacing: float = 3.0, hu=(-1024.0, 1500.0)) -> dict:
    row = {c: None for c in CT_STUDIES_COLUMNS}
    row.update(study_id="stu-0000000000000001", patient_id="pat-0000000000000001", report_id="rep-0000000000000001",
               series_id="ser-0000000000000001", volume_path=str(tmp_path / "v.nii.gz"), spacing_x=spacing,
               spacing_y=spacing, spacing_z=spacing, hu_min=hu[0], hu_max=hu[1], shard="shard-00", corrections=[],
               skipped_series=[])
    return row


def _ingest_checks(rows: list[dict]) -> dict[str, dg.AssetCheckResult]:
    """The checks take ct_studies (and rejected_studies) as the table IO manager loads them: DataFrames."""
    studies, rejected = pd.DataFrame(rows, columns=CT_STUDIES_COLUMNS), pd.DataFrame([], columns=REJECTED_COLUMNS)
    return {
        "spacing": ingest.spacing_is_target(config=IngestSettings(spacing_mm=3.0), ct_studies=studies),
        "hu": ingest.hu_range_sane(ct_studies=studies),
        "ids": ingest.no_identifying_columns(ct_studies=studies, rejected_studies=rejected),
    }


def test_ingest_checks_pass_on_an_empty_table():
    results = _ingest_checks([])
    assert all(r.passed for r in results.values())
    assert results["spacing"].metadata["off_target"].value == 0


def test_ingest_checks_on_one_row(tmp_path):
    assert all(r.passed for r in _ingest_checks([_study_row(tmp_path)]).values())

    row = _study_row(tmp_path, spacing=1.5, hu=(0.0, 50.0))  # off the target spacing, no air: a missing rescale
    row["patient_id"] = "12345"  # a raw identifier
    results = _ingest_checks([row])
    assert not any(r.passed for r in results.values())
    assert results["spacing"].metadata["off_target"].value == 1
    assert results["hu"].metadata["implausible"].value == 1
    assert results["ids"].metadata["found"].value["ct_studies"] == ["patient_id"]


# --- pair checks -----------------------------------------------------------------------------------------


def _pair_inputs(tmp_path: Path, cut: bool, files: bool = True) -> PairInputs:
    volume, mask = tmp_path / "v.nii.gz", tmp_path / "m.nii.gz"
    if files:
        for p in (volume, mask):
            save_nifti(Volume(np.zeros((2, 2, 2), np.uint8), np.eye(4)), p)
    studies = pd.DataFrame({"study_id": ["stu-a"], "patient_id": ["pat-1"], "report_id": ["rep-a"], "volume_path": [str(volume)]})
    stats = pd.DataFrame([{"study_id": "stu-a", "organ": "liver", "index_v2": 5, "volume_ml": 900.0,
                           "bbox_vox": [0, 0, 0, 5, 5, 5], "bbox_mm": [0.0] * 6, "cut_by_fov": cut,
                           "cut_face_ratio": 0.9 if cut else 0.0, "quality_flags": ["cut_by_fov"] if cut else []}])
    findings = pd.DataFrame([{"report_id": "rep-a", "organ": "spleen", "status": "normal", "abnormality": None,
                              "sentence": "The spleen is normal.", "section": "findings"}])
    return PairInputs(studies, stats, findings, frozenset({"rep-a"}), {"stu-a": str(mask)})


def _write_pairs(root: Path, inputs: PairInputs) -> pd.DataFrame:
    tables = mine_pairs(inputs, PairConfig(cut_organs="exclude"))
    for name in ("grounded_pairs", "abnormality_pairs", "pair_exclusions", "study_texts"):
        write_table(getattr(tables, name), name, root)
    return tables.grounded_pairs


def _pair_checks(root: Path) -> dict[str, dg.AssetCheckResult]:
    data = DataRoot(path=str(root))
    grounded = read_table("grounded_pairs", root)  # as the table IO manager loads it for the checks that take it
    return {
        **{c.check_key.name: c(data=data) for c in (pairs.no_patient_leakage, pairs.no_empty_text, pairs.no_phi_in_tables)},
        **{c.check_key.name: c(grounded_pairs=grounded, data=data) for c in (pairs.has_pairs, pairs.mask_files_exist)},
    }


def test_pair_checks_on_an_empty_table_say_why(tmp_path):
    root = tmp_path / "data"
    assert _write_pairs(root, _pair_inputs(tmp_path, cut=True)).empty
    results = _pair_checks(root)
    # nothing to leak, no text to be empty, no file to miss: those pass; the empty table itself fails, with its cause
    assert results["no_patient_leakage"].passed and results["no_empty_text"].passed and results["mask_files_exist"].passed
    assert results["no_phi_in_tables"].passed
    empty = results["has_pairs"]
    assert not empty.passed
    assert empty.description == "0 pairs: 1 organs cut by the field of view, 1 organs described but not segmented; see pair_exclusions"
    assert empty.metadata["reasons"].value == {"cut_by_fov": 1, "described_not_segmented": 1}


@pytest.mark.parametrize("files", [True, False])
def test_pair_checks_on_one_row(tmp_path, files):
    root = tmp_path / "data"
    assert len(_write_pairs(root, _pair_inputs(tmp_path, cut=False, files=files))) == 1
    results = _pair_checks(root)
    assert results["has_pairs"].passed and results["has_pairs"].metadata["pairs"].value == 1
    assert results["no_patient_leakage"].passed and results["no_empty_text"].passed and results["no_phi_in_tables"].passed
    assert results["mask_files_exist"].passed == files
    assert results["mask_files_exist"].metadata["studies_missing_files"].value == (0 if files else 1)


def test_pair_checks_flag_a_bad_row(tmp_path):
    root = tmp_path / "data"
    grounded = _write_pairs(root, _pair_inputs(tmp_path, cut=False))
    other = "test" if grounded["split"].iloc[0] != "test" else "train"  # the same patient in a second split
    two = pd.concat([grounded, grounded.assign(pair_id="pair-x", study_id="stu-b", split=other, text=" ")], ignore_index=True)
    write_table(two, "grounded_pairs", root)
    results = _pair_checks(root)
    assert not results["no_patient_leakage"].passed and results["no_patient_leakage"].metadata["offending_rows"].value == 1
    assert not results["no_empty_text"].passed and results["no_empty_text"].metadata["offending_rows"].value == 1


def test_report_privacy_check_on_empty_tables(tmp_path):
    from pipeline.report import extract_table_checked

    findings, problems = extract_table_checked(pd.DataFrame({"report_id": [], "text": []}), "text", "report_id")
    result = reports.no_phi_in_reports(report_findings=findings, report_index=problems)
    assert result.passed and result.metadata["findings"].value == 0
