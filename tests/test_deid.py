"""De-identification of report text (issue 29, item 1): typed placeholders, dates shifted per patient, the
hand-written PHI test set (tests/data/phi_sentences.yaml), medical text left alone, the 755 real development
reports' findings unchanged, and the table scan behind the privacy check."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.deid import DeidConfig, deidentify, deidentify_reports, find_phi, scan_frame
from pipeline.deid.dates import parse, shift_days

SET = yaml.safe_load((Path(__file__).parent / "data" / "phi_sentences.yaml").read_text(encoding="utf-8"))


def test_the_issue_sentence():
    text = "The liver of Jane Doeberg (DOB 03/14/1961, phone 555-867-5309) shows a 2 cm mass."
    assert deidentify(text).text == "The liver of [NAME] (DOB [DATE], phone [PHONE]) shows a 2 cm mass."


def _caught(item: dict) -> list[bool]:
    """Per listed identifier: is every character of it inside a finding?"""
    text = item["text"]
    covered = {i for s in find_phi(text) for i in range(s.start, s.end)}
    out = []
    for _, value in item["phi"]:
        start = text.index(str(value))
        out.append(all(i in covered for i in range(start, start + len(str(value))) if not text[i].isspace()))
    return out


def test_recall_on_the_phi_test_set():
    caught = [c for item in SET["phi"] for c in _caught(item)]
    assert len(SET["phi"]) >= 100 and len(caught) >= 150
    assert sum(caught) / len(caught) >= 0.98
    read = [c for item in SET["read"] for c in _caught(item)]  # once held out, since read: tuning sentences too
    assert len(SET["read"]) == 40 and sum(read) / len(read) >= 0.98
    read2 = [c for item in SET["read2"] for c in _caught(item)]  # the second set once held out (0.915 then), read since
    assert len(SET["read2"]) == 100 and len(read2) == 189 and sum(read2) / len(read2) >= 0.98


def test_every_kind_is_in_the_test_set_and_named():
    kinds = {kind for item in SET["phi"] for kind, _ in item["phi"]}
    assert kinds == {"NAME", "DATE", "PHONE", "ID", "AGE", "ADDRESS", "LOCATION", "EMAIL", "URL"}
    assert deidentify("Call 312-555-0199 or write to ct.desk@example-hospital.org.").text == "Call [PHONE] or write to [EMAIL]."
    assert deidentify("Seen at Mercy General Hospital, 12 Oak Street, Springfield, IL 62704.").text == "Seen at [LOCATION], [ADDRESS]."
    assert deidentify("A 93-year-old seen by dr. hannah weiss, bleep 4471; subject no. 104-0332.").text == (
        "A [AGE]-year-old seen by dr. [NAME], bleep [PHONE]; subject no. [ID].")
    assert deidentify("A 89-year-old; MR angiography; 120 kVp; Couinaud segment 7; T11 and L2-L3.").text == (
        "A 89-year-old; MR angiography; 120 kVp; Couinaud segment 7; T11 and L2-L3.")  # 89 is no identifier


@pytest.mark.parametrize("item", SET["clean"] + SET["read2_clean"], ids=lambda item: item["text"][:40])
def test_medical_text_is_left_alone(item):
    """Eponyms, measurements, vertebral levels, segments, fractions and scores are not PHI."""
    assert deidentify(item["text"]).text == item["text"]


@pytest.mark.parametrize("text, expected", [
    # a facility word in another language, first, inside or compounded; a place after "of"; capitals; lower case
    ("Outside CT from Hôpital de la Pitié-Salpêtrière was reviewed.", "Outside CT from [LOCATION] was reviewed."),
    ("Images from Ospedale San Raffaele were compared.", "Images from [LOCATION] were compared."),
    ("Prior MRI at Centre Hospitalier Universitaire de Nantes.", "Prior MRI at [LOCATION]."),
    ("SEEN AT KANTONSSPITAL BADEN.", "SEEN AT [LOCATION]."),
    ("Compared with CT from Karolinska Universitetssjukhuset.", "Compared with CT from [LOCATION]."),
    ("Referred from the Royal Hospital of Glamorgan.", "Referred from the [LOCATION]."),
    ("Images from the Hospital for Sick Children were loaded.", "Images from the [LOCATION] were loaded."),
    ("Results faxed to Northbay Imaging Associates.", "Results faxed to [LOCATION]."),
    ("Transferred from Riverside hospital overnight.", "Transferred from [LOCATION] overnight."),
    # no facility word: a place after a verb or noun of care or imaging and "at", "from", "to"
    ("The study was performed at Groote Schuur in 2019.", "The study was performed at [LOCATION] in 2019."),
    # the words alone, an instrument, anatomy, a time point: no place
    ("Referred to the Breast Clinic; the Hospital Anxiety scale was 8.", "Referred to the Breast Clinic; the Hospital Anxiety scale was 8."),
    ("Images from the Ligament of Treitz region and at End of Therapy.", "Images from the Ligament of Treitz region and at End of Therapy."),
])
def test_facility_and_place_names(text, expected):
    assert deidentify(text).text == expected


@pytest.mark.parametrize("text, expected", [
    ("Reviewed with Priv.-Doz. Dr. Lena Kraus.", "Reviewed with Priv.-Doz. Dr. [NAME]."),  # titles with degrees
    ("Univ.-Prof. Dr. med. Anna Berger; Dr. rer. nat. Jonas Weber.", "Univ.-Prof. Dr. med. [NAME]; Dr. rer. nat. [NAME]."),
    ("Dott.ssa Giulia Conti and Herr Brandt.", "Dott.ssa [NAME] and Herr [NAME]."),
    ("Authored by Kwabena Mensah-Bonsu; co-signed by PATEL, RAVI.", "Authored by [NAME]; co-signed by [NAME]."),  # by-verbs
    ("Requesting: NOVAK, PETRA  Ext 4412", "Requesting: [NAME]  Ext [PHONE]"),  # a label, LAST, FIRST in capitals
    ("pt name brennigan, siobhan  dob 1/2/1950", "pt name [NAME]  dob [DATE]"),  # unknown surname, comma, given name
    ("Primary care: routine follow-up.", "Primary care: routine follow-up."),
    ("Patient cooperative, grace period applies.", "Patient cooperative, grace period applies."),
])
def test_names_after_titles_labels_and_verbs(text, expected):
    assert deidentify(text).text == expected


@pytest.mark.parametrize("text, expected", [
    ("Visit 03FEB2022, then 5Mar2021 and FEB2022.", "Visit [DATE], then [DATE] and [DATE]."),  # written together
    ("No change since 28/11.", "No change since [DATE]."),  # day first after a date word
    ("Patient on 24/7 oxygen since 3/14.", "Patient on 24/7 oxygen since [DATE]."),
    ("MR # 0098812 and MR no. 55-1203-7.", "MR # [ID] and MR no. [ID]."),  # an abbreviated record label
    ("Chart # 5512-88; admission no. A-2021-0091.", "Chart # [ID]; admission no. [ID]."),
    ("Date of exam: 18/09/2023.", "Date of exam: [DATE]."),  # a date after a weak id label is a date
    ("Mr. Alvarez, 96, lives alone.", "Mr. [NAME], [AGE], lives alone."),  # an age set off by commas
    ("A woman of 91; a ninety-four-year-old; aged one hundred and two.", "A woman of [AGE]; a [AGE]-year-old; aged [AGE]."),
    ("Heart rate, 92, regular; a patient of 95 kg.", "Heart rate, 92, regular; a patient of 95 kg."),
])
def test_dates_ids_and_ages_in_more_forms(text, expected):
    assert deidentify(text).text == expected


def test_placeholders_are_stable_on_a_second_pass():
    for config in (DeidConfig(), DeidConfig(dates="shift")):
        for item in SET["phi"]:
            once = deidentify(item["text"], config, "pat-0000000000000001").text
            assert deidentify(once, config, "pat-0000000000000001").text == once


def test_dates_shift_per_patient_keeping_intervals():
    text = "Compared with the CT dated 12.03.2019 and the study of 2020-03-12; seen in January 2018 and on 3/14."
    config = DeidConfig(dates="shift", max_shift_days=100)
    a = deidentify(text, config, "pat-aaaaaaaaaaaaaaaa").text
    b = deidentify(text, config, "pat-bbbbbbbbbbbbbbbb").text
    assert a == deidentify(text, config, "pat-aaaaaaaaaaaaaaaa").text  # stable
    assert a != b and "2019" not in a.replace("[DATE 2019", "")
    shifted = [pd.Timestamp(d) for d in re.findall(r"\[DATE (\d{4}-\d{2}-\d{2})\]", a)]
    assert len(shifted) == 2 and (shifted[1] - shifted[0]).days == 366  # 2019-03-12 -> 2020-03-12
    assert re.search(r"\[DATE \d{4}-\d{2}\]", a)  # a month keeps month precision
    assert a.endswith("on [DATE].")  # no year: cannot be shifted, only removed
    assert deidentify(text, config).text.count("[DATE]") == 4  # no patient: placeholders
    days = {shift_days(f"pat-{n:016x}", 30) for n in range(300)}
    assert 0 not in days and min(days) >= -30 and max(days) <= 30


@pytest.mark.parametrize("text, expected", [
    ("03/14/1961", "1961-03-14"), ("12.03.2019", "2019-03-12"), ("2021/09/30", "2021-09-30"), ("20210314", "2021-03-14"),
    ("March 26, 2018", "2018-03-26"), ("2nd of November 2022", "2022-11-02"), ("7 Oct 2021", "2021-10-07"),
    ("08/2020", "2020-08"), ("January 2020", "2020-01"), ("3/14", None), ("25 May", None),
])
def test_dates_are_read_as_written(text, expected):
    got = parse(text)
    assert (None if got is None else got[0].isoformat()[: 7 if got[1] == "month" else 10]) == expected


def test_reports_table_counts_what_it_replaced():
    reports = pd.DataFrame({"report_id": ["rep-1", "rep-2"], "text": ["Signed by Dr. Ana Lima on 01/02/2023.", None]})
    out, counts = deidentify_reports(reports)
    assert out["text"].tolist()[0] == "Signed by Dr. [NAME] on [DATE]." and out["text"].isna().tolist() == [False, True]
    assert counts["NAME"] == 1 and counts["DATE"] == 1


def test_scan_frame_names_where_never_what():
    df = pd.DataFrame({"report_id": ["rep-0123456789abcdef"] * 2, "sentence": ["Liver of Jane Doeberg is normal.", "No mass."],
                       "negated": [["call 555-867-5309"], []], "size_mm": [1.0, 2.0]})
    found = scan_frame(df, "report_findings")
    assert sorted(zip(found["column"], found["kind"])) == [("negated", "PHONE"), ("sentence", "NAME")]
    assert "Doeberg" not in found.to_csv() and "867" not in found.to_csv()
    assert found.loc[found["kind"] == "NAME", "excerpt"].item() == "Liver of [NAME] is normal."
    assert scan_frame(pd.DataFrame({"study_id": ["stu-0011223344556677"], "path": ["masks/stu-0011223344556677.nii.gz"]})).empty


def test_real_development_reports_keep_their_findings(realdata):
    """The 755 CT-RATE development reports (many with dates of prior studies, one with a radiologist's name):
    de-identification changes their text, never a finding (organ, status, abnormality, ... all but the sentence)."""
    from pipeline.report import extract_findings
    from pipeline.report.labels import read_labelled

    reports = read_labelled(realdata / "reports_ctrate_dev" / "ctrate_reports_labels.csv")
    changed = 0
    for text in reports["report_text"]:
        clean = deidentify(text).text
        changed += clean != text
        assert [f._replace(sentence="") for f in extract_findings(clean)] == [f._replace(sentence="") for f in extract_findings(text)]
        # nothing left that reads as a date or a titled name (checked by patterns independent of the recognizers)
        assert not re.search(r"\b\d{1,2}[./-]\d{1,2}[./-]\d{2,4}\b|\b(?:January|February|March|April|June|July|August|September|"
                             r"October|November|December)\b|\bDr\.\s*\w", clean)
    assert changed > 100  # the dates of prior studies are there, and gone


def test_bench_scores_a_held_out_set_given_on_the_command_line(tmp_path, capsys):
    """bench/deid.py --heldout FILE: scored under its own key, the missed text never written to the record."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("bench_deid", Path(__file__).parents[1] / "bench" / "deid.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    held = tmp_path / "fresh.yaml"
    held.write_text(yaml.safe_dump({
        "phi": [{"text": "Signed by Dr. Ana Lima on 01/02/2023.", "phi": [["NAME", "Ana Lima"], ["DATE", "01/02/2023"]]},
                {"text": "Films of Zqxw Vbnm were lost.", "phi": [["NAME", "Zqxw Vbnm"]]}],  # no cue, no known name: missed
        "clean": [{"text": "The spleen is normal."}]}))
    out = tmp_path / "deid.json"
    assert bench.main(["--out", str(out), "--heldout", str(held), "--real", str(tmp_path / "none.csv")]) == 0
    record = json.loads(out.read_text())
    assert record["heldout"]["sentences"] == 2 and record["heldout"]["clean_sentences"] == 1
    assert record["heldout"]["ours"]["identifiers"] == 3 and record["heldout"]["ours"]["recall"] == round(2 / 3, 4)
    assert record["heldout"]["ours"]["missed_kinds"] == {"NAME": 1} and record["heldout"]["ours"]["clean_sentences_changed"] == 0
    assert "Vbnm" not in out.read_text() and "Vbnm" not in capsys.readouterr().out
    assert record["read"]["sentences"] == len(SET["read"]) and record["real_development_set"].startswith("skipped")
    assert record["read2"]["sentences"] == len(SET["read2"]) and record["read2"]["clean_sentences"] == len(SET["read2_clean"])
    assert record["history"]["held_out_once"]["read2"]["recall"] == 0.9153  # the figure from before it was read
    held.write_text(yaml.safe_dump([{"text": "No name here.", "phi": [["NAME", "Jane"]]}]))
    with pytest.raises(ValueError, match="not in its sentence"):
        bench.main(["--out", str(out), "--heldout", str(held), "--real", str(tmp_path / "none.csv")])
