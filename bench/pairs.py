"""Benchmark of pair mining (``pipeline.pairs.mine_pairs``) at CT-GLIP's cohort size, tables only.

Synthetic upstream tables stand in for a materialization: ``ct_studies`` (17,702 studies, ~1.3 studies
per patient, ~1% without a report), ``organ_stats`` (~40 organs per study with cut_by_fov and quality
flags) and ``report_findings`` (~25 findings per report: statuses, abnormalities, sentences, findings
and impression). They are written to Parquet and read back, as the asset does.

Baseline, measured in the same run: the time to read the three input tables from Parquet (what the
asset must pay anyway). Mining is reported as seconds, input rows/s, and peak resident memory above
the memory held before mining (sampled every 5 ms from /proc/self/statm), next to the in-memory size
of the inputs; a second, smaller cohort shows whether time and memory grow linearly.

    .venv/bin/python bench/pairs.py                # default: 17,702 studies (+ 1/4 of it), < 2 min
    .venv/bin/python bench/pairs.py --studies 2000 --no-scaling
    .venv/bin/python bench/pairs.py --help

Writes bench/results/pairs.json: each cohort size's figures, the scaling ratios and the budget's verdict.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import write_record  # noqa: E402

from pipeline import vocab  # noqa: E402
from pipeline.pairs import PairConfig, PairInputs, mine_pairs  # noqa: E402

log = logging.getLogger("bench.pairs")

CT_GLIP_STUDIES = 17_702
# abnormality names per organ group for the synthetic findings (and the negatives when pipeline.report is absent)
_ABN = ["mass", "cyst", "nodule", "stone", "fracture", "aneurysm", "steatosis", "hepatomegaly", "splenomegaly",
        "pleural effusion", "cardiomegaly", "atelectasis", "calcification", "thickening", "lesion", "dilatation"]
_NORMAL_SENTENCES = ["The {o} is unremarkable.", "Normal {o}.", "No abnormality of the {o}.", "The {o} is normal in size."]


def synthetic_tables(n_studies: int, seed: int = 0, organs_per_study: int = 40, findings_per_report: int = 25):
    """(ct_studies, organ_stats, report_findings, readable report ids) of a cohort of ``n_studies``."""
    rng = np.random.default_rng(seed)
    names = np.array(sorted(vocab.organs()))
    index_v2 = np.array([vocab.organ(n).index_v2 for n in names])
    study_ids = np.array([f"stu-{i:016x}" for i in range(n_studies)])
    report_ids = np.array([f"rep-{i:016x}" for i in range(n_studies)])
    new_patient = rng.random(n_studies) > 0.25  # a quarter of studies are follow-ups of the previous patient
    new_patient[0] = True
    patient_ids = np.array([f"pat-{p:016x}" for p in np.cumsum(new_patient)])
    studies = pd.DataFrame({
        "study_id": study_ids, "patient_id": patient_ids, "report_id": report_ids,
        "volume_path": [f"/data/volumes/{s}.nii.gz" for s in study_ids],
    })
    readable_ids = frozenset(report_ids[rng.random(n_studies) > 0.01])

    # organ_stats: each study draws a random subset of the vocabulary
    per_study = rng.integers(organs_per_study - 8, organs_per_study + 9, n_studies)
    organ_idx = np.concatenate([rng.choice(len(names), size=k, replace=False) for k in per_study])
    n_rows = len(organ_idx)
    lo = rng.integers(0, 100, (n_rows, 3))
    hi = lo + rng.integers(2, 60, (n_rows, 3))
    bbox_vox = np.concatenate([lo, hi], axis=1)
    cut = rng.random(n_rows) < 0.12
    flag_draw = rng.random(n_rows)
    flag_choices = {0: [], 1: ["fragmented"], 2: ["too_small"]}
    flag_kind = np.where(flag_draw < 0.04, 1, np.where(flag_draw < 0.06, 2, 0))
    flags = [flag_choices[k] + (["cut_by_fov"] if c else []) for k, c in zip(flag_kind, cut)]
    stats = pd.DataFrame({
        "study_id": np.repeat(study_ids, per_study), "organ": names[organ_idx], "index_v2": index_v2[organ_idx],
        "voxels": rng.integers(10, 100_000, n_rows), "volume_ml": rng.uniform(0.5, 2000, n_rows).round(3),
        "bbox_vox": list(bbox_vox), "bbox_mm": list((bbox_vox * 1.5).astype(float)),
        "centroid_mm": list(rng.normal(0, 100, (n_rows, 3))), "hu_mean": rng.normal(40, 30, n_rows),
        "hu_std": rng.uniform(5, 40, n_rows), "cut_by_fov": cut, "quality_flags": flags,
    })

    # report_findings: mostly organs of the study's segmentation, some described but not segmented
    per_report = rng.integers(findings_per_report - 6, findings_per_report + 7, n_studies)
    n_find = int(per_report.sum())
    f_report = np.repeat(report_ids, per_report)
    starts = np.concatenate([[0], np.cumsum(per_study)[:-1]])
    pick = np.repeat(starts, per_report) + (rng.random(n_find) * np.repeat(per_study, per_report)).astype(int)
    f_organ = np.where(rng.random(n_find) < 0.92, names[organ_idx[pick]], names[rng.integers(0, len(names), n_find)])
    draw = rng.random(n_find)
    status = np.where(draw < 0.08, "abnormal", np.where(draw < 0.11, "uncertain", "normal"))
    abn = np.array(_ABN)[rng.integers(0, len(_ABN), n_find)]
    abnormality = np.where(status == "normal", None, abn)
    size = rng.integers(3, 80, n_find)
    readable_names = {n: n.replace("_", " ") for n in names}
    sentences = [
        f"{s} mm {a} of the {readable_names[o]}." if st != "normal" else _NORMAL_SENTENCES[s % 4].format(o=readable_names[o])
        for o, st, a, s in zip(f_organ, status, abn, size)
    ]
    section = np.where(rng.random(n_find) < 0.8, "findings", "impression")
    findings = pd.DataFrame({
        "report_id": f_report, "organ": f_organ, "group": [vocab.organ(o).group for o in f_organ], "status": status,
        "abnormality": abnormality, "sentence": sentences, "section": section,
        "negated": [[] for _ in range(n_find)], "size_mm": np.where(status == "normal", np.nan, size.astype(float)),
    })
    return studies, stats, findings, readable_ids


def negatives_function():
    """The asset's negatives (the report dictionary) when pipeline.report imports, else a fixed list; cached."""
    try:
        from pipeline.report import abnormalities_for_organ

        source = "pipeline.report dictionary"

        def raw(organ: str) -> list[str]:
            return [a.name for a in abnormalities_for_organ(organ)]
    except ImportError as exc:  # the report package is optional for this benchmark
        source = f"fixed list ({exc})"

        def raw(organ: str) -> list[str]:
            return list(_ABN)

    return lru_cache(maxsize=None)(raw), source


