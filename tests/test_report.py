"""Report rules on hand-written sentences: modifiers, scopes, normal statements, groups and laterality,
organ headers, sections, sentence splitting, measurements, several organs per sentence."""

from __future__ import annotations

import pytest

from pipeline import vocab
from pipeline.report.finding import REGIONS
from pipeline.report.lexicon import REGION
from pipeline.report import abnormalities, abnormalities_for_organ, extract_findings, organ_status, organ_texts

LOBES = set(vocab.groups()["lung"])
LOWER = {"lung_lower_lobe_left", "lung_lower_lobe_right"}


def status(text: str) -> dict[str, str]:
    return organ_status(extract_findings(text))


def abn(text: str, organ: str) -> set[str]:
    return {f.abnormality for f in extract_findings(text) if f.organ == organ and f.abnormality}


@pytest.mark.parametrize("text", [
    "No hepatic mass.", "The liver is without focal lesion.", "Liver negative for mass.",
    "The liver is free of focal lesions.", "Absence of liver mass.", "A liver mass is not seen.",
    "Hepatic mass has been ruled out.", "No evidence of hepatic mass.", "The liver is not enlarged.",
])
def test_negation_makes_the_organ_normal(text):
    fs = extract_findings(text)
    assert organ_status(fs) == {"liver": "normal"}
    assert any(f.negated for f in fs)


@pytest.mark.parametrize("text", [
    "Possible hepatic mass.", "Probable liver cyst.", "Liver lesion may represent a cyst.",
    "A hepatic mass cannot be excluded.", "Findings suspicious for hepatic mass.", "Likely hepatic cyst.",
    "Questionable liver cyst.",
])
def test_uncertainty(text):
    assert status(text) == {"liver": "uncertain"}


@pytest.mark.parametrize("text", [
    "History of hepatic cyst.", "Prior liver mass.",
])
def test_historical_findings_are_not_current(text):
    assert not [f for f in extract_findings(text) if f.status != "normal"]


def test_historical_word_with_persistence_is_current():
    assert status("Previously seen nodule in the left lower lobe is unchanged.") == {"lung_lower_lobe_left": "abnormal"}
    assert status("The previously seen right pleural effusion has resolved.") == {"pleura": "normal"}


@pytest.mark.parametrize("sep", [", but", "; however,", ";", ", although"])
def test_negation_scope_ends_at_terminators(sep):
    fs = status(f"No hepatic mass{sep} there is a splenic cyst.")
    assert fs == {"liver": "normal", "spleen": "abnormal"}


def test_pseudo_negation_keeps_finding():
    assert status("No change in the 4 mm right upper lobe nodule.") == {"lung_upper_lobe_right": "abnormal"}


@pytest.mark.parametrize("text", [
    "The liver is unremarkable.", "Liver within normal limits.", "The liver is normal in size and attenuation.",
    "Liver: no abnormality.", "Liver: no acute findings.", "Normal liver.",
])
def test_normal_statements(text):
    fs = extract_findings(text)
    assert organ_status(fs) == {"liver": "normal"} and fs[0].abnormality is None


def test_lungs_are_clear_and_several_organs_per_sentence():
    assert set(status("The lungs are clear.")) == LOBES
    fs = extract_findings("The liver, spleen, pancreas and adrenal glands are unremarkable.")
    assert {f.organ for f in fs} == {"liver", "spleen", "pancreas", "adrenal_gland_left", "adrenal_gland_right"}
    assert len(fs) == 5 and {f.status for f in fs} == {"normal"}


