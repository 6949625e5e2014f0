"""Report rules on real language: each real CT-RATE sentence quoted in issue 13 (and two short ones in the
same style) pinned to its expected findings; regions without an organ mask; exact anatomy; CT-RATE labels."""

from __future__ import annotations

import pytest

from pipeline.report import extract_findings
from pipeline.report.labels import ctrate_labels
from pipeline.vocab import CTRATE_LABELS

UPPER = {"lung_upper_lobe_left", "lung_upper_lobe_right"}
LOWER = {"lung_lower_lobe_left", "lung_lower_lobe_right"}


def places(text: str, status: str | None = None) -> set[tuple[str, str | None]]:
    """(organ or region, abnormality) of the findings, optionally of one status."""
    return {(f.organ or f.region, f.abnormality) for f in extract_findings(text) if status in (None, f.status)}


def abnormal_places(text: str) -> set[str]:
    return {f.organ or f.region for f in extract_findings(text) if f.status == "abnormal"}


def test_passive_negation_of_a_hyphenated_compound():
    fs = extract_findings("Pericardial effusion-thickening was not observed.")
    assert {(f.organ, f.status) for f in fs} == {("heart", "normal")}
    assert set(fs[0].negated) == {"pericardial effusion"}
    fs = extract_findings("Pleural effusion-thickening was not detected.")
    assert {(f.region, f.status) for f in fs} == {("pleura", "normal")}
    assert set(fs[0].negated) == {"pleural effusion", "pleural thickening"}


def test_sequelae_density_increase_in_both_apexes():
    text = "Pleuroparenchymal sequelae density increases were observed in both lung apexes."
    assert abnormal_places(text) == UPPER
    assert {a for _, a in places(text, "abnormal")} == {"fibrotic change"}


@pytest.mark.parametrize("text", ["Heart size increased.", "The cardiothoracic index increased in favor of the heart."])
def test_size_statements_make_cardiomegaly(text):
    assert places(text) == {("heart", "cardiomegaly")}


def test_calcific_atheroma_plaques_in_the_aortic_wall():
    assert places("There are millimetric calcific atheroma plaques in the walls of the aorta.") == {("aorta", "aortic calcification")}


@pytest.mark.parametrize("text", [
    "No enlarged lymph nodes in prevascular, pre-paratracheal, subcarinal or bilateral hilar-axillary pathological dimensions were detected.",
    "No enlarged lymph nodes in pathological dimensions were detected.",
    "Pathological size and configuration of lymph nodes are not observed at both hilar levels.",
])
def test_negated_lymph_nodes_are_a_normal_region(text):
    fs = extract_findings(text)
    assert {(f.organ, f.region, f.status) for f in fs} == {(None, "lymph_node", "normal")}


@pytest.mark.parametrize("text", [
    "Mediastinal lymph nodes are observed.", "Right upper paratracheal millimetric lymph node is observed.",
    "Lymph nodes with a short axis less than 1 cm that did not reach pathological dimensions were observed.",
    "Except for a few small lymph nodes in the mediastinum, no lymph node of pathological size was observed.",
])
def test_lymph_nodes_described_without_enlargement_are_normal(text):
    """A lymph node is lymphadenopathy only where the text says it is enlarged or pathological (issue 31)."""
    assert places(text) == {("lymph_node", None)}
    # CT-RATE's manual labels count such nodes: its label mapping does too
    assert ctrate_labels(extract_findings(text))["Lymphadenopathy"] == 1


@pytest.mark.parametrize("text", [
    "There are lymph nodes in the mediastinum and hilar regions, the largest 12 mm in short axis.",
    "Enlarged lymph nodes with nodular configuration are seen in the mediastinum.",
    "Pathologically sized lymph nodes were observed in the mediastinum.",
    "A lymph node measuring 15x16 mm is observed at the right hilar level.",
])
def test_lymph_nodes_enlarged_or_pathological_are_lymphadenopathy(text):
    assert ("lymph_node", "lymphadenopathy") in places(text, "abnormal")
    assert all(f.organ is None for f in extract_findings(text) if f.region == "lymph_node")


