"""Benchmark: report understanding, ours vs. a negspacy baseline, on realistic-length CT reports.

    python bench/reports.py                  # 10,000 synthetic reports (~300 tokens each), < 3 min,
                                             # then the 755 real CT-RATE reports where ../shared is present
    python bench/reports.py --n 2000 --no-workers
    python bench/reports.py --n 0            # real development set only

Reports are written by the synthetic cohort's report writer (chest, abdomen-pelvis, chest-abdomen-
pelvis, both paraphrase banks) and padded with realistic extra sentences to ~300 tokens.
- ours: `pipeline.report` (spacy.blank("en") + the `ctglip_report` component: sections, organ headers,
  sentences, two precompiled PhraseMatchers, ConText scopes, organ binding, sizes), one process, and
  `extract_table(workers=2)` for the projection;
- baseline: spacy.blank("en") + sentencizer + entity_ruler (the same organ and finding phrases,
  matched on LOWER) + negspacy's Negex ("en_clinical" termset), one process: it finds and negates
  entities but has no sections, organ headers, groups, uncertainty or binding.
Prints reports/s and tokens/s of both, the ratio ours/baseline, and the projected wall time of
17,702 reports on 2 workers.

Real development set (../shared/realdata/reports_ctrate_dev, or --real FILE; skipped where absent): the 755
CT-RATE reports as written, `--real-repeats` passes, timed the same interleaved way, each runner one report at a
time through the public entry `extract_findings(text)` (cleaning, language check, pipeline) with the default
configuration (the garbage collector left alone, as in a library caller's process):
- ours with the sentence memo kept through a pass (each pass starts with an empty one: a first reading of 755);
- ours with the memo emptied before every report (no report gains from another's sentences);
- the negspacy baseline, `nlp.pipe` over the raw texts.
The memo is the speed-up kept where it makes the code harder to follow; the last line says what it buys. Speeds are given as ratios against negspacy measured in the same run (the machine is shared:
absolute rates move with its load, which the record keeps beside them). Writes bench/results/report_speed.json: the
figures of both races, under `synthetic` and `real`.
Targets (issues 13, 31): >= 600 real reports/s with `extract_findings` in one process, and faster than the baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import file_input, write_record  # noqa: E402
from report_corpus import pad_to_length, synthetic  # noqa: E402

from pipeline.report import extract_findings, extract_table  # noqa: E402
from pipeline.report.api import prepare  # noqa: E402
from pipeline.report.dictionary import abnormalities  # noqa: E402
from pipeline.report.finding import ReportConfig  # noqa: E402
from pipeline.report.lexicon import organ_phrases  # noqa: E402
from pipeline.report.context import build_nlp  # noqa: E402

TARGET_REPORTS = 17_702
TARGET_REAL_RATE = 600  # real reports/s, one process (issue 13)
REPO = Path(__file__).resolve().parents[1]
REAL_CSV = Path(os.environ.get("CTGLIP_REALDATA", REPO.parent / "shared" / "realdata")) / "reports_ctrate_dev" / "ctrate_reports_labels.csv"


def corpus(n: int, seed: int) -> list[str]:
    half = n // 2
    a, _ = synthetic(half, seed, reserved=False)
    b, _ = synthetic(n - half, seed + 1, reserved=True)
    rng = np.random.default_rng(seed)
    return [pad_to_length(t, rng) for t in pd.concat([a, b])["ReportText"]]


def baseline_nlp():
    import spacy
    from negspacy.negation import Negex  # noqa: F401  (registers the "negex" factory)
    from negspacy.termsets import termset

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
    patterns = [{"label": "ORGAN", "pattern": p} for p in organ_phrases()]
    patterns += [{"label": "FINDING", "pattern": s} for a in abnormalities() for s in a.synonyms]
    ruler.add_patterns(patterns)
    nlp.add_pipe("negex", config={"neg_termset": termset("en_clinical").get_patterns(), "ent_types": ["ORGAN", "FINDING"]})
    return nlp


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def race(runners: dict, items: list, round_size: int, after_warmup=None) -> dict[str, tuple[float, float, int]]:
    """name -> (wall seconds, CPU seconds of this process, outputs) of each runner (a chunk of items -> number
    of outputs) over all items. After a warm-up (lexeme caches), they run interleaved in rounds, rotating which
    goes first, so that a shared machine's changing load hits all alike; CPU time is printed beside wall time
    because on a busy machine wall time also counts other people's work. `after_warmup` (if given) is called
    between the warm-up and the timed rounds (to empty our sentence memo)."""
    for run in runners.values():
        run(items[:200])
    if after_warmup is not None:
        after_warmup()
    totals = {name: [0.0, 0.0, 0] for name in runners}
    names = list(runners)
    for k, i in enumerate(range(0, len(items), round_size)):
        chunk = items[i:i + round_size]
        for name in names[k % len(names):] + names[:k % len(names)]:
            cpu = time.process_time()
            t, out = timed(lambda: runners[name](chunk))
            totals[name][0] += t
            totals[name][1] += time.process_time() - cpu
            totals[name][2] += out
    return {name: tuple(v) for name, v in totals.items()}


def table(results: dict[str, tuple[float, float, int]], n_texts: int, n_tokens: int) -> None:
    print(f"{'pipeline':36s} {'wall s':>7s} {'cpu s':>7s} {'reports/s':>10s} {'(cpu)':>7s} {'tokens/s':>9s} {'outputs':>8s}")
    for name, (t, cpu, k) in results.items():
        print(f"{name:36s} {t:7.1f} {cpu:7.1f} {n_texts / t:10.0f} {n_texts / cpu:7.0f} {n_tokens / t:9.0f} {k:8d}")


def memo(nlp) -> dict:
    """Our component's sentence memo (ReportComponent.memo)."""
    return nlp.get_pipe("ctglip_report").memo


