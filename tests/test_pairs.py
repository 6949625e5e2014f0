"""Pair mining on tiny hand-made tables: every pair and every refusal is explained."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.pairs import PairConfig, PairInputs, assign_split, mine_pairs
from pipeline.vocab import readable


def _stats(study: str, organ: str, index: int, cut: bool = False, flags: list[str] | None = None) -> dict:
    return {
        "study_id": study, "organ": organ, "index_v2": index, "volume_ml": 100.0,
        "bbox_vox": [0, 0, 0, 5, 5, 5], "bbox_mm": [0.0] * 6, "cut_by_fov": cut, "quality_flags": flags or [],
    }


@pytest.fixture()
def inputs() -> PairInputs:
    studies = pd.DataFrame({
        "study_id": ["stu-a", "stu-b", "stu-c"],
        "patient_id": ["pat-1", "pat-1", "pat-2"],
        "report_id": ["rep-a", "rep-b", "rep-missing"],
        "volume_path": ["v/a.nii.gz", "v/b.nii.gz", "v/c.nii.gz"],
    })
    stats = pd.DataFrame([
        _stats("stu-a", "liver", 5), _stats("stu-a", "spleen", 1), _stats("stu-a", "kidney_left", 3, cut=True),
        _stats("stu-a", "gallbladder", 4, flags=["too_small"]),
        _stats("stu-b", "liver", 5), _stats("stu-c", "liver", 5),
    ])
    findings = pd.DataFrame([
        {"report_id": "rep-a", "organ": "liver", "status": "abnormal", "abnormality": "cyst",
         "sentence": "A 12 mm hepatic cyst.", "section": "findings"},
        {"report_id": "rep-a", "organ": "liver", "status": "abnormal", "abnormality": "cyst",
         "sentence": "A 12 mm hepatic cyst.", "section": "impression"},
        {"report_id": "rep-a", "organ": "pancreas", "status": "normal", "abnormality": None,
         "sentence": "The pancreas is normal.", "section": "findings"},
        {"report_id": "rep-b", "organ": "liver", "status": "uncertain", "abnormality": "mass",
         "sentence": "Possible liver mass.", "section": "findings"},
    ])
    return PairInputs(studies, stats, findings, frozenset({"rep-a", "rep-b"}), {"stu-a": "m/a.nii.gz"})


def test_pairs_and_exclusions(inputs):
    out = mine_pairs(inputs, PairConfig(), negatives_for=lambda organ: ["cyst", "mass", "steatosis", "hepatomegaly"])
    pairs = out.grounded_pairs.set_index(["study_id", "organ"])
    assert set(pairs.index) == {("stu-a", "liver"), ("stu-a", "spleen"), ("stu-b", "liver")}
    liver = pairs.loc[("stu-a", "liver")]
    assert liver["text"] == "A 12 mm hepatic cyst."  # deduplicated across findings and impression
    assert liver["status"] == "abnormal" and list(liver["abnormalities"]) == ["cyst"]
    assert liver["text_source"] == "report" and liver["mask_path"] == "m/a.nii.gz"
    spleen = pairs.loc[("stu-a", "spleen")]
    assert spleen["text_source"] == "template" and spleen["status"] == "normal"
    assert spleen["text"] == "The spleen is unremarkable."
    assert pairs.loc[("stu-b", "liver")]["status"] == "uncertain"

    reasons = {(r.study_id, r.organ): r.reason for r in out.pair_exclusions.itertuples()}
    assert reasons == {
        ("stu-a", "kidney_left"): "cut_by_fov",
        ("stu-a", "gallbladder"): "too_small",
        ("stu-a", "pancreas"): "described_not_segmented",
        ("stu-c", "liver"): "study_without_report",
    }


@pytest.mark.parametrize(("rule", "kept"), [
    (PairConfig(cut_organs="exclude"), set()),
    (PairConfig(cut_organs="keep_flagged"), {"kidney_left", "kidney_right", "stomach"}),
    (PairConfig(cut_organs="keep_if_inside", max_cut_face_ratio=0.5), {"kidney_left"}),
    (PairConfig(cut_organs="keep_if_inside", max_cut_face_ratio=0.8), {"kidney_left", "kidney_right"}),
])
def test_cut_organ_rule(inputs, rule, kept):
    stats = pd.concat([inputs.organ_stats, pd.DataFrame([
        _stats("stu-a", "kidney_right", 2, cut=True), _stats("stu-a", "stomach", 6, cut=True)])], ignore_index=True)
    # kidney_left tapers out at the cut, kidney_right is cut wider, the stomach's ratio is unknown (an old table)
    stats["cut_face_ratio"] = stats["organ"].map({"kidney_left": 0.3, "kidney_right": 0.7}).fillna(0.0)
    stats.loc[stats["organ"] == "stomach", "cut_face_ratio"] = float("nan")
    out = mine_pairs(PairInputs(inputs.studies, stats, inputs.findings, inputs.report_ids, inputs.mask_paths), rule)
    pairs = out.grounded_pairs
    assert set(pairs.loc[pairs["cut_by_fov"], "organ"]) == kept
    assert (pairs["cut_rule"] == rule.cut_rule).all()
    cut_excluded = set(out.pair_exclusions.loc[out.pair_exclusions["reason"] == "cut_by_fov", "organ"])
    assert cut_excluded == {"kidney_left", "kidney_right", "stomach"} - kept
    assert not pairs.loc[~pairs["cut_by_fov"], "organ"].isin(["kidney_left", "kidney_right", "stomach"]).any()


def test_cut_rule_is_checked_and_named():
    assert PairConfig().cut_rule == "keep_if_inside:0.5"
    assert PairConfig(cut_organs="exclude").cut_rule == "exclude"
    with pytest.raises(ValueError, match="cut_organs"):
        PairConfig(cut_organs="drop")


def test_abnormality_pairs_draw_dictionary_negatives_by_seed(inputs):
    negs = lambda organ: ["cyst", "mass", "steatosis", "hepatomegaly"]  # noqa: E731
    a = mine_pairs(inputs, PairConfig(n_negatives=2, seed=1), negatives_for=negs).abnormality_pairs
    b = mine_pairs(inputs, PairConfig(n_negatives=2, seed=1), negatives_for=negs).abnormality_pairs
    assert len(a) == 1
    row = a.iloc[0]
    assert row["abnormality"] == "cyst" and row["positive_text"] == "A 12 mm hepatic cyst."
    assert len(row["negatives"]) == 2 and all("cyst" not in n for n in row["negatives"])
    assert all(n.endswith("of the liver") for n in row["negatives"])
    assert list(a["negatives"].iloc[0]) == list(b["negatives"].iloc[0])


def test_split_is_per_patient_and_stable():
    patients = pd.Series([f"pat-{i % 50}" for i in range(200)])
    split = assign_split(patients, (0.7, 0.15, 0.15), "salt")
    assert (split.groupby(patients).nunique() == 1).all()
    assert set(split) == {"train", "val", "test"}
    again = assign_split(patients.iloc[::-1].reset_index(drop=True), (0.7, 0.15, 0.15), "salt")
    assert dict(zip(patients, split)) == dict(zip(patients.iloc[::-1], again))


def test_readable_names():
    assert readable("kidney_left") == "left kidney"
    assert readable("lung_lower_lobe_right") == "right lung lower lobe"
    assert readable("liver") == "liver"


def test_region_findings_are_excluded_with_a_reason_of_their_own(inputs):
    """Lymph nodes, pleura and the like have no organ mask: never a grounded pair, one exclusion per region."""
    region = pd.DataFrame([
        {"report_id": "rep-a", "organ": None, "region": "lymph_node", "status": "abnormal", "abnormality": "lymphadenopathy",
         "sentence": "Mediastinal lymph nodes up to 15 mm.", "section": "findings"},
        {"report_id": "rep-a", "organ": None, "region": "pleura", "status": "normal", "abnormality": None,
         "sentence": "No pleural effusion.", "section": "findings"},
        {"report_id": "rep-a", "organ": None, "region": "pleura", "status": "abnormal", "abnormality": "pleural thickening",
         "sentence": "Left pleural thickening.", "section": "findings"},
    ])
    findings = pd.concat([inputs.findings.assign(region=None), region], ignore_index=True)
    out = mine_pairs(PairInputs(inputs.studies, inputs.organ_stats, findings, inputs.report_ids, inputs.mask_paths))
    assert out.grounded_pairs["organ"].notna().all()
    rows = out.pair_exclusions[out.pair_exclusions["reason"] == "region_without_mask"]
    assert sorted(zip(rows["study_id"], rows["region"], rows["status"])) == [
        ("stu-a", "lymph_node", "abnormal"), ("stu-a", "pleura", "abnormal")]
    assert rows["organ"].isna().all()


def test_study_text_of_a_report_without_headers(inputs):
    """Real reports often have no FINDINGS/IMPRESSION headers: their sentences are in section "body"."""
    findings = inputs.findings.assign(section="body")
    texts = mine_pairs(PairInputs(inputs.studies, inputs.organ_stats, findings, inputs.report_ids, inputs.mask_paths)).study_texts
    text = texts.set_index("study_id")["text"]
    assert text["stu-a"] == "A 12 mm hepatic cyst. The pancreas is normal."
    assert text["stu-b"] == "Possible liver mass."