class PeakRSS:
    """Peak resident set size while the block runs, sampled from /proc/self/statm (bytes)."""

    def __init__(self, every_s: float = 0.005):
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.every_s)

    def __enter__(self):
        self.start = self.rss()
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def run(n_studies: int, seed: int, tmp: Path) -> dict:
    t0 = time.perf_counter()
    studies, stats, findings, readable_ids = synthetic_tables(n_studies, seed)
    t_gen = time.perf_counter() - t0
    paths = {"ct_studies": tmp / "ct_studies.parquet", "organ_stats": tmp / "organ_stats.parquet",
             "report_findings": tmp / "report_findings.parquet"}
    for name, df in zip(paths, (studies, stats, findings)):
        df.to_parquet(paths[name], index=False)
    del studies, stats, findings

    t0 = time.perf_counter()
    studies, stats, findings = (pd.read_parquet(p) for p in paths.values())
    t_read = time.perf_counter() - t0
    input_mb = sum(df.memory_usage(deep=True).sum() for df in (studies, stats, findings)) / 2**20
    negatives_for, neg_source = negatives_function()
    inputs = PairInputs(studies, stats, findings, readable_ids, {s: f"/data/masks/{s}.nii.gz" for s in studies["study_id"]})

    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = mine_pairs(inputs, PairConfig(), negatives_for=negatives_for)
        t_mine = time.perf_counter() - t0
    n_in = len(stats) + len(findings)
    return {
        "studies": n_studies, "organ_stats_rows": len(stats), "findings_rows": len(findings),
        "grounded_pairs": len(out.grounded_pairs), "abnormality_pairs": len(out.abnormality_pairs),
        "pair_exclusions": len(out.pair_exclusions), "study_texts": len(out.study_texts),
        "generate_s": t_gen, "read_s": t_read, "mine_s": t_mine, "rows_per_s": n_in / t_mine,
        "input_mb": input_mb, "mine_peak_mb": (mem.peak - mem.start) / 2**20, "negatives": neg_source,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=CT_GLIP_STUDIES, help="cohort size (default: CT-GLIP's 17,702)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=60.0, help="mining must finish within this (exit 1 if not)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the quarter-size run that checks linear growth")
    parser.add_argument("--out", type=Path, default=None, help="the record (default bench/results/pairs.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    sizes = [args.studies] if args.no_scaling else [max(args.studies // 4, 1), args.studies]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-pairs-") as tmp:
        for n in sizes:
            r = run(n, args.seed, Path(tmp))
            results.append(r)
            print(
                f"{r['studies']:>6} studies: {r['organ_stats_rows']:,} organ_stats + {r['findings_rows']:,} findings rows"
                f" -> {r['grounded_pairs']:,} grounded, {r['abnormality_pairs']:,} abnormality pairs,"
                f" {r['pair_exclusions']:,} exclusions\n"
                f"        mine_pairs {r['mine_s']:.2f} s ({r['rows_per_s']:,.0f} input rows/s), peak +{r['mine_peak_mb']:.0f} MB"
                f" over {r['input_mb']:.0f} MB of inputs (x{r['mine_peak_mb'] / r['input_mb']:.2f})\n"
                f"        baseline: reading the 3 input Parquet tables {r['read_s']:.2f} s"
                f" (mining = x{r['mine_s'] / r['read_s']:.1f} the read); negatives: {r['negatives']}",
                flush=True,
            )
    scaling = None
    if len(results) == 2:
        small, big = results
        k = big["studies"] / small["studies"]
        scaling = {"studies_ratio": round(k, 2), "time_ratio": round(big["mine_s"] / small["mine_s"], 2),
                   "peak_memory_ratio": round(big["mine_peak_mb"] / max(small["mine_peak_mb"], 1e-9), 2)}
        print(f"scaling x{k:.1f} studies: time x{scaling['time_ratio']:.2f},"
              f" peak memory x{scaling['peak_memory_ratio']:.2f} (linear = x{k:.1f})")
    final = results[-1]
    ok = final["mine_s"] <= args.budget_s
    print(f"{'PASS' if ok else 'FAIL'}: {final['studies']} studies mined in {final['mine_s']:.1f} s (budget {args.budget_s:.0f} s)")
    write_record("pairs", {"runs": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in results],
                           "baseline": "reading the 3 input Parquet tables (read_s)",
                           "ratio_mine_to_read": [round(r["mine_s"] / r["read_s"], 2) for r in results],
                           "scaling": scaling, "budget_s": args.budget_s, "within_budget": ok},
                 script=__file__, argv=argv, out=args.out,
                 inputs={"tables": "synthetic_tables (ct_studies, organ_stats, report_findings)", "studies": sizes, "seed": args.seed})
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
