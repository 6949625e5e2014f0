"""CLI: ``python -m pipeline.report FILE.csv --text-column ReportText --id-column AccessionNumber
--out findings.parquet``; with ``--labels ctrate`` one row per report with CT-RATE's 18 labels (0/1) instead."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import pandas as pd

from pipeline.atomic import write_parquet
from pipeline.report.api import extract_table_checked
from pipeline.report.finding import ReportConfig
from pipeline.report.labels import label_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.report",
        description="Read radiology reports from a CSV and write their organ-level findings (one row per "
        "finding: report_id, organ, region, group, status, abnormality, sentence, section, negated, size_mm, "
        "header, sentence_index, side; organ is empty for lymph nodes, pleura, mediastinum, medical material "
        "and the spine named without a level, which get a region instead) to Parquet. With --labels ctrate, "
        "one row per report instead: the input's columns plus one 0/1 column per CT-RATE abnormality label. "
        "Rules only (spaCy blank English); FINDINGS, IMPRESSION and header-less text produce findings, "
        "HISTORY/INDICATION/TECHNIQUE/COMPARISON do not.",
        epilog="examples: python -m pipeline.report data/source/reports.csv --text-column ReportText "
        "--id-column AccessionNumber --out findings.parquet --problems-out problems.csv; "
        "python -m pipeline.report reports.csv --text-column Findings --id-column VolumeName --labels ctrate "
        "--out labels.parquet",
    )
    parser.add_argument("csv", type=Path, help="input CSV with one report per row")
    parser.add_argument(
        "--text-column", default="ReportText", help="column holding the report text (default ReportText)"
    )
    parser.add_argument(
        "--id-column", default="AccessionNumber", help="column copied to report_id (default AccessionNumber)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output Parquet file of findings")
    parser.add_argument("--problems-out", type=Path, help="optional CSV of reports flagged as empty, non-English, ...")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--labels",
        choices=["ctrate"],
        help="write one row per report with these labels "
        "(ctrate: CT-RATE's 18 abnormalities, 0/1) instead of one row per finding",
    )
    parser.add_argument(
        "--encoding", default="utf-8", help="CSV encoding; undecodable bytes are replaced (default utf-8)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        df = pd.read_csv(args.csv, dtype=str, keep_default_na=False, encoding=args.encoding, encoding_errors="replace")
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {args.csv}: {exc}", file=sys.stderr)
        return 2
    missing = [c for c in (args.text_column, args.id_column) if c not in df.columns]
    if missing:
        print(f"error: {args.csv} has no column(s) {missing}; columns are {list(df.columns)}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    # the process is ours: the start-up heap may leave the garbage collector's reach (ReportConfig.freeze_heap)
    findings, problems = extract_table_checked(
        df, args.text_column, args.id_column, workers=args.workers, config=ReportConfig(freeze_heap=True)
    )
    if args.labels == "ctrate":
        labels = label_table(findings, df[args.id_column]).drop(columns="report_id")
        clash = [c for c in labels.columns if c in df.columns]
        if clash:  # a CSV that already carries CT-RATE's labels keeps them; ours get a suffix
            labels = labels.rename(columns={c: f"{c} (rules)" for c in clash})
        write_parquet(pd.concat([df.reset_index(drop=True), labels], axis=1), args.out)
    else:
        write_parquet(findings, args.out)
    if args.problems_out:
        problems.to_csv(args.problems_out, index=False)
    logging.info(
        "%d reports -> %d findings (%d reports flagged) in %.1f s -> %s",
        len(df),
        len(findings),
        len(problems),
        time.perf_counter() - start,
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
