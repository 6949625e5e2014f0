"""The tables README.md and docs/*.md quote, generated from the committed records under bench/results/.

    python bench/doc_tables.py            # rewrite every generated block from the records
    python bench/doc_tables.py --check    # exit 1 naming each block that differs, and each prose figure gone stale
    python bench/doc_tables.py --show NAME  # print one block

A generated block sits between two comments, which a page may move but not edit inside:

    <!-- generated: NAME (python bench/doc_tables.py) -->
    ...
    <!-- end of generated: NAME -->

The README's benchmark table keeps the markers ``bench/benchmark.py --table ... --readme`` has always written, and
``bench/benchmark.table`` draws it. Every block ends with the line naming its record, the command that wrote it and
where (commit, cores, load average). Prose may quote a figure too; ``QUOTED`` lists each such figure as the record
gives it, and ``--check`` fails when its page no longer shows it (tests/test_records.py runs the check).

To change a figure: run the command its record names, commit the record, run this script, commit the pages.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from record import LEGACY, RESULTS, entries  # noqa: E402

PAGES = ("README.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")))
BEGIN = "<!-- generated: {name} (python bench/doc_tables.py) -->"
END = "<!-- end of generated: {name} -->"
_ANY_BEGIN = re.compile(r"^<!-- generated: ([\w-]+) ", re.M)


@cache
def record(name: str) -> dict:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


# ---- formatting -------------------------------------------------------------------------------------------------

def f3(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def f2(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def signed(v: float) -> str:
    return f"{v:+.3f}"


def ci(e: dict, sign: bool = False) -> str:
    """'value [low, high]' of an estimate, the value signed where it is a difference."""
    fmt = signed if sign else f3
    return f"{fmt(e['value'])} [{f3(e['low'])}, {f3(e['high'])}]"


def points(v: float) -> str:
    """A difference of shares in points: +0.210 -> '+21.0 points'."""
    return f"{100 * v:+.1f} points"


def thousands(v: float) -> str:
    return f"{v:,.0f}"


def table(head: list[str], rows: list[list[object]], align: str = "") -> str:
    """A Markdown table; ``align`` gives one character per column ('l', 'r'; default left)."""
    rule = [("---:" if a == "r" else "---") for a in align.ljust(len(head), "l")]
    lines = [head, rule, *[[str(c) for c in r] for r in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def source(name: str, entry: str | None = None) -> str:
    """The closing line of a block: which record, its command and where it ran."""
    r = entries(record(name))[entry or ""] if entry is not None else record(name)
    bits = [f"`{r['command']}`" if "command" in r else "command not recorded"]
    if "commit" in r:
        bits.append(f"commit {r['commit'][:12]}")
    if "cores" in r:
        bits.append(f"{r['cores']} cores ({r['cpu_model']})")
    if "load_average" in r:
        bits.append("load average " + " / ".join(f"{x:.2f}" for x in r["load_average"]) + " (1 / 5 / 15 min)")
    legacy = " (written before bench/record.py; see its LEGACY)" if name in LEGACY else ""
    return f"Record `bench/results/{name}`{legacy}: " + ", ".join(bits) + "."


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


# ---- blocks -----------------------------------------------------------------------------------------------------

def benchmark_table() -> str:
    from benchmark import table as draw  # bench/benchmark.py --table draws the same

    return draw(record("benchmark.json"))


def benchmark_run() -> str:
    r = record("benchmark.json")
    w = r["wall_s"]
    times = table(["part of the run", "seconds"], [
        ["building the cohort (through the asset graph)", thousands(w["cohort"])],
        ["training, wall clock (two models side by side, one thread each)", thousands(w["train"])],
        ["training, model compute (summed over the four models)", thousands(w["train_compute"])],
        ["loading the evaluation data", thousands(w["load"])],
        ["scoring", thousands(w["evaluate"])],
        *([["... of which the real-anatomy block", thousands(w["real_anatomy"])]] if w.get("real_anatomy") else []),
        ["total", thousands(w["total"])],
    ], "lr")
    rows = []
    for seed, models in r["training"].items():
        for kind, t in models.items():
            last = t["validation"][-1] if t["validation"] else None
            rows.append([seed, kind, f"{t['samples_per_s']:.1f}", thousands(t["train_s"]),
                         f"{last['loss']:.3f} at step {last['step']:,}" if last else "n/a"])
    floor = next(t["image_free_floor"] for m in r["training"].values() for t in m.values())
    training = table(["seed", "model", "crops/s", "train s", f"validation dictionary loss (floor {floor:.3f})"], rows, "llrrl")
    s, t = r["cohort"]["studies"], r["cohort"]["test_tumor_organs"]
    split = (f"Studies {s['train']} / {s['val']} / {s['test']} (train / val / test); test tumour-class organs: "
             f"{t['with_lesion_ge10mm']} with a lesion of 10 mm or more, {t['with_lesion_lt10mm']} with smaller lesions only, "
             f"{t['without_lesion']:,} without.")
    return "\n\n".join([times, training, split, source("benchmark.json")])


ABLATE_ROWS = (  # (label, method, metric)
    ("grounded zero-shot AD AUC", "grounded", "ad_auc"),
    ("... size tasks", "grounded", "ad_auc_size"),
    ("... diffuse tasks", "grounded", "ad_auc_diffuse"),
    ("... focal tasks", "grounded", "ad_auc_focal"),
    ("OR accuracy", "grounded", "or_acc"),
    ("AD AUC, linear probe on the grounded embeddings", "probe_grounded", "ad_auc"),
    ("AD AUC, linear probe on a randomly initialised network", "probe_random", "ad_auc"),
    ("TD AUC, grounded zero-shot", "grounded", "td_auc"),
    ("TD AUC, probe on the grounded embeddings", "probe_grounded", "td_auc"),
    ("TD AUC, probe on a random network", "probe_random", "td_auc"),
    ("TS Dice, grounded", "grounded", "ts_dsc"),
    ("TS Dice on lesions of 10 mm or more, grounded", "grounded", "ts_dsc_ge10"),
    ("TS Dice on lesions of 10 mm or more, random network", "random", "ts_dsc_ge10"),
)


def _value(x: object) -> float | None:
    return x.get("value") if isinstance(x, dict) else x


def validation_settings() -> str:
    settings = entries(record("ablate.json"))
    names = list(settings)
    rows = [["steps", *(f"{s['train']['grounded']['validation'][-1]['step']:,}" for s in settings.values())],
            ["OR classes", *(str(s["eval"]["grounded"].get("or_classes", "n/a")) for s in settings.values())]]
    rows += [[label, *(f3(_value(s["eval"].get(method, {}).get(metric))) for s in settings.values())]
             for label, method, metric in ABLATE_ROWS]
    floor = next(iter(settings.values()))["train"]["grounded"]["image_free_floor"]
    rows.append([f"validation dictionary loss at the end (image-free floor {floor:.3f})",
                 *(f3(s["train"]["grounded"]["final_losses"]["val_abnormality_loss"]) for s in settings.values())])
    rows.append(["organs wholly in their crop (of those the scan does not cut)", *(f2(s["whole_in_view"]) for s in settings.values())])
    rows.append(["grounded training, crops/s", *(f"{s['train']['grounded']['samples_per_s']:.1f}" for s in settings.values())])
    out = [table(["validation split", *(f"`{n}`" for n in names)], rows, "l" + "r" * len(names))]
    out += [f"`{n}`: {s['note']}" for n, s in settings.items() if s.get("note")]
    out += [f"`{n}`: " + source("ablate.json", n) for n in names]
    return "\n\n".join(out)


GATES = (  # issue 33: the CNN and pooling must pass these on validation (a linear probe may show it)
    ("size tasks (macro)", ("ad_auc_size",), 0.93),
    ("gallstones", ("gallbladder/stone",), 0.95),
    ("kidney stones", ("kidney_left/stone", "kidney_right/stone"), 0.80),
    ("kidney cysts", ("kidney_left/cyst", "kidney_right/cyst"), 0.80),
    ("masses", ("liver/mass", "pancreas/mass", "kidney_left/mass", "kidney_right/mass"), 0.75),
)


def validation_gates() -> str:
    settings = entries(record("ablate.json"))
    rows = []
    for gate, tasks, target in GATES:
        for task in tasks:
            cells = []
            for s in settings.values():
                probe = s["eval"]["probe_grounded"]
                auc = _value(probe[task]) if task in probe else probe["ad_per_task"][task]["auc"]
                cells.append(f"{auc:.3f} ({verdict(auc >= target)})")
            rows.append([gate, task.replace("ad_auc_size", "every size task"), f">= {target:.2f}", *cells])
    return "\n\n".join([table(["gate", "task", "target", *(f"`{n}`" for n in settings)], rows, "lll" + "r" * len(settings)),
                        "AUC of the linear probe on the grounded embeddings, validation split. " + source("ablate.json", list(settings)[-1])])


def ctrate_macro() -> str:
    r = record("ctrate_labels.json")
    n, m = r["reports"], r["macro_f1"]
    labels = {"tuned": f"tuned ({n['tuned']} reports)", "checked": f"checked quarter ({n['checked']}, tuned on since issue 13)",
              "all": f"all {n['all']}"}
    rows = [[labels[p], f3(m[p]["ours"]), f3(m[p]["keyword"]), f3(m[p]["sentence"])] for p in ("tuned", "checked", "all")]
    return "\n\n".join([table(["part", "ours", "keyword", "sentence"], rows, "lrrr"), source("ctrate_labels.json")])


def ctrate_per_label() -> str:
    r = record("ctrate_labels.json")
    m = r["macro_f1"]["all"]
    rows = [["**macro F1**", "", f3(m["ours"]), f3(m["keyword"]), f3(m["sentence"])]]
    rows += [[label, v["positives"], f3(v["ours"]), f3(v["keyword"]), f3(v["sentence"])] for label, v in r["per_label_all"].items()]
    return "\n\n".join([table(["label", "positives", "ours", "keyword", "sentence"], rows, "lrrrr"), source("ctrate_labels.json")])


def organ_level() -> str:
    r = record("organ_level.json")
    c, les = r["ctrate"], r["lesanet"]

    def row(label: str, ours: dict, floor: dict, bold: bool = False) -> list[str]:
        o = f3(ours["pooled_balanced_accuracy"])
        return [label, f"**{o}**" if bold else o, f3(floor["pooled_balanced_accuracy"]),
                f3(ours["macro_balanced_accuracy"]), f3(floor["macro_balanced_accuracy"])]

    rows = [row(f"CT-RATE, {c['read']['reports']} read reports", c["read"]["ours"], c["read"]["floor"]),
            row(f"CT-RATE, {c['unread']['reports']} unread reports", c["unread"]["ours"], c["unread"]["floor"]),
            row(f"CT-RATE, all {c['all']['reports']}", c["all"]["ours"], c["all"]["floor"], bold=True),
            row(f"LesaNet, {les['ours']['phrases']} phrases", les["ours"], les["floor"], bold=True),
            [f"LesaNet placement: {les['ours']['phrases_with_an_organ']} phrases whose organ TotalSegmentator segments, "
             "organ set equal to the gold's", f"**{f3(les['ours']['organ_placement_accuracy'])}**",
             f3(les["floor"]["organ_placement_accuracy"]), "", ""]]
    ba = table(["gold", "pooled BA, ours", "floor", "macro BA, ours", "floor"], rows, "lrrrr")
    tuples = table(["CT-RATE reports", "tuples (gold)", "precision", "recall", "F1"],
                   [[f"{part} ({c[part]['reports']})", f"{c[part]['ours_tuples']['gold']:,}", f3(c[part]["ours_tuples"]["precision"]),
                     f3(c[part]["ours_tuples"]["recall"]), f3(c[part]["ours_tuples"]["f1"])] for part in ("read", "unread", "all")], "lrrrr")
    return "\n\n".join([ba, "Tuple scores over (report, place, status, abnormality), ours:", tuples, source("organ_level.json")])


def organ_level_per_place() -> str:
    r = record("organ_level.json")
    golds = {"CT-RATE": r["ctrate"]["all"], "LesaNet": r["lesanet"]}

    def positives(gold: dict, place: str) -> int:
        p = gold["ours"]["per_place"].get(place)
        return 0 if p is None else p["tp"] + p["fn"]

    def cell(p: dict | None) -> str:
        if p is None or p["tp"] + p["fn"] == 0:
            return ""
        return f"{f2(p['precision'])} / {f2(p['sensitivity'])} / {f3(p['balanced_accuracy'])}"

    places = sorted({p for g in golds.values() for p in g["ours"]["per_place"] if p != "all" and positives(g, p)})
    rows = [[p, *(x for g in golds.values() for x in (positives(g, p), cell(g["ours"]["per_place"].get(p)),
                                                        cell(g["floor"]["per_place"].get(p))))] for p in places]
    head = ["place", *(x for name in golds for x in (f"{name} positives", "ours", "floor"))]
    return "\n\n".join([table(head, rows, "lrllrll"), source("organ_level.json")])


SPEED_TARGET = 600  # real reports/s in one process, ahead of negspacy (issues 13, 31)


def _speed(r: dict) -> tuple[dict, dict]:
    runners = r["real"]["runners"]
    ours = next(v for k, v in runners.items() if "memo kept" in k)
    base = next(v for k, v in runners.items() if k.startswith("baseline"))
    return ours, base


def report_speed() -> str:
    r = record("report_speed.json")
    real = r["real"]
    names = {"memo kept": "ours, sentence memo kept through a pass", "memo emptied": "ours, memo emptied before every report",
             "baseline": "negspacy baseline"}
    rows = [[next(label for key, label in names.items() if key in k), v["reports_per_s"], v["reports_per_s_cpu"],
             f2(v["ratio_to_negspacy"]), f2(v["ratio_to_negspacy_cpu"])] for k, v in real["runners"].items()]
    head = ["runner", "reports/s (wall)", "reports/s (CPU)", "x negspacy (wall)", "x negspacy (CPU)"]
    note = (f"{real['reports']:,} readings ({real['passes']} passes over the real reports, {real['tokens_per_report']} tokens "
            "per report).")
    return "\n\n".join([table(head, rows, "lrrrr"), note, source("report_speed.json")])


def report_targets() -> str:
    o, c = record("organ_level.json"), record("ctrate_labels.json")
    every, unread, les = o["ctrate"]["all"], o["ctrate"]["unread"], o["lesanet"]
    ba, floor = every["ours"]["pooled_balanced_accuracy"], every["floor"]["pooled_balanced_accuracy"]
    place, place_floor = les["ours"]["organ_placement_accuracy"], les["floor"]["organ_placement_accuracy"]
    checked, all_f1 = c["macro_f1"]["checked"]["ours"], c["macro_f1"]["all"]["ours"]
    ours, base = _speed(record("report_speed.json"))
    rate = min(ours["reports_per_s"], ours["reports_per_s_cpu"])
    ahead = min(ours["ratio_to_negspacy"], ours["ratio_to_negspacy_cpu"]) > 1
    load = record("report_speed.json")["load_average"]
    rows = [
        ["organ-level balanced accuracy on our gold >= 0.93, above the sentence-negation floor",
         f"{f3(ba)} against {f3(floor)} ({every['reports']} reports; {f3(unread['ours']['pooled_balanced_accuracy'])} against "
         f"{f3(unread['floor']['pooled_balanced_accuracy'])} on the {unread['reports']} unread)", "`bench/organ_level.py`",
         verdict(ba >= 0.93 and ba > floor)],
        ["LesaNet placement >= 0.95 on phrases whose organ TotalSegmentator segments",
         f"{f3(place)} of {les['ours']['phrases_with_an_organ']} phrases (floor {f3(place_floor)})", "`bench/organ_level.py`",
         verdict(place >= 0.95)],
        ["CT-RATE macro F1 >= 0.95 on reports not tuned on",
         f"no such part left; the checked quarter (tuned on) {f3(checked)}, all {c['reports']['all']} {f3(all_f1)}",
         "`bench/ctrate_labels.py`", verdict(checked >= 0.95) + " on the checked quarter"],
        [f">= {SPEED_TARGET} real reports/s, ahead of negspacy in the same run",
         f"{ours['reports_per_s']} against {base['reports_per_s']} by wall clock ({f2(ours['ratio_to_negspacy'])}x), "
         f"{ours['reports_per_s_cpu']} against {base['reports_per_s_cpu']} by CPU time ({f2(ours['ratio_to_negspacy_cpu'])}x), "
         f"load average {load[0]:.1f} on {record('report_speed.json')['cores']} cores",
         "`bench/reports.py --n 0`", verdict(rate >= SPEED_TARGET and ahead) + " in the recorded run"],
        ["organ level >= 0.90 on real reports kept apart; US reports kept apart: the floor + 0.03", "not measurable here", "",
         "only their holders can score them"],
    ]
    return "\n\n".join([table(["target", "figure", "command", ""], rows),
                        "From the records of the sections below (each names its command and commit there)."])


DEID_SETS = (("tuning set (`phi_sentences.yaml`)", None), ("its `read` sentences", "read"), ("its `read2` sentences", "read2"),
             ("held-out set", "heldout"))


def deid() -> str:
    r = record("deid.json")

    def label(text: str, key: str | None) -> str:
        return f"{text} (`{Path(r[key]['file']).name}`)" if key == "heldout" and "file" in r[key] else text

    sets = [(label(text, key), r if key is None else r[key]) for text, key in DEID_SETS if key is None or key in r]

    def clean(s: dict, kind: str) -> str:
        changed = s[kind].get("clean_sentences_changed")
        total = s.get("clean_sentences", s.get("test_set", {}).get("clean_sentences"))
        return "" if changed is None else f"{changed} of {total}"

    def sentences(s: dict) -> int:
        return s.get("sentences", s.get("test_set", {}).get("sentences"))

    rows = [[label, sentences(s), s["ours"]["identifiers"], f3(s["ours"]["recall"]), f3(s["ours"]["recall_with_kind"]),
             clean(s, "ours"), f3(s["baseline_presidio_stock_patterns"]["recall"]), clean(s, "baseline_presidio_stock_patterns")]
            for label, s in sets]
    overview = table(["set", "sentences", "identifiers", "recall", "with the listed kind", "clean sentences changed",
                      "Presidio stock patterns: recall", "clean changed"], rows, "lrrrrrrr")
    kinds = list(r["ours"]["per_kind"])

    def per_kind(s: dict, kind: str) -> str:
        k = s["ours"]["per_kind"].get(kind)
        return "" if not k or not k["listed"] else f"{f3(k['recall'])} ({k['listed']})"

    kind_rows = [[kind, *(per_kind(s, kind) for _, s in sets)] for kind in kinds]
    by_kind = table(["kind: recall (identifiers)", *(label for label, _ in sets)], kind_rows, "l" + "r" * len(sets))
    out = [overview, by_kind]
    real = r.get("real_development_set")
    if isinstance(real, dict):
        replaced = ", ".join(f"{n} {k}" for k, n in real["replaced"].items() if n)
        out.append(f"Real development reports ({real['reports']}): {real['reports_changed']} changed ({replaced} replaced); "
                   f"reports whose findings changed: {real['reports_with_different_findings']}; "
                   f"{real['deid_reports_per_s']:.0f} reports/s in one process.")
    out.append(source("deid.json"))
    return "\n\n".join(out)


def cut_organs() -> str:
    r = record("cut_organs.json")
    rows = [[row["source"].replace("real:", "real "), f"{row['max_cut_face_ratio']:g}", row["cut_organs"], row["kept"],
             f2(row["kept_share"]), f2(row["inside_median"]), f2(row["inside_p10"]), row["kept_under_half_inside"],
             row["dropped_over_90pct_inside"]] for row in r["calibration"]]
    head = ["cut organs of", "max_cut_face_ratio", "cut organs", "kept", "share kept", "inside, median", "inside, 10th pct",
            "kept, under half inside", "dropped, over 90% inside"]
    out = [table(head, rows, "lrrrrrrrr")]
    if r["pair_counts"]:
        rules = [k for k in r["pair_counts"][0] if k == "exclude" or k.startswith("keep")]
        out.append(table(["pairs of", "organs", "cut", *rules],
                         [[c["data"], c["organs"], c["cut"], *(c[k] for k in rules)] for c in r["pair_counts"]], "l" + "r" * (2 + len(rules))))
    return "\n\n".join([*out, source("cut_organs.json")])


def records_table() -> str:
    """The committed records: command, commit and where each is quoted; then which script writes which record."""
    committed = _committed()
    pages = {p: (REPO / p).read_text(encoding="utf-8") for p in PAGES if p != "docs/DEVELOPMENT.md"}
    rows = []
    for name in committed:
        kept = entries(record(name))
        commands = sorted({f"`{r['command']}`" if "command" in r else "not recorded" for r in kept.values()})
        commits = sorted({r["commit"][:12] for r in kept.values() if "commit" in r}) or ["not recorded"]
        quoted = [f"[{Path(p).name}]({'../' if p == 'README.md' else ''}{Path(p).name})" for p, text in pages.items() if name in text]
        provenance = "legacy (`LEGACY` in bench/record.py)" if name in LEGACY else "full"
        rows.append([f"`{name}`", "<br>".join(commands), ", ".join(commits), provenance, ", ".join(quoted) or "nowhere"])
    written = table(["record", "command (as recorded)", "commit", "provenance", "quoted in"], rows)
    scripts = []
    for path in sorted((REPO / "bench").glob("*.py")):
        names = sorted(set(re.findall(r'write_record\(\s*"(\w+)"', path.read_text(encoding="utf-8"))))
        if names:
            scripts.append([f"`bench/{path.name}`", ", ".join(f"`{n}.json`" + ("" if f"{n}.json" in committed else " (not committed)")
                                                              for n in names)])
    return "\n\n".join([written, table(["script", "writes"], scripts)])


def _committed() -> list[str]:
    out = subprocess.run(["git", "ls-files", "bench/results/*.json"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return sorted(Path(p).name for p in out.split())


@dataclass(frozen=True)
class Block:
    name: str
    render: Callable[[], str]
    begin: str = ""
    end: str = ""

    @property
    def markers(self) -> tuple[str, str]:
        return self.begin or BEGIN.format(name=self.name), self.end or END.format(name=self.name)


BLOCKS = {b.name: b for b in (
    Block("benchmark", benchmark_table, "<!-- benchmark table: bench/benchmark.py --readme -->", "<!-- end of benchmark table -->"),
    Block("benchmark-run", benchmark_run),
    Block("validation-settings", validation_settings),
    Block("validation-gates", validation_gates),
    Block("report-targets", report_targets),
    Block("ctrate-macro", ctrate_macro),
    Block("ctrate-per-label", ctrate_per_label),
    Block("organ-level", organ_level),
    Block("organ-level-per-place", organ_level_per_place),
    Block("report-speed", report_speed),
    Block("deid", deid),
    Block("cut-organs", cut_organs),
    Block("records", records_table),
)}


# ---- figures quoted in prose ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Quote:
    page: str
    record: str
    what: str
    shown: Callable[[dict], str]  # the record -> the text the page must hold


def _ablate(setting: str, method: str, metric: str) -> Callable[[dict], str]:
    return lambda r: f3(_value(entries(r)[setting]["eval"][method][metric]))


def _real(r: dict) -> dict:
    return r["real_anatomy"]


def _real_grounded(label: str, metric: str) -> Callable[[dict], str]:
    """'<label> 0.734 (+0.133)': the grounded model's real-anatomy figure and its distance from the synthetic split."""
    return lambda r: (f"{label} {f3(_real(r)['methods']['grounded'][metric]['value'])} "
                      f"({signed(_real(r)['real_minus_synthetic']['grounded'][metric])})")


