"""Organ placement and US/UK report style (issue 31), on sentences written for these tests: findings placed beside an
organ, organs named after the finding, organ-state diagnoses, vertebrae and ribs by number, sizes, contours, the
regions without a mask, surgical states, stability and quantity words, list items, and negation scoped to its
organ."""

from __future__ import annotations

import pytest

from pipeline import vocab
from pipeline.report import extract_findings

RIGHT_LUNG = {"lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right"}


def places(text: str, status: str | None = "abnormal") -> set[tuple[str, str | None]]:
    """(organ or region, abnormality) of the findings of one status (all statuses with None)."""
    return {(f.organ or f.region, f.abnormality) for f in extract_findings(text) if status in (None, f.status)}


@pytest.mark.parametrize("text, expected", [
    # a finding placed beside an organ sits there when its clause names no place of its own
    ("There is fluid next to the gallbladder neck.", {("gallbladder", "fluid")}),
    ("Minimal pericholecystic fluid is noted.", {("gallbladder", "fluid")}),
    ("A perisplenic cystic mass.", {("spleen", "cyst"), ("spleen", "mass")}),
    ("A mass between the left kidney and the pancreas.", {("kidney_left", "mass"), ("pancreas", "mass")}),
    ("A left upper abdominal mass invading the pancreatic tail and the spleen.", {("pancreas", "mass"), ("spleen", "mass")}),
    ("Fat stranding in the right perirenal space.", {("kidney_right", "inflammation")}),
    # ... and its own place wins where it has one
    ("A perihepatic peritoneal nodule.", set()),
    ("A cyst in the right kidney adjacent to the liver.", {("kidney_right", "cyst")}),
    # its clause names where it is, and an aortic plaque cannot be there: no finding rather than the aorta's
    ("Calcified plaque in the pleura adjacent to the aorta.", set()),
])
def test_findings_placed_beside_an_organ(text, expected):
    assert places(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Reduced attenuation in keeping with fatty infiltration is noted in the liver.", {("liver", "steatosis")}),
    ("A decrease in density consistent with hepatosteatosis is observed in the liver.", {("liver", "steatosis")}),
    ("Liver parenchyma density was diffusely decreased, compatible with fatty deposits.", {("liver", "steatosis")}),
    ("The liver surface is nodular.", {("liver", "cirrhosis")}),
])
def test_the_organ_named_after_the_finding_and_contours(text, expected):
    assert places(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Hepatosteatosis.", {("liver", "steatosis")}),
    ("A small hiatal hernia.", {("esophagus", "hiatal hernia"), ("stomach", "hiatal hernia")}),
    ("A sliding hernia at the gastro-oesophageal junction.", {("esophagus", "hiatal hernia"), ("stomach", "hiatal hernia")}),
    ("Mild scoliosis.", {("spine", "scoliosis")}),
    ("Cardiomegaly.", {("heart", "cardiomegaly")}),
    ("Coronary calcification.", {("heart", "coronary artery calcification")}),
    ("Bilateral gynecomastia.", {("breast", "enlargement")}),
])
def test_organ_state_diagnoses_name_their_organ(text, expected):
    assert places(text) == expected


@pytest.mark.parametrize("text, expected", [
    # a vertebra counted without its section is thoracic: a chest CT counts the vertebrae that carry ribs
    ("A fracture of the left transverse process of the 11th vertebra.", {("vertebrae_T11", "fracture")}),
    ("Compression fracture of the ninth vertebral body.", {("vertebrae_T9", "fracture")}),
    ("Wedging of the 2nd lumbar vertebra.", {("vertebrae_L2", "fracture")}),
    ("Old fracture of the right 6th rib.", {("rib_right_6", "fracture")}),
    ("The 7th rib on the left shows a healed fracture.", {("rib_left_7", "fracture")}),
])
def test_vertebrae_and_ribs_by_number(text, expected):
    assert places(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("The ascending aorta measures 41 mm.", {("aorta", "aneurysm")}),
    ("The ascending aorta measures 36 mm.", set()),
])
def test_a_property_stated_as_a_measure(text, expected):
    assert places(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("A 12 mm nodule in the left breast.", {("breast", "nodule")}),
    ("Enhancing right axillary mass.", {("chest_wall", "mass")}),
    ("Subcutaneous lipoma of the anterior abdominal wall.", {("soft_tissue", "mass")}),
    ("A lytic lesion of the sternum with a chest wall mass.", {("sternum", "lytic lesion"), ("chest_wall", "mass")}),
])
def test_regions_without_a_mask_keep_their_findings(text, expected):
    """Breast, chest wall and soft tissue are regions (they were places findings were dropped in)."""
    assert places(text) == expected
    assert {f.region for f in extract_findings(text) if f.organ is None} <= {"breast", "chest_wall", "soft_tissue"}