def test_consolidative_density_with_segments_of_one_side():
    text = ("Consolidative density increases with air bronchograms are observed in almost all basal segments, "
            "especially in the lower lobe superior segment of the right lung.")
    assert places(text, "abnormal") == {(o, "consolidation") for o in LOWER}


def test_a_vertebra_without_a_level_is_one_spine_finding():
    fs = extract_findings("Degenerative osteophytes were observed at the vertebra endplate corners.")
    assert [(f.organ, f.region, f.abnormality) for f in fs] == [(None, "spine", "degenerative change")]
    assert places("Compression fracture of the T7 vertebra.") == {("vertebrae_T7", "fracture")}


@pytest.mark.parametrize("text, levels", [
    ("Wedging compatible with a compression fracture in the 7th thoracic vertebra.", ["T7"]),
    ("A compression fracture of the twelfth thoracic vertebral body.", ["T12"]),
    ("Lytic lesions in the first 5 thoracic vertebrae.", ["T1", "T2", "T3", "T4", "T5"]),
    ("Lytic lesions in the lower two lumbar vertebrae.", ["L4", "L5"]),
])
def test_vertebral_levels_written_as_counts(text, levels):
    assert abnormal_places(text) == {f"vertebrae_{level}" for level in levels}


def test_a_metastatic_mass_is_a_metastasis():
    assert places("Lytic expanded metastatic mass lesions in C6 and C7.", "abnormal") == {
        (f"vertebrae_{level}", name) for level in ("C6", "C7") for name in ("lytic lesion", "metastasis")}


def test_apexes_are_upper_lobes_of_the_named_side():
    assert abnormal_places("Emphysema in both lung apexes.") == UPPER
    assert abnormal_places("A nodule is seen in the apex of the right lung.") == {"lung_upper_lobe_right"}
    assert abnormal_places("Apical paraseptal emphysema on the left.") == {"lung_upper_lobe_left"}
    assert abnormal_places("A nodule in the lingula.") == {"lung_upper_lobe_left"}


@pytest.mark.parametrize("text,region", [
    ("A port catheter is observed in the right internal jugular vein.", "medical_material"),
    ("Sternotomy sutures and a prosthetic valve are present.", "medical_material"),
    ("Right pleural effusion.", "pleura"),
    ("Left pleural thickening.", "pleura"),
    ("A mass is present in the anterior mediastinum.", "mediastinum"),
])
def test_regions_without_an_organ_mask(text, region):
    assert region in abnormal_places(text)


def test_region_findings_keep_their_side():
    fs = [f for f in extract_findings("Right pleural effusion and left pleural thickening.") if f.region == "pleura"]
    assert {(f.side, f.abnormality) for f in fs} == {("right", "pleural effusion"), ("left", "pleural thickening")}


@pytest.mark.parametrize("text,status", [
    ("A hypodense lesion was observed in the left lobe of the liver (cyst?).", "uncertain"),
    ("Nodular opacity in the right lower lobe? Atelectasis?", "uncertain"),
    ("The lesions in the liver described in the previous examination could not be selected in this examination.", "normal"),
    ("No nodule was detected in the lung parenchyma.", "normal"),
    ("A nodule is not seen in the right lung.", "normal"),
])
def test_hedges_and_passive_negation(text, status):
    assert {f.status for f in extract_findings(text)} == {status}


def test_bulleted_and_quoted_impressions():
    text = 'FINDINGS: Heart size is normal. "" • Emphysematous changes in both lungs. • Hiatal hernia.'
    labels = ctrate_labels(extract_findings(text))
    assert labels["Emphysema"] == 1 and labels["Hiatal hernia"] == 1 and labels["Cardiomegaly"] == 0


def test_ctrate_labels_from_findings():
    text = ("Calcific atheroma plaques in the aorta and coronary arteries. Heart size increased. Pericardial effusion was "
            "not observed. Mediastinal lymph nodes up to 15 mm. Ground-glass density increases in the right lower lobe. "
            "Pleural effusion is not seen. A 4 mm nodule in the left upper lobe. A catheter is observed.")
    labels = ctrate_labels(extract_findings(text))
    assert list(labels) == list(CTRATE_LABELS)
    positive = {k for k, v in labels.items() if v}
    assert positive == {"Arterial wall calcification", "Coronary artery wall calcification", "Cardiomegaly",
                        "Lymphadenopathy", "Lung opacity", "Lung nodule", "Medical material"}