@pytest.mark.parametrize("text,organs", [
    ("Both kidneys are unremarkable.", {"kidney_left", "kidney_right"}),
    ("The adrenals are normal.", {"adrenal_gland_left", "adrenal_gland_right"}),
    ("Lung bases are clear.", LOWER),
    ("The left lung is clear.", {"lung_upper_lobe_left", "lung_lower_lobe_left"}),
    ("Right renal cyst.", {"kidney_right"}),
    ("Cyst in the left kidney.", {"kidney_left"}),
    ("Right lower lobe nodule.", {"lung_lower_lobe_right"}),
    ("RLL nodule.", {"lung_lower_lobe_right"}),
    ("Cholelithiasis.", {"gallbladder"}),
    ("GB is unremarkable.", {"gallbladder"}),
    ("The IVC is patent.", {"inferior_vena_cava"}),
    ("The thoracic aorta is normal in caliber.", {"aorta"}),
    ("Compression fracture of the L1 vertebral body.", {"vertebrae_L1"}),
    ("Left 5th rib fracture.", {"rib_left_5"}),
    ("Splenic cyst.", {"spleen"}),
    ("T11-L1 compression deformities.", {"vertebrae_T11", "vertebrae_T12", "vertebrae_L1"}),
])
def test_groups_and_laterality(text, organs):
    assert set(status(text)) == organs


def test_osseous_structures_cover_the_skeleton():
    organs = set(status("The osseous structures are intact."))
    # the spine named without a level is one region, not 26 vertebrae
    assert {"spine", "rib_left_5", "sternum", "hip_left"} <= organs and "liver" not in organs
    assert not any(o.startswith("vertebrae_") for o in organs)


def test_default_organs_and_side_words():
    # pleural findings sit on the pleura (a region without an organ mask), with their side
    assert [(f.region, f.side, f.status) for f in extract_findings("Small left pleural effusion.")] == [("pleura", "left", "abnormal")]
    assert status("Small bilateral pleural effusions.") == {"pleura": "abnormal"}
    assert status("Cardiomegaly.") == {"heart": "abnormal"}
    assert abn("Hepatomegaly.", "liver") == {"hepatomegaly"}
    assert abn("The liver is enlarged.", "liver") == {"hepatomegaly"}
    assert abn("The spleen is enlarged.", "spleen") == {"splenomegaly"}


def test_binding_to_the_nearest_organ_and_landmarks():
    st = status("Hepatic cyst and left renal stone.")
    assert st == {"liver": "abnormal", "kidney_left": "abnormal"}
    assert abn("Hepatic cyst and left renal stone.", "liver") == {"cyst"}
    assert set(status("Cysts in the liver and both kidneys.")) == {"liver", "kidney_left", "kidney_right"}
    assert status("Cyst adjacent to the liver in the right kidney.") == {"kidney_right": "abnormal"}


def test_hedged_diagnosis_after_a_descriptor():
    fs = extract_findings("2 cm hypodensity in the liver, likely a cyst.")
    assert organ_status(fs) == {"liver": "uncertain"} and abn("2 cm hypodensity in the liver, likely a cyst.", "liver") == {"cyst"}
    assert status("Hypodense hepatic lesion, concerning for malignancy.") == {"liver": "abnormal"}


def test_organ_headers():
    text = "FINDINGS:\nLIVER: Normal in size. 2 cm cyst.\nLUNGS AND PLEURA: Clear.\nKidneys: right lower pole cyst."
    fs = extract_findings(text)
    st = organ_status(fs)
    assert st["liver"] == "abnormal" and abn(text, "liver") == {"cyst"}
    assert {o for o in st if o.startswith("lung_")} == LOBES
    assert st == {**st, "kidney_right": "abnormal"} and "kidney_left" not in st
    assert organ_texts(fs)["liver"] == "Liver: Normal in size. Liver: 2 cm cyst."
    inline = status("Liver: normal. Spleen: enlarged.")
    assert inline == {"liver": "normal", "spleen": "abnormal"}


def test_sections():
    text = ("CLINICAL HISTORY: Hepatic mass. INDICATION: renal stones.\nTECHNIQUE: CT of the liver.\n"
            "COMPARISON: Prior CT with splenomegaly.\nFINDINGS: Normal kidneys.\nIMPRESSION: Unremarkable liver.")
    fs = extract_findings(text)
    assert {(f.organ, f.section) for f in fs} == {("kidney_left", "findings"), ("kidney_right", "findings"),
                                                  ("liver", "impression")}
    assert {f.section for f in extract_findings("The liver is normal.")} == {"body"}


def test_findings_and_impression_deduplicated_in_organ_texts():
    fs = extract_findings("FINDINGS: Splenomegaly. The liver is normal.\nIMPRESSION:\n1. Splenomegaly.")
    assert organ_texts(fs) == {"spleen": "Splenomegaly.", "liver": "The liver is normal."}