@pytest.mark.parametrize("text, expected", [
    ("S/p cholecystectomy.", {("gallbladder", "surgical change")}),
    ("Status post median sternotomy.", {("sternum", "surgical change")}),
    ("Status post right lobectomy.", {(o, "surgical change") for o in RIGHT_LUNG}),
    ("History of splenectomy.", {("spleen", "surgical change")}),
    ("The gallbladder was not observed (operated).", {("gallbladder", "surgical change")}),
    ("The right kidney was not observed secondary to the operation.", {("kidney_right", "surgical change")}),
    ("The patient underwent coronary bypass surgery.", {("heart", "surgical change")}),
])
def test_an_organ_operated_or_removed_is_a_finding_of_its_own(text, expected):
    assert places(text) == expected


@pytest.mark.parametrize("text, status", [
    ("Trace right pleural effusion.", "abnormal"),
    ("Small left pleural effusion, unchanged.", "abnormal"),
    ("Tiny left pleural effusion, stable from prior.", "abnormal"),
    ("New small left pleural effusion since the prior study.", "abnormal"),
    ("The previously seen left pleural effusion has resolved.", "normal"),
    ("Interval resolution of the left pleural effusion.", "normal"),
])
def test_stability_and_quantity_words(text, status):
    assert {f.status for f in extract_findings(text) if f.region == "pleura"} == {status}


@pytest.mark.parametrize("text, expected", [
    ("*4 mm nodule, right upper lobe (series 3, image 88).", {("lung_upper_lobe_right", "nodule")}),
    ("Lung nodule, left upper lobe.", {("lung_upper_lobe_left", "nodule")}),
    ("- 5 mm ground glass nodule, right lower lobe, lung (image 112).", {("lung_lower_lobe_right", "nodule")}),
    ("Small nodule, right lower lobe (RLL), lung, chest.", {("lung_lower_lobe_right", "nodule")}),
])
def test_list_items_with_a_place_after_the_finding(text, expected):
    assert places(text) == expected


def test_negation_is_scoped_to_the_organ_its_sentence_names():
    text = "No adrenal nodules. 4 mm nodule in the right upper lobe. No pericardial effusion. Small right pleural effusion."
    assert places(text) == {("lung_upper_lobe_right", "nodule"), ("pleura", "pleural effusion")}
    assert {p for p, _ in places(text, "normal")} == {"adrenal_gland_left", "adrenal_gland_right", "heart"}


@pytest.mark.parametrize("text, expected", [
    ("Right upper pole renal low attenuation lesion.", {("kidney_right", "lesion")}),
    ("Solid left renal mass in the medial mid kidney.", {("kidney_left", "mass")}),
    ("Left perisplenic perirenal low attenuation mass.", {("spleen", "mass"), ("kidney_left", "mass")}),
])
def test_a_side_holds_across_part_words_and_repeated_names(text, expected):
    assert places(text) == expected


def test_a_finding_after_an_introduction_is_placed_by_its_own_sentence():
    """"In the evaluation of both lung parenchyma;" introduces; its lungs are context, not the nodule's place."""
    text = "In the evaluation of both lung parenchyma; a nodule was observed in the middle zone of the right lung."
    assert places(text) == {(o, "nodule") for o in RIGHT_LUNG}


def test_a_word_describing_a_lymph_node_is_no_finding_of_its_own():
    assert places("Calcified lymph nodes in the subcarinal area.", None) == {("lymph_node", None)}
    assert places("Borderline enlarged left paraaortic lymph node.", None) == {("lymph_node", "lymphadenopathy")}  # hedged
    assert places("Lymph nodes in the paratracheal region showing increased size.") == {("lymph_node", "lymphadenopathy")}


def test_every_new_region_is_a_region_of_the_contract():
    from pipeline.report.finding import REGIONS

    assert {"chest_wall", "breast", "soft_tissue"} <= set(REGIONS)
    assert not {"chest_wall", "breast", "soft_tissue"} & set(vocab.organs())
