"""Scoring mined pairs against the synthetic gold: a hand-made example with known answers, and a tiny
generated cohort taken end to end (DICOM -> ingest -> precomputed masks -> report rules -> pairs -> score)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import pytest
from pairs_gold import score_pairs

from pipeline.ids import pseudonym

UID1, UID2 = "1.2.3.1", "1.2.3.2"
S1, S2 = pseudonym("study", UID1), pseudonym("study", UID2)


def _gold(uid: str, acc: str, organ: str, image: str, report: str, abn: list[str], in_image: bool = True, cut: bool = False) -> dict:
    return {"accession": acc, "study_uid": uid, "organ": organ, "in_image": in_image, "cut_by_fov": cut,
            "image_status": image, "report_status": report, "abnormalities": abn, "kinds": [], "volume_ml_native": 10.0}


def _pair(study: str, organ: str, status: str, source: str = "report", abn: list[str] | None = None,
          patient: str = "pat-1", split: str = "train") -> dict:
    return {"study_id": study, "patient_id": patient, "organ": organ, "status": status, "text_source": source,
            "abnormalities": abn or [], "text": f"{organ} text", "split": split}


@pytest.fixture()
def example():
    gold = pd.DataFrame([
        _gold(UID1, "A1", "liver", "abnormal", "abnormal", ["mass"]),          # abnormal pair: hit
        _gold(UID1, "A1", "spleen", "normal", "not_mentioned", []),            # template normal: agrees
        _gold(UID1, "A1", "kidney_left", "abnormal", "abnormal", ["cyst"]),    # pair says normal: miss
        _gold(UID1, "A1", "heart", "abnormal", "uncertain", ["cardiomegaly"]),  # pair abnormal: disagrees
        _gold(UID1, "A1", "aorta", "abnormal", "abnormal", ["aneurysm"], cut=True),  # excluded: not counted
        _gold(UID1, "A1", "pancreas", "abnormal", "not_mentioned", ["mass"]),  # not reported: not counted
        _gold(UID1, "A1", "gallbladder", "normal", "not_mentioned", []),       # report-sourced normal: disagrees
        _gold(UID2, "A2", "liver", "normal", "normal", []),
        _gold(UID2, "A2", "spleen", "abnormal", "abnormal", ["splenomegaly"], in_image=False),  # not in image
    ])
    pairs = pd.DataFrame([
        _pair(S1, "liver", "abnormal", abn=["mass"]),
        _pair(S1, "spleen", "normal", source="template"),
        _pair(S1, "kidney_left", "normal"),
        _pair(S1, "heart", "abnormal", abn=["cardiomegaly"]),
        _pair(S1, "pancreas", "normal", source="template"),
        _pair(S1, "gallbladder", "normal"),
        _pair(S1, "femur_left", "normal", source="template"),  # no gold row: not scored
        _pair(S2, "liver", "normal", split="val"),  # same patient, other split: leak
    ])
    exclusions = pd.DataFrame([
        {"study_id": S1, "patient_id": "pat-1", "organ": "aorta", "reason": "cut_by_fov", "status": "abnormal"},
    ])
    return pairs, exclusions, gold


def test_score_on_hand_made_example(example):
    pairs, exclusions, gold = example
    s = score_pairs(pairs, exclusions, gold)
    assert (s.n_pairs, s.n_scored, s.n_pairs_without_gold) == (8, 7, 1)
    assert math.isclose(s.status_agreement, 4 / 7)  # liver, spleen, pancreas, S2 liver
    assert s.n_abnormal_gold == 2 and math.isclose(s.abnormal_recall, 0.5)  # liver hit, kidney_left missed
    assert math.isclose(s.abnormality_name_recall, 0.5)
    assert s.patients_in_two_splits == 1
    d = {(r.kind, r.organ) for r in s.disagreements.itertuples()}
    assert d == {("status", "kidney_left"), ("status", "heart"), ("status", "gallbladder"), ("abnormal_missed", "kidney_left")}
    assert "status agreement" in s.summary()


def test_leak_by_gold_patient_key_even_when_patient_ids_differ(example):
    pairs, exclusions, gold = example
    pairs = pairs.assign(patient_id=["pat-1"] * 7 + ["pat-2"])  # the ingest split one patient in two
    assert score_pairs(pairs, exclusions, gold).patients_in_two_splits == 0
    truth = pd.DataFrame({"study_uid": [UID1, UID2], "patient_key": ["patient-0", "patient-0"]})
    assert score_pairs(pairs, exclusions, gold, truth).patients_in_two_splits == 1


def test_perfect_pairs_score_one(example):
    _, _, gold = example
    g = gold[gold["in_image"]]
    pairs = pd.DataFrame([
        _pair(pseudonym("study", r.study_uid), r.organ, "normal" if r.report_status == "not_mentioned" else r.report_status,
              source="template" if r.report_status == "not_mentioned" else "report", abn=list(r.abnormalities))
        for r in g.itertuples()
    ])
    s = score_pairs(pairs, pd.DataFrame(columns=["study_id", "organ", "reason"]), gold)
    assert s.status_agreement == 1.0 and s.abnormal_recall == 1.0 and s.disagreements.empty


def test_end_to_end_tiny_cohort(tmp_path: Path):
    """3 generated studies through ingest, precomputed segmentation, the report rules and pair mining."""
    report = pytest.importorskip("pipeline.report")
    from pipeline.ingest import IngestConfig, ingest_archive
    from pipeline.pairs import PairConfig, PairInputs, mine_pairs
    from pipeline.segment.batch import SegmentJob, segment_studies
    from pipeline.segment.config import SegmenterConfig
    from pipeline.synthetic.cohort import CohortSpec, generate_cohort

    t0 = time.perf_counter()
    spec = CohortSpec(n_studies=3, seed=5, faults=False, matrix_sizes=(256,), slice_spacings_mm=(5.0,), companion_series_prob=0.0)
    cohort = generate_cohort(spec, tmp_path / "source")
    studies = ingest_archive(IngestConfig.demo(tmp_path, dicom_root=cohort.dicom_dir, workers=1)).ct_studies
    assert len(studies) == 3
    seg = segment_studies(
        [SegmentJob(s, v) for s, v in zip(studies["study_id"], studies["volume_path"])], tmp_path / "masks",
        SegmenterConfig(backend="precomputed", manifest=str(cohort.masks_manifest)), workers=1,
    )
    raw = pd.read_csv(cohort.reports_csv, dtype=str, keep_default_na=False)
    reports = pd.DataFrame({"report_id": [pseudonym("report", a) for a in raw["AccessionNumber"]], "text": raw["ReportText"]})
    findings, _ = report.extract_table_checked(reports, "text", "report_id")
    negatives = lambda organ: [a.name for a in report.abnormalities_for_organ(organ)]  # noqa: E731
    tables = mine_pairs(PairInputs(studies, seg.organ_stats, findings, frozenset(reports["report_id"])), PairConfig(), negatives)

    gold = pd.read_parquet(cohort.truth_dir / "organ_gold.parquet")
    score = score_pairs(tables.grounded_pairs, tables.pair_exclusions, gold, pd.read_parquet(cohort.truth_dir / "studies.parquet"))
    assert score.n_scored == score.n_pairs > 0
    assert score.status_agreement >= 0.97, score.disagreements
    assert score.n_abnormal_gold == 0 or score.abnormal_recall >= 0.97, score.disagreements
    assert score.patients_in_two_splits == 0
    assert time.perf_counter() - t0 < 60