@pytest.mark.parametrize("text,n", [
    ("1. Liver cyst. 2. Splenomegaly. 3. Normal kidneys.", 3),
    ("A 1.8 cm. nodule in the RLL. Normal liver.", 2),
    ("Nodule approx. 5 mm in the RLL, i.e. stable vs. prior. Dr. Smith was notified.", 1),
    ("IMPRESSION\n1. Liver cyst\n2. Splenomegaly", 2),
    ("There is a small\nleft pleural effusion. Normal\nliver.", 2),
])
def test_sentence_splitting(text, n):
    sentences = {f.sentence_index for f in extract_findings(text)}
    assert len(sentences) == n


def test_measurements_in_mm():
    assert extract_findings("1.8 x 1.2 cm nodule in the right upper lobe.")[0].size_mm == pytest.approx(18.0)
    assert extract_findings("5 mm stone in the left kidney.")[0].size_mm == pytest.approx(5.0)
    assert extract_findings("Right renal cyst.")[0].size_mm is None


def test_dictionary_covers_the_catalog_and_organs():
    names = {a.name for a in abnormalities()}
    assert len(names) >= 60
    assert {"mass", "cyst", "hepatomegaly", "steatosis", "splenomegaly", "stone", "nodule", "pleural effusion",
            "aneurysm", "cardiomegaly", "fracture"} <= names
    assert {"ground-glass opacity", "mosaic attenuation", "hiatal hernia", "coronary artery calcification"} <= names
    liver = {a.name for a in abnormalities_for_organ("liver")}
    assert {"steatosis", "hepatomegaly", "mass", "cyst"} <= liver and "pleural effusion" not in liver
    assert "pleural effusion" not in {a.name for a in abnormalities_for_organ("lung_lower_lobe_left")}
    valid = set(vocab.organs()) | {REGION + r for r in REGIONS}
    for a in abnormalities():
        assert a.organs <= valid and set(a.default) <= valid


US_REPORT = """EXAM: CT CHEST ABDOMEN PELVIS WITH IV CONTRAST
INDICATION: Colon cancer, restaging. History of renal stones.
COMPARISON: CT 03/14/2023.
FINDINGS:
Lungs/pleura: Stable 4 mm nodule in the right middle lobe (series 4, image 120). No pleural effusion.
Hepatobiliary: Several hypodense lesions in the liver, the largest measuring 2.3 cm, concerning for metastatic disease.
Adrenals: Unremarkable.
Kidneys/ureters: 3 mm nonobstructing calculus in the lower pole of the right kidney. No hydronephrosis.
Bones: Chronic healed fractures of the left 7th and 8th ribs.
IMPRESSION:
1. Hepatic metastases.
2. Nonobstructing right nephrolithiasis."""

TRANSLATED_REPORT = """Clinical information: Abdominal pain. Question of cholecystolithiasis.
Findings: Liver of normal size, homogeneous parenchyma, no focal lesions. Gallbladder with multiple concrements,
wall not thickened. Spleen inconspicuous. Kidneys bilaterally orthotopic, no urinary congestion.
Assessment: Cholecystolithiasis without signs of cholecystitis. Steatosis hepatis cannot be excluded."""


def test_us_style_report():
    st = status(US_REPORT)
    assert st["lung_middle_lobe_right"] == "abnormal" and st["pleura"] == "normal"
    assert st["liver"] == "abnormal" and abn(US_REPORT, "liver") == {"metastasis"}
    assert st["adrenal_gland_left"] == st["adrenal_gland_right"] == "normal"
    assert st["kidney_right"] == "abnormal" and st["kidney_left"] == "normal"
    assert (st["rib_left_7"], st["rib_left_8"]) == ("abnormal", "abnormal") and "rib_right_8" not in st
    sizes = {f.organ: f.size_mm for f in extract_findings(US_REPORT) if f.section == "findings" and f.size_mm}
    assert sizes == {"lung_middle_lobe_right": 4.0, "liver": 23.0, "kidney_right": 3.0}


