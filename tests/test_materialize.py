"""One materialization of the whole asset graph at a tiny budget, with the real Dagster machinery and the real packaged
text encoder (tests/tiny_graph.py)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from model.config import GT_MINILM
from pipeline.tables import read_table


@pytest.mark.slow
def test_whole_graph_materializes(tiny_graph):
    root = tiny_graph.root
    assert tiny_graph.pair_checks_passed
    card = tiny_graph.model_card
    assert "## Training data" in card and "grounded" in card  # the exported model's card, shown in the UI
    studies = read_table("ct_studies", root)
    rejected = read_table("rejected_studies", root)
    # every good study comes through (the 6 regular ones and the one whose report is missing);
    # the faulty inputs are rejected, each with its reason
    assert len(studies) == 7
    assert {"truncated_file", "no_ct_series", "empty_folder", "missing_slices"} <= set(rejected["reason"])
    grounded = pd.read_parquet(root / "tables" / "grounded_pairs.parquet")
    assert len(grounded) > 50 and set(grounded["split"]) <= {"train", "val", "test"}
    exclusions = pd.read_parquet(root / "tables" / "pair_exclusions.parquet")
    assert "study_without_report" in set(exclusions["reason"])
    # both models read text with the real packaged MiniLM (not the tests' fake encoder), and so did the evaluation
    for kind in ("grounded", "global"):
        value = json.loads((root / "assets" / f"{kind}_model.json").read_text())
        assert value["config"]["model"]["text_encoder"] == GT_MINILM
    assert any(p.name.startswith(GT_MINILM) for p in (root / "cache" / "text").iterdir())
    report = json.loads((root / "tables" / "evaluation_report.json").read_text())
    assert report, "evaluation_report.json is empty"
    assert (root / "reports" / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    embeddings = read_table("study_embeddings", root)  # every study with an organ mask, a whole-study row each
    assert set(embeddings["study_id"]) == {p.name[: -len(".nii.gz")] for p in (root / "masks").glob("*.nii.gz")}
    assert (embeddings["organ"] == "whole_study").sum() == embeddings["study_id"].nunique()

    _assert_no_identifiers(root, tiny_graph.instance, tiny_graph.run_ids)


def _identifiers(dicom_dir) -> set[str]:
    """Names, patient ids, birth dates and accession numbers as the hospital export holds them."""
    import pydicom

    found: set[str] = set()
    for path in sorted(p for p in dicom_dir.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # the cohort's deliberately broken files
            continue
        for tag in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
            value = str(ds.get(tag, "") or "")
            if len(value) >= 4:
                found.add(value)
                found.update(part for part in value.split("^") if len(part) >= 4)
    return found


def _assert_no_identifiers(root, instance, run_ids) -> None:
    secrets = _identifiers(root / "source" / "dicom")
    assert len(secrets) > 10
    texts = {}
    for table in (root / "tables").rglob("*.parquet"):
        texts[str(table)] = pd.read_parquet(table).astype(str).to_csv()
    for path in root.rglob("*"):
        if "source" not in path.relative_to(root).parts:
            texts[f"name:{path}"] = path.name
    for run_id in run_ids:
        texts[f"logs:{run_id}"] = "\n".join(str(e.user_message) for e in instance.all_logs(run_id))
    leaks = {where: s for where, text in texts.items() for s in secrets if s in text}
    assert leaks == {}


@pytest.mark.slow
def test_a_copied_data_folder_reads_its_own_files(tiny_graph, tmp_path):
    """Issue 29: tables store paths relative to the data root, so a copy elsewhere (a second machine mounting the
    folder at another path) reads pairs, volumes and masks from the copy. The original is moved aside meanwhile,
    so nothing can be read from it."""
    import shutil

    from assets import pairs
    from assets.resources import DataRoot
    from model.data import read_split
    from pipeline.tables import resolve_path
    from pipeline.volume import load_nifti

    copy = tmp_path / "elsewhere" / "data"
    shutil.copytree(tiny_graph.root, copy)
    away = tiny_graph.root.with_name(tiny_graph.root.name + ".away")
    tiny_graph.root.rename(away)
    try:
        grounded = read_table("grounded_pairs", copy)
        studies = read_table("ct_studies", copy)
        for column in (grounded["volume_path"], grounded["mask_path"], studies["volume_path"]):
            assert not column.map(lambda p: p.startswith("/")).any()  # was absolute: the folder it was built in
        studies_read, _, _ = read_split(copy, "train")
        assert studies_read
        for record in studies_read:
            assert record.volume_path.is_relative_to(copy) and record.mask_path.is_relative_to(copy)
            volume, mask = load_nifti(record.volume_path), load_nifti(record.mask_path)
            assert volume.shape == mask.shape and mask.array.any()
        for path in studies["volume_path"]:
            assert resolve_path(path, copy).is_file()
        check = pairs.mask_files_exist(grounded_pairs=grounded, data=DataRoot(path=str(copy)))
        assert check.passed, check.metadata
    finally:
        away.rename(tiny_graph.root)
