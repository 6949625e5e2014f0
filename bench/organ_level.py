"""Organ-level accuracy of the report rules on real text, beside a sentence-negation floor.

    python bench/organ_level.py            # writes bench/results/organ_level.json and prints the tables

Two golds written by reading (ids and labels only; the texts stay in ../shared/realdata):
- CT-RATE: tests/data/ctrate_dev_organ_gold.csv, 150 development reports (`select_reports`), one row per (report,
  organ or region, status, abnormality). The last 40 reports added (`UNREAD`) are scored but their errors are never
  printed here nor read while writing rules: the part of the gold that is still held out.
- LesaNet: tests/data/lesanet_organ_gold.csv, the 500 lesion phrases of NIH reports with the organ or region each
  lesion sits in (none where it sits in no place of ours: omentum, pelvis, a limb).

Per place (organs; vertebrae and ribs pooled as `spine` and `ribs`; regions by name) over every (report, place) pair
of the gold's reports and the places either side names: a place is positive when the gold has an abnormal row there
(LesaNet: any lesion), predicted when a finding there is abnormal (LesaNet: any finding: every phrase describes a
lesion, and the point is where; "left paraaortic lymph node" is a node the rules call normal, placed all the same). Balanced accuracy = (sensitivity + specificity) / 2, pooled over all pairs and per place.

The floor labeler uses the same lexicons and nothing else: in each sentence without "no / not / without / absent /
free of / ruled out", a finding word makes every organ named in the sentence abnormal, or its default organs where
none is named.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from record import file_input, write_record  # noqa: E402

from pipeline.report import extract_findings  # noqa: E402
from pipeline.report.dictionary import abnormalities  # noqa: E402
from pipeline.report.labels import dev_csv, read_labelled  # noqa: E402
from pipeline.report.lexicon import REGION, organ_phrases  # noqa: E402

CTRATE_GOLD = REPO / "tests" / "data" / "ctrate_dev_organ_gold.csv"
LESANET_GOLD = REPO / "tests" / "data" / "lesanet_organ_gold.csv"
RECORD = REPO / "bench" / "results" / "organ_level.json"
N_EARLIER, N_ADDED, UNREAD = 40, 110, 40  # the gold's reports: 40 of issue 13, 110 of issue 31 (the last 40 unread)

Places = dict[str, set[str]]  # report (or phrase) id -> places


def lesanet_json(realdata: Path | None = None) -> Path:
    return (realdata or dev_csv().parents[1]) / "lesanet_ct_phrases" / "hand_labeled_test_set.json"


def select_reports(reports: pd.DataFrame) -> list[str]:
    """The CT-RATE gold's reports, in the order they were added: order the development set by sha256(report_id); the
    first 25, then the first 15 of the rest with at least 6 positive CT-RATE labels (issue 13), then the next 110
    of the order not taken yet (issue 31)."""
    import hashlib

    labels = reports.drop(columns=["report_id", "report_text"])
    n_pos = dict(zip(reports["report_id"], labels.sum(axis=1)))
    order = sorted(reports["report_id"], key=lambda rid: hashlib.sha256(rid.encode()).hexdigest())
    earlier = order[:25] + [rid for rid in order[25:] if n_pos[rid] >= 6][:15]
    added = [rid for rid in order[25:] if rid not in set(earlier)][:N_ADDED]
    return earlier + added


def unread(selected: list[str]) -> list[str]:
    """The last UNREAD reports of the gold: written by reading the texts, never scored report by report."""
    return selected[-UNREAD:]


def place_group(place: str) -> str:
    """The unit places are scored in: vertebrae and the spine region are one `spine`, ribs one `ribs`."""
    if place.startswith("vertebrae_") or place == "spine":
        return "spine"
    if place.startswith("rib_"):
        return "ribs"
    return place


def read_ctrate_gold(path: Path = CTRATE_GOLD) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def ctrate_positives(gold: pd.DataFrame) -> tuple[Places, Places]:
    """(abnormal places, every place named) per report of the CT-RATE gold."""
    gold = gold.assign(place=(gold["organ"] + gold["region"]).map(place_group))
    named = gold.groupby("report_id")["place"].agg(set).to_dict()
    abnormal = gold[gold["status"] == "abnormal"].groupby("report_id")["place"].agg(set).to_dict()
    return {rid: abnormal.get(rid, set()) for rid in named}, named


def read_lesanet_gold(path: Path = LESANET_GOLD) -> Places:
    gold = pd.read_csv(path, dtype=str, keep_default_na=False)
    out: Places = {}
    for r in gold.itertuples(index=False):
        place = r.organ or r.region
        out.setdefault(r.lesion_idx, set())
        if place:
            out[r.lesion_idx].add(place)
    return out


def our_places(text: str, statuses: Iterable[str] = ("abnormal",), group: bool = True) -> set[str]:
    keep = set(statuses)
    out = {f.organ or f.region for f in extract_findings(text) if f.status in keep}
    return {place_group(p) for p in out} if group else out


# --- the sentence-negation floor -----------------------------------------------------------------------------------
_NEGATION = re.compile(r"\b(?:no|not|without|absent|free of|ruled out)\b")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def _alternation(phrases: Iterable[str]) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True)) + r")\b")


@lru_cache(maxsize=1)
def _floor_lexicon() -> tuple[re.Pattern, dict[str, tuple[str, ...]], re.Pattern, dict[str, tuple[str, ...]]]:
    organs = {p: tuple(t for t in targets if not t.endswith(":elsewhere")) for p, targets in organ_phrases().items()}
    defaults: dict[str, tuple[str, ...]] = {}
    for a in abnormalities():
        implied = dict(a.implies)
        for syn in a.synonyms:
            defaults.setdefault(syn, implied.get(syn) or a.default)
    return _alternation(organs), organs, _alternation(defaults), defaults


def floor_places(text: str, group: bool = True) -> set[str]:
    """Organs and regions the sentence-negation floor calls abnormal."""
    organ_re, organs, finding_re, defaults = _floor_lexicon()
    out: set[str] = set()
    for sentence in _SENTENCE.split(text.lower()):
        if _NEGATION.search(sentence):
            continue
        found = finding_re.findall(sentence)
        if not found:
            continue
        named = [t for p in organ_re.findall(sentence) for t in organs[p]]
        out.update(named or [t for f in found for t in defaults[f]])
    places = {t[len(REGION):] if t.startswith(REGION) else t for t in out}
    return {place_group(p) for p in places} if group else places


# --- scoring -------------------------------------------------------------------------------------------------------
def balanced(gold: Places, pred: Places, universe: Places | None = None) -> pd.DataFrame:
    """Per place and pooled ("all"): tp, fn, fp, tn, precision, sensitivity, specificity, balanced accuracy over the
    (report, place) pairs of the gold's reports and the places the gold (`universe`, else the positives) or the
    prediction names anywhere."""
    universe = universe or gold
    places = set().union(*universe.values(), *gold.values(), *(pred.get(r, set()) for r in gold))
    rows = []
    for place in sorted(places):
        g = {r for r, ps in gold.items() if place in ps}
        p = {r for r in gold if place in pred.get(r, set())}
        rows.append({"place": place, "tp": len(g & p), "fn": len(g - p), "fp": len(p - g), "tn": len(gold) - len(g | p)})
    table = pd.DataFrame(rows).set_index("place")
    table.loc["all"] = table.sum()
    table["precision"] = table["tp"] / (table["tp"] + table["fp"]).where(lambda s: s > 0)
    table["sensitivity"] = table["tp"] / (table["tp"] + table["fn"]).where(lambda s: s > 0)
    table["specificity"] = table["tn"] / (table["tn"] + table["fp"]).where(lambda s: s > 0)
    table["balanced_accuracy"] = (table["sensitivity"] + table["specificity"]) / 2
    return table


def placement_accuracy(gold: Places, pred: Places, organs_only: bool) -> tuple[float, int]:
    """Share of phrases whose predicted places equal the gold's (organs_only: compared on organ classes, over the
    phrases whose gold names an organ class, i.e. one TotalSegmentator segments), and how many phrases count."""
    def organs(ps: set[str]) -> set[str]:
        return {p for p in ps if p not in _REGIONS} if organs_only else ps
    ids = [i for i, ps in gold.items() if organs(ps)] if organs_only else list(gold)
    hits = sum(organs(gold[i]) == organs(pred.get(i, set())) for i in ids)
    return (hits / len(ids) if ids else float("nan")), len(ids)


_REGIONS = frozenset({"lymph_node", "pleura", "mediastinum", "medical_material", "spine", "chest_wall", "breast",
                      "soft_tissue"})


Key = tuple[str, str, str, str]  # report_id, organ or region, status, abnormality ("" for normal)


def gold_keys(gold: pd.DataFrame) -> set[Key]:
    """The CT-RATE gold as (report, organ or region, status, abnormality) tuples."""
    return {(r.report_id, r.organ or r.region, r.status, r.abnormality if r.status != "normal" else "")
            for r in gold.itertuples(index=False)}


def finding_keys(report_id: str, findings: Iterable) -> set[Key]:
    """The same tuples of one report's findings (each once, from whichever sentences)."""
    return {(report_id, f.organ or f.region, f.status, (f.abnormality or "") if f.status != "normal" else "")
            for f in findings if f.organ or f.region}