QUOTED = (
    Quote("README.md", "benchmark.json", "the run's commit", lambda r: r["commit"][:7]),
    Quote("README.md", "benchmark.json", "studies in all", lambda r: f"{sum(r['cohort']['studies'].values())} studies"),
    Quote("README.md", "benchmark.json", "test studies", lambda r: f"{r['cohort']['studies']['test']} test studies"),
    Quote("README.md", "benchmark.json", "total wall time", lambda r: f"{thousands(r['wall_s']['total'])} s"),
    Quote("README.md", "benchmark.json", "training wall time", lambda r: f"{thousands(r['wall_s']['train'])} s training"),
    Quote("README.md", "benchmark.json", "scoring wall time", lambda r: f"{thousands(r['wall_s']['evaluate'])} s scoring"),
    Quote("README.md", "benchmark.json", "cohort build time", lambda r: f"{thousands(r['wall_s']['cohort'])} s building"),
    Quote("README.md", "benchmark.json", "wall time with the cohort cached",
          lambda r: f"{thousands(r['wall_s']['total'] - r['wall_s']['cohort'])} s with the cohort cached"),
    Quote("README.md", "benchmark.json", "grounded - CLIP AD AUC", lambda r: ci(r["paired"]["grounded-clip"]["ad_auc"], sign=True)),
    Quote("README.md", "benchmark.json", "grounded - CLIP AD F1", lambda r: "AD F1 " + points(r["paired"]["grounded-clip"]["ad_f1"]["value"])),
    Quote("README.md", "benchmark.json", "grounded - CLIP TD AUC", lambda r: ci(r["paired"]["grounded-clip"]["td_auc"], sign=True)),
    Quote("README.md", "benchmark.json", "grounded - no_learning_report AD AUC",
          lambda r: ci(r["paired"]["grounded-no_learning_report"]["ad_auc"], sign=True)),
    Quote("README.md", "benchmark.json", "probe_grounded - probe_random AD AUC",
          lambda r: ci(r["paired"]["probe_grounded-probe_random"]["ad_auc"], sign=True)),
    Quote("README.md", "benchmark.json", "grounded ts_dsc_ge10", lambda r: f"`ts_dsc_ge10` {f3(r['methods']['grounded']['ts_dsc_ge10']['value'])}"),
    Quote("README.md", "benchmark.json", "grounded OR accuracy", lambda r: f"OR accuracy {f3(r['methods']['grounded']['or_acc']['value'])}"),
    Quote("README.md", "benchmark.json", "OR accuracy per seed",
          lambda r: "seeds " + " and ".join(f3(v) for v in r["methods"]["grounded"]["or_acc"]["per_seed"])),
    Quote("README.md", "benchmark.json", "grounded - CLIP TS Dice in points",
          lambda r: "{} [{:.1f}, {:.1f}]".format(points(r["paired"]["grounded-clip"]["ts_dsc"]["value"]),
                                                 100 * r["paired"]["grounded-clip"]["ts_dsc"]["low"],
                                                 100 * r["paired"]["grounded-clip"]["ts_dsc"]["high"])),
    Quote("README.md", "benchmark.json", "random encoder's TS Dice", lambda r: f"encoder ({f3(r['methods']['random']['ts_dsc']['value'])})"),
    Quote("README.md", "benchmark.json", "grounded - no_learning AD AUC", lambda r: ci(r["paired"]["grounded-no_learning"]["ad_auc"], sign=True)),
    Quote("README.md", "benchmark.json", "grounded - no_learning TD AUC", lambda r: ci(r["paired"]["grounded-no_learning"]["td_auc"], sign=True)),
    Quote("README.md", "benchmark.json", "Dice under 10 mm, every model",
          lambda r: "Dice {:.2f}-{:.2f}".format(*(f(r["detail"]["methods"][m]["ts_dsc_lt10"]["value"] for m in ("grounded", "clip", "random"))
                                                 for f in (min, max)))),
    Quote("README.md", "benchmark.json", "grounded crops/s",
          lambda r: "{:.1f}-{:.1f} organ crops/s".format(*(f(t["grounded"]["samples_per_s"] for t in r["training"].values()) for f in (min, max)))),
    Quote("README.md", "benchmark.json", "CLIP samples/s",
          lambda r: "{:.1f}-{:.1f} samples/s".format(*(f(t["global"]["samples_per_s"] for t in r["training"].values()) for f in (min, max)))),
    Quote("README.md", "benchmark.json", "real-anatomy studies and lesions",
          lambda r: f"{_real(r)['studies']} studies with {_real(r)['lesions']} lesions"),
    Quote("README.md", "benchmark.json", "real-anatomy grounded AD AUC and its distance from the synthetic split",
          lambda r: f"grounded AD AUC {ci(_real(r)['methods']['grounded']['ad_auc'])}, "
                    f"{signed(_real(r)['real_minus_synthetic']['grounded']['ad_auc'])} from the synthetic test split"),
    Quote("README.md", "benchmark.json", "real-anatomy grounded TD AUC", _real_grounded("TD AUC", "td_auc")),
    Quote("README.md", "benchmark.json", "real-anatomy grounded TS Dice", _real_grounded("TS Dice", "ts_dsc")),
    Quote("README.md", "benchmark.json", "real-anatomy grounded - CLIP AD AUC",
          lambda r: "grounded - CLIP AD AUC " + ci(_real(r)["paired"]["grounded-clip"]["ad_auc"], sign=True)),
    Quote("README.md", "benchmark.json", "real-anatomy no-learning AD AUC",
          lambda r: f"regression {f3(_real(r)['methods']['no_learning']['ad_auc']['value'])}"),
    Quote("README.md", "benchmark.json", "real organs whole in their crop",
          lambda r: f"{100 * _real(r)['whole_in_view']:.0f}% of the real organs"),
    Quote("README.md", "ablate.json", "OR accuracy on validation without and with the head",
          lambda r: "({} to {})".format(_ablate("benchmark, no head", "grounded", "or_acc")(r), _ablate("steps=1800", "grounded", "or_acc")(r))),
    Quote("docs/EVALUATION.md", "prompt_geometry.json", "negated prompts nearer, model",
          lambda r: f"{r['model']['negated_nearer']} of {r['model']['prompts']}"),
    Quote("docs/EVALUATION.md", "prompt_geometry.json", "negated prompts nearer, shipped MiniLM",
          lambda r: f"{r['baseline']['negated_nearer']} of {r['baseline']['prompts']}"),
    Quote("docs/REPORT_RULES.md", "ctrate_labels.json", "all-755 macro F1 at four decimals", lambda r: f"({r['macro_f1']['all']['ours']:.4f})"),
    Quote("docs/REPORT_RULES.md", "ctrate_labels.json", "checked-quarter macro F1", lambda r: f"checked quarter ({f3(r['macro_f1']['checked']['ours'])})"),
    Quote("docs/REPORT_RULES.md", "ctrate_labels.json", "weakest label",
          lambda r: "{} ({:.3f})".format(*min(((k, v["ours"]) for k, v in r["per_label_all"].items()), key=lambda kv: kv[1]))),
    Quote("docs/DATA.md", "deid.json", "real reports: dates replaced", lambda r: f"{r['real_development_set']['replaced']['DATE']} dates"),
    Quote("docs/DATA.md", "deid.json", "real reports changed", lambda r: f"in {r['real_development_set']['reports_changed']} reports"),
    Quote("docs/DATA.md", "deid.json", "held-out recall", lambda r: f"recall {f3(r['heldout']['ours']['recall'])}"),
    Quote("docs/REPORT_RULES.md", "ctrate_labels.json", "Lung opacity F1", lambda r: f"Lung opacity ({f3(r['per_label_all']['Lung opacity']['ours'])})"),
    Quote("docs/REPORT_RULES.md", "report_speed.json", "lower rate of the memo-kept runner",
          lambda r: f"{min(_speed(r)[0]['reports_per_s'], _speed(r)[0]['reports_per_s_cpu'])} reports/s"),
    Quote("docs/REPORT_RULES.md", "report_speed.json", "its ratio to negspacy",
          lambda r: f"{f2(min(_speed(r)[0]['ratio_to_negspacy'], _speed(r)[0]['ratio_to_negspacy_cpu']))} times negspacy"),
)


