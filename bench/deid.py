"""Benchmark: de-identification of report text (pipeline.deid), recall on the hand-written PHI test set, what it
does to clean medical text, and what it does to the real development reports.

    python bench/deid.py                      # writes bench/results/deid.json
    python bench/deid.py --heldout SET.yaml   # the same, with a held-out set scored under "heldout" (tests/data/phi_heldout2.yaml)

- PHI test set (tests/data/phi_sentences.yaml, `phi`): recall = the share of listed identifiers every character of
  which lies inside a finding (any kind: what matters for privacy is that it is gone), per kind, and the share
  found with the listed kind; the clean sentences (eponyms, measurements, levels, segments, scores): how many
  de-identification changes. Every sentence of that file has been read while the rules were written, so its
  figures are tuning figures, not an estimate for unseen text.
- read: the file's `read` sentences, scored apart. They were written as a held-out set after the first rules were
  settled and scored once as such (recall 0.951, 58 of 61); then their misses were read and the rules made more
  general for those kinds of miss, so they are tuning sentences now, kept apart only to show that history.
- read2: the file's `read2` and `read2_clean` sentences, scored apart: the second held-out set (once
  tests/data/phi_heldout.yaml), scored once as such with the rules of commit 87dac00 (`HELD_OUT_ONCE`, copied into
  the record as `history`: recall 0.915); then its misses were read and the rules made more general for those kinds
  of miss, so its figures here are tuning figures too. Data whose errors were read is held out no more.
- held out (--heldout SET.yaml, optional): sentences the rules were not written against, in the test set's format
  (a mapping whose `clean` list holds clean sentences (bare strings or `text:` items) and whose other lists hold sentences with `phi`, or a bare
  list of the latter), read once and scored the same way. The record holds its figures and the kinds of what was
  missed, never the missed text, so writing the record does not spend the set; --show-missed prints the missed
  identifiers to the terminal.
- baseline, measured in the same run: Presidio's stock pattern recognizers alone (its dates, e-mail, phone,
  IP, URL, US SSN, credit card, IBAN; no NLP model), what the kept library gives without our report patterns.
- real development set (../shared/realdata/reports_ctrate_dev, skipped where absent): reports whose text
  changes, replacements per kind, reports whose findings (every field but the sentence text) change, and
  de-identification speed in reports/s (one process), with the one-minute load average it ran under.
- the record opens with its provenance (bench/record.py: commit, command, cores, CPU, load average, input files).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from record import file_input, write_record  # noqa: E402

from pipeline.deid import KINDS, deidentify, find_phi  # noqa: E402

SET = ROOT / "tests" / "data" / "phi_sentences.yaml"
# The read sets' figures when they were still held out, each scored once before its misses were read (constants:
# the rules that gave them are gone). `read`: recorded in bench/results/deid.json at 8204da4 (its `held_out`);
# `read2`: `python bench/deid.py --heldout tests/data/phi_heldout.yaml` with the rules of 87dac00, recorded at 63960ba.
HELD_OUT_ONCE = {
    "read": {"rules_commit": "8204da4", "record_commit": "8204da4", "sentences": 40, "identifiers": 61, "recall": 0.9508,
             "clean_sentences": 0, "missed_kinds": {"ID": 1, "PHONE": 1, "NAME": 1}},
    "read2": {"rules_commit": "87dac00", "record_commit": "63960ba", "file": "tests/data/phi_heldout.yaml", "sentences": 100,
              "identifiers": 189, "recall": 0.9153, "recall_with_kind": 0.8942, "clean_sentences": 40, "clean_sentences_changed": 0,
              "missed_kinds": {"NAME": 4, "DATE": 2, "ID": 1, "AGE": 1, "LOCATION": 8},
              "baseline_presidio_stock_patterns_recall": 0.2857},
}


def _spans_ours(text: str) -> list[tuple[int, int, str]]:
    return [(s.start, s.end, s.kind) for s in find_phi(text)]


def _baseline():
    """Presidio's own pattern recognizers, as shipped (the e-mail one without its network check)."""
    from pipeline.deid.recognizers import _Email  # noqa: F401 - imports presidio with transformers hidden
    from presidio_analyzer.predefined_recognizers import (CreditCardRecognizer, DateRecognizer, IbanRecognizer, IpRecognizer,
                                                          PhoneRecognizer, UrlRecognizer, UsSsnRecognizer)

    kinds = {"DATE_TIME": "DATE", "EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "IP_ADDRESS": "URL", "URL": "URL",
             "US_SSN": "ID", "CREDIT_CARD": "ID", "IBAN_CODE": "ID"}
    recognizers = [DateRecognizer(), _Email(), PhoneRecognizer(), IpRecognizer(), UrlRecognizer(), UsSsnRecognizer(),
                   CreditCardRecognizer(), IbanRecognizer()]

    def spans(text: str) -> list[tuple[int, int, str]]:
        return [(r.start, r.end, kinds.get(r.entity_type, r.entity_type)) for rec in recognizers
                for r in rec.analyze(text, rec.supported_entities)]
    return spans