def tuple_scores(gold: set[Key], pred: set[Key]) -> dict[str, float]:
    """Micro precision, recall and F1 over the tuples."""
    tp = len(gold & pred)
    p = tp / len(pred) if pred else 0.0
    r = tp / len(gold) if gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "gold": len(gold), "predicted": len(pred)}


def _labelled(texts: dict[str, str], labeler: Callable[[str], set[str]]) -> Places:
    return {i: labeler(t) for i, t in texts.items()}


def run_ctrate(reports: pd.DataFrame, gold: pd.DataFrame) -> dict[str, dict]:
    """Tables per part (read: the 110 reports whose errors may be read; unread: the last 40; all) and labeler."""
    selected = select_reports(reports)
    texts = reports.set_index("report_id").loc[selected, "report_text"].to_dict()
    positives, named = ctrate_positives(gold)
    preds = {"ours": _labelled(texts, our_places), "floor": _labelled(texts, floor_places)}
    held = set(unread(selected))
    parts = {"read": [r for r in selected if r not in held], "unread": [r for r in selected if r in held], "all": selected}
    keys = gold_keys(gold)
    ours = set().union(*(finding_keys(r, extract_findings(t)) for r, t in texts.items()))
    out: dict[str, dict] = {}
    for part, ids in parts.items():
        g = {r: positives[r] for r in ids}
        u = {r: named[r] for r in ids}
        out[part] = {name: balanced(g, p, u) for name, p in preds.items()}
        chosen = set(ids)
        out[part]["tuples"] = tuple_scores({k for k in keys if k[0] in chosen}, {k for k in ours if k[0] in chosen})
        out[part]["reports"] = len(ids)
    return out