# ---- the pages --------------------------------------------------------------------------------------------------

def _line(text: str, marker: str, start: int = 0) -> int:
    """Where ``marker`` stands on a line of its own in ``text`` (from ``start``), else -1: a page may name a marker
    in its prose without opening a block."""
    m = re.compile(rf"^{re.escape(marker)}$", re.M).search(text, start)
    return m.start() if m else -1


def holds(text: str, block: Block) -> bool:
    return _line(text, block.markers[0]) >= 0


def rewrite(text: str, page: str = "") -> str:
    """``text`` with every block it holds drawn from the records again."""
    for block in BLOCKS.values():
        begin, end = block.markers
        start = _line(text, begin)
        if start < 0:
            continue
        stop = _line(text, end, start)
        if stop < 0:
            raise ValueError(f"{page}: block {block.name!r} has no end marker {end!r} on a line of its own")
        text = text[:start + len(begin)] + "\n" + block.render() + "\n" + text[stop:]
    return text


def problems() -> list[str]:
    """What --check reports: blocks that differ from their records, blocks no page holds, unknown blocks, stale prose."""
    found: set[str] = set()
    out = []
    for page in PAGES:
        text = (REPO / page).read_text(encoding="utf-8")
        for name in _ANY_BEGIN.findall(text):
            if name not in BLOCKS:
                out.append(f"{page}: no block is called {name!r} (python bench/doc_tables.py knows {sorted(BLOCKS)})")
        found |= {b.name for b in BLOCKS.values() if holds(text, b)}
        if rewrite(text, page) != text:
            differ = [b.name for b in BLOCKS.values() if holds(text, b) and rewrite(_only(text, b), page) != _only(text, b)]
            out.append(f"{page}: generated blocks differ from their records: {differ} (run python bench/doc_tables.py)")
    out += [f"block {name!r} is in no page" for name in sorted(set(BLOCKS) - found)]
    for q in QUOTED:
        shown = q.shown(record(q.record))
        if _words(shown) not in _words((REPO / q.page).read_text(encoding="utf-8")):
            out.append(f"{q.page}: the {q.what} is {shown!r} in bench/results/{q.record}, and the page does not say so")
    return out


def _words(text: str) -> str:
    """Whitespace runs as one space: a figure may wrap across lines of its page."""
    return " ".join(text.split())


def _only(text: str, block: Block) -> str:
    """The part of ``text`` from one block's begin marker to its end marker."""
    begin, end = block.markers
    start = _line(text, begin)
    return text[start:_line(text, end, start) + len(end)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/doc_tables.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 where a page and its records disagree")
    ap.add_argument("--show", metavar="NAME", choices=sorted(BLOCKS), help="print one block")
    args = ap.parse_args(argv)
    if args.show:
        print(BLOCKS[args.show].render())
        return 0
    if args.check:
        found = problems()
        print("\n".join(found) or "every generated block and quoted figure matches its record")
        return 1 if found else 0
    for _ in range(2):  # twice: the records block lists the pages that name each record, which the first pass may change
        for page in PAGES:
            path = REPO / page
            text = path.read_text(encoding="utf-8")
            new = rewrite(text, page)
            if new != text:
                path.write_text(new, encoding="utf-8")
                print(f"rewrote {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