def _start(item: dict, value: str) -> int:
    at = item["text"].find(value)
    if at < 0:
        raise ValueError(f"identifier {value!r} is not in its sentence {item['text']!r}")
    return at


def score(items: list[dict], spans_of) -> dict:
    per_kind = {k: [0, 0, 0] for k in KINDS}  # listed, caught, caught with the listed kind
    missed: list[tuple[str, str]] = []
    for item in items:
        text = item["text"]
        spans = spans_of(text)
        covered = {i for s, e, _ in spans for i in range(s, e)}
        for kind, value in item["phi"]:
            kind, value = str(kind), str(value)
            start = _start(item, value)
            chars = [i for i in range(start, start + len(value)) if not text[i].isspace()]
            caught = all(i in covered for i in chars)
            typed = caught and any(k == kind and s <= chars[0] and chars[-1] < e for s, e, k in spans)
            counts = per_kind.setdefault(kind, [0, 0, 0])  # a kind named otherwise by another set is counted as written
            counts[0] += 1
            counts[1] += caught
            counts[2] += typed
            if not caught:
                missed.append((kind, value))
    listed = sum(v[0] for v in per_kind.values())
    return {
        "identifiers": listed,
        "recall": round(sum(v[1] for v in per_kind.values()) / listed, 4) if listed else None,
        "recall_with_kind": round(sum(v[2] for v in per_kind.values()) / listed, 4) if listed else None,
        "per_kind": {k: {"listed": v[0], "recall": round(v[1] / v[0], 4) if v[0] else None} for k, v in per_kind.items()},
        "missed": [value for _, value in missed],
        "missed_kinds": {k: n for k in per_kind if (n := sum(kind == k for kind, _ in missed))},
    }


def clean_changes(items: list[dict], spans_of) -> int:
    return sum(bool(spans_of(item["text"])) for item in items)


def read_set(text: str) -> tuple[list[dict], list[dict]]:
    """(sentences with identifiers, clean sentences) of a PHI set in the test set's format: a mapping whose
    `clean` list holds clean sentences (bare strings or `text:` items) and whose other lists hold sentences with `phi`, or a bare list."""
    data = yaml.safe_load(text)
    lists = {"phi": data} if isinstance(data, list) else dict(data or {})
    clean = [{"text": c} if isinstance(c, str) else c for c in lists.pop("clean", None) or []]  # bare strings too
    items = [item for value in lists.values() if isinstance(value, list) for item in value]
    bad = [item for item in items + clean if not isinstance(item, dict) or not isinstance(item.get("text"), str)]
    if bad or not all(isinstance(item.get("phi"), list) for item in items):
        raise ValueError(f"not a PHI set: every sentence needs `text` (and, outside `clean`, `phi`); first bad one: {(bad or items)[0]!r}")
    return items, clean


def held_out(path: Path, baseline) -> tuple[dict, list[str]]:
    """A held-out set's figures (missed identifiers by kind only) and, apart, the missed identifiers."""
    items, clean = read_set(path.read_text(encoding="utf-8"))  # read once
    ours, base = score(items, _spans_ours), score(items, baseline)
    missed = ours.pop("missed")
    base.pop("missed")
    return {"file": str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else path.name, "sentences": len(items), "clean_sentences": len(clean),
            "ours": {**ours, "clean_sentences_changed": clean_changes(clean, _spans_ours)},
            "baseline_presidio_stock_patterns": {**base, "clean_sentences_changed": clean_changes(clean, baseline)}}, missed