def synthetic_bench(args, ours, base, config: ReportConfig) -> dict:
    """The synthetic-report race (and the 2-worker projection); returns its figures for the record."""
    t_gen, texts = timed(lambda: corpus(args.n, args.seed))
    texts = [prepare(t, config)[0] for t in texts]
    n_tokens = sum(len(d) for d in ours.tokenizer.pipe(texts))
    print(f"corpus: {len(texts)} synthetic reports, {n_tokens / len(texts):.0f} tokens/report (generated in {t_gen:.1f} s)")
    res = race({
        "ours (1 process)": lambda c: sum(len(d._.ctglip_findings) for d in ours.pipe(c, batch_size=args.batch_size)),
        "baseline negspacy (1 process)": lambda c: sum(len(d.ents) for d in base.pipe(c, batch_size=args.batch_size)),
    }, texts, args.round, after_warmup=memo(ours).clear)
    table(res, len(texts), n_tokens)
    (t_ours, cpu_ours, n_ours), (t_base, cpu_base, _) = res["ours (1 process)"], res["baseline negspacy (1 process)"]
    print(f"ratio ours/baseline (reports/s): {t_base / t_ours:.2f}x wall, {cpu_base / cpu_ours:.2f}x cpu  (ours also: sections, organ headers, groups "
          f"and sides, uncertainty/historical, organ binding, sizes, {n_ours / len(texts):.0f} findings/report)")
    print(f"projected {TARGET_REPORTS} reports, 1 process: ours {TARGET_REPORTS * t_ours / len(texts):.0f} s, "
          f"baseline {TARGET_REPORTS * t_base / len(texts):.0f} s")
    figures = {"reports": len(texts), "seed": args.seed, "tokens_per_report": round(n_tokens / len(texts)),
               "runners": {name: {"wall_s": round(t, 2), "cpu_s": round(cpu, 2), "outputs": k,
                                  "reports_per_s": round(len(texts) / t), "reports_per_s_cpu": round(len(texts) / cpu)}
                           for name, (t, cpu, k) in res.items()},
               "ratio_to_negspacy": round(t_base / t_ours, 2), "ratio_to_negspacy_cpu": round(cpu_base / cpu_ours, 2),
               "projected_s": {"reports": TARGET_REPORTS, "ours": round(TARGET_REPORTS * t_ours / len(texts)),
                               "baseline": round(TARGET_REPORTS * t_base / len(texts))}}
    if not args.no_workers:
        df = pd.DataFrame({"id": range(len(texts)), "text": texts})
        t2, out = timed(lambda: extract_table(df, "text", "id", workers=2))
        print(f"ours, extract_table(workers=2): {t2:.1f} s ({len(texts) / t2:.0f} reports/s incl. process start "
              f"and DataFrame assembly, {len(out)} findings) -> projected {TARGET_REPORTS} reports: "
              f"{TARGET_REPORTS * t2 / len(texts):.0f} s")
        figures["extract_table_2_workers"] = {"wall_s": round(t2, 2), "reports_per_s": round(len(texts) / t2), "findings": len(out),
                                              "projected_s": round(TARGET_REPORTS * t2 / len(texts))}
    return figures


