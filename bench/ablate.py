"""Ablations of pretraining, scored on the VALIDATION split: which settings help?

Choices are made here, on train and validation only: this script never reads a test row, a test volume or a test
report (``load_eval_data(splits=("train", "val"))``; tests/test_benchmark.py checks it). AD thresholds are chosen on
train, metrics are scored on validation. The test split is read once, by ``bench/benchmark.py``.

For each named setting, trains the grounded (CT-GLIP) and, unless ``--kinds grounded``, the global (CLIP) model on the
same data root with the same budget (in this process, ``--threads`` torch threads), then runs the protocols and the
linear probes (random / CLIP / grounded) and prints one row per (setting, method), the per-task AUCs, the
training throughput and the validation dictionary loss against its image-free floor (ln 2). Everything goes to
``--out`` (default bench/results/ablate.json, merged with the settings already there) and the models under ``--work``.

The cohort is the benchmark's (``bench/cohort.py``: the cohort options and defaults of both scripts, one code path): built under
``--data-root`` through the asset graph, or reused when its fingerprint matches, so settings are chosen on the
validation split of the very cohort whose test split the benchmark scores.

    python bench/ablate.py --settings benchmark,vit,mean_pool --kinds grounded
    python bench/ablate.py --no-build --settings 'steps=1800' --kinds grounded --random   # one free-form setting
    python bench/ablate.py --data-root /tmp/ctg1 --no-build --settings benchmark   # a root materialized elsewhere
    python bench/ablate.py --list                 # the settings and what they change
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import subprocess
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

DEFAULT_OUT = REPO / "bench" / "results" / "ablate.json"
# name -> (overrides of the base preset, help)
SETTINGS: dict[str, tuple[dict, str]] = {
    "benchmark": ({}, "the benchmark preset: 32-voxel organ crops, residual CNN at stride 2, mean/max/size pooling, text top layer trained"),
    "vit": ({"model": {"image_encoder": "vit"}}, "MONAI ViT (patch 4: 12 mm tokens on a 3 mm crop) instead of the CNN"),
    "mean_pool": ({"model": {"organ_pooling": "mean"}}, "masked mean only (no max, no organ size)"),
    "vit_mean": ({"model": {"image_encoder": "vit", "organ_pooling": "mean"}}, "the old design on organ crops: ViT, masked mean"),
    "no_mask_channel": ({"model": {"mask_channel": False}}, "the organ mask is not an input channel"),
    "frozen_text": ({"model": {"text_trainable_layers": 0}}, "text encoder frozen (only the projection trains)"),
    "text2": ({"model": {"text_trainable_layers": 2}}, "the text encoder's top two layers train"),
    "nofn": ({"false_negative_aware": False}, "plain InfoNCE: texts of the same abnormality set are negatives"),
    "no_identity": ({"identity_loss_weight": 0.0}, "no organ-identity term"),
    "crop48": ({"data": {"preprocessing": {"crop_voxels": 48}}, "batch_size": 16},
               "48-voxel crops (finer organ scales), batch 16"),
    "wide": ({"model": {"cnn_channels": [24, 48, 96]}}, "a wider CNN (24, 48, 96 channels)"),
    "s750": ({"steps": 750}, "750 steps"),
    "s3000": ({"steps": 3000}, "3000 steps"),
    "lr3e-4": ({"lr": 3e-4}, "lr 3e-4"),
}
PRESETS = ("benchmark", "demo", "tiny")  # model.config.benchmark / demo, model.fake_data.tiny_config (seconds, tests)


def setting(name: str) -> tuple[dict, str]:
    if name in SETTINGS:
        return SETTINGS[name]
    over: dict = {}  # free form: "steps=200,lr=3e-4,model.image_encoder=vit"
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


def base_config(preset: str, overrides: dict):
    from model.config import benchmark, demo
    from model.fake_data import tiny_config

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, not {preset!r}")
    if preset == "tiny":
        return tiny_config(**overrides)
    return {"benchmark": benchmark, "demo": demo}[preset](**overrides)


def train_models(jobs: list[tuple[str, str, dict]], data_root: Path, work: Path, preset: str, text_cache: Path | None = None,
                 side_by_side: bool = True, threads: int = 2) -> list[dict]:
    """Train (or reuse) the (name, kind, overrides) ``jobs``, each in a process of its own (``launch/train_entry.py``):
    all at once with one torch thread each (``side_by_side``: on two cores that beats one after the other with two
    threads each), or one after the other with ``threads``. A model trained before with the same config and data is
    reused; a stopped one resumes from its newest checkpoint. Returns per job where the model is and how training went."""
    from model.config import replace
    from model.files import fingerprint
    from pipeline.tables import table_path

    data_key = fingerprint(table_path("grounded_pairs", data_root))  # a rebuilt cohort retrains
    cache = work / "trained.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    runs = []
    for name, kind, overrides in jobs:
        cfg = replace(base_config(preset, overrides), model={"kind": kind})
        key = hashlib.sha256(json.dumps({"config": cfg.to_dict(), "data": data_key}, sort_keys=True).encode()).hexdigest()
        out_dir = work / name / f"{kind}_{key[:12]}"  # one folder per config and data: a finished model is never overwritten
        cfg = replace(cfg, num_threads=1 if side_by_side else threads, text_cache_dir=str(text_cache) if text_cache else None)
        runs.append((name, kind, key, out_dir, cfg))
    pending = [r for r in runs if not (r[2] in known and Path(known[r[2]]["model_path"]).exists())]
    batches = [pending] if side_by_side else [[r] for r in pending]
    for batch in batches:
        procs = []
        for name, kind, key, out_dir, cfg in batch:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "launch.json").write_text(json.dumps(cfg.to_dict()))
            print(f"  {name}: training the {kind} model, {cfg.steps} steps, into {out_dir} (log: train.log there)", flush=True)
            env = dict(os.environ, OMP_NUM_THREADS=str(cfg.num_threads), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
            log = open(out_dir / "train.log", "a")
            cmd = [sys.executable, str(REPO / "launch" / "train_entry.py"), "--config", str(out_dir / "launch.json"),
                   "--data-root", str(data_root), "--out", str(out_dir)]
            procs.append((time.perf_counter(), subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        for (t0, proc, log), (name, kind, key, out_dir, cfg) in zip(procs, batch):
            if proc.wait():
                raise SystemExit(f"training {name}/{kind} failed (exit {proc.returncode}); see {out_dir / 'train.log'}")
            log.close()
            metrics = json.loads((out_dir / "metrics.json").read_text())
            training = json.loads((out_dir / "model" / "config.json").read_text())["training"]
            record = {"model_path": metrics["model_path"], "train_s": time.perf_counter() - t0, "resumed_from": metrics["resumed_from"],
                      "samples_per_s": metrics["samples_per_s"], "final_losses": metrics["final_losses"],
                      "validation": training["validation_abnormality_loss"], "image_free_floor": training["image_free_floor"],
                      "threads": cfg.num_threads, "side_by_side": side_by_side and len(batch) > 1}
            print(f"  {name}: {kind} model trained in {record['train_s']:.0f} s ({record['samples_per_s']:.1f} crops/s); "
                  f"validation dictionary loss {[round(v['loss'], 3) for v in record['validation']]} (floor 0.693)", flush=True)
            known = json.loads(cache.read_text()) if cache.exists() else {}
            cache.write_text(json.dumps(known | {key: record}))
    known = json.loads(cache.read_text()) if cache.exists() else {}
    return [known[key] for _, _, key, _, _ in runs]


def run_eval(models: dict, data, protocols: tuple[str, ...], n_boot: int, ts_steps: int, k_abn: int) -> tuple[dict, float]:
    """Validation scores of ``models``: every metric, per-task AUCs of each zero-shot and probe row."""
    from model.eval import EvalConfig, evaluate
    from model.eval.segmentation import SegBudget

    # validation is scored; AD thresholds come from train (the test split is never loaded here)
    cfg = EvalConfig(protocols=protocols, n_bootstrap=n_boot, k_abnormalities=k_abn, val_split="train", test_split="val",
                     ts_budget=SegBudget(steps=ts_steps))
    t0 = time.perf_counter()
    result = evaluate(models, data, cfg)
    rows = {}
    for m, estimates in result.metrics().items():
        r = result.methods[m]
        row = {k: e.to_dict() for k, e in estimates.items()}
        if r.abnormality_detection is not None:
            row["ad_per_task"] = {f"{p.organ}/{p.abnormality}": {"n_pos": p.n_pos, "n_neg": p.n_neg, "auc": p.auc.value}
                                  for p in r.abnormality_detection.pairs}
        if r.organ_recognition is not None:
            row["or_classes"] = len(r.organ_recognition.classes)
        rows[m] = row
    return rows, time.perf_counter() - t0


def _fmt(x: object) -> str:
    v = x.get("value") if isinstance(x, dict) else x
    return "  n/a" if not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:5.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/ablate.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cohort_args(ap)
    ap.add_argument("--work", type=Path, default=None, help="where models go (default <data-root>/ablate_runs)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON record (settings already in it are kept)")
    ap.add_argument("--settings", default="benchmark", help="comma-separated names from --list, or one free-form 'steps=200;lr=3e-4' (use ';')")
    ap.add_argument("--list", action="store_true", help="list the named settings and exit")
    ap.add_argument("--kinds", default="grounded,global", help="models to train: 'grounded' alone where a setting is about the encoder")
    ap.add_argument("--protocols", default="or,ad,td,ts,probe", help="evaluation protocols")
    ap.add_argument("--random", action="store_true", help="also score a randomly initialised encoder (probe, TS)")
    ap.add_argument("--n-bootstrap", type=int, default=200)
    ap.add_argument("--ts-steps", type=int, default=120)
    ap.add_argument("--k-abnormalities", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the evaluation (and of training with --one-by-one)")
    ap.add_argument("--one-by-one", action="store_true", help="train the kinds one after the other with --threads each, not side by side")
    ap.add_argument("--preset", default="benchmark", choices=PRESETS, help="base config the settings override")
    args = ap.parse_args(argv)
    if args.list:
        for k, (o, h) in SETTINGS.items():
            print(f"{k:16s} {h}   overrides={json.dumps(o)}")
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("model.train").setLevel(logging.INFO)  # a line every log_every steps: minutes of silence otherwise
    built = prepare_cohort(args)
    import torch

    torch.set_num_threads(args.threads)
    from model.checkpoint import load_model, preprocessing_of
    from model.eval import load_eval_data
    names = [args.settings.replace(";", ",")] if "=" in args.settings else args.settings.split(",")
    kinds = args.kinds.split(",")
    protocols = tuple(args.protocols.split(","))
    work = args.work or args.data_root / "ablate_runs"
    work.mkdir(parents=True, exist_ok=True)
    record: dict[str, dict] = {}
    data_cache: dict = {}
    for name in names:
        overrides, help_ = setting(name)
        print(f"\n=== {name}: {help_}", flush=True)
        done = train_models([(name, k, overrides) for k in kinds], args.data_root, work, args.preset,
                            args.data_root / "cache" / "text", not args.one_by_one, args.threads)
        trained = dict(zip(kinds, done))
        pre = {preprocessing_of(t["model_path"]) for t in trained.values()}
        if len(pre) != 1:
            raise ValueError(f"{name}: the models were fed differently")
        (pre,) = pre
        if pre not in data_cache:
            t0 = time.perf_counter()
            data_cache = {pre: load_eval_data(args.data_root, pre, splits=("train", "val"))}  # one at a time: crops are large
            print(f"  validation data: {data_cache[pre].provenance['n_organs']} organs in {time.perf_counter() - t0:.0f} s", flush=True)
        data = data_cache[pre]
        models = {**({"random": None} if args.random else {}),
                  **{{"grounded": "grounded", "global": "clip"}[k]: load_model(t["model_path"]) for k, t in trained.items()}}
        rows, eval_s = run_eval(models, data, protocols, args.n_bootstrap, args.ts_steps, args.k_abnormalities)
        record[name] = write_record(
            "ablate", {"overrides": overrides, "preset": args.preset, "train": trained, "eval": rows, "eval_s": eval_s,
                       "cohort": built, "n_cases": data.provenance["n_cases"], "whole_in_view": data.provenance["whole_in_view"]},
            script=__file__, argv=argv, entry=name, out=args.out,
            inputs={"data_root": str(Path(args.data_root).resolve()), "cohort": built})
        print(f"  evaluation {eval_s:.0f} s; organs wholly in view (of those the scan does not cut): {data.provenance['whole_in_view']}")
        for m, row in rows.items():
            tasks = row.get("ad_per_task", {})
            if tasks:
                print(f"  {m:16s} " + "  ".join(f"{t} {_fmt(v['auc'])}" for t, v in tasks.items()))

    cols = ("or_acc", "ad_f1", "ad_auc", "ad_auc_size", "ad_auc_diffuse", "ad_auc_focal", "td_auc", "ts_dsc", "ts_dsc_ge10")
    print("\n| setting | method | " + " | ".join(cols) + " | crops/s (grounded) |")
    print("|---|---|" + "---|" * len(cols) + "---|")
    for name in names:
        r = record[name]
        speed = r["train"].get("grounded", {}).get("samples_per_s", float("nan"))
        for m, row in r["eval"].items():
            print(f"| {name} | {m} | " + " | ".join(_fmt(row.get(c)) for c in cols) + f" | {speed:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