def real_reports(path: Path) -> dict:
    from pipeline.report import extract_findings
    from pipeline.report.labels import read_labelled

    reports = read_labelled(path)
    texts = reports["report_text"].tolist()
    t0 = time.perf_counter()
    clean = [deidentify(t) for t in texts]
    seconds = time.perf_counter() - t0
    counts = dict.fromkeys(KINDS, 0)
    for c in clean:
        for s in c.spans:
            counts[s.kind] += 1
    differ = sum([f._replace(sentence="") for f in extract_findings(c.text)] != [f._replace(sentence="") for f in extract_findings(t)]
                 for t, c in zip(texts, clean))
    return {"reports": len(texts), "reports_changed": sum(c.text != t for t, c in zip(texts, clean)), "replaced": counts,
            "reports_with_different_findings": int(differ), "deid_reports_per_s": round(len(texts) / seconds, 1),
            "load_average": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "deid.json")
    ap.add_argument("--real", type=Path, default=None, help="CSV of real reports (default: the CT-RATE development set where present)")
    ap.add_argument("--heldout", type=Path, default=None, help="YAML of held-out PHI sentences, scored under 'heldout'")
    ap.add_argument("--show-missed", action="store_true", help="print the held-out identifiers missed (never written to the record)")
    args = ap.parse_args(argv)

    data = yaml.safe_load(SET.read_text(encoding="utf-8"))
    baseline = _baseline()
    record = {
        "test_set": {"file": str(SET.relative_to(ROOT)), "sentences": len(data["phi"]), "clean_sentences": len(data["clean"])},
        "ours": {**score(data["phi"], _spans_ours), "clean_sentences_changed": clean_changes(data["clean"], _spans_ours)},
        "baseline_presidio_stock_patterns": {**score(data["phi"], baseline), "clean_sentences_changed": clean_changes(data["clean"], baseline)},
        # once held out (scored 0.951 so), then read and tuned on: tuning sentences kept apart, see the docstring
        "read": {"sentences": len(data["read"]), "ours": score(data["read"], _spans_ours),
                 "baseline_presidio_stock_patterns": score(data["read"], baseline)},
        # the second set once held out (scored 0.915 so), then read and tuned on likewise
        "read2": {"sentences": len(data["read2"]), "clean_sentences": len(data["read2_clean"]),
                  "ours": {**score(data["read2"], _spans_ours), "clean_sentences_changed": clean_changes(data["read2_clean"], _spans_ours)},
                  "baseline_presidio_stock_patterns": {**score(data["read2"], baseline),
                                                       "clean_sentences_changed": clean_changes(data["read2_clean"], baseline)}},
        "history": {"held_out_once": HELD_OUT_ONCE, "note": "each read set's figures when it was scored once as held out, "
                    "before its misses were read; the read/read2 figures above are tuning figures"},
    }
    missed: list[str] = []
    if args.heldout is not None:
        record["heldout"], missed = held_out(args.heldout, baseline)
    from pipeline.report.labels import dev_csv

    real = args.real or dev_csv()
    record["real_development_set"] = real_reports(real) if real.is_file() else "skipped: not found"
    inputs = {"test_set": file_input(SET), **({"heldout": file_input(args.heldout)} if args.heldout is not None else {}),
              **({"real_development_set": file_input(real)} if real.is_file() else {})}
    record = write_record("deid", record, script=__file__, argv=argv, inputs=inputs, out=args.out)
    ours, base = record["ours"], record["baseline_presidio_stock_patterns"]
    print(f"PHI test set: {record['test_set']['sentences']} sentences, {ours['identifiers']} identifiers")
    print(f"  ours:     recall {ours['recall']:.4f} (with the listed kind {ours['recall_with_kind']:.4f}), "
          f"clean sentences changed {ours['clean_sentences_changed']} of {len(data['clean'])}; missed: {ours['missed']}")
    print(f"  baseline: recall {base['recall']:.4f} (Presidio's stock pattern recognizers), clean sentences changed "
          f"{base['clean_sentences_changed']} of {len(data['clean'])}")
    for kind, v in ours["per_kind"].items():
        print(f"    {kind:<9} {v['listed']:4d}  recall {v['recall']}   baseline {base['per_kind'].get(kind, {}).get('recall')}")
    read = record["read"]
    print(f"read sentences (once held out; {read['sentences']}, {read['ours']['identifiers']} identifiers): recall "
          f"{read['ours']['recall']:.4f}, baseline {read['baseline_presidio_stock_patterns']['recall']:.4f}; missed: {read['ours']['missed']}")
    read2, once = record["read2"], HELD_OUT_ONCE["read2"]
    print(f"read2 sentences (once held out, scored {once['recall']} so at {once['rules_commit']}; {read2['sentences']}, "
          f"{read2['ours']['identifiers']} identifiers): recall {read2['ours']['recall']:.4f} (with the listed kind "
          f"{read2['ours']['recall_with_kind']:.4f}), baseline {read2['baseline_presidio_stock_patterns']['recall']:.4f}; clean "
          f"sentences changed {read2['ours']['clean_sentences_changed']} of {read2['clean_sentences']}; missed: {read2['ours']['missed']}")
    if "heldout" in record:
        held = record["heldout"]
        print(f"held-out set {held['file']} ({held['sentences']} sentences, {held['ours']['identifiers']} identifiers): recall "
              f"{held['ours']['recall']}, with the listed kind {held['ours']['recall_with_kind']}, baseline "
              f"{held['baseline_presidio_stock_patterns']['recall']}; clean sentences changed {held['ours']['clean_sentences_changed']} "
              f"of {held['clean_sentences']}; missed by kind {held['ours']['missed_kinds']}")
        if args.show_missed:
            print(f"  missed: {missed}")
    print(f"real development set: {json.dumps(record['real_development_set'])}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