@pytest.mark.parametrize("text,expected", [
    ("The ascending aorta diameter is 45 mm.", {("aorta", "aneurysm")}),  # the aorta's by_organ name for dilatation
    ("Pulmonary artery diameter was measured as 32 mm.", {("pulmonary_artery", "dilatation")}),
    ("Ascending aorta diameter was measured as 36 mm.", set()),
    ("Ectatic ascending aorta.", {("aorta", "aneurysm")}),
])
def test_vessel_diameters_above_their_limit_are_dilated(text, expected):
    assert places(text, "abnormal") == expected


def test_loose_vessel_names_carry_findings_but_no_normal_statement():
    assert places("The heart and mediastinal vascular structures have a natural appearance.") == {("heart", None)}
    assert ("aorta", "aortic calcification") in places("Calcified atheroma plaques in the mediastinal main vascular "
                                                      "structures.", "abnormal")
    assert places("The thoracic aorta is normal in caliber.") == {("aorta", None)}


@pytest.mark.parametrize("text", [
    "No finding in favor of pneumonia was detected.",
    "There was no finding in favor of a mass lesion in the lung parenchyma.",
])
def test_a_negated_hedge_is_a_negation(text):
    assert {f.status for f in extract_findings(text)} == {"normal"}


def test_an_observed_density_read_in_favor_of_a_finding_is_that_finding():
    """"In favor of" names what an observed descriptor is (as "suspicious for" does); said of nothing observed, it
    stays a hedge."""
    text = "Linear opacities in both lungs evaluated primarily in favor of atelectasis."
    assert {f.status for f in extract_findings(text)} == {"abnormal"}
    assert {a for _, a in places(text)} == {"atelectasis"}
    assert {f.status for f in extract_findings("The findings were evaluated in favor of viral pneumonia.")} == {"uncertain"}
    assert ctrate_labels(extract_findings("There are areas of increase in density evaluated in favor of atelectasis in "
                                          "both lung parenchyma."))["Atelectasis"] == 1


def test_both_pulmonary_arteries_are_the_vessels_not_the_lungs():
    assert places("Both pulmonary arteries are of normal calibre.") == {("pulmonary_artery", None)}


@pytest.mark.parametrize("text,expected", [
    ("The aortic arch measures 30 mm, wider than normal.", set()),
    ("There was no significant difference in the mass in the right lower lobe.", {("lung_lower_lobe_right", "mass")}),
])
def test_comparisons_are_no_normal_statement_nor_negation(text, expected):
    assert places(text, "normal") == set()
    assert places(text, "abnormal") == expected


@pytest.mark.parametrize("text,expected", [
    ("Calcified atherosclerotic changes were observed in the wall of the thoracic aorta.", {("aorta", "aortic calcification")}),
    ("Thickening was observed in both adrenal glands.", {("adrenal_gland_left", "adenoma"), ("adrenal_gland_right", "adenoma")}),
    ("Thickening of the pleura on the right.", {("pleura", "pleural thickening")}),
    ("The diameter of the pulmonary trunk has increased.", {("pulmonary_artery", "dilatation")}),
    ("Schmorl nodule impressions were observed in the thoracic vertebrae end plates.", {("spine", "degenerative change")}),
])
def test_organ_specific_names_of_generic_findings(text, expected):
    assert places(text, "abnormal") == expected


@pytest.mark.parametrize("text", ["No pleural or pericardial effusion was detected.",
                                  "Pleural-pericardial effusion was not detected."])
def test_coordinated_modifiers_share_the_finding(text):
    fs = extract_findings(text)
    assert {(f.organ or f.region, f.status) for f in fs} == {("pleura", "normal"), ("heart", "normal")}
    assert {n for f in fs for n in f.negated} == {"pleural effusion", "pericardial effusion"}


@pytest.mark.parametrize("text,expected", [
    ("CTR is normal.", {("heart", None)}),
    ("No pathological increase in wall thickness was observed in the esophagus.", {("esophagus", None)}),
])
def test_more_normal_statements(text, expected):
    assert places(text, "normal") == expected


