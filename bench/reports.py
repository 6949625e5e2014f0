"""Benchmark: report understanding, ours vs. a negspacy baseline, on realistic-length CT reports.

    python bench/reports.py                  # 10,000 reports (~300 tokens each), < 3 min
    python bench/reports.py --n 2000 --no-workers

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
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_corpus import pad_to_length, synthetic  # noqa: E402

from pipeline.report import extract_table  # noqa: E402
from pipeline.report.api import prepare  # noqa: E402
from pipeline.report.dictionary import abnormalities  # noqa: E402
from pipeline.report.finding import ReportConfig  # noqa: E402
from pipeline.report.lexicon import organ_phrases  # noqa: E402
from pipeline.report.nlp import build_nlp  # noqa: E402

TARGET_REPORTS = 17_702


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/reports.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--n", type=int, default=10_000, help="number of reports (default 10,000)")
    parser.add_argument("--seed", type=int, default=2024, help="corpus seed")
    parser.add_argument("--batch-size", type=int, default=256, help="nlp.pipe batch size for both pipelines")
    parser.add_argument("--round", type=int, default=500, help="reports per interleaved timing round")
    parser.add_argument("--no-workers", action="store_true", help="skip the 2-worker run (projection)")
    args = parser.parse_args(argv)

    t_gen, texts = timed(lambda: corpus(args.n, args.seed))
    config = ReportConfig()
    texts = [prepare(t, config)[0] for t in texts]
    ours = build_nlp(config.skip_sections)
    base = baseline_nlp()
    n_tokens = sum(len(d) for d in ours.tokenizer.pipe(texts))
    print(f"corpus: {len(texts)} reports, {n_tokens / len(texts):.0f} tokens/report (generated in {t_gen:.1f} s)")

    # warm both (lexeme caches), then time them interleaved in rounds, alternating which goes first,
    # so that a shared machine's changing load hits both alike
    list(ours.pipe(texts[:200])), list(base.pipe(texts[:200]))
    t_ours = t_base = 0.0
    docs, ents = [], []
    rounds = [texts[i:i + args.round] for i in range(0, len(texts), args.round)]
    for k, chunk in enumerate(rounds):
        for which in ((0, 1) if k % 2 == 0 else (1, 0)):
            if which == 0:
                t, out = timed(lambda: [len(d._.ctglip_findings) for d in ours.pipe(chunk, batch_size=args.batch_size)])
                t_ours, docs = t_ours + t, docs + out
            else:
                t, out = timed(lambda: [len(d.ents) for d in base.pipe(chunk, batch_size=args.batch_size)])
                t_base, ents = t_base + t, ents + out
    rows = [("ours (1 process)", t_ours, sum(docs)), ("baseline negspacy (1 process)", t_base, sum(ents))]
    print(f"{'pipeline':32s} {'seconds':>8s} {'reports/s':>10s} {'tokens/s':>10s} {'outputs':>9s}")
    for name, t, k in rows:
        print(f"{name:32s} {t:8.1f} {len(texts) / t:10.0f} {n_tokens / t:10.0f} {k:9d}")
    print(f"ratio ours/baseline (reports/s): {t_base / t_ours:.2f}x  (ours also: sections, organ headers, groups "
          f"and sides, uncertainty/historical, organ binding, sizes, {sum(docs) / len(texts):.0f} findings/report)")
    print(f"projected {TARGET_REPORTS} reports, 1 process: ours {TARGET_REPORTS * t_ours / len(texts):.0f} s, "
          f"baseline {TARGET_REPORTS * t_base / len(texts):.0f} s")
    if not args.no_workers:
        df = pd.DataFrame({"id": range(len(texts)), "text": texts})
        t2, out = timed(lambda: extract_table(df, "text", "id", workers=2))
        print(f"ours, extract_table(workers=2): {t2:.1f} s ({len(texts) / t2:.0f} reports/s incl. process start "
              f"and DataFrame assembly, {len(out)} findings) -> projected {TARGET_REPORTS} reports: "
              f"{TARGET_REPORTS * t2 / len(texts):.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
