"""Report rules on bad input, the batch table, the CLI, and the accuracy scorer."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from pipeline.report import extract_findings, extract_findings_checked, extract_table, extract_table_checked
from pipeline.report.accuracy import score

GOOD = "FINDINGS: The liver is enlarged. No pleural effusion.\nIMPRESSION: Hepatomegaly."


def test_empty_and_missing_reports():
    for value in ("", "   \n\t", None, float("nan"), b""):
        findings, problem = extract_findings_checked(value)
        assert findings == [] and problem == "empty report"


def test_non_english_report_is_flagged():
    findings, problem = extract_findings_checked(
        "Die Leber ist unauffällig. Keine freie Flüssigkeit im Abdomen. Die Nieren sind beidseits normal groß "
        "und zeigen keine Stauung.")
    assert findings == [] and problem.startswith("not English")


def test_long_report_is_read_in_full():
    text = "FINDINGS: " + "The liver is unremarkable. " * 3750 + "Splenomegaly."
    assert len(text) > 100_000
    findings, problem = extract_findings_checked(text)
    assert problem is None and {"liver": "normal", "spleen": "abnormal"} == {
        f.organ: f.status for f in findings if f.organ == "spleen" or f.status == "normal"}
    findings, problem = extract_findings_checked("FINDINGS: Splenomegaly. " + "x" * 300_000)
    assert problem == "truncated to 200000 characters" and findings[0].organ == "spleen"


def test_html_rtf_caps_crlf_and_bytes():
    html = "<html><body><p><b>FINDINGS:</b> The liver is enlarged.<br>No pleural effusion.</p></body></html>"
    rtf = r"{\rtf1\ansi{\fonttbl\f0 Arial;}\f0\fs20 FINDINGS: The liver is enlarged.\par No pleural effusion.\par}"
    caps = "FINDINGS: THE LIVER IS ENLARGED. NO PLEURAL EFFUSION."
    crlf = "FINDINGS:\r\nThe liver is enlarged.\r\nNo pleural effusion.\r\n"
    expected = {("liver", None, "abnormal"), (None, "pleura", "normal")}
    for text in (GOOD, html, rtf, caps, crlf, GOOD.encode("utf-8"), crlf.encode("utf-16")):
        findings, _ = extract_findings_checked(text)
        assert {(f.organ, f.region, f.status) for f in findings} == expected, text
        assert all("<" not in f.sentence and "\\" not in f.sentence for f in findings)


def test_non_utf8_bytes_are_decoded_with_a_note():
    data = "FINDINGS: The liver is enlarged \u2013 measuring 19 cm. Caf\u00e9.".encode("cp1252")
    findings, problem = extract_findings_checked(data)
    assert problem == "not UTF-8: decoded as cp1252"
    assert findings[0].organ == "liver" and findings[0].size_mm == pytest.approx(190.0)
    assert extract_findings(b"\xff\xfe\x00garbage \x81\x8d") == []


def test_lone_surrogates_and_control_characters_are_replaced():
    # a "surrogateescape" decoding keeps undecodable bytes as lone surrogates, which no encoder takes
    text = b"FINDINGS: The liver\x07 is enlarged \xff.\x0c No pleural effusion.".decode("utf-8", "surrogateescape")
    findings, problem = extract_findings_checked(text)
    assert problem is None
    assert {(f.organ, f.region, f.status) for f in findings} == {("liver", None, "abnormal"), (None, "pleura", "normal")}
    assert findings[0].sentence == "The liver  is enlarged \ufffd."


def test_extract_table_rows_and_problems():
    df = pd.DataFrame({"acc": ["A1", "A2", "A3"], "text": [GOOD, "", "Normal kidneys."]})
    findings, problems = extract_table_checked(df, "text", "acc")
    assert list(findings.columns[:10]) == ["report_id", "organ", "region", "group", "status", "abnormality", "sentence",
                                           "section", "negated", "size_mm"]
    assert set(findings["report_id"]) == {"A1", "A3"}
    assert problems.to_dict("records") == [{"report_id": "A2", "problem": "empty report"}]
    assert findings.equals(extract_table(df, "text", "acc"))
    assert extract_table(df.iloc[:0], "text", "acc").empty


def test_cli_on_a_tiny_csv(tmp_path):
    csv = tmp_path / "reports.csv"
    pd.DataFrame({"AccessionNumber": ["A1", "A2"], "ReportText": [GOOD, ""]}).to_csv(csv, index=False)
    out, problems = tmp_path / "findings.parquet", tmp_path / "problems.csv"
    run = subprocess.run([sys.executable, "-m", "pipeline.report", str(csv), "--text-column", "ReportText",
                          "--id-column", "AccessionNumber", "--out", str(out), "--problems-out", str(problems)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    df = pd.read_parquet(out)
    assert set(zip(df["organ"].fillna(""), df["region"].fillna(""))) == {("liver", ""), ("", "pleura")}
    assert pd.read_csv(problems)["report_id"].tolist() == ["A2"]
    from pipeline.report.__main__ import main

    assert main([str(csv), "--text-column", "Nope", "--out", str(out)]) == 2


def test_accuracy_scorer_on_a_hand_computed_example():
    gold = pd.DataFrame([
        ("r1", "liver", "abnormal", ["cyst"]),
        ("r1", "spleen", "normal", []),
        ("r1", "heart", "not_mentioned", []),
        ("r2", "liver", "uncertain", ["mass"]),
        ("r2", "spleen", "abnormal", ["splenomegaly"]),
    ], columns=["accession", "organ", "report_status", "abnormalities"])
    findings = pd.DataFrame([
        ("r1", "liver", "abnormal", "cyst", "Liver cyst."),
        ("r1", "liver", "normal", None, "Liver normal in size."),
        ("r1", "spleen", "normal", None, "Spleen normal."),
        ("r1", "kidney_left", "abnormal", "stone", "Left renal stone."),  # not in the gold rows: ignored
        ("r2", "liver", "abnormal", "mass", "Liver mass."),  # gold says uncertain
        ("r2", "spleen", "abnormal", "atelectasis", "Odd."),  # wrong name, outside the catalog
    ], columns=["report_id", "organ", "status", "abnormality", "sentence"])
    m = score(findings, gold)
    # status: normal 1/1 (F1 1), abnormal tp 2 (r1 liver, r2 spleen) fp 1 (r2 liver) -> P 2/3 R 1 F1 0.8,
    # uncertain tp 0 fn 1 -> F1 0, not_mentioned 1/1 -> F1 1; macro = 2.8 / 4
    assert m.status_f1 == pytest.approx({"normal": 1.0, "abnormal": 0.8, "uncertain": 0.0, "not_mentioned": 1.0})
    assert m.status_macro_f1 == pytest.approx(0.7)
    # catalog names: tp cyst, mass; fn splenomegaly; atelectasis is not a catalog name -> P 1, R 2/3
    assert (m.abnormality_precision, m.abnormality_recall) == pytest.approx((1.0, 2 / 3))
    assert m.abnormality_f1 == pytest.approx(0.8)
    assert m.abnormality_f1_all == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))  # P 2/3, R 2/3
    assert set(zip(m.errors["report_id"], m.errors["organ"])) == {("r2", "liver"), ("r2", "spleen")}
    assert m.worst_sentences["errors"].sum() == 2 and m.n_reports == 2 and m.n_rows == 5


def test_cli_adds_ctrate_label_columns(tmp_path):
    csv = tmp_path / "reports.csv"
    texts = ["Calcific atheroma plaques in the aorta. Pericardial effusion was not observed. Heart size increased.",
             "No pathological finding. No enlarged lymph nodes were detected.", ""]
    pd.DataFrame({"id": ["r1", "r2", "r3"], "text": texts, "CT-RATE": ["a", "b", "c"]}).to_csv(csv, index=False)
    out = tmp_path / "labels.parquet"
    run = subprocess.run([sys.executable, "-m", "pipeline.report", str(csv), "--text-column", "text", "--id-column", "id",
                          "--labels", "ctrate", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    df = pd.read_parquet(out).set_index("id")
    assert len(df.columns) == 2 + 18 and "CT-RATE" in df.columns
    assert df.loc["r1", "Arterial wall calcification"] == 1 and df.loc["r1", "Cardiomegaly"] == 1
    assert df.loc["r1", "Pericardial effusion"] == 0
    assert df.drop(columns=["text", "CT-RATE"]).loc[["r2", "r3"]].to_numpy().sum() == 0
