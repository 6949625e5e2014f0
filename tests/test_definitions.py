"""The Definitions load, hold the expected graph, and the domain packages stay free of dagster."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

EXPECTED_ASSETS = [
    "abnormality_pairs", "canonical_volumes", "ct_studies", "evaluation_report", "global_model", "grounded_model",
    "grounded_pairs", "lesion_masks", "organ_masks", "organ_stats", "pair_exclusions", "rejected_studies",
    "report_findings", "report_index", "source_archive", "study_embeddings", "study_texts",
]


def test_asset_keys_snapshot():
    from assets.definitions import defs

    keys = sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys())
    assert keys == EXPECTED_ASSETS


def test_blocking_checks_guard_training():
    from assets.definitions import defs

    graph = defs.resolve_asset_graph()
    blocking = {k.name for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    assert {"has_pairs", "no_patient_leakage", "no_empty_text", "mask_files_exist", "no_identifying_columns",
            "no_phi_in_reports", "no_phi_in_tables"} <= blocking


def test_pipeline_and_model_never_import_dagster():
    pattern = re.compile(r"^\s*(import dagster|from dagster)\b", re.M)
    offenders = [str(p.relative_to(REPO)) for d in ("pipeline", "model") for p in (REPO / d).rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_the_definitions_never_import_the_launchers():
    """assets/ is what Dagster loads; launch/ starts it (make run, make ui, the CLI hook, the trainer, the cluster)."""
    pattern = re.compile(r"^\s*(import launch|from launch)\b", re.M)
    assert [str(p.relative_to(REPO)) for p in (REPO / "assets").rglob("*.py") if pattern.search(p.read_text())] == []
    assert not any((REPO / "assets" / f"{name}.py").exists() for name in ("run_all", "ui", "cli_env", "train_entry", "cluster"))


def test_train_settings_take_the_presets_values_unless_set():
    """Unset fields keep the preset's values: the paper preset is not cut to the demo's budget."""
    from assets.training import TrainSettings
    from model.config import benchmark, demo, paper

    cfg = TrainSettings().to_config("global")
    assert (cfg.model.kind, cfg.model.image_encoder, cfg.steps) == ("global", demo().model.image_encoder, demo().steps)
    big = TrainSettings(preset="paper").to_config("grounded")
    assert (big.steps, big.batch_size, big.model.text_encoder) == (paper().steps, paper().batch_size, paper().model.text_encoder)
    small = TrainSettings(image_encoder="cnn", steps=7, text_encoder="fake").to_config("grounded")
    assert (small.model.image_encoder, small.steps, small.model.text_encoder, small.lr) == ("cnn", 7, "fake", demo().lr)
    assert small.model.extra_windows == demo().model.extra_windows
    assert small.model.text_trainable_layers == demo().model.text_trainable_layers
    wide = TrainSettings(soft_tissue_channel=False, text_trainable_layers=0).to_config("grounded")
    assert wide.model.extra_windows == () and wide.model.text_trainable_layers == 0
    bench = TrainSettings(preset="benchmark").to_config("grounded")
    assert bench.steps == benchmark().steps and bench.data.preprocessing == benchmark().data.preprocessing


def test_run_all_creates_a_missing_dagster_home(tmp_path):
    from launch.cli_env import ensure_dagster_home

    home = tmp_path / "new" / "dh"
    assert ensure_dagster_home({"DAGSTER_HOME": str(home)}) == home
    assert (home / "dagster.yaml").is_file()
    assert ensure_dagster_home({}) is None  # unset: Dagster's own default applies


def test_every_step_names_its_celery_queue():
    """On a cluster each step goes to the queue its tag names: GPU work to `gpu`, everything else to `cpu`;
    an untagged step would wait on a queue no worker reads."""
    from launch.cluster import defs as cluster_defs
    from assets.queues import QUEUE_TAG

    job = cluster_defs.get_repository_def().get_implicit_global_asset_job_def()
    queues = {node.name: node.tags.get(QUEUE_TAG) for node in job.graph.node_defs}
    gpu = {name for name, q in queues.items() if q == "gpu"}
    assert gpu == {"segmentation", "grounded_model", "global_model", "evaluation_report", "study_embeddings"}
    assert all(q in ("cpu", "gpu") for q in queues.values()), queues
    assert job.executor_def.name == "celery"
    tagged = {j.name for j in cluster_defs.get_repository_def().get_all_jobs() if j.tags.get("ctglip/gpu")}
    assert tagged == {"segmentation_job", "training_job", "evaluation_job", "inference_job"}


def test_cluster_instance_config_is_valid(monkeypatch, tmp_path):
    """deploy/cluster/dagster.yaml and celery.yaml pass Dagster's own schema checks."""
    import yaml
    from dagster._core.instance.config import dagster_instance_config

    from launch.cluster import executor_config

    monkeypatch.setenv("CTGLIP_POSTGRES_URL", "postgresql+psycopg2://dagster@127.0.0.1:5433/dagster")
    monkeypatch.setenv("CTGLIP_DAGSTER_SHARED", str(tmp_path))
    config, _ = dagster_instance_config(str(REPO / "deploy" / "cluster"))
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    limits = config["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert [(x["key"], x["limit"]) for x in limits] == [("ctglip/gpu", 1)]
    assert "postgres" in config["storage"]
    assert set(executor_config()) >= {"broker", "backend", "config_source"}
    assert yaml.safe_load((REPO / "deploy" / "k8s" / "values.yaml").read_text())["runLauncher"]["type"] == "CeleryK8sRunLauncher"


def test_a_step_worker_loads_no_monai():
    """A step worker loads the Definitions and, for a training step, only launches the trainer and fingerprints its
    output: MONAI (and the transformers it pulls in) stay out of that process, which cost seconds before each
    trainer started."""
    import subprocess
    import sys

    code = ("import sys; import assets.definitions, assets.training; from model.files import CARD, fingerprint; "
            "print(sorted(m for m in ('monai', 'transformers') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