def test_calcules_are_stones():
    assert places("There are staghorn type calcules in the right kidney.", "abnormal") == {("kidney_right", "stone")}


def test_post_posed_absent_negates():
    assert {(f.region, f.status) for f in extract_findings("Pleural effusion absent.")} == {("pleura", "normal")}


def test_no_increase_in_a_thickness_finding_negates_it():
    assert places("However, there was no increase in peribronchial wall thickness.", "abnormal") == set()
    # "no increase" alone stays a pseudo-trigger: the nodule is there, its size did not grow
    assert places("No increase in the size of the nodule in the right lower lobe.", "abnormal") == {
        ("lung_lower_lobe_right", "nodule")}


@pytest.mark.parametrize("text, expected", [
    ("There are hypodense nodules.", set()),  # a solid organ's nodule: no lung default
    ("A hypodense nodule was observed in the left thyroid lobe.", {("thyroid_gland", "nodule")}),
    ("Fluid in the form of smearing is observed in the pericardial space.", {("heart", "pericardial effusion")}),
    ("Free fluid is observed in the pelvis.", set()),
    ("Diaphragmatic hernia is observed at the level of the esophagogastric junction.",
     {("stomach", "hiatal hernia"), ("esophagus", "hiatal hernia")}),
    ("There are focal air trapping areas in both lungs.", {(o, "air trapping") for o in UPPER | LOWER | {"lung_middle_lobe_right"}}),
    ("Honeycomb appearance in both lower lobes.", {(o, "interstitial lung disease") for o in LOWER}),
])
def test_placed_findings(text, expected):
    assert places(text, "abnormal") == expected


def test_a_relative_clause_between_commas_keeps_a_finding_with_its_negation():
    text = ("Pneumothorax, which was observed on the right in the previous examination, was not detected in the current "
            "examination.")
    assert places(text) == {("pleura", None)}
    assert places("Pleural effusion, which was not present in the previous examination, is seen on the right.",
                  "abnormal") == {("pleura", "pleural effusion")}



def test_a_reduced_relative_clause_keeps_a_finding_with_its_negation():
    """A participle right after a finding opens a reduced relative clause; a negation after it reaches back over it,
    however long, as over a relative clause between commas."""
    text = ("The ground glass areas observed in the upper lobe of the right lung in the previous examination of the "
            "patient were not observed in this examination.")
    assert places(text) == {("lung_upper_lobe_right", None)}
    text = "The consolidation described in the lower lobe of the right lung on the prior study of 2019 has resolved."
    assert places(text) == {("lung_lower_lobe_right", None)}
    # without the participle the window holds: the effusion is far from the negation, which is the nodule's
    text = ("Pleural effusion in the right hemithorax with compression of the adjacent lower lobe of the right lung "
            "and a nodule in the upper lobe of the left lung are not seen.")
    assert ("pleura", "pleural effusion") in places(text, "abnormal")


def test_an_inline_comparison_holds_one_sentence():
    """A one-statement section written on its header's line ends with its first sentence; the rest is read."""
    text = "Comparison: CT angiography dated 25.12.2019. Calcified plaques are observed in the aortic wall."
    assert places(text, "abnormal") == {("aorta", "aortic calcification")}
    assert places("COMPARISON:\nCT of 2019.\nNodule in the liver.\n\nFINDINGS: Normal spleen.", "abnormal") == set()


@pytest.mark.parametrize("text, status", [
    ("The consolidation in the right lower lobe has significantly regressed.", "abnormal"),  # smaller, not gone
    ("The consolidation in the right lower lobe has completely regressed.", "normal"),
    ("The consolidation in the right lower lobe has partially resolved.", "abnormal"),
    ("In the previous examination, consolidation was seen in the right lower lobe.", None),  # past only
    ("A nodule in the right lower lobe in the previous examination is stable.", "abnormal"),  # past and now
])
def test_regression_and_the_previous_examination(text, status):
    assert {f.status for f in extract_findings(text) if f.organ == "lung_lower_lobe_right"} == ({status} if status else set())
