"""The benchmark cohort (issue 14): organ sizes, varied lesions, imperfect reports, reserved phrasing by split.

Each property is checked against the image, not against numbers copied from a run.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pipeline import vocab
from pipeline.ids import pseudonym
from pipeline.synthetic.anatomy import Alterations, Patient, build_anatomy, drawn_organs, index_of, paint
from pipeline.synthetic.cohort import PRESETS, CohortSpec, cohort_spec, generate_cohort, synthesize_study, volume_ratios
from pipeline.synthetic.findings import CATALOG, SIZES, Finding, sample_findings, varied_sizes
from pipeline.synthetic.lesions import SHAPES, VARIED, LesionDraw, draw_lesion, lesion_count, lesion_row, paint_lesion
from pipeline.synthetic.phrases import BANKS
from pipeline.synthetic.reports import misreport
from pipeline.synthetic.shapes import Grid

LIVER = index_of("liver")
# the benchmark preset on a small, coarse body so a study takes well under a second
SMALL = cohort_spec("benchmark", n_studies=8, seed=4, slice_spacings_mm=(5.0,), body_scale=(0.6, 0.62),
                    matrix_sizes=(256,), pixel_spacing_mm=(1.0, 1.0), faults=False, companion_series_prob=0.0)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return generate_cohort(SMALL, tmp_path_factory.mktemp("bench_cohort"))


def test_presets():
    assert cohort_spec("demo") == CohortSpec()
    bench = cohort_spec("benchmark", n_studies=5)
    assert bench.n_studies == 5 and bench.lesions == "varied" and bench.organ_sizes == "varied"
    assert bench.appearance == "varied" and bench.reserved_for_evaluation and 0 < bench.report_extra < bench.report_omission
    assert set(PRESETS) == {"demo", "benchmark"}
    with pytest.raises(ValueError, match="preset"):
        cohort_spec("hard")
    with pytest.raises(ValueError, match="lesions"):
        CohortSpec(lesions="many")
    with pytest.raises(ValueError, match="share"):
        CohortSpec(report_omission=1.0)


def test_normal_organ_sizes_overlap_the_megaly_range():
    normal = {o: [] for o in SIZES}
    megaly = {o: [] for o in SIZES}
    for n in range(300):
        kinds = [kind for kind, *_ in SIZES.values()] if n % 2 else []
        findings = [Finding(k, (o,)) for k, o in zip(kinds, SIZES)]
        alt, _ = varied_sizes(findings, Alterations(), np.random.default_rng([n, 1]), np.random.default_rng([n, 2]))
        for organ in SIZES:
            (megaly if n % 2 else normal)[organ].append(alt.organ_scale[organ])
    for organ in SIZES:
        assert np.std(normal[organ]) > 0.05  # a real spread between people
        assert max(normal[organ]) > min(megaly[organ])  # size alone cannot tell every "-megaly"
        assert np.median(megaly[organ]) > np.median(normal[organ])


def test_recorded_volume_ratio_is_the_painted_one():
    patient = Patient(scale=0.7, fat_mm=12.0, width=1.0, seed=4)
    alt = Alterations({"liver": 1.25, "spleen": 0.85, "heart": 1.1})
    grid = Grid(np.arange(200.0, -200.0, -3.0), np.arange(200.0, -200.0, -3.0), np.arange(-450.0, 250.0, 3.0))
    base, _ = paint(build_anatomy(patient), grid, patient)
    big, _ = paint(build_anatomy(patient, alt), grid, patient)
    recorded = volume_ratios(patient, alt, tuple(SIZES))
    for organ in SIZES:
        painted = (big == index_of(organ)).sum() / (base == index_of(organ)).sum()
        assert recorded[organ] == pytest.approx(painted, rel=0.03)  # the coarse grid measures what is painted
    assert recorded["liver"] < 1.25**3  # neighbours and the body wall clip an enlarged organ: not the factor cubed
    study = synthesize_study(SMALL, 0)
    scale = json.loads(study.params["organ_scale"])
    gold = {g["organ"]: g for g in study.gold}
    for organ in SIZES:
        assert gold[organ]["size_factor"] == pytest.approx(scale[organ], abs=1e-3)
        assert (gold[organ]["volume_ratio"] > 1) == (scale[organ] > 1)
    assert all(np.isnan(g["volume_ratio"]) for o, g in gold.items() if o not in SIZES)


def _block(shape=(90, 90, 70)) -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros(shape, np.uint8)
    label[5:-5, 5:-5, 5:-5] = LIVER  # an 80 x 80 x 60 mm organ on a 1 mm grid
    return label, np.where(label == LIVER, 60.0, -100.0).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_painted_lesion_matches_its_record(shape):
    spacing = np.ones(3)
    for at_edge, pattern, contrast in ((False, "solid", -4.0), (True, "rim", -40.0), (False, "necrotic", 35.0)):
        label, hu = _block()
        before = hu.copy()
        draw = LesionDraw(22.0, contrast, pattern, shape, at_edge)
        inside, box, organ_hu = paint_lesion(draw, "liver_mass", LIVER, label, hu, spacing, np.random.default_rng(1))
        mask = np.zeros(label.shape, bool)
        mask[box] = inside
        assert organ_hu == 60.0
        np.testing.assert_array_equal(hu != before, mask & (hu != before))  # nothing painted outside the mask
        assert (label[mask] == LIVER).all()  # clipped to the organ label
        row = lesion_row("liver_mass", "liver", 0, inside, box, label, hu, LIVER, organ_hu, spacing, draw)
        assert row["voxels"] == mask.sum() and row["extent_mm"] <= draw.diameter_mm + 2  # within the drawn diameter
        assert row["touches_capsule"] == at_edge  # a deep 22 mm lesion in a 60 mm slab stays inside
        values = hu[mask]
        if pattern == "solid":
            assert abs(row["mean_contrast_hu"]) < 10.0 and np.allclose(values, 56.0)  # iso-intense at noise 10
        elif pattern == "rim":
            assert values.max() > 60.0 > values.min()  # an enhancing shell around a duller centre
        else:
            assert values.min() < 25.0 and values.max() == pytest.approx(95.0)  # fluid core, solid wall


def test_lesion_draws_span_the_issue_ranges():
    rng = np.random.default_rng(0)
    draws = [draw_lesion("liver_mass", 15.0, rng) for _ in range(600)]
    diam = np.array([d.diameter_mm for d in draws])
    assert diam.min() >= 5.0 and diam.max() <= 50.0 and diam.min() < 7 and diam.max() > 40
    assert {d.pattern for d in draws} == {"solid", "rim", "necrotic"} and {d.shape for d in draws} == set(SHAPES)
    iso = [abs(d.contrast_hu) < 15.0 for d in draws]
    assert 0.1 < np.mean(iso) < 0.4 and max(abs(d.contrast_hu) for d in draws) > 80
    assert 0.15 < np.mean([d.at_edge for d in draws]) < 0.45
    assert {lesion_count(rng) for _ in range(200)} == {1, 2, 3}  # sometimes several in one organ


def test_cohort_lesion_table_matches_the_image(cohort):
    table = pd.read_parquet(cohort.truth_dir / "lesions.parquet")
    varied = table[table["kind"].isin(VARIED)]
    assert len(varied) and varied["diameter_mm"].between(5.0, 50.0).all()
    assert (varied["extent_mm"] <= varied["diameter_mm"] + 2 * 5.0).all()  # never beyond the drawn size (5 mm slices)
    from pipeline.volume import load_nifti

    for study in cohort.studies.itertuples():
        rows = table[table["study_uid"] == study.study_uid]
        tumor = rows.loc[[CATALOG[k].tumor for k in rows["kind"]]]
        lesions = load_nifti(cohort.truth_dir / "lesions" / f"{study.study_uid}.nii.gz").array
        # lesions of one organ may overlap, never exceed the voxels recorded
        assert lesions.sum() <= tumor["voxels"].sum() and (lesions.sum() > 0) == (len(tumor) > 0)


def test_iso_intense_lesions_are_below_the_noise_in_the_image(monkeypatch):
    from scipy.ndimage import binary_dilation

    import pipeline.synthetic.lesions

    monkeypatch.setattr(pipeline.synthetic.lesions, "ISO_SHARE", 1.0)  # every solid lesion iso-intense: found sooner
    checked = 0
    for index in range(40):
        study = synthesize_study(replace(SMALL, n_studies=40), index)
        for row in study.lesion_rows:
            alone = sum(r["organ"] == row["organ"] for r in study.lesion_rows) == 1  # the mask holds this lesion only
            # away from the capsule: there the slice blur mixes in the neighbour (partial volume), as it should
            inner = not row["touches_capsule"]
            if not (alone and inner and row["iso_intense"] and CATALOG[row["kind"]].tumor and row["voxels"] >= 20):
                continue
            organ = study.labels == index_of(row["organ"])
            lesion = study.lesions.astype(bool) & organ
            shell = binary_dilation(lesion, iterations=3) & organ & ~lesion
            diff = float(study.hu[lesion].mean()) - float(study.hu[shell].mean())
            assert abs(diff) < row["noise_hu"], row  # the lesion hides in the noise
            checked += 1
        if checked:
            break
    assert checked, "no lone iso-intense tumor drawn in 40 studies"


def test_report_omissions_and_extra_mentions_match_their_shares():
    organs = set(drawn_organs())
    omitted = reported = extra = image = 0
    for n in range(1500):
        rng = np.random.default_rng([n, 9])
        findings = sample_findings(rng, organs)
        said = misreport(findings, organs, 0.15, 0.05, rng)
        image += len(findings)
        omitted += len(said.omitted)
        reported += len(said.reported)
        extra += len(said.report_only)
        busy = {o for f in findings for o in f.organs}
        assert all(o not in busy for f in said.report_only for o in f.organs)  # the image shows nothing there
        assert all(any(f is g for g in findings) for f in said.omitted)
    assert omitted / image == pytest.approx(0.15, abs=0.02)
    assert extra / reported == pytest.approx(0.05, abs=0.015)


def test_report_only_and_omitted_findings_are_recorded_where_they_are():
    spec = replace(SMALL, report_omission=0.5, report_extra=0.3, n_studies=6)
    seen_extra = seen_omitted = 0
    for index in range(6):
        study = synthesize_study(spec, index)
        for g in study.gold:
            if g["report_only_kinds"]:
                seen_extra += 1
                assert g["image_status"] == "normal" and g["report_status"] in ("abnormal", "uncertain")
                assert not g["abnormalities"] and g["report_abnormalities"]
            if g["omitted_kinds"]:
                seen_omitted += 1
                assert g["image_status"] == "abnormal"
                assert set(g["omitted_kinds"]) <= set(g["kinds"])
    assert seen_extra and seen_omitted


def test_validation_and_test_reports_use_only_the_reserved_phrasing(cohort):
    studies = cohort.studies
    assert set(studies["split"]) >= {"train"} and (studies["split"] != "train").any()
    assert (studies["reserved_phrasing"] == (studies["split"] != "train")).all()
    reports = pd.read_csv(cohort.reports_csv).set_index("AccessionNumber")["ReportText"]

    def stems(bank):
        return {t.split("{")[0].strip() for v in BANKS[bank].values() for t in v if len(t.split("{")[0].strip()) > 15}

    default, reserved = stems("default"), stems("reserved")
    for row in studies.itertuples():
        text = reports[row.accession]
        assert not any(s in text for s in (default if row.reserved_phrasing else reserved)), row.split
    # the split the generator expects is the one pairs will give: same hash of the same pseudonym
    from pipeline.pairs import PairConfig, assign_split

    study = synthesize_study(SMALL, 0)
    pid = pd.Series([pseudonym("patient", study.header.patient_id)])
    assert assign_split(pid, PairConfig().split_ratios, PairConfig().split_salt).iloc[0] == study.params["split"]


def test_rule_accuracy_on_reserved_phrasing_is_in_the_metadata(cohort):
    from assets.reports import _accuracy_metadata, read_reports
    from pipeline.report import extract_table_checked

    reports = read_reports(cohort.reports_csv, "ReportText", "AccessionNumber")
    findings, _ = extract_table_checked(reports, "text", "report_id")
    meta = _accuracy_metadata(findings, set(reports["report_id"]), cohort.truth_dir)
    held = meta["reserved_phrasing_accuracy"].value
    assert 0 < held["n_reports"] < len(reports) and 0.0 <= meta["reserved_phrasing_status_macro_f1"] <= 1.0
    assert 0.0 <= meta["status_macro_f1"] <= 1.0


def test_evaluation_takes_labels_from_the_image_truth(tmp_path):
    from model.eval.data import image_truth_labels

    truth = tmp_path / "source" / "truth"
    truth.mkdir(parents=True)
    pd.DataFrame({
        "study_uid": ["1.2.3", "1.2.3", "1.2.4"], "organ": ["liver", "spleen", "liver"],
        "image_status": ["abnormal", "normal", "normal"], "abnormalities": [["mass"], [], []],
        "report_status": ["normal", "abnormal", "normal"],  # the report missed the mass and over-called the spleen
    }).to_parquet(truth / "organ_gold.parquet")
    a, b = pseudonym("study", "1.2.3"), pseudonym("study", "9.9")
    rows = pd.DataFrame({"study_id": [a, a, b], "organ": ["liver", "spleen", "liver"], "split": "val",
                         "status": ["normal", "abnormal", "abnormal"], "abnormalities": [[], ["splenomegaly"], ["cyst"]]})
    out, n = image_truth_labels(tmp_path, rows)
    assert n == 2
    assert out["status"].tolist() == ["abnormal", "normal", "abnormal"]  # the study without truth keeps its report label
    assert out["abnormalities"].tolist() == [["mass"], [], ["cyst"]]
    assert vocab.organ("liver").index_v2 == LIVER
