"""The synthetic cohort: determinism, vocabulary, catalog coverage, gold vs report, lesions, faults, phrase banks."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pipeline import vocab
from pipeline.synthetic.anatomy import drawn_organs, index_of
from pipeline.synthetic.cohort import FAULTS, CohortSpec, generate_cohort, synthesize_study
from pipeline.synthetic.findings import CATALOG
from pipeline.synthetic.phrases import BANKS
from pipeline.volume import load_nifti

# Small and fast: few, coarse slices and a small body.
SMALL = CohortSpec(n_studies=3, seed=5, slice_spacings_mm=(5.0,), body_scale=(0.6, 0.62), matrix_sizes=(256,),
                   pixel_spacing_mm=(1.0, 1.0))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    return generate_cohort(SMALL, out)


def _digest(folder) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_deterministic_by_seed(cohort, tmp_path):
    again = generate_cohort(SMALL, tmp_path / "again")
    assert _digest(cohort.dicom_dir) == _digest(again.dicom_dir)
    assert cohort.reports_csv.read_text() == again.reports_csv.read_text()
    pd.testing.assert_frame_equal(pd.read_parquet(cohort.truth_dir / "organ_gold.parquet"),
                                  pd.read_parquet(again.truth_dir / "organ_gold.parquet"))
    a, b = synthesize_study(replace(SMALL, seed=6), 0).hu, synthesize_study(SMALL, 0).hu
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_organ_names_from_vocab():
    names = drawn_organs()
    assert len(names) >= 30
    for n in names:
        assert vocab.organ(n).index_v2 == index_of(n)
    for kind in CATALOG.values():
        assert all(o in names for o in kind.organs)


def test_every_catalog_kind_appears():
    spec = replace(SMALL, n_studies=30, seed=1)
    seen = set()
    for i in range(40):
        seen |= {f.kind for f in synthesize_study(spec, i).findings}
        if seen >= set(CATALOG):
            break
    assert len(CATALOG) == 15 and seen == set(CATALOG), set(CATALOG) - seen


def test_gold_consistent_with_report_and_lesions(cohort):
    gold = pd.read_parquet(cohort.truth_dir / "organ_gold.parquet")
    reports = pd.read_csv(cohort.reports_csv).set_index("AccessionNumber")["ReportText"]
    assert set(gold["report_status"]) <= {"normal", "abnormal", "uncertain", "not_mentioned"}
    for study in cohort.studies.itertuples():
        g = gold[gold.study_uid == study.study_uid].set_index("organ")
        # the image and the report agree: a finding is abnormal in the image and described as such
        for organ, row in g.iterrows():
            if row.report_status in ("abnormal", "uncertain"):
                assert row.image_status == "abnormal" and row.in_image
            if row.image_status == "abnormal":
                assert row.in_image and len(row.kinds) > 0
        labels = load_nifti(cohort.truth_dir / "labels" / f"{study.study_uid}.nii.gz").array
        lesions = load_nifti(cohort.truth_dir / "lesions" / f"{study.study_uid}.nii.gz").array
        tumor_organs = {index_of(o) for o, r in g.iterrows() if any(CATALOG[k].tumor for k in r.kinds)}
        assert set(np.unique(labels[lesions > 0])) <= tumor_organs
        if study.accession in reports.index:
            text = reports[study.accession]
            for section in ("HISTORY:", "TECHNIQUE:", "COMPARISON:", "FINDINGS:", "IMPRESSION:"):
                assert section in text
            if (g.report_status == "abnormal").any():
                assert "No acute abnormality" not in text


def test_in_memory_study_matches_written_truth(cohort):
    study = synthesize_study(SMALL, 0)
    labels = load_nifti(cohort.truth_dir / "labels" / f"{study.study_uid}.nii.gz")
    np.testing.assert_array_equal(labels.array, study.labels)
    np.testing.assert_allclose(labels.affine, study.affine)
    assert study.hu.dtype == np.int16 and study.hu.min() >= -1024


def test_faults_present(cohort):
    faults = pd.read_parquet(cohort.truth_dir / "faults.parquet")
    assert set(faults["fault"]) == set(FAULTS)
    for row in faults.itertuples():
        assert (cohort.out_dir / row.folder).is_dir()
    missing = faults.loc[faults.fault == "missing_report", "accession"].item()
    assert missing not in set(pd.read_csv(cohort.reports_csv)["AccessionNumber"])
    manifest = pd.read_csv(cohort.masks_manifest)
    assert list(manifest.columns) == ["StudyInstanceUID", "mask_path", "format"]
    assert all((cohort.masks_manifest.parent / p).is_file() for p in manifest.mask_path)


def test_phrase_banks_disjoint_and_reserved_reports_use_only_reserved():
    default = {t for v in BANKS["default"].values() for t in v}
    reserved = {t for v in BANKS["reserved"].values() for t in v}
    assert set(BANKS["default"]) == set(BANKS["reserved"]) and not default & reserved
    text = synthesize_study(replace(SMALL, reserved_phrasing=True), 1).report
    stems = {t.split("{")[0].strip() for t in default if len(t.split("{")[0].strip()) > 15}
    assert not any(s in text for s in stems)
