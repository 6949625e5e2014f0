"""The evaluation asset: the paper's table (random / CLIP / grounded) from the checkpoints it takes as inputs."""

import dataclasses

import dagster as dg
from pydantic import Field

from assets.metadata import image_md
from assets.queues import GPU
from assets.resources import DataRoot
from assets.training import verified_model
from pipeline.atomic import write_bytes, write_json

GROUP = "evaluation"


class EvalSettings(dg.Config):
    k_abnormalities: int = Field(default=16, description="AD macro over the K most frequent (organ, abnormality) pairs (CT-GLIP: 16).")
    n_bootstrap: int = Field(default=1000, description="Bootstrap resamples for the 95% intervals (patients resampled).")
    ts_steps: int = Field(default=20, description="Fine-tuning steps of the tumor-segmentation decoder and encoder on organ crops (equal for every initialisation).")
    ts_repeats: int = Field(default=1, ge=1, description="Tumor-segmentation runs per method (seeds seed, seed + 1, ...); each test case's Dice is averaged over them.")
    seed: int = Field(default=0, description="Seed shared by every method's fine-tuning.")


@dg.asset(
    group_name=GROUP,
    # read by model.eval from the data root (pairs, organ_stats for the no-learning rows, lesion masks): dependencies
    deps=[dg.AssetKey(name) for name in ("grounded_pairs", "organ_stats", "lesion_masks")],
    ins={"grounded_model": dg.AssetIn(), "global_model": dg.AssetIn()},
    op_tags=GPU,
    description="Zero-shot organ recognition, abnormality and tumor detection per organ, tumor segmentation, and linear probes: random vs CLIP vs grounded, and the no-learning rows (logistic regression on organ_stats, fitted on image truth and on report labels).",
)
def evaluation_report(context: dg.AssetExecutionContext, config: EvalSettings, data: DataRoot, grounded_model: dict, global_model: dict) -> dg.MaterializeResult:
    # torch and MONAI load here, not at import: a process that only loads the Definitions (a step worker, the UI's
    # code server, a Celery worker) does not pay for them
    from model.checkpoint import load_model, preprocessing_of
    from model.eval import EvalConfig, build_report, evaluate, load_eval_data
    from model.eval.baseline import no_learning, read_features
    from model.eval.segmentation import SegBudget
    root = data.root()
    paths = {"CLIP": verified_model(global_model), "grounded": verified_model(grounded_model)}
    preprocessing = {name: preprocessing_of(p) for name, p in paths.items()}
    if preprocessing["CLIP"] != preprocessing["grounded"]:
        raise dg.Failure(f"the two checkpoints were fed differently ({preprocessing}); one evaluation needs one input")
    models = {"random": None, **{name: load_model(p) for name, p in paths.items()}}
    eval_data = load_eval_data(root, preprocessing["grounded"])
    eval_config = EvalConfig(
        k_abnormalities=config.k_abnormalities, n_bootstrap=config.n_bootstrap, seed=config.seed,
        ts_budget=SegBudget(steps=config.ts_steps, seed=config.seed, repeats=config.ts_repeats),
    )
    result = evaluate(models, eval_data, eval_config)
    features = read_features(root, eval_data.organs["study_id"].unique())  # the no-learning rows: organ_stats alone
    baselines = {name: no_learning(eval_data, features, result, labels) for name, labels in
                 (("no_learning", "image"), ("no_learning_report", "report"))}
    result = dataclasses.replace(result, methods={**result.methods, **baselines})
    provenance = {
        "grounded_model": {k: grounded_model[k] for k in ("model_path", "sha256", "run_id")},
        "global_model": {k: global_model[k] for k in ("model_path", "sha256", "run_id")},
        "data": dict(eval_data.provenance),
        "evaluation_run_id": context.run.run_id,
    }
    report = build_report(result, provenance)
    out = root / "reports"
    write_json(report.json, root / "tables" / "evaluation_report.json")
    (out).mkdir(parents=True, exist_ok=True)
    (out / "evaluation_report.md").write_text(
        "## Evaluation (random / CLIP / grounded)\n\n" + report.table_markdown + "\n\n### Per abnormality\n\n" + report.abnormality_markdown + "\n"
    )
    write_bytes(report.roc_png, out / "roc.png")
    write_bytes(report.organ_bars_png, out / "organ_bars.png")
    for name, png in report.confusion_pngs.items():
        write_bytes(png, out / f"confusion_{name}.png")
    context.log.info("\n" + report.table_markdown)
    meta = {
        "table": dg.MetadataValue.md(report.table_markdown),
        "per_abnormality": dg.MetadataValue.md(report.abnormality_markdown),
        "roc": image_md(report.roc_png, "ROC"),
        "organ_bars": image_md(report.organ_bars_png, "per-organ"),
        "json": dg.MetadataValue.path(str(root / "tables" / "evaluation_report.json")),
        "provenance": dg.MetadataValue.json(provenance),
    }
    for name, png in report.confusion_pngs.items():
        meta[f"confusion_{name}"] = image_md(png, f"OR confusion {name}")
    return dg.MaterializeResult(metadata=meta)
