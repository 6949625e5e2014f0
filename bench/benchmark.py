"""The benchmark: the one command that reads the test split. Writes bench/results/benchmark.json.

Trains the grounded (CT-GLIP) and the global (CLIP) model once per pretraining seed (settings and
step counts chosen beforehand on validation with bench/ablate.py), feeds every checkpoint as it was
trained (its preprocessing record), scores random / CLIP / grounded / no-learning on the test split,
and records each method as the mean over seeds with a patient bootstrap, plus paired bootstraps of
grounded - CLIP and grounded - no-learning. The README table is printed from the JSON by
``--table``, never typed by hand.

    python bench/benchmark.py --data-root data --seeds 0,1                  # the benchmark
    python bench/benchmark.py --data-root /tmp/root --preset tiny --settings steps=4 \\
        --seeds 0,1 --out /tmp/benchmark.json                                # a smoke run
    python bench/benchmark.py --table bench/results/benchmark.json           # the README table
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

METRICS = ("or_acc", "ad_f1", "ad_auc", "td_auc", "ts_dsc")
METHODS = ("grounded", "clip", "random", "no_learning")
PAIRS = (("grounded", "clip"), ("grounded", "no_learning"))
DEFAULT_OUT = REPO / "bench" / "results" / "benchmark.json"


def commit() -> str:
    """HEAD, with '+dirty' where the working tree differs from it."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def text_cut(model, texts: list[str]) -> dict:
    """How much of the global model's texts a truncating encoder would cut, and what this one cut."""
    backbone = model.text_encoder.backbone
    cfg = model.config
    out = {"rule": cfg.long_text, "max_length": cfg.text_max_length, "texts": len(texts)}
    counts = getattr(backbone, "token_counts", None)
    if counts is None:  # the hashed bag of words reads every word
        return out | {"rule": "whole text (bag of words)", "longer_than_max_length": 0, "tokens_cut": 0}
    n = counts(texts)
    over = [t - cfg.text_max_length for t in n if t > cfg.text_max_length]
    return out | {"median_tokens": float(sorted(n)[len(n) // 2]) if n else None, "longer_than_max_length": len(over),
                  "tokens_cut": 0 if cfg.long_text == "chunk" else int(sum(over))}


def run(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from ablate import _setting, train_pair
    from model.checkpoint import load_model, preprocessing_of
    from model.eval import EvalConfig, evaluate, load_eval_data
    from model.eval.baseline import no_learning, read_features
    from model.eval.paired import paired_difference, seed_estimate, seed_values
    from model.eval.segmentation import SegBudget
    from model.eval.tumor import FinetuneBudget
    from model.train import seed_everything

    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides, _ = _setting(args.settings.replace(";", ",")) if args.settings else ({}, "")
    trained = {s: train_pair(f"seed{s}", {**overrides, "seed": s}, args.data_root, args.work, None, args.threads, args.preset)
               for s in seeds}
    paths = [t[k]["model_path"] for t in trained.values() for k in ("grounded", "global")]
    pre = {preprocessing_of(p) for p in paths}
    if len(pre) != 1:
        raise ValueError(f"the checkpoints were fed differently: {pre}")
    (pre,) = pre
    data = load_eval_data(args.data_root, pre, max_cases_per_split=args.max_cases)
    train_s = time.perf_counter() - t0

    runs: dict[str, list] = {m: [] for m in METHODS}
    results = []
    for s in seeds:
        seed_everything(s)
        cfg = EvalConfig(n_bootstrap=args.n_bootstrap, k_abnormalities=args.k_abnormalities, seed=s,
                         td_budget=FinetuneBudget(steps=args.td_steps, seed=s),
                         ts_budget=SegBudget(steps=args.ts_steps, seed=s, repeats=args.ts_repeats))
        models = {"random": None, "clip": load_model(trained[s]["global"]["model_path"]),
                  "grounded": load_model(trained[s]["grounded"]["model_path"])}
        result = evaluate(models, data, cfg)
        results.append(result)
        for name, m in result.methods.items():
            runs[name].append(m)
        logging.info("seed %d evaluated", s)
    first = results[0]
    ids = [c.study_id for c in data.cases]
    runs["no_learning"] = [no_learning(data, read_features(args.data_root, ids), first.ad_tasks, first.config)]
    headline = first.config.td_headline
    boot = dict(td_headline=headline, n=args.n_bootstrap, seed=0)
    methods = {}
    for name in METHODS:
        methods[name] = {}
        for metric in METRICS:
            est = seed_estimate(runs[name], metric, **boot).to_dict()
            per_seed = [v if v == v else None for v in seed_values(runs[name], metric, headline)]  # NaN -> null
            finite = [v for v in per_seed if v is not None]
            sd = float(np.std(finite, ddof=1)) if len(finite) > 1 else None  # spread over pretraining seeds
            methods[name][metric] = est | {"per_seed": per_seed, "seed_sd": sd}
    paired = {f"{a}-{b}": {metric: paired_difference(runs[a], runs[b], metric, **boot).to_dict() for metric in METRICS}
              for a, b in PAIRS}
    clip = load_model(trained[seeds[0]]["global"]["model_path"])
    texts = [s.text for s in _train_studies(args.data_root)]
    counts = data.provenance["n_cases"]
    return {
        "commit": commit(),
        "command": " ".join(["python", "bench/benchmark.py", *map(shlex.quote, args.argv)]),
        "cohort": {
            "data_root": str(Path(args.data_root).resolve()), "grounded_pairs_sha256": data.provenance["grounded_pairs_sha256"],
            "studies": counts, "patients": {sp: len({c.patient_id for c in data.split(sp)}) for sp in counts},
            "test_organs": int(len(data.organ_rows("test"))), "preprocessing": pre.to_record(),
            "ad_tasks": [list(t) for t in first.ad_tasks], "global_text": text_cut(clip, texts),
        },
        "seeds": seeds,
        "settings": {"preset": args.preset, "overrides": overrides, "td_headline": headline, "n_bootstrap": args.n_bootstrap,
                     "td_steps": args.td_steps, "ts_steps": args.ts_steps, "ts_repeats": args.ts_repeats},
        "methods": methods,
        "paired": paired,
        "notes": sorted({n for r in results for n in r.notes}) + [
            "each method: mean over pretraining seeds, 95% patient bootstrap of that mean; per_seed: each seed's value, "
            "seed_sd: their standard deviation",
            "paired: A - B of the seed means, one patient resample for both methods",
            "no_learning: logistic regression on organ_stats (HU mean, HU spread, volume, bounding box), fit on train"],
        "wall_s": {"train": round(train_s, 1), "total": round(time.perf_counter() - t0, 1)},
    }


def _train_studies(root: Path):
    from model.data import read_studies

    return read_studies(root, "train")


def table(record: dict) -> str:
    """The README table: one row per method and per paired difference, "value [low, high]"."""
    def cell(e: dict) -> str:
        if e.get("value") is None:
            return "n/a"
        if e.get("low") is None:
            return f"{e['value']:.3f}"
        return f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"

    head = "| method | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS)
    rows = [f"| {m} | " + " | ".join(cell(record["methods"][m][k]) for k in METRICS) + " |" for m in record["methods"]]
    rows += [f"| {p} (paired) | " + " | ".join(cell(d[k]) for k in METRICS) + " |" for p, d in record["paired"].items()]
    foot = (f"\n\nSeeds {record['seeds']}; test split of {record['cohort']['studies']} studies; "
            f"commit {record['commit'][:12]}; `{record['command']}`")
    return "\n".join([head, *rows]) + foot


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python bench/benchmark.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, default=Path(os.environ.get("CTGLIP_DATA", "data")), help="materialized data root (read only)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/benchmark_runs"), help="where trained models go (reused when their config matches)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON record")
    ap.add_argument("--preset", default="demo", choices=("demo", "tiny"), help="base training config")
    ap.add_argument("--settings", default="", help="overrides of the preset, 'steps=600;lr=3e-4' (chosen with bench/ablate.py)")
    ap.add_argument("--seeds", default="0,1", help="pretraining seeds (at least 2 for a spread)")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--td-steps", type=int, default=10)
    ap.add_argument("--ts-steps", type=int, default=20)
    ap.add_argument("--ts-repeats", type=int, default=1)
    ap.add_argument("--k-abnormalities", type=int, default=16)
    ap.add_argument("--max-cases", type=int, default=None, help="studies per split (smoke runs only)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--table", type=Path, default=None, metavar="JSON", help="print the README table of a record and exit")
    args = ap.parse_args(argv)
    args.argv = argv
    if args.table is not None:
        import json

        print(table(json.loads(args.table.read_text())))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("model.train", "model.data", "model.text", "model.checkpoint"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from pipeline.atomic import write_json

    args.work.mkdir(parents=True, exist_ok=True)
    record = run(args)
    write_json(record, args.out)
    print(table(record))
    print(f"\nwrote {args.out} in {record['wall_s']['total']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