def run_lesanet(phrases: list[dict], gold: Places) -> dict[str, object]:
    texts = {str(p["lesion_idx"]): p["text"] for p in phrases}
    preds = {"ours": _labelled(texts, lambda t: our_places(t, ("abnormal", "uncertain", "normal"), group=False)),
             "floor": _labelled(texts, lambda t: floor_places(t, group=False))}
    out: dict[str, object] = {}
    for name, pred in preds.items():
        grouped = ({i: {place_group(p) for p in ps} for i, ps in gold.items()},
                   {i: {place_group(p) for p in ps} for i, ps in pred.items()})
        out[name] = {"table": balanced(*grouped), "placement": placement_accuracy(gold, pred, organs_only=False),
                     "organ_placement": placement_accuracy(gold, pred, organs_only=True)}
    return out


def _figures(table: pd.DataFrame) -> dict:
    cols = ["tp", "fn", "fp", "tn", "precision", "sensitivity", "specificity", "balanced_accuracy"]
    return {place: {c: (None if pd.isna(v) else (int(v) if c in cols[:4] else round(float(v), 4)))
                    for c, v in row[cols].items()} for place, row in table.iterrows()}


def macro(table: pd.DataFrame) -> float:
    """Mean balanced accuracy over the places with a positive in the gold (the pooled row left out)."""
    rows = table.drop(index="all")
    return float(rows.loc[rows["tp"] + rows["fn"] > 0, "balanced_accuracy"].mean())


