"""One materialization of the whole asset graph into tmp_path, at a tiny budget, with the real Dagster machinery."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest

from assets import evaluation, ingest, pairs, reports, segmentation, training
from assets.io import JsonIOManager
from assets.partitions import SHARD_KEYS
from assets.resources import ArchiveSource, DataRoot
from assets.segmentation import Segmenter
from pipeline.tables import read_table

RANGE = {"dagster/asset_partition_range_start": SHARD_KEYS[0], "dagster/asset_partition_range_end": SHARD_KEYS[-1]}
TINY_TRAIN = {"steps": 2, "batch_size": 2, "checkpoint_every": 2, "text_encoder": "fake"}


@pytest.mark.slow
def test_whole_graph_materializes(tmp_path):
    root = tmp_path / "data"
    resources = {
        "data": DataRoot(path=str(root)),
        "source": ArchiveSource(n_studies=6, seed=3),
        "segmenter": Segmenter(),
        "pipes": dg.PipesSubprocessClient(),
        "json_io": JsonIOManager(path=str(root)),
    }
    instance = dg.DagsterInstance.ephemeral()

    run_ids = []

    def run(assets, checks=(), **kw):
        result = dg.materialize([*assets, *checks], resources=resources, instance=instance, **kw)
        assert result.success
        run_ids.append(result.run_id)
        return result

    run([ingest.source_archive])
    workers = {"config": {"workers": 1}}
    run([ingest.ingest, segmentation.segmentation, segmentation.lesion_masks], ingest.CHECKS, tags=RANGE,
        run_config={"ops": {"ingest": workers, "segmentation": workers}})
    run([reports.report_tables])
    result = run([pairs.pair_tables], pairs.CHECKS, run_config={"ops": {"pair_tables": {"config": {"split_ratios": [0.5, 0.25, 0.25]}}}})
    assert all(e.passed for e in result.get_asset_check_evaluations())
    trained = run([training.grounded_model, training.global_model], run_config={"ops": {
        "grounded_model": {"config": TINY_TRAIN}, "global_model": {"config": TINY_TRAIN}}})
    card = trained.asset_materializations_for_node("grounded_model")[0].metadata["model_card"].value
    assert "## Training data" in card and "grounded" in card  # the exported model's card, shown in the UI
    run([training.grounded_model, training.global_model, evaluation.evaluation_report], selection=[evaluation.evaluation_report], run_config={"ops": {"evaluation_report": {"config": {
        "n_bootstrap": 20, "td_steps": 1, "ts_steps": 1}}}})

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
    assert (root / "assets" / "grounded_model.json").is_file()
    report = json.loads((root / "tables" / "evaluation_report.json").read_text())
    assert report, "evaluation_report.json is empty"
    assert (root / "reports" / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    _assert_no_identifiers(root, instance, run_ids)


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
