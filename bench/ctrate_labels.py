"""Report-level CT-RATE labels on real reports: our rules vs two simple labelers, per label.

    python bench/ctrate_labels.py                       # ../shared/realdata/reports_ctrate_dev
    python bench/ctrate_labels.py --csv FILE.csv --markdown

Labelers, each turning a report into CT-RATE's 18 labels (17 scored: Medical material left out):
- ours: `pipeline.report.extract_table` -> `pipeline.report.labels.label_table` (one fixed mapping);
- keyword: a label is 1 when any of its keywords appears anywhere in the report;
- sentence: a label is 1 when a keyword appears in a sentence without "no", "not", "without", "absent",
  "free of" or "ruled out".
Figures are given for the development part (3/4 of the reports by a hash of their id, where rules were
tuned), the held-out quarter (only checked) and all reports. Prints macro F1 and F1 per label.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.report.labels import CTRATE, SCORED, dev_csv, held_out, label_f1, label_table, read_labelled  # noqa: E402

DEFAULT_CSV = dev_csv()

# the simple labelers' keywords: each label's own name and its most common plain synonyms
KEYWORDS = {
    "Medical material": ["catheter", "stent", "pacemaker", "prosthesis", "tube", "port", "suture", "clip", "valve replacement"],
    "Arterial wall calcification": ["atheroma", "atherosclerotic", "arterial calcification", "aortic calcification",
                                    "calcific plaque", "calcified plaque", "wall calcification"],
    "Cardiomegaly": ["cardiomegaly", "heart size increased", "enlarged heart", "cardiac enlargement"],
    "Pericardial effusion": ["pericardial effusion"],
    "Coronary artery wall calcification": ["coronary"],
    "Hiatal hernia": ["hiatal hernia", "hiatus hernia"],
    "Lymphadenopathy": ["lymphadenopathy", "lymph node", "adenopathy"],
    "Emphysema": ["emphysema", "bulla"],
    "Atelectasis": ["atelectasis", "atelectatic"],
    "Lung nodule": ["nodule"],
    "Lung opacity": ["opacity", "ground glass", "ground-glass", "density increase"],
    "Pulmonary fibrotic sequela": ["fibrotic", "fibrosis", "sequela"],
    "Pleural effusion": ["pleural effusion"],
    "Mosaic attenuation pattern": ["mosaic"],
    "Peribronchial thickening": ["peribronchial thickening", "bronchial wall thickening"],
    "Consolidation": ["consolidation"],
    "Bronchiectasis": ["bronchiectasis"],
    "Interlobular septal thickening": ["septal thickening", "interlobular septal"],
}
_NEGATION = re.compile(r"\b(?:no|not|without|absent|free of|ruled out)\b")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def keyword_labels(text: str) -> dict[str, int]:
    low = text.lower()
    return {name: int(any(k in low for k in KEYWORDS[name])) for name in CTRATE}


def sentence_labels(text: str) -> dict[str, int]:
    out = dict.fromkeys(CTRATE, 0)
    for sentence in _SENTENCE.split(text.lower()):
        if _NEGATION.search(sentence):
            continue
        for name in CTRATE:
            if not out[name] and any(k in sentence for k in KEYWORDS[name]):
                out[name] = 1
    return out


def _simple(reports: pd.DataFrame, labeler) -> pd.DataFrame:
    rows = [labeler(t) for t in reports["report_text"]]
    return pd.DataFrame(rows).assign(report_id=reports["report_id"].to_numpy())


def run(reports: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """(F1 per label x labeler x part, timings)."""
    from pipeline.report import extract_table

    start = time.perf_counter()
    findings = extract_table(reports, "report_text", "report_id")
    seconds = time.perf_counter() - start
    predicted = {
        "ours": label_table(findings, reports["report_id"]),
        "keyword": _simple(reports, keyword_labels),
        "sentence": _simple(reports, sentence_labels),
    }
    hold = reports["report_id"].map(held_out)
    parts = {"dev": reports[~hold], "held_out": reports[hold], "all": reports}
    rows = [label_f1(pred, gold).assign(labeler=name, part=part)
            for name, pred in predicted.items() for part, gold in parts.items()]
    return pd.concat(rows, ignore_index=True), {"reports": len(reports), "seconds": seconds}


def table(scores: pd.DataFrame, part: str) -> pd.DataFrame:
    """Labels x labelers F1 for one part, with a macro row first."""
    wide = scores[scores["part"] == part].pivot(index="label", columns="labeler", values="f1")
    wide = wide.loc[list(SCORED), ["ours", "keyword", "sentence"]]
    support = scores[(scores["part"] == part) & (scores["labeler"] == "ours")].set_index("label")["support"]
    wide.insert(0, "positives", support.loc[list(SCORED)])
    macro = pd.DataFrame([{"positives": None, **wide[["ours", "keyword", "sentence"]].mean().to_dict()}], index=["**macro F1**"])
    return pd.concat([macro, wide])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/ctrate_labels.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help=f"labelled reports (default {DEFAULT_CSV})")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for the README)")
    args = parser.parse_args(argv)
    if not args.csv.is_file():
        print(f"error: no labelled reports at {args.csv}", file=sys.stderr)
        return 2
    reports = read_labelled(args.csv)
    scores, timing = run(reports)
    hold = reports["report_id"].map(held_out)
    print(f"{timing['reports']} reports ({int((~hold).sum())} dev, {int(hold.sum())} held out); ours extracted in "
          f"{timing['seconds']:.1f} s ({timing['reports'] / timing['seconds']:.0f} reports/s, one process)")
    for part in ("dev", "held_out", "all"):
        t = table(scores, part)
        print(f"\n{part}: F1 per label")
        if args.markdown:
            print(t.to_markdown(floatfmt=".3f"))
        else:
            print(t.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
