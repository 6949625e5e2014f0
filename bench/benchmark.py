"""The benchmark: the one command that reads the test split. Writes bench/results/benchmark.json.

Builds the benchmark cohort (``pipeline.synthetic`` preset "benchmark", ``--studies`` studies, seed
``--cohort-seed``) under ``--data-root`` through the real asset graph, up to the pair tables
(``python -m launch.run_all --until pairs`` with a run config selecting ``ArchiveSource.preset``), or reuses it
when its fingerprint (run config and the code under pipeline/, assets/, sql/) matches the stamp the last build
left; bench/ablate.py uses the same cohort options (bench/cohort.py). Then trains the grounded (CT-GLIP) and the global (CLIP)
model once per pretraining seed (trained models are reused while their config and data match), feeds every
checkpoint as it was trained (its preprocessing record), scores random / CLIP / grounded / no-learning on the
test split, and records each method as the mean over seeds with a patient bootstrap, plus paired bootstraps of
grounded - CLIP and grounded - no-learning. The cohort's settings and study count go into the record's
"cohort". The README table is printed from the JSON by ``--table``, never typed by hand.

    python bench/benchmark.py                      # the benchmark (make benchmark)
    python bench/benchmark.py --data-root /tmp/smoke --studies 40 --preset tiny --steps 4 --seeds 0,1 \
        --n-bootstrap 50 --ts-steps 4 --out /tmp/smoke.json    # a smoke run of the machinery
    python bench/benchmark.py --data-root /tmp/root --no-build ...           # a root materialized elsewhere
    python bench/benchmark.py --table bench/results/benchmark.json           # the README table
    python bench/benchmark.py --table bench/results/benchmark.json --readme README.md   # ... written into it

Sizing: 640 studies split 0.50 / 0.15 / 0.35 so that the test split holds over 200 studies; the training preset
``model.config.benchmark()`` (32^3 organ crops, the residual CNN with its stride-2 head, 1,500 steps of 32 crops).
Its choices were made on the validation split of this cohort by ``bench/ablate.py`` (record:
bench/results/ablate.json). The record of a run states its wall times: the cohort build, each model's training
(with its crops/s) and the evaluation.

Real anatomy: the record's ``real_anatomy`` block scores the same checkpoints on lesions painted into the real CTs of
``--real-anatomy`` (default ../shared/realdata: TotalSegmentator's example CT and its 20-slice DICOM series, each with its
segmentation; ``pipeline.synthetic.implant``, ``--real-anatomy-studies`` studies per scan) through the synthetic test
split's evaluation (``model.eval.implanted``: AD, TD and TS, their tasks, thresholds and fits from this cohort's training
and validation splits) for grounded, CLIP and the no-learning regression, beside each figure's distance from the
synthetic test split's. Its bootstrap resamples implanted studies, which share two anatomies.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from cohort import add_cohort_args, prepare_cohort  # noqa: E402  (bench/ is not a package)
from record import write_record  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

METRICS = ("or_acc", "ad_f1", "ad_auc", "td_auc", "ts_dsc", "ts_dsc_ge10")
# reported beside them under "detail": AD per task group, TD and TS on lesions under 10 mm, OR's macro F1
DETAIL = ("ad_auc_size", "ad_auc_diffuse", "ad_auc_focal", "td_auc_small", "ts_dsc_lt10", "or_macro_f1")
METHODS = ("grounded", "clip", "random", "no_learning", "no_learning_report", "probe_grounded", "probe_clip", "probe_random")
PAIRS = (("grounded", "clip"), ("grounded", "no_learning"), ("grounded", "no_learning_report"),
         ("probe_grounded", "probe_random"), ("probe_grounded", "no_learning"), ("probe_grounded", "probe_clip"))
DEFAULT_OUT = REPO / "bench" / "results" / "benchmark.json"
REAL_METRICS = ("ad_auc", "td_auc", "ts_dsc", "ts_dsc_ge10")
REAL_METHODS = ("grounded", "clip", "no_learning")
REAL_PAIRS = (("grounded", "clip"), ("grounded", "no_learning"))
REALDATA = Path(os.environ.get("CTGLIP_REALDATA", REPO.parent / "shared" / "realdata"))
STEPS, TS_STEPS, TS_REPEATS = 1500, 240, 1  # steps chosen on validation (docstring)


def text_cut(model, texts: list[str]) -> dict:
    """How much of the global model's texts a truncating encoder would cut, and what this one cut."""
    backbone = model.text.states.backbone
    cfg = model.config
    out = {"rule": cfg.long_text, "max_length": cfg.text_max_length, "texts": len(texts)}
    counts = getattr(backbone, "token_counts", None)
    if counts is None:  # the hashed bag of words reads every word
        return out | {"rule": "whole text (bag of words)", "longer_than_max_length": 0, "tokens_cut": 0}
    n = counts(texts)
    over = [t - cfg.text_max_length for t in n if t > cfg.text_max_length]
    return out | {"median_tokens": float(sorted(n)[len(n) // 2]) if n else None, "longer_than_max_length": len(over),
                  "tokens_cut": 0 if cfg.long_text == "chunk" else int(sum(over))}


def _estimates(runs: dict[str, list], metrics: tuple[str, ...], n: int, names: tuple[str, ...] = METHODS,
               pairs: tuple[tuple[str, str], ...] = PAIRS) -> tuple[dict, dict]:
    """Per method and metric the seed mean with its patient bootstrap, each seed's value and their spread; the paired
    differences of ``pairs``."""
    import numpy as np

    from model.eval.paired import paired_difference, seed_estimate, seed_values

    methods = {}
    for name in names:
        methods[name] = {}
        for metric in metrics:
            est = seed_estimate(runs[name], metric, n=n, seed=0).to_dict()
            per_seed = [v if v == v else None for v in seed_values(runs[name], metric)]  # NaN -> null
            finite = [v for v in per_seed if v is not None]
            sd = float(np.std(finite, ddof=1)) if len(finite) > 1 else None  # spread over pretraining seeds
            methods[name][metric] = est | {"per_seed": per_seed, "seed_sd": sd}
    paired = {f"{a}-{b}": {metric: paired_difference(runs[a], runs[b], metric, n=n, seed=0).to_dict() for metric in metrics}
              for a, b in pairs}
    return methods, paired


def real_anatomy_sources(realdata: Path) -> list:
    """The shared real CTs with segmentations: TotalSegmentator's example CT (3 mm NIfTI) and its 20-slice DICOM series."""
    from pipeline.synthetic.implant import Source

    ts = Path(realdata) / "totalsegmentator"
    wanted = [Source("example_ct_sm", ts / "example_ct_sm.nii.gz", ts / "example_seg.nii.gz"),
              Source("example_ct_dicom", ts / "example_ct_dicom", ts / "example_seg_dicom.nii.gz")]
    return [s for s in wanted if s.volume.exists() and s.mask.exists()]


def real_anatomy(args: argparse.Namespace, models_of: dict, data, pre, seeds: list[int], synthetic: dict) -> dict:
    """The ``real_anatomy`` block: implanted studies of the shared real CTs scored like the synthetic test split
    (module docstring); ``models_of[seed]`` maps "grounded" and "clip" to checkpoints, ``synthetic`` is the record's
    ``methods``."""
    import pandas as pd

    from model.checkpoint import load_model
    from model.eval import EvalConfig
    from model.eval.baseline import no_learning, read_features
    from model.eval.implanted import REAL_SPLIT, implanted_eval_data, score_implanted, with_implanted
    from model.eval.segmentation import SegBudget
    from model.train import seed_everything
    from pipeline.synthetic.implant import write_qa_set

    t0 = time.perf_counter()
    sources = real_anatomy_sources(args.real_anatomy) if args.real_anatomy_studies > 0 else []
    if not sources:
        return {"skipped": f"no real CT with a segmentation under {args.real_anatomy}" if args.real_anatomy_studies > 0
                else "--real-anatomy-studies 0"}
    where = args.data_root / "real_anatomy"
    made = write_qa_set(sources, where / "set", args.real_anatomy_studies, seed=args.real_anatomy_seed)
    real, real_features = implanted_eval_data([made.out_dir], pre, where / "canonical")
    merged = with_implanted(data, real)
    runs: dict[str, list] = {m: [] for m in REAL_METHODS}
    results = []
    for s in seeds:
        seed_everything(s)
        cfg = EvalConfig(protocols=("ad", "td", "ts"), n_bootstrap=args.n_bootstrap, k_abnormalities=args.k_abnormalities,
                         seed=s, ts_budget=SegBudget(steps=args.ts_steps, seed=s, repeats=args.ts_repeats))
        result = score_implanted({name: load_model(path) for name, path in models_of[s].items()}, merged, cfg)
        results.append(result)
        for name in ("grounded", "clip"):
            runs[name].append(result.methods[name])
    first = results[0]
    base_ids = merged.organs.loc[merged.organs["split"] != REAL_SPLIT, "study_id"].unique()
    features = pd.concat([read_features(args.data_root, base_ids), real_features])
    runs["no_learning"] = [no_learning(merged, features, first, "image")]  # first.config's test split is REAL_SPLIT
    methods, paired = _estimates(runs, REAL_METRICS, args.n_bootstrap, REAL_METHODS, REAL_PAIRS)
    test = merged.organ_rows(REAL_SPLIT)
    tumor = test[test["organ"].isin(first.tumor_organs)]
    ad = first.methods["grounded"].abnormality_detection
    falls = {m: {k: (None if methods[m][k]["value"] is None or synthetic.get(m, {}).get(k, {}).get("value") is None
                     else round(methods[m][k]["value"] - synthetic[m][k]["value"], 4)) for k in REAL_METRICS}
             for m in REAL_METHODS}
    return {
        "sources": [{"name": s.name, "volume": str(s.volume), "mask": str(s.mask)} for s in sources],
        "set": str(made.out_dir), "studies": int(len(made.studies)), "studies_per_source": args.real_anatomy_studies,
        "seed": args.real_anatomy_seed, "lesions": int(len(made.lesions)),
        "lesions_by_kind": made.lesions["kind"].value_counts().sort_index().to_dict(),
        "test_organs": int(len(test)),
        # real organs are adult-sized, the synthetic cohort's a small adult's: a crop scaled on it may not hold them whole
        "whole_in_view": float(test.loc[~test["cut_by_fov"].astype(bool), "whole"].mean()) if (~test["cut_by_fov"].astype(bool)).any() else None,
        "ad_tasks": [{"task": f"{p.organ}/{p.abnormality}", "positives": int(p.n_pos), "negatives": int(p.n_neg)}
                     for p in (ad.pairs if ad is not None else ())],
        "tumor_organs": list(first.tumor_organs),
        "test_tumor_organs": {"with_lesion_ge10mm": int((tumor["lesion_mm"] >= 10).sum()),
                              "with_lesion_lt10mm": int(((tumor["lesion_mm"] > 0) & (tumor["lesion_mm"] < 10)).sum()),
                              "without_lesion": int((tumor["lesion_mm"] == 0).sum())},
        "methods": methods, "paired": paired,
        "real_minus_synthetic": falls,
        "notes": sorted({n for r in results for n in r.notes}) + [
            "test split: lesions painted into real CTs (pipeline.synthetic.implant); AD tasks, thresholds, tumor classes, the "
            "TS decoder and the no-learning fit come from the synthetic cohort's train and validation splits",
            "bootstrap over implanted studies: they share the anatomy of their source scans, so the interval covers the "
            "painted lesions' variation, not patients'",
            "real_minus_synthetic: the method's value here minus its value on the synthetic test split"],
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def run(args: argparse.Namespace) -> dict:

    import torch

    from ablate import setting, train_models
    from model.checkpoint import load_model, preprocessing_of
    from model.eval import EvalConfig, evaluate, load_eval_data
    from model.eval.baseline import no_learning, read_features
    from model.eval.segmentation import SegBudget
    from model.train import seed_everything

    t0 = time.perf_counter()
    built = prepare_cohort(args)
    cohort_s = time.perf_counter() - t0
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides, _ = setting(args.settings.replace(";", ",")) if args.settings else ({}, "")
    overrides = {"steps": args.steps, **overrides}  # --settings may name steps itself
    # trained models are kept per config and data: a stopped benchmark resumes each from its newest checkpoint. Both
    # models of a seed train side by side, one core each
    trained = {}
    for s in seeds:
        done = train_models([(f"seed{s}", kind, {**overrides, "seed": s}) for kind in ("grounded", "global")], args.data_root,
                            args.work, args.preset, args.data_root / "cache" / "text")
        trained[s] = dict(zip(("grounded", "global"), done))
    paths = [t[k]["model_path"] for t in trained.values() for k in ("grounded", "global")]
    pre = {preprocessing_of(p) for p in paths}
    if len(pre) != 1:
        raise ValueError(f"the checkpoints were fed differently: {pre}")
    (pre,) = pre
    train_s = time.perf_counter() - t0
    data = load_eval_data(args.data_root, pre, max_cases_per_split=args.max_cases)
    load_s = time.perf_counter() - t0

    runs: dict[str, list] = {m: [] for m in METHODS}
    results = []
    for s in seeds:
        seed_everything(s)
        cfg = EvalConfig(n_bootstrap=args.n_bootstrap, k_abnormalities=args.k_abnormalities, seed=s,
                         ts_budget=SegBudget(steps=args.ts_steps, seed=s, repeats=args.ts_repeats))
        models = {"random": None, "clip": load_model(trained[s]["global"]["model_path"]),
                  "grounded": load_model(trained[s]["grounded"]["model_path"])}
        result = evaluate(models, data, cfg)
        results.append(result)
        for name, m in result.methods.items():
            runs[name].append(m)
        logging.info("seed %d evaluated", s)
    first = results[0]
    features = read_features(args.data_root, data.organs["study_id"].unique())
    runs["no_learning"] = [no_learning(data, features, first, "image")]
    runs["no_learning_report"] = [no_learning(data, features, first, "report")]
    methods, paired = _estimates(runs, METRICS, args.n_bootstrap)
    detail_methods, detail_paired = _estimates(runs, DETAIL, args.n_bootstrap)
    clip = load_model(trained[seeds[0]]["global"]["model_path"])
    from model.data import read_split

    studies, _, _ = read_split(args.data_root, "train")
    counts = data.provenance["n_cases"]
    per_task = {name: {f"{p.organ}/{p.abnormality}": [r.abnormality_detection.pairs[i].auc.value for r in runs[name]]
                       for i, p in enumerate(runs[name][0].abnormality_detection.pairs)}
                for name in METHODS if runs[name] and runs[name][0].abnormality_detection is not None}
    test = data.organ_rows("test")
    tumor = test[test["organ"].isin(first.tumor_organs)]
    models_of = {s: {"grounded": trained[s]["grounded"]["model_path"], "clip": trained[s]["global"]["model_path"]} for s in seeds}
    real = real_anatomy(args, models_of, data, pre, seeds, methods)
    return {
        "cohort": {
            "synthetic": built, "data_root": str(Path(args.data_root).resolve()), "grounded_pairs_sha256": data.provenance["grounded_pairs_sha256"],
            "studies": counts, "patients": {sp: int(data.organ_rows(sp)["patient_id"].nunique()) for sp in counts},
            "organs": data.provenance["n_organs"], "test_organs": int(len(test)),
            "whole_in_view": data.provenance["whole_in_view"], "preprocessing": pre.to_record(),
            "ad_tasks": [list(t) for t in first.ad_tasks], "tumor_organs": list(first.tumor_organs),
            "test_tumor_organs": {"with_lesion_ge10mm": int((tumor["lesion_mm"] >= 10).sum()),
                                  "with_lesion_lt10mm": int(((tumor["lesion_mm"] > 0) & (tumor["lesion_mm"] < 10)).sum()),
                                  "without_lesion": int((tumor["lesion_mm"] == 0).sum())},
            "global_text": text_cut(clip, [s.text for s in studies]),
        },
        "seeds": seeds,
        "settings": {"preset": args.preset, "overrides": overrides, "n_bootstrap": args.n_bootstrap,
                     "ts_steps": args.ts_steps, "ts_repeats": args.ts_repeats},
        "training": {f"seed{s}": {k: {key: v[key] for key in ("train_s", "resumed_from", "samples_per_s", "validation",
                                                                 "image_free_floor", "final_losses", "threads", "side_by_side")}
                                  for k, v in trained[s].items()} for s in seeds},
        "methods": methods,
        "paired": paired,
        "detail": {"methods": detail_methods, "paired": detail_paired, "ad_auc_per_task": per_task},
        "real_anatomy": real,
        "notes": sorted({n for r in results for n in r.notes}) + [
            "each method: mean over pretraining seeds, 95% patient bootstrap of that mean; per_seed: each seed's value, "
            "seed_sd: their standard deviation",
            "paired: A - B of the seed means, one patient resample for both methods",
            "probe_*: logistic regression on the model's frozen organ embeddings, fitted on train with the image truth",
            "no_learning: logistic regression on organ_stats (HU mean, HU spread, volume, bounding box) fitted on train "
            "with the image truth (a ceiling); no_learning_report: the same fitted on the reports' labels, like the models",
            "td_auc: organs of the tumor classes, lesions of 10 mm or more against organs without a lesion (zero-shot for "
            "the pretrained models); td_auc_small: lesions under 10 mm",
            "ts_dsc: Dice on the canonical grid over the test organs with a lesion; ts_dsc_ge10 / ts_dsc_lt10 by the largest lesion's size"],
        "wall_s": {"cohort": round(cohort_s, 1), "train": round(train_s - cohort_s, 1), "load": round(load_s - train_s, 1),
                   "evaluate": round(time.perf_counter() - t0 - load_s, 1), "total": round(time.perf_counter() - t0, 1),
                   "train_compute": round(sum(v["train_s"] for t in trained.values() for v in t.values()), 1),
                   "real_anatomy": real.get("wall_s", 0.0)},  # part of "evaluate"
    }


def table(record: dict) -> str:
    """The README table: one row per method and per paired difference, "value [low, high]"."""
    def cell(e: dict | None) -> str:
        if not e or e.get("value") is None:
            return "n/a"
        if e.get("low") is None:
            return f"{e['value']:.3f}"
        return f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"

    metrics = [m for m in METRICS if any(m in v for v in record["methods"].values())]
    head = "| method | " + " | ".join(metrics) + " |\n|---|" + "---|" * len(metrics)
    rows = [f"| {m} | " + " | ".join(cell(record["methods"][m].get(k)) for k in metrics) + " |" for m in record["methods"]]
    rows += [f"| {p} (paired) | " + " | ".join(cell(d.get(k)) for k in metrics) + " |" for p, d in record["paired"].items()]
    studies = record["cohort"]["studies"]
    split = " / ".join(str(studies[k]) for k in ("train", "val", "test"))
    detail = record.get("detail") or {}
    extra = ""
    keys = [k for k in DETAIL if any(k in v for v in (detail.get("methods") or {}).values())]
    if keys:
        extra = ("\n\n| method | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n"
                 + "\n".join(f"| {m} | " + " | ".join(cell(v.get(k)) for k in keys) + " |" for m, v in detail["methods"].items()
                              if any((v.get(k) or {}).get("value") is not None for k in keys)))
    real = record.get("real_anatomy") or {}
    if real.get("methods"):
        keys = list(REAL_METRICS)
        extra += ("\n\nReal anatomy (lesions painted into the shared real CTs, "
                  f"{real['studies']} studies): value [interval] and real - synthetic\n\n| method | " + " | ".join(keys)
                  + " |\n|---|" + "---|" * len(keys) + "\n"
                  + "\n".join(f"| {m} | " + " | ".join(
                      cell(v.get(k)) + ("" if (real["real_minus_synthetic"].get(m) or {}).get(k) is None
                                        else f" ({real['real_minus_synthetic'][m][k]:+.3f})") for k in keys) + " |"
                               for m, v in real["methods"].items()))
    foot = (f"\n\nSeeds {record['seeds']}; studies {split} (train / val / test); "
            f"commit {record['commit'][:12]}; `{record['command']}`")
    return "\n".join([head, *rows]) + extra + foot


README_BEGIN, README_END = "<!-- benchmark table: bench/benchmark.py --readme -->", "<!-- end of benchmark table -->"


def readme_with_table(readme: str, record: dict) -> str:
    """The README text with the block between the benchmark-table markers replaced by ``table(record)``."""
    start, end = readme.find(README_BEGIN), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README has no block between {README_BEGIN!r} and {README_END!r}")
    return readme[:start + len(README_BEGIN)] + "\n" + table(record) + "\n" + readme[end:]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python bench/benchmark.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cohort_args(ap)
    ap.add_argument("--work", type=Path, default=None,
                    help="where trained models go (reused when their config and data match); default <data-root>/benchmark_runs")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON record")
    ap.add_argument("--preset", default="benchmark", choices=("benchmark", "demo", "tiny"), help="base training config")
    ap.add_argument("--settings", default="", help="overrides of the preset, 'steps=600;lr=3e-4' (chosen with bench/ablate.py)")
    ap.add_argument("--steps", type=int, default=STEPS, help="pretraining steps per model and seed (default %(default)s)")
    ap.add_argument("--seeds", default="0,1", help="pretraining seeds (at least 2 for a spread)")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--ts-steps", type=int, default=TS_STEPS, help="tumor segmentation fine-tuning steps per run")
    ap.add_argument("--ts-repeats", type=int, default=TS_REPEATS, help="tumor segmentation runs per method, Dice averaged")
    ap.add_argument("--k-abnormalities", type=int, default=16)
    ap.add_argument("--max-cases", type=int, default=None, help="studies per split (smoke runs only)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--real-anatomy", type=Path, default=REALDATA, metavar="REALDATA",
                    help="folder holding totalsegmentator/ with the real CTs and segmentations (default %(default)s)")
    ap.add_argument("--real-anatomy-studies", type=int, default=20,
                    help="implanted studies per real CT for the real_anatomy block; 0 = no block (default %(default)s)")
    ap.add_argument("--real-anatomy-seed", type=int, default=0, help="seed of the implanted studies")
    ap.add_argument("--table", type=Path, default=None, metavar="JSON", help="print the README table of a record and exit")
    ap.add_argument("--readme", type=Path, default=None, metavar="README",
                    help="with --table: write the table into README's benchmark block instead of printing it")
    args = ap.parse_args(argv)
    if args.table is not None:
        record = json.loads(args.table.read_text())
        if args.readme is None:
            print(table(record))
        else:
            from pipeline.atomic import write_bytes

            write_bytes(readme_with_table(args.readme.read_text(), record).encode(), args.readme)
            print(f"wrote the table of {args.table} into {args.readme}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("model.train", "model.data", "model.text", "model.checkpoint"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args.work = args.work or args.data_root / "benchmark_runs"
    args.work.mkdir(parents=True, exist_ok=True)
    values = run(args)
    record = write_record("benchmark", values, script=__file__, argv=argv, out=args.out,
                          inputs={"data_root": values["cohort"]["data_root"],
                                  "grounded_pairs_sha256": values["cohort"]["grounded_pairs_sha256"]})
    print(table(record))
    print(f"\nwrote {args.out} in {record['wall_s']['total']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