def test_translated_report():
    st = status(TRANSLATED_REPORT)
    assert st == {"liver": "uncertain", "gallbladder": "abnormal", "spleen": "normal", "kidney_left": "normal",
                  "kidney_right": "normal"}


def test_regex_tokenizer_agrees_with_spacy_tokenizer():
    from pipeline.report import ReportConfig

    for text in (US_REPORT, TRANSLATED_REPORT):
        fast = extract_findings(text)
        slow = extract_findings(text, ReportConfig(fast_tokenizer=False))
        assert {(f.organ, f.status, f.abnormality) for f in fast} == {(f.organ, f.status, f.abnormality) for f in slow}


def test_regex_tokenizer_tokens_and_whitespace():
    from pipeline.report.context import build_nlp

    nlp = build_nlp(frozenset())
    cases = {
        "3.5.6 L1 1L abc123def it\u2019s well-defined (cyst?)": [
            ("3.5", ""), (".", ""), ("6", " "), ("L1", " "), ("1", ""), ("L", " "), ("abc123", ""), ("def", " "),
            ("it\u2019s", " "), ("well", ""), ("-", ""), ("defined", " "), ("(", ""), ("cyst", ""), ("?", ""), (")", "")],
        "  lead": [("  ", ""), ("lead", "")],
        "a  b\nc \n d ": [("a", " "), (" ", ""), ("b", ""), ("\n", ""), ("c", " "), ("\n ", ""), ("d", " ")],
    }
    for text, expected in cases.items():
        doc = nlp.tokenizer(text)
        assert [(t.text, t.whitespace_) for t in doc] == expected
        assert doc.text == text and doc.user_data["text"] == text


def test_kept_word_texts_match_the_string_store_also_for_new_words():
    from spacy.attrs import LOWER

    from pipeline.report.context import build_nlp

    nlp = build_nlp(frozenset())
    strings = nlp.get_pipe("ctglip_report").lexicon.strings
    for text in ("Nodule in the liver.", "Qzxv-nodule IN the Wqrtyz lobe, \u00e9panchement."):  # the second: unseen words
        doc = nlp.make_doc(text)
        assert [strings[h] for h in doc.to_array(LOWER).tolist()] == [t.lower_ for t in doc]


def test_sentence_memo_gives_the_findings_of_a_fresh_reading():
    from pipeline.report import ReportConfig
    from pipeline.report.context import build_nlp

    config = ReportConfig()
    comp = build_nlp(config.skip_sections, config.fast_tokenizer).get_pipe("ctglip_report")  # extract_findings' own
    reports = ["A 5 mm nodule in the right upper lobe. No pleural effusion.",
               "Heart size increased. A 5 mm nodule in the right upper lobe. No pleural effusion.",
               "FINDINGS:\nLIVER: Normal. A 5 mm nodule in the right upper lobe."]
    comp.memo.clear()
    fresh = []
    for r in reports:
        fresh.append([tuple(f) for f in extract_findings(r)])
        comp.memo.clear()
    for r in reports:  # the memo now holds the earlier reports' sentences
        extract_findings(r)
    assert len(comp.memo) == 5  # 7 sentences with findings, 2 of them repeated
    assert [[tuple(f) for f in extract_findings(r)] for r in reports] == fresh
    assert [f.sentence_index for f in extract_findings(reports[1]) if f.abnormality == "nodule"] == [1]


def test_the_heap_is_frozen_only_when_asked():
    """gc.freeze changes the caller's whole process: extract_findings leaves it alone unless the configuration asks
    (the CLI, a process of its own, does)."""
    import subprocess
    import sys
    from pathlib import Path

    script = """
import gc
from pipeline.report import ReportConfig, extract_findings
assert extract_findings("No pleural effusion.")
print(gc.get_freeze_count())
assert extract_findings("No pleural effusion.", ReportConfig(freeze_heap=True))
print(gc.get_freeze_count())
"""
    root = Path(__file__).resolve().parents[1]  # a fresh process: this one may be frozen already
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True).stdout
    default, asked = map(int, out.split())
    assert default == 0 and asked > 100_000  # spaCy, torch and the pipeline


