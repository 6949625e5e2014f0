"""Ablations of the demo pretraining, scored on the VALIDATION split: which demo settings help?

Choices are made here, on train and validation only: this script never reads a test row, a test
volume or a test report (``load_eval_data(splits=("train", "val"))``; tests/test_benchmark.py
checks it). AD thresholds are chosen on train, metrics are scored on validation. The test split is
read once, by ``bench/benchmark.py``.

For each named setting, trains the grounded (CT-GLIP) and the global (CLIP) model on the same data
root with the same budget (in this process, ``--threads`` torch threads), then runs the four
protocols (random / CLIP / grounded) and prints one table row per (setting, method), plus timings.
Learning curves: ``--curve-every K`` keeps a checkpoint every K steps and scores the zero-shot
protocols (OR, AD) on each, so the table shows OR accuracy against steps; the loss curves go to
``<work>/<setting>/<kind>_<config key>/loss_curve.png`` and everything to ``<work>/results.json``.

The cohort is the benchmark's (``bench/benchmark.py``'s cohort options and defaults, one code path): built
under ``--data-root`` through the asset graph, or reused when its fingerprint matches, so settings are chosen
on the validation split of the very cohort whose test split the benchmark scores. Models and results go under
``--work``.

    python bench/ablate.py --settings demo,table_dictionary
    python bench/ablate.py --settings s600 --curve-every 200
    python bench/ablate.py --data-root /tmp/ctg1 --no-build --settings demo   # a root materialized elsewhere
    python bench/ablate.py --list                 # the settings and what they change
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchmark import add_cohort_args, prepare_cohort  # noqa: E402  (bench/ is not a package)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# name -> (overrides of model.config.demo(), help). Evaluation settings ride along under "eval".
SETTINGS: dict[str, tuple[dict, str]] = {
    "demo": ({}, "the current demo() preset: ViT, 300 steps, batch 4, lr 1e-3, split dictionary, named organ texts, wide + soft-tissue windows"),
    "s600": ({"steps": 600}, "600 steps"),
    "s1200": ({"steps": 1200}, "1200 steps"),
    "s2400": ({"steps": 2400}, "2400 steps"),
    "cnn60": ({"model": {"image_encoder": "cnn"}, "steps": 60}, "the session-1 demo encoder and budget: residual CNN, 60 steps"),
    "cnn150": ({"model": {"image_encoder": "cnn"}, "steps": 150}, "residual CNN, 150 steps"),
    "table_dictionary": ({"data": {"dictionary": "table"}}, "dictionary negatives from the `negatives` column, abnormal organs only"),
    "report_text": ({"data": {"organ_text": "report"}}, "organ texts without the organ's name"),
    "report_positive": ({"data": {"abnormality_positive": "report", "dictionary": "table"}},
                        "report sentence as dictionary positive among table negatives (the session-1 bug)"),
    "lr3e-4": ({"lr": 3e-4}, "lr 3e-4"),
    "b8": ({"batch_size": 8}, "batch 8"),
    "organs_crop": ({"data": {"crop_center": "organs"}}, "crop on the box of all paired organs (the eval crop)"),
    "one_window": ({"steps": 600, "model": {"extra_windows": []}}, "600 steps, the wide HU window only (no soft-tissue channel)"),
    "one_window1200": ({"steps": 1200, "model": {"extra_windows": []}}, "one_window at 1200 steps"),
    "global_term": ({"steps": 600, "grounded_global_weight": 1.0},
                    "600 steps, the grounded model also trained with the global volume-report loss"),
    "global_term1200": ({"steps": 1200, "grounded_global_weight": 1.0}, "global_term at 1200 steps"),
    "nofn": ({"false_negative_aware": False}, "plain InfoNCE (no false-negative-aware targets)"),
}


def _setting(name: str) -> tuple[dict, str]:
    if name in SETTINGS:
        return SETTINGS[name]
    # free form: "steps=200,lr=3e-4,batch_size=8"
    over: dict = {}
    for kv in name.split(","):
        k, v = kv.split("=")
        val: object = v
        for cast in (int, float):
            try:
                val = cast(v)
                break
            except ValueError:
                pass
        node = over
        *parents, leaf = k.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = val
    return over, "custom"


PRESETS = ("demo", "tiny")  # model.config.demo (the real demo), model.fake_data.tiny_config (seconds, for tests)


def base_config(preset: str, overrides: dict):
    from model.config import demo
    from model.fake_data import tiny_config

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, not {preset!r}")
    if preset == "tiny":
        return tiny_config(**overrides)
    return demo(**overrides) if overrides else demo()


def train_pair(name: str, overrides: dict, data_root: Path, work: Path, curve_every: int | None, threads: int,
               preset: str = "demo") -> dict:
    from model.config import replace
    from model.files import fingerprint
    from model.train import train
    from pipeline.tables import table_path

    out: dict = {}
    data_key = fingerprint(table_path("grounded_pairs", data_root))  # a rebuilt cohort retrains
    for kind in ("grounded", "global"):
        cfg = base_config(preset, overrides)
        extra: dict = {"model": {"kind": kind}, "num_threads": threads, "resume": False}
        if curve_every:
            extra |= {"checkpoint_every": curve_every, "keep_checkpoints": 10_000}
        if kind == "global":
            extra["grounded_global_weight"] = 0.0  # not used by the global model; keeps its cache key shared
        cfg = replace(cfg, **extra)
        key = hashlib.sha256(json.dumps({"config": cfg.to_dict(), "data": data_key}, sort_keys=True).encode()).hexdigest()
        cache = work / "trained.json"
        known = json.loads(cache.read_text()) if cache.exists() else {}
        if key in known and Path(known[key]["model_path"]).exists():
            out[kind] = known[key]  # same config trained by an earlier setting (the global model of most settings)
            continue
        t0 = time.perf_counter()
        out_dir = work / name / f"{kind}_{key[:12]}"  # one folder per config and data: a cached model is never overwritten
        print(f"  {name}: training the {kind} model, {cfg.steps} steps, into {out_dir}", flush=True)  # minutes of silence otherwise
        res = train(cfg, data_root, out_dir)
        train_s = time.perf_counter() - t0
        print(f"  {name}: {kind} model trained in {train_s:.0f} s", flush=True)
        out[kind] = {
            "model_path": str(res.model_path),
            "train_s": train_s,
            "samples_per_s": res.samples_per_s,
            "final_losses": res.final_losses,
            "history": [{k: h[k] for k in h if k == "step" or k.endswith("loss") or k == "logit_scale"} for h in res.history],
            "checkpoints": str(out_dir / "checkpoints"),
        }
        cache.write_text(json.dumps(known | {key: out[kind]}))
    return out


def run_eval(models: dict, data, protocols: tuple[str, ...], n_boot: int, td_steps: int, ts_steps: int, k_abn: int,
             ts_repeats: int = 1):
    from model.eval import EvalConfig, evaluate
    from model.eval.segmentation import SegBudget
    from model.eval.tumor import FinetuneBudget

    # validation is scored; AD thresholds come from train (the test split is never loaded here)
    cfg = EvalConfig(protocols=protocols, n_bootstrap=n_boot, k_abnormalities=k_abn, val_split="train", test_split="val",
                     td_budget=FinetuneBudget(steps=td_steps), ts_budget=SegBudget(steps=ts_steps, repeats=ts_repeats))
    t0 = time.perf_counter()
    result = evaluate(models, data, cfg)
    metrics = result.metrics()
    rows = {m: {k: (v.value if v is not None else float("nan")) for k, v in ms.items()} for m, ms in metrics.items()}
    for m, ms in metrics.items():  # the 95% bootstrap intervals beside the values
        rows[m] |= {f"{k}_ci": [v.low, v.high] for k, v in ms.items() if v is not None}
    for m, r in result.methods.items():
        if r.organ_recognition is not None:
            rows[m]["or_classes"] = len(r.organ_recognition.classes)
            rows[m]["or_n"] = int(len(r.organ_recognition.y_true))
            rows[m]["or_per_class"] = r.organ_recognition.per_class_accuracy
        if r.tumor_segmentation is not None:
            rows[m]["ts_per_run"] = list(r.tumor_segmentation.per_run)
        if r.abnormality_detection is not None:
            rows[m]["ad_per_pair"] = {f"{p.organ}/{p.abnormality}": {"n_pos": p.n_pos, "n_neg": p.n_neg, "auc": p.auc.value,
                                                                    "f1": p.f1.value} for p in r.abnormality_detection.pairs}
    return rows, time.perf_counter() - t0, result


def plot_curves(name: str, entry: dict, path: Path) -> None:
    """Loss per step of both models, and OR accuracy / AD AUC per checkpoint when scored."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for kind, t in entry["train"].items():
        hist = t["history"]
        for key in sorted({k for h in hist for k in h if k.endswith("_loss")}):
            axes[0].plot([h["step"] for h in hist], [h.get(key, float("nan")) for h in hist], label=f"{kind} {key}", lw=1)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize=7)
    for label, pts in entry.get("curve", {}).items():
        axes[1].plot([p["step"] for p in pts], [p["or_acc"] for p in pts], "o-", label=f"{label} OR acc")
        axes[1].plot([p["step"] for p in pts], [p["ad_auc"] for p in pts], "s--", label=f"{label} AD AUC")
    axes[1].set_xlabel("step")
    axes[1].set_ylim(0, 1)
    axes[1].legend(fontsize=7)
    fig.suptitle(name)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fmt(x: object) -> str:
    return "  n/a" if not isinstance(x, (int, float)) or not math.isfinite(x) else f"{x:5.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/ablate.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cohort_args(ap)
    ap.add_argument("--work", type=Path, default=Path("/tmp/ablate_runs"), help="where models and results go")
    ap.add_argument("--settings", default="demo", help="comma-separated names from --list, or one free-form 'steps=200;lr=3e-4' (use ';')")
    ap.add_argument("--list", action="store_true", help="list the named settings and exit")
    ap.add_argument("--protocols", default="or,ad,td,ts", help="evaluation protocols")
    ap.add_argument("--methods", default="random,CLIP,grounded",
                    help="rows to evaluate (e.g. 'grounded' where a setting changes only the grounded model)")
    ap.add_argument("--n-bootstrap", type=int, default=200)
    ap.add_argument("--td-steps", type=int, default=10)
    ap.add_argument("--ts-steps", type=int, default=20)
    ap.add_argument("--ts-repeats", type=int, default=1, help="TS runs per method (seeds 0, 1, ...); per-case Dice averaged")
    ap.add_argument("--k-abnormalities", type=int, default=16)
    ap.add_argument("--curve-every", type=int, default=None, help="score OR/AD on a checkpoint every K steps (learning curve)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--preset", default="demo", choices=PRESETS, help="base config the settings override")
    ap.add_argument("--reuse", action="store_true", help="skip training when the setting's recorded models (results.json) still exist")
    args = ap.parse_args(argv)
    if args.list:
        for k, (o, h) in SETTINGS.items():
            print(f"{k:16s} {h}   overrides={json.dumps(o)}")
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    built = prepare_cohort(args)
    import torch

    torch.set_num_threads(args.threads)
    from model.checkpoint import load_model, preprocessing_of, step_checkpoints
    from model.eval import load_eval_data

    names = [args.settings.replace(";", ",")] if "=" in args.settings else args.settings.split(",")
    protocols = tuple(args.protocols.split(","))
    methods = args.methods.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.json"
    all_results = json.loads(results_path.read_text()) if results_path.exists() else {}
    data_cache: dict = {}
    for name in names:
        overrides, help_ = _setting(name)
        print(f"\n=== {name}: {help_}", flush=True)
        stored = all_results.get(name, {}).get("train", {})
        # the recorded model paths, not <setting>/<kind>/: a global model may be shared from another setting
        if args.reuse and all(Path(stored.get(k, {}).get("model_path", "")).exists() for k in ("grounded", "global")):
            trained = stored
        else:
            trained = train_pair(name, overrides, args.data_root, args.work, args.curve_every, args.threads, args.preset)
        # each checkpoint is fed as it was trained (its own preprocessing record)
        pre = preprocessing_of(trained["grounded"]["model_path"])
        if preprocessing_of(trained["global"]["model_path"]) != pre:
            raise ValueError(f"{name}: the grounded and global checkpoints were fed differently")
        if pre not in data_cache:
            data_cache[pre] = load_eval_data(args.data_root, pre, splits=("train", "val"))
        data = data_cache[pre]
        print(f"  validation studies {data.provenance['n_cases']}", flush=True)
        for kind in ("grounded", "global"):
            t = trained[kind]
            print(f"  {kind:8s} trained in {t['train_s']:.0f} s ({t['samples_per_s']:.2f} studies/s), final {t['final_losses']}", flush=True)
        models = {"random": None, "CLIP": load_model(trained["global"]["model_path"]), "grounded": load_model(trained["grounded"]["model_path"])}
        models = {m: v for m, v in models.items() if m in methods}
        rows, eval_s, _ = run_eval(models, data, protocols, args.n_bootstrap, args.td_steps, args.ts_steps, args.k_abnormalities,
                                     args.ts_repeats)
        curve: dict = {}
        if args.curve_every:
            for kind, label in (("grounded", "grounded"), ("global", "CLIP")):
                if label not in methods:
                    continue
                for step, path in step_checkpoints(trained[kind]["checkpoints"]):
                    r, _, _ = run_eval({label: load_model(path)}, data, ("or", "ad"), 50, 0, 0, args.k_abnormalities)
                    curve.setdefault(label, []).append({"step": step, "or_acc": r[label]["or_acc"], "ad_auc": r[label]["ad_auc"],
                                                        "ad_f1": r[label]["ad_f1"]})
        all_results[name] = {"overrides": overrides, "train": trained, "eval": rows, "eval_s": eval_s, "curve": curve,
                             "data_root": str(args.data_root), "cohort": built, "n_cases": data.provenance["n_cases"]}
        results_path.write_text(json.dumps(all_results, indent=1, default=str))
        plot_curves(name, all_results[name], args.work / f"{name}_curves.png")
        print(f"  evaluation {eval_s:.0f} s")
        for label, pts in curve.items():
            print(f"  curve {label:8s} " + "  ".join(f"{p['step']}: OR {_fmt(p['or_acc'])} ADauc {_fmt(p['ad_auc'])}" for p in pts))

    print("\n| setting | data | method | OR acc | AD F1 | AD AUC | TD AUC | TS DSC | train s (grounded/global) | eval s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        r = all_results[name]
        tr = r["train"]
        for m, row in r["eval"].items():
            print(f"| {name} | {Path(r['data_root']).name} {r['n_cases']} | {m} | {_fmt(row['or_acc'])} | {_fmt(row['ad_f1'])} | "
                  f"{_fmt(row['ad_auc'])} | {_fmt(row['td_auc'])} | {_fmt(row['ts_dsc'])} | "
                  f"{tr['grounded']['train_s']:.0f}/{tr['global']['train_s']:.0f} | {r['eval_s']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
