"""The committed findings digest (bench/results/findings_digest.json, written by `python bench/findings_digest.py`)
matches the findings the rules give now: a change to the rules that changes any finding must come with a new record,
and a change meant to leave the findings alone is checked to do so. The CT-RATE part runs only beside ../shared."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from findings_digest import RECORD, corpora, digest, measure  # noqa: E402


def test_digest_ignores_row_order_and_sees_every_column():
    rows = pd.DataFrame({"report_id": ["a", "b"], "organ": ["liver", None], "region": [None, "pleura"],
                         "group": ["liver", None], "status": ["abnormal", "normal"], "abnormality": ["cyst", None],
                         "sentence": ["s1", "s2"], "section": ["body", "body"], "negated": [[], ["pleural effusion"]],
                         "size_mm": [4.0, None], "header": [None, None], "sentence_index": [0, 1], "side": [None, "left"]})
    assert digest(rows) == digest(rows.iloc[::-1])
    changed = rows.copy()
    changed.loc[1, "side"] = "right"
    assert digest(changed) != digest(rows)


@pytest.mark.parametrize("name", ["synthetic", "ctrate_dev"])
def test_findings_match_the_committed_digest(name):
    reports = corpora().get(name)
    if reports is None:
        pytest.skip(f"{name}: the development set is not present")
    recorded = json.loads(RECORD.read_text(encoding="utf-8"))["corpora"][name]
    assert measure(name, reports) == recorded, (
        "the findings changed: if the change is meant, run `python bench/findings_digest.py` and commit the record")
