"""Protocol hygiene: ablation never loads the test split; the benchmark writes its record; paired statistics."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.eval.evaluate import MethodResult
from model.eval.metrics import Estimate
from model.eval.paired import paired_difference, seed_estimate, seed_values
from model.eval.tumor import TDResult
from model.fake_data import make_fake_data_root
from pipeline.volume import Volume, load_nifti, save_nifti

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]


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
    frames: list[pd.DataFrame] = []
    opened: list[str] = []
    read_parquet = pd.read_parquet

    def spy_parquet(*args, **kwargs):
        df = read_parquet(*args, **kwargs)
        frames.append(df)
        return df

    import model.data
    import pipeline.volume

    def spy_nifti(path, *args, **kwargs):
        opened.append(str(path))
        return load_nifti(path, *args, **kwargs)

    monkeypatch.setattr(pd, "read_parquet", spy_parquet)
    monkeypatch.setattr(pipeline.volume, "load_nifti", spy_nifti)
    monkeypatch.setattr(model.data, "load_nifti", spy_nifti)
    ablate = _script("ablate")
    assert ablate.main(["--data-root", str(data_root), "--no-build", "--work", str(tmp_path), "--preset", "tiny", "--settings", "steps=2",
                        "--n-bootstrap", "5", "--td-steps", "1", "--ts-steps", "1", "--threads", "1"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["steps=2"]["n_cases"]) == {"train", "val"}  # validation was scored
    assert frames and opened
    for df in frames:
        assert "split" not in df or not (df["split"] == "test").any()
        assert "study_id" not in df or not set(df["study_id"]) & test
    assert not [p for p in opened if any(sid in p for sid in test)]


def test_benchmark_writes_the_record_the_issue_specifies(root, tmp_path):
    data_root, _ = root
    out = tmp_path / "benchmark.json"
    bench = _script("benchmark")
    assert bench.main(["--data-root", str(data_root), "--no-build", "--work", str(tmp_path / "work"), "--out", str(out), "--preset", "tiny",
                       "--settings", "steps=2", "--seeds", "0,1", "--n-bootstrap", "20", "--td-steps", "1", "--ts-steps", "2",
                       "--threads", "1"]) == 0
    record = json.loads(out.read_text())
    assert {"commit", "command", "cohort", "methods", "paired"} <= set(record)
    assert set(record["methods"]) == {"grounded", "clip", "random", "no_learning"}
    assert set(record["paired"]) == {"grounded-clip", "grounded-no_learning"}
    metrics = {"or_acc", "ad_f1", "ad_auc", "td_auc", "ts_dsc"}
    for block in (*record["methods"].values(), *record["paired"].values()):
        assert set(block) == metrics
        for e in block.values():
            if e["value"] is not None:
                assert -1.0 <= e["value"] <= 1.0 and (e["low"] is None or e["low"] <= e["high"])
    assert record["methods"]["random"]["or_acc"]["value"] is None  # zero-shot needs an aligned model
    assert record["methods"]["no_learning"]["or_acc"]["value"] is None and record["methods"]["no_learning"]["ts_dsc"]["value"] is None
    assert record["methods"]["no_learning"]["td_auc"]["value"] is not None
    grounded = record["methods"]["grounded"]["or_acc"]
    assert len(grounded["per_seed"]) == 2 and grounded["value"] == pytest.approx(np.mean(grounded["per_seed"]))
    assert grounded["seed_sd"] == pytest.approx(np.std(grounded["per_seed"], ddof=1))
    assert record["cohort"]["studies"]["test"] == 4 and record["cohort"]["preprocessing"]["crop_size"] == [32, 32, 32]
    assert record["cohort"]["global_text"]["tokens_cut"] == 0
    assert "bench/benchmark.py" in record["command"] and record["seeds"] == [0, 1]
    assert record["cohort"]["synthetic"] == {"built_by": "elsewhere (--no-build)"}
    wall = record["wall_s"]
    parts = [wall[k] for k in ("cohort", "train", "load", "evaluate")]
    assert min(parts) >= 0 and sum(parts) == pytest.approx(wall["total"], abs=0.5)
    assert "| grounded-clip (paired) |" in bench.table(record)
    # issue 14's OR target (organs that are not counted structures) rides beside the headline metrics
    detail = record["detail"]
    assert set(detail["methods"]) == set(record["methods"]) and set(detail["paired"]) == set(record["paired"])
    distinct = detail["methods"]["grounded"]["or_acc_distinct"]
    assert distinct["value"] is not None and 0.0 <= distinct["value"] <= 1.0 and len(distinct["per_seed"]) == 2
    assert detail["methods"]["random"]["or_acc_distinct"]["value"] is None and detail["or_distinct_classes"] > 0


def test_benchmark_cohort_is_reused_when_its_fingerprint_matches_and_rebuilt_otherwise(tmp_path):
    bench = _script("benchmark")
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
    return MethodResult("m", True, tumor_detection=TDResult({"probe_study": Estimate.missing()},
                                                            {"probe_study": (scores, labels)}, {"probe_study": groups}))


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
    metrics = ("or_acc", "ad_f1", "ad_auc", "td_auc", "ts_dsc")
    return {"commit": "0" * 40, "command": "python bench/benchmark.py", "seeds": [0, 1], "cohort": {"studies": {"train": 343, "val": 69, "test": 68}},
            "methods": {m: dict.fromkeys(metrics, est) for m in ("grounded", "clip", "random", "no_learning")},
            "paired": {p: dict.fromkeys(metrics, est) for p in ("grounded-clip", "grounded-no_learning")}}


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