def real_bench(args, ours, base, config: ReportConfig) -> dict | None:
    """The real-report race; returns its figures for the record (None where the set is absent)."""
    if not args.real.is_file():
        print(f"real development set: not found at {args.real}, skipped")
        return None
    raw = pd.read_csv(args.real, usecols=["report_text"])["report_text"].tolist()
    texts = raw * args.real_repeats
    prepared = [prepare(t, config)[0] for t in texts]
    n_tokens = sum(len(d) for d in ours.tokenizer.pipe(prepared))
    print(f"\ncorpus: {len(raw)} real CT-RATE reports x {args.real_repeats} passes = {len(texts)}, "
          f"{n_tokens / len(texts):.0f} tokens/report ({args.real})")
    component = ours.get_pipe("ctglip_report")
    # The sentence memo pays off where reports share sentences; repeated passes over the same reports would overstate
    # that, so each runner starts every pass with an empty memo of its own (a pass is a first reading of 755 reports),
    # and one runner empties it before every report (no report gains from another's sentences).
    memos: dict[tuple[int, int], dict] = {}

    def per_pass(runner: int, comp, fn):
        def run(c):
            n = 0
            for k in sorted({i // len(raw) for i in c}):
                comp.memo = memos.setdefault((runner, k), {})
                n += fn([i for i in c if i // len(raw) == k])
            return n
        return run

    def memo_emptied(c):
        n = 0
        for i in c:
            component.memo = {}
            n += len(extract_findings(texts[i], config))
        return n

    res = race({
        NAMES[0]: per_pass(0, component, lambda c: sum(len(extract_findings(texts[i], config)) for i in c)),
        NAMES[1]: memo_emptied,
        NAMES[2]: lambda c: sum(len(d.ents) for d in base.pipe([texts[i] for i in c], batch_size=args.batch_size)),
    }, list(range(len(texts))), args.round, after_warmup=memos.clear)
    table(res, len(texts), n_tokens)
    t_base, cpu_base, _ = res[NAMES[2]]
    figures = {}
    for name in NAMES:
        t, cpu, _ = res[name]
        figures[name] = {"reports_per_s": round(len(texts) / t), "reports_per_s_cpu": round(len(texts) / cpu),
                         "ratio_to_negspacy": round(t_base / t, 2), "ratio_to_negspacy_cpu": round(cpu_base / cpu, 2)}
    for name in NAMES[:2]:
        f = figures[name]
        print(f"{name}: {f['ratio_to_negspacy']:.2f}x negspacy (wall), {f['ratio_to_negspacy_cpu']:.2f}x (cpu)")
    ours_fig, emptied = figures[NAMES[0]], figures[NAMES[1]]
    for name, f in (("memo kept", ours_fig), ("memo emptied per report", emptied)):
        rate = min(f["reports_per_s"], f["reports_per_s_cpu"])
        print(f"target >= {TARGET_REAL_RATE} real reports/s ({name}): {rate} -> {'met' if rate >= TARGET_REAL_RATE else 'MISSED'}; "
              f"faster than negspacy: {'yes' if min(f['ratio_to_negspacy'], f['ratio_to_negspacy_cpu']) > 1 else 'NO'}")
    # what the memo buys: the share of the memo-less reading time it saves
    for clock, key in (("wall", "reports_per_s"), ("cpu", "reports_per_s_cpu")):
        print(f"the sentence memo saves {1 - emptied[key] / ours_fig[key]:.0%} of the reading time ({clock})")
    return {"reports": len(texts), "passes": args.real_repeats, "tokens_per_report": round(n_tokens / len(texts)), "runners": figures}


NAMES = ("ours: extract_findings, memo kept through a pass", "ours: extract_findings, memo emptied per report",
         "baseline: negspacy, nlp.pipe")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/reports.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--n", type=int, default=10_000, help="number of synthetic reports (default 10,000; 0: the real set only)")
    parser.add_argument("--seed", type=int, default=2024, help="corpus seed")
    parser.add_argument("--batch-size", type=int, default=256, help="nlp.pipe batch size for both pipelines")
    parser.add_argument("--round", type=int, default=500, help="reports per interleaved timing round")
    parser.add_argument("--no-workers", action="store_true", help="skip the 2-worker run (projection)")
    parser.add_argument("--real", type=Path, default=REAL_CSV,
                        help="CT-RATE development CSV (report_text column); skipped where absent (default: %(default)s)")
    parser.add_argument("--real-repeats", type=int, default=4, help="passes over the real reports (default 4)")
    parser.add_argument("--record", type=lambda v: Path(v) if v else None, default=REPO / "bench" / "results" / "report_speed.json",
                        help="JSON record of both races (default: %(default)s; '' for none)")
    args = parser.parse_args(argv)

    config = ReportConfig()
    ours = build_nlp(config.skip_sections, config.fast_tokenizer)
    base = baseline_nlp()
    values = {}
    if args.n > 0:
        values["synthetic"] = synthetic_bench(args, ours, base, config)
    real = real_bench(args, ours, base, config)
    if real is not None:
        values["real"] = real
    if values and args.record:
        record = write_record("report_speed", values, script=__file__, argv=argv, out=args.record,
                              inputs={"real": file_input(args.real)} if real is not None else {})
        print(f"record: {args.record} (load average {record['load_average']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