def _record(ctrate: dict[str, dict], lesa: dict[str, dict], seconds: float) -> dict:
    def labeler(t: pd.DataFrame) -> dict:
        return {"pooled_balanced_accuracy": round(float(t.loc["all", "balanced_accuracy"]), 4),
                "macro_balanced_accuracy": round(macro(t), 4), "per_place": _figures(t)}
    return {
        "seconds": round(seconds, 1),
        "ctrate": {part: {"reports": r["reports"], **{n: labeler(r[n]) for n in ("ours", "floor")},
                          "ours_tuples": {k: round(v, 4) for k, v in r["tuples"].items()}} for part, r in ctrate.items()},
        "lesanet": {n: {**labeler(r["table"]),
                        "placement_accuracy": round(r["placement"][0], 4), "phrases": r["placement"][1],
                        "organ_placement_accuracy": round(r["organ_placement"][0], 4),
                        "phrases_with_an_organ": r["organ_placement"][1]} for n, r in lesa.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/organ_level.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--record", type=Path, default=RECORD, help=f"JSON record to write (default {RECORD})")
    args = parser.parse_args(argv)
    csv, lesanet = dev_csv(), lesanet_json()
    if not csv.is_file() or not lesanet.is_file():
        print(f"error: the development sets are not at {csv} and {lesanet}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    ctrate = run_ctrate(read_labelled(csv), read_ctrate_gold())
    lesa = run_lesanet(json.loads(lesanet.read_text(encoding="utf-8")), read_lesanet_gold())
    record = write_record("organ_level", _record(ctrate, lesa, time.perf_counter() - start), script=__file__, argv=argv,
                          inputs={name: file_input(path) for name, path in (("ctrate_reports", csv), ("lesanet_phrases", lesanet),
                                                                              ("ctrate_gold", CTRATE_GOLD), ("lesanet_gold", LESANET_GOLD))},
                          out=args.record)
    for part, r in record["ctrate"].items():
        t = r["ours_tuples"]
        print(f"CT-RATE gold, {part}: pooled BA ours {r['ours']['pooled_balanced_accuracy']:.3f} / floor "
              f"{r['floor']['pooled_balanced_accuracy']:.3f}; macro BA ours {r['ours']['macro_balanced_accuracy']:.3f} / "
              f"floor {r['floor']['macro_balanced_accuracy']:.3f}; tuples P {t['precision']:.3f} R {t['recall']:.3f} "
              f"F1 {t['f1']:.3f}")
    cols = ["tp", "fn", "fp", "precision", "sensitivity", "balanced_accuracy"]
    both = pd.concat({n: ctrate["all"][n][cols] for n in ("ours", "floor")}, axis=1)
    print("\nCT-RATE gold, all 150 reports, per place with a positive:")
    print(both[(both[("ours", "tp")] + both[("ours", "fn")]) > 0].to_string(float_format=lambda v: f"{v:.3f}"))
    for n, r in record["lesanet"].items():
        print(f"\nLesaNet, {n}: pooled BA {r['pooled_balanced_accuracy']:.3f}, macro {r['macro_balanced_accuracy']:.3f}; "
              f"placement {r['placement_accuracy']:.3f} of {r['phrases']} phrases; organ placement "
              f"{r['organ_placement_accuracy']:.3f} of {r['phrases_with_an_organ']} phrases with an organ")
    print("\nLesaNet, per place with a positive:")
    lt = pd.concat({n: r["table"][cols] for n, r in lesa.items()}, axis=1)
    print(lt[(lt[("ours", "tp")] + lt[("ours", "fn")]) > 0].to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\nrecord: {args.record}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
