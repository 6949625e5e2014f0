"""A digest of the report rules' findings, so that "the findings are identical" is a checked claim, not a memory.

    python bench/findings_digest.py            # writes bench/results/findings_digest.json
    python bench/findings_digest.py --check    # exit 1 when the findings differ from the record

Two corpora: the 755 CT-RATE development reports (../shared/realdata; left out where absent) and 2,000 synthetic
reports (bench/report_corpus.py, seeds 7 and 8, both phrasing banks). Each is read with `extract_table` and every
column of every finding is hashed in a fixed order (sha256 of the sorted rows). A change of the rules that changes
any finding changes the digest: run this command and commit the record with the change; a change meant to leave the
findings alone (a refactoring, a speed-up) leaves the record as it is, and tests/test_report_digest.py checks it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from record import file_input, write_record  # noqa: E402
from report_corpus import synthetic  # noqa: E402

from pipeline.report import extract_table  # noqa: E402
from pipeline.report.finding import COLUMNS  # noqa: E402
from pipeline.report.labels import dev_csv, read_labelled  # noqa: E402

RECORD = REPO / "bench" / "results" / "findings_digest.json"
SYNTHETIC = ((7, False, 1000), (8, True, 1000))  # (seed, reserved phrasing, reports)


def digest(findings: pd.DataFrame) -> str:
    """sha256 over every finding's columns (COLUMNS order), rows sorted, so that row order does not count."""
    rows = sorted("\x1f".join(repr(v if not isinstance(v, list) else tuple(v)) for v in row)
                  for row in findings[list(COLUMNS)].itertuples(index=False, name=None))
    return hashlib.sha256("\x1e".join(rows).encode()).hexdigest()


def synthetic_reports() -> pd.DataFrame:
    return pd.concat([synthetic(n, seed, reserved=reserved)[0] for seed, reserved, n in SYNTHETIC], ignore_index=True)


def corpora() -> dict[str, pd.DataFrame]:
    """name -> (id, text) table: "synthetic" always, "ctrate_dev" where the development set is present."""
    out = {"synthetic": synthetic_reports().rename(columns={"AccessionNumber": "id", "ReportText": "text"})}
    if dev_csv().is_file():
        out["ctrate_dev"] = read_labelled(dev_csv()).rename(columns={"report_id": "id", "report_text": "text"})[["id", "text"]]
    return out


def measure(name: str, reports: pd.DataFrame) -> dict:
    findings = extract_table(reports, "text", "id")
    return {"reports": len(reports), "findings": len(findings), "sha256": digest(findings)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/findings_digest.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--check", action="store_true", help="compare with the record instead of writing it")
    parser.add_argument("--record", type=Path, default=RECORD, help=f"record file (default {RECORD})")
    args = parser.parse_args(argv)
    now = {name: measure(name, reports) for name, reports in corpora().items()}
    if args.check:
        recorded = json.loads(args.record.read_text(encoding="utf-8"))["corpora"]
        differ = [n for n in now if n in recorded and now[n] != recorded[n]]
        for n in now:
            state = "absent from the record" if n not in recorded else ("DIFFERENT" if n in differ else "identical")
            print(f"{n}: {now[n]['reports']} reports, {now[n]['findings']} findings: {state}")
        return 1 if differ else 0
    inputs = {"synthetic": {"script": "bench/report_corpus.py", "seeds_reserved_reports": [list(s) for s in SYNTHETIC]},
              **({"ctrate_dev": file_input(dev_csv())} if "ctrate_dev" in now else {})}
    write_record("findings_digest", {"corpora": now}, script=__file__, argv=argv, inputs=inputs, out=args.record)
    for n, v in now.items():
        print(f"{n}: {v['reports']} reports, {v['findings']} findings, sha256 {v['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