@pytest.mark.parametrize("sentence, expected", [
    # plurals of paired sites: "pubic bones" is the hips, not every bone
    ("Lytic lesions in both humeral heads and pubic bones.", {"humerus_left", "humerus_right", "hip_left", "hip_right"}),
    # a mention narrowed by the next one narrows only itself, not the list before it
    ("Atelectasis in the right lung middle lobe and left lung upper lobe lingula.",
     {"lung_middle_lobe_right", "lung_upper_lobe_left"}),
    ("Fibrotic bands in the left lung basal.", {"lung_lower_lobe_left"}),
    # "of" after a list's own "of" holds for its last item; before any, for the whole list
    ("Nodules in the lower lobes of both lungs and the middle lobe of the right lung.",
     {"lung_lower_lobe_left", "lung_lower_lobe_right", "lung_middle_lobe_right"}),
    ("Fibrotic bands in the upper lobe and lower lobe of the right lung.", {"lung_upper_lobe_right", "lung_lower_lobe_right"}),
])
def test_enumerated_sites(sentence, expected):
    assert {f.organ for f in extract_findings(sentence) if f.status == "abnormal"} == expected


@pytest.mark.parametrize("sentence", [
    "When evaluated together with clinical findings, it was thought to be compatible with viral pneumonia.",
    "The outlook is atypical for Covid pneumonia.",
    "The appearance aroused suspicion for viral pneumonia.",
])
def test_translated_hedges_are_uncertain(sentence):
    assert {f.status for f in extract_findings(sentence) if f.abnormality == "pneumonia"} == {"uncertain"}


def test_listed_modifiers_share_the_organ_head():
    organs = {f.organ for f in extract_findings("Nodules in the upper, middle and lower lobes of the right lung.")}
    assert organs == {"lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right"}


def _tokens_alone_and_in_report(text: str) -> list[tuple[list[str], list[str]]]:
    """Per sentence of a report: its tokens read alone and its tokens inside the whole report's doc."""
    from spacy.attrs import IDX

    from pipeline.report import ReportConfig
    from pipeline.report.api import prepare
    from pipeline.report.context import build_nlp
    from pipeline.report.segment import sentences

    config = ReportConfig()
    nlp = build_nlp(config.skip_sections, config.fast_tokenizer)
    text = prepare(text, config)[0]
    doc = nlp.make_doc(text)
    starts = doc.to_array(IDX).tolist()
    out = []
    for s in sentences(text):
        inside = [t.text for t, at in zip(doc, starts) if s.start <= at < s.end]
        out.append(([t.text for t in nlp.make_doc(text[s.start:s.end])], inside))
    return out


REPORT_EDGES = [
    "FINDINGS: Liver normal.Kidneys: 1.2 cm cyst.(1) Spleen ok; 2) pancreas atrophic. A 3.5cm. mass",
    'IMPRESSION:\n• Atelectasis • Emphysema " Hiatal hernia "Nodule?" (cyst?) L1-L2 and T12.',
    "Comparison: CT of 25.12.2019. Lungs: clear!Heart:normal. Aorta diameter 45mm.Dr. J. Smith, e.g. 4 mm.",
    "LUNGS AND PLEURA\n- Nodule in the RUL.\n- No effusion\n\nABDOMEN: unremarkable",
]


@pytest.mark.parametrize("text", REPORT_EDGES)
def test_a_sentence_has_the_same_tokens_alone_as_in_its_report(text):
    # the component tokenizes only sentences it has not read before, joined by spaces: this holds only if
    # sentence ends fall between tokens of the whole report
    for alone, inside in _tokens_alone_and_in_report(text):
        assert alone == inside


def test_sentences_of_real_reports_have_their_own_tokens(realdata):
    path = realdata / "reports_ctrate_dev" / "ctrate_reports_labels.csv"
    if not path.is_file():
        pytest.skip(f"no CT-RATE development set at {path}")
    import pandas as pd

    texts = pd.read_csv(path, usecols=["report_text"])["report_text"].tolist()
    pairs = [p for t in texts for p in _tokens_alone_and_in_report(t)]
    assert len(pairs) > 10_000
    assert [p for p in pairs if p[0] != p[1]] == []
