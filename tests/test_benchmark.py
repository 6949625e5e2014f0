"""Protocol hygiene: ablation never loads the test split; the benchmark writes its record; paired statistics."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eval_stubs import spy_reads
from model.eval.metrics import Estimate
from model.eval.results import HEADLINE, MethodResult
from model.eval.paired import paired_difference, seed_estimate, seed_values
from model.eval.tumor import TDResult
from model.fake_data import make_fake_data_root
from pipeline.volume import Volume, load_nifti, save_nifti

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("CTGLIP_REALDATA", REPO.parent / "shared" / "realdata"))


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> tuple[Path, set[str]]:
    """A fake data root with train / val / test studies, a liver lesion in every other study."""
    root = make_fake_data_root(tmp_path_factory.mktemp("fake"), n_studies=16, shape=(40, 40, 32), val_fraction=0.25,
                               p_abnormal=0.6)
    tables = root / "tables"
    gp = pd.read_parquet(tables / "grounded_pairs.parquet")
    ids = sorted(gp["study_id"].unique())
    test = set(ids[-4:])
    for name in ("grounded_pairs", "abnormality_pairs", "study_texts"):
        df = pd.read_parquet(tables / f"{name}.parquet")
        df.loc[df["study_id"].isin(test), "split"] = "test"
        df.to_parquet(tables / f"{name}.parquet")
    (root / "lesions").mkdir()
    for k, (sid, g) in enumerate(gp.groupby("study_id")):
        mask = load_nifti(root / "masks" / f"{sid}.nii.gz")
        lesion = np.zeros(mask.array.shape, np.uint8)
        for idx in g.loc[g["organ"] == "liver", "index_v2"] if k % 2 else []:  # every other study, in each split
            where = np.argwhere(mask.array == idx)
            centre = where[len(where) // 2]
            box = tuple(slice(max(c - 1, 0), c + 2) for c in centre)
            lesion[box] = mask.array[box] == idx
        save_nifti(Volume(lesion, mask.affine), root / "lesions" / f"{sid}.nii.gz", dtype=np.uint8)
    return root, test


def test_ablation_never_loads_test_labels(root, tmp_path, monkeypatch):
    data_root, test = root
    frames, opened = spy_reads(monkeypatch)
    # one CPU: load_eval_data crops in this process (worker processes would not see the spies)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    ablate = _script("ablate")
    out = tmp_path / "ablate.json"
    assert ablate.main(["--data-root", str(data_root), "--no-build", "--work", str(tmp_path), "--out", str(out), "--preset", "tiny",
                        "--settings", "steps=2", "--random", "--n-bootstrap", "5", "--ts-steps", "1", "--threads", "1"]) == 0
    results = json.loads(out.read_text())
    setting = results["steps=2"]
    assert set(setting["n_cases"]) == {"train", "val"}  # validation was scored
    assert {"grounded", "clip", "random", "probe_grounded", "probe_clip", "probe_random"} <= set(setting["eval"])
    assert set(setting["train"]) == {"grounded", "global"} and setting["preset"] == "tiny"
    assert frames and opened
    for df in frames:
        assert "split" not in df or not (df["split"] == "test").any()
        assert "study_id" not in df or not set(df["study_id"]) & test
    assert not [p for p in opened if any(sid in p for sid in test)]
    assert any("/lesions/" in p for p in opened)  # the evaluation's reads were seen too, not only training's


def test_benchmark_writes_the_record_the_issue_specifies(root, tmp_path):
    data_root, _ = root
    out = tmp_path / "benchmark.json"
    bench = _script("benchmark")
    assert bench.main(["--data-root", str(data_root), "--no-build", "--work", str(tmp_path / "work"), "--out", str(out), "--preset", "tiny",
                       "--settings", "steps=2", "--seeds", "0,1", "--n-bootstrap", "20", "--ts-steps", "2",
                       "--threads", "1", "--real-anatomy", str(REALDATA), "--real-anatomy-studies", "2"]) == 0
    record = json.loads(out.read_text())
    assert {"commit", "command", "cohort", "methods", "paired", "detail", "training", "wall_s", "real_anatomy"} <= set(record)
    check_real_anatomy(record, bench)
    methods = {"grounded", "clip", "random", "no_learning", "no_learning_report", "probe_grounded", "probe_clip", "probe_random"}
    assert set(record["methods"]) == methods
    assert set(record["paired"]) == {"grounded-clip", "grounded-no_learning", "grounded-no_learning_report",
                                     "probe_grounded-probe_random", "probe_grounded-no_learning", "probe_grounded-probe_clip"}
    metrics = set(HEADLINE)
    assert "ts_dsc_ge10" in metrics
    for block in (*record["methods"].values(), *record["paired"].values()):
        assert set(block) == metrics
        for e in block.values():
            if e["value"] is not None:
                assert -1.0 <= e["value"] <= 1.0 and (e["low"] is None or e["low"] <= e["high"])
    m = record["methods"]
    for zero_shot in ("or_acc", "ad_auc", "td_auc"):  # zero-shot needs an aligned model
        assert m["random"][zero_shot]["value"] is None
    for fitted in ("no_learning", "no_learning_report", "probe_grounded", "probe_clip", "probe_random"):
        assert m[fitted]["or_acc"]["value"] is None and m[fitted]["ts_dsc"]["value"] is None
        assert m[fitted]["ad_auc"]["value"] is not None and m[fitted]["td_auc"]["value"] is not None
    for segmenting in ("grounded", "clip", "random"):
        assert m[segmenting]["ts_dsc_ge10"]["value"] is not None
    grounded = m["grounded"]["or_acc"]
    assert len(grounded["per_seed"]) == 2 and grounded["value"] == pytest.approx(np.mean(grounded["per_seed"]))
    assert grounded["seed_sd"] == pytest.approx(np.std(grounded["per_seed"], ddof=1))
    assert len(m["no_learning"]["ad_auc"]["per_seed"]) == 1  # fitted once, not per pretraining seed
    cohort = record["cohort"]
    assert cohort["studies"]["test"] == 4 and cohort["preprocessing"]["crop_voxels"] == 16
    assert cohort["preprocessing"]["kind"] == "organ-crops/1" and cohort["preprocessing"]["organ_spacing"]
    assert 0.0 <= cohort["whole_in_view"] <= 1.0
    assert cohort["test_tumor_organs"]["with_lesion_ge10mm"] + cohort["test_tumor_organs"]["with_lesion_lt10mm"] > 0
    assert cohort["global_text"]["tokens_cut"] == 0
    assert "bench/benchmark.py" in record["command"] and record["seeds"] == [0, 1]
    assert cohort["synthetic"] == {"built_by": "elsewhere (--no-build)"}
    for seed in ("seed0", "seed1"):
        for kind in ("grounded", "global"):
            t = record["training"][seed][kind]
            assert t["image_free_floor"] == pytest.approx(math.log(2)) and t["samples_per_s"] > 0
    wall = record["wall_s"]
    parts = [wall[k] for k in ("cohort", "train", "load", "evaluate")]
    assert min(parts) >= 0 and sum(parts) == pytest.approx(wall["total"], abs=0.5)
    assert "| grounded-clip (paired) |" in bench.table(record) and "| probe_grounded-probe_random (paired) |" in bench.table(record)
    detail = record["detail"]
    assert set(detail["methods"]) == set(record["methods"]) and set(detail["paired"]) == set(record["paired"])
    assert set(detail["methods"]["grounded"]) == set(bench.DETAIL)
    assert detail["methods"]["random"]["or_macro_f1"]["value"] is None
    assert set(detail["ad_auc_per_task"]) >= {"grounded", "clip", "probe_grounded", "no_learning"}


def check_real_anatomy(record: dict, bench) -> None:
    """The real_anatomy block: grounded, CLIP and no-learning on implanted real CTs (or why it was skipped)."""
    real = record["real_anatomy"]
    if not (REALDATA / "totalsegmentator").is_dir():
        assert set(real) == {"skipped"}
        return
    assert real["studies"] == 4 and [s["name"] for s in real["sources"]] == ["example_ct_sm", "example_ct_dicom"]
    assert set(real["methods"]) == set(bench.REAL_METHODS) and set(real["paired"]) == {"grounded-clip", "grounded-no_learning"}
    for block in real["methods"].values():
        assert set(block) == set(bench.REAL_METRICS)
        for e in block.values():
            assert e["value"] is None or (-1.0 <= e["value"] <= 1.0 and (e["low"] is None or e["low"] <= e["high"]))
    assert real["methods"]["no_learning"]["ts_dsc"]["value"] is None  # fitted rows do not segment
    assert set(real["real_minus_synthetic"]) == set(bench.REAL_METHODS)
    assert real["lesions"] > 0 and real["test_organs"] > 20 and real["wall_s"] <= record["wall_s"]["evaluate"]
    assert "Real anatomy" in bench.table(record)


def test_the_commands_the_scripts_show_are_accepted_by_them(monkeypatch):
    """Every `python bench/<script>.py ...` example in bench/benchmark.py's and bench/ablate.py's docstrings parses
    (argparse only: nothing runs)."""
    import argparse
    import re

    class Parsed(Exception):
        pass

    parse = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        parse(self, args, namespace)
        raise Parsed

    scripts = {name: _script(name) for name in ("benchmark", "ablate")}
    commands = [(name, m.group(2).replace("...", "").split()) for module in scripts.values()
                for m in re.finditer(r"python bench/(benchmark|ablate)\.py([^#`\n]*)", module.__doc__)
                for name in [m.group(1)]]
    assert len(commands) >= 7
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    refused = []
    for name, args in commands:
        try:
            scripts[name].main(args)
        except Parsed:
            continue
        except SystemExit:
            refused.append(f"bench/{name}.py {' '.join(args)}")
    assert not refused, f"documented commands the scripts refuse: {refused}"


def test_benchmark_cohort_is_reused_when_its_fingerprint_matches_and_rebuilt_otherwise(tmp_path):
    bench = _script("cohort")
    root = make_fake_data_root(tmp_path / "root", n_studies=4, shape=(24, 24, 16))
    pairs = root / "tables" / "grounded_pairs.parquet"
    config = bench.cohort_run_config("demo", 4, 0)
    (root / bench.COHORT_STAMP).write_text(json.dumps({"fingerprint": bench.cohort_fingerprint(config), "run_config": config}))
    before = pairs.stat().st_mtime_ns
    record = bench.build_cohort(root, config)
    assert record["rebuilt"] is False and record["run_config"] == config and pairs.stat().st_mtime_ns == before
    # another cohort: the stamp goes first, so a build that fails half-way never passes for the old cohort
    other = {"resources": {"source": {"config": {"kind": "dicom"}}}}  # no dicom_dir: the graph's first step fails
    assert bench.cohort_fingerprint(other) != bench.cohort_fingerprint(config)
    with pytest.raises(RuntimeError, match="building the benchmark cohort failed"):
        bench.build_cohort(root, other)
    assert not (root / bench.COHORT_STAMP).exists()


def _run(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> MethodResult:
    return MethodResult("m", True, tumor_detection=TDResult({"organ": Estimate.missing()}, {"organ": (scores, labels)},
                                                            {"organ": groups}))


def test_paired_bootstrap_properties():
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 60)
    groups = np.repeat(np.arange(60), 2)  # two items per patient
    good = _run(y + rng.normal(0, 0.3, len(y)), y, groups)
    poor = _run(rng.normal(size=len(y)), y, groups)
    same = paired_difference([good], [good], "td_auc", n=200)
    assert same.value == 0.0 and same.low == 0.0 and same.high == 0.0  # one resample for both: no spread
    diff = paired_difference([good], [poor], "td_auc", n=200)
    assert diff.value > 0.2 and diff.low > 0.0 and diff.low <= diff.value <= diff.high
    # several seeds: the mean of the seeds' values, and its interval around it
    other = _run(y + rng.normal(0, 0.8, len(y)), y, groups)
    est = seed_estimate([good, other], "td_auc", n=200)
    assert est.value == pytest.approx(np.mean(seed_values([good, other], "td_auc")))
    assert est.low <= est.value <= est.high
    assert math.isnan(seed_estimate([good], "or_acc").value)  # not run: not applicable
    with pytest.raises(ValueError, match="same test items"):
        paired_difference([good], [_run(y, y, np.roll(groups, 1))], "td_auc")


def _record() -> dict:
    est = {"value": 0.5, "low": 0.4, "high": 0.6}
    metrics = HEADLINE
    return {"commit": "0" * 40, "command": "python bench/benchmark.py", "seeds": [0, 1], "cohort": {"studies": {"train": 320, "val": 96, "test": 224}},
            "methods": {m: dict.fromkeys(metrics, est) for m in ("grounded", "clip", "random", "no_learning", "no_learning_report")},
            "paired": {p: dict.fromkeys(metrics, est) for p in ("grounded-clip", "grounded-no_learning_report")}}


def test_readme_block_is_replaced_by_the_records_table():
    bench = _script("benchmark")
    readme = f"intro\n{bench.README_BEGIN}\nold table\n{bench.README_END}\noutro\n"
    out = bench.readme_with_table(readme, _record())
    assert "old table" not in out and out.startswith("intro\n") and out.endswith("outro\n")
    assert bench.table(_record()) in out
    assert bench.readme_with_table(out, _record()) == out  # idempotent
    with pytest.raises(ValueError, match="no block"):
        bench.readme_with_table("no markers", _record())


def test_readme_shows_the_committed_benchmark_record():
    """The README's benchmark table is the committed record's, as --table --readme writes it (never typed)."""
    committed = REPO / "bench" / "results" / "benchmark.json"
    if not committed.is_file():
        pytest.skip("bench/results/benchmark.json is not committed yet (make benchmark writes it)")
    bench = _script("benchmark")
    readme = (REPO / "README.md").read_text()
    assert readme_block(readme, bench) == bench.table(json.loads(committed.read_text()))


def readme_block(readme: str, bench) -> str:
    start = readme.index(bench.README_BEGIN) + len(bench.README_BEGIN)
    return readme[start:readme.index(bench.README_END)].strip("\n")
