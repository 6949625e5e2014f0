"""Trainer assets: CT-GLIP (grounded) and the global CLIP baseline, same data, encoders and budget.

Each runs `launch/train_entry.py` through Dagster Pipes, under `torchrun` for more than one process, so the same command runs
data-parallel on several processes (or nodes); loss and throughput stream into the run log.
"""

import hashlib
import json
import sys
from pathlib import Path
from typing import Literal, Optional

import dagster as dg
from pydantic import Field

from assets.metadata import image_md
from assets.queues import GPU
from assets.resources import DataRoot
from model.config import SOFT_TISSUE, TrainConfig, benchmark, demo, paper, replace

GROUP = "training"
ENTRY = Path(__file__).resolve().parents[1] / "launch" / "train_entry.py"  # a file the trainer process runs, not an import
# the tables the trainer reads in its own process (model.data): dependencies, not inputs loaded here
UPSTREAM = [dg.AssetKey(name) for name in ("grounded_pairs", "abnormality_pairs", "study_texts")]


class TrainSettings(dg.Config):
    preset: Literal["demo", "benchmark", "paper"] = Field(
        default="demo", description="demo: about two minutes on two CPU cores (a smoke run); benchmark: what `make benchmark` "
        "trains (chosen on validation; tens of minutes); paper: paper-scale settings (GPU cluster).")
    image_encoder: Literal["preset", "cnn", "vit"] = Field(default="preset", description="3D residual CNN (stride-2 feature map), 3D ViT (MONAI), or the preset's (CNN).")
    steps: Optional[int] = Field(default=None, description="Optimisation steps, the same budget for both models; unset = the preset's.")
    batch_size: Optional[int] = Field(default=None, description="Global organ crops per step, split over processes; unset = the preset's.")
    lr: Optional[float] = Field(default=None, description="Peak learning rate (AdamW, cosine schedule); unset = the preset's.")
    seed: int = Field(default=0, description="Seed of initialisation, shuffling and augmentation.")
    nproc_per_node: int = Field(default=1, description="torchrun processes (data parallel, gloo on CPU).")
    num_threads: Optional[int] = Field(default=None, description="Torch threads per training process; unset = torch's default (every core). `make run` trains both models side by side with 1 each.")
    checkpoint_every: Optional[int] = Field(default=None, description="Checkpoint every K steps (exact resume after a kill); unset = the preset's.")
    text_encoder: Optional[str] = Field(default=None, description="Text encoder: the packaged MiniLM or a local folder of a Hugging Face encoder; unset = the preset's.")
    text_trainable_layers: Optional[int] = Field(default=None, ge=0, description="Top layers of the text encoder trained with the image side (0 = frozen); unset = the preset's (1).")
    soft_tissue_channel: Optional[bool] = Field(default=None, description="Add a soft-tissue HU window (-160, 240) as an input channel (where lesions show); unset = the preset's (on).")

    def to_config(self, kind: str) -> TrainConfig:
        base = {"demo": demo, "benchmark": benchmark, "paper": paper}[self.preset]()
        encoder = None if self.image_encoder == "preset" else self.image_encoder
        windows = None if self.soft_tissue_channel is None else ((SOFT_TISSUE,) if self.soft_tissue_channel else ())
        model = {"kind": kind, "image_encoder": encoder, "text_encoder": self.text_encoder, "extra_windows": windows,
                 "text_trainable_layers": self.text_trainable_layers}
        top = {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr, "checkpoint_every": self.checkpoint_every,
               "num_threads": self.num_threads}
        return replace(
            base, seed=self.seed, model={k: v for k, v in model.items() if v is not None},
            **{k: v for k, v in top.items() if v is not None},
        )


def verified_model(ref: dict) -> Path:
    """The checkpoint a model asset's value points to, refused if it changed since that materialization."""
    from model.files import fingerprint

    path = Path(ref["model_path"])
    digest = fingerprint(path)
    if digest != ref["sha256"]:
        raise dg.Failure(f"{path} changed since {ref['kind']}_model was materialized (sha256 {digest[:12]} != {ref['sha256'][:12]}); re-materialize it")
    return path


def run_training(context: dg.AssetExecutionContext, kind: str, settings: TrainSettings, data: DataRoot, pipes: dg.PipesSubprocessClient):
    # no torch in this process: the step worker only launches the trainer and fingerprints what it wrote (importing
    # torch and MONAI here cost seconds before each trainer started)
    from model.files import CARD, fingerprint

    root = data.root()
    config = settings.to_config(kind)
    # One folder per config: a changed setting trains afresh, the same one resumes or returns at once.
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:10]
    out = root / "models" / f"{kind}-{digest}"
    out.mkdir(parents=True, exist_ok=True)
    # a run setting, outside the digest: the text encoder's frozen states are shared by both models and by later runs
    config = replace(config, text_cache_dir=str(root / "cache" / "text"))
    cfg_path = out / "config.json"
    cfg_path.write_text(json.dumps(config.to_dict(), indent=2))
    # one process needs no launcher: torchrun's agent is one more Python importing torch before training starts
    launcher = [sys.executable] if settings.nproc_per_node == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={settings.nproc_per_node}"]
    command = [*launcher, str(ENTRY), "--config", str(cfg_path), "--data-root", str(root), "--out", str(out)]
    context.log.info("launching: " + " ".join(command))
    result = pipes.run(command=command, context=context, env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}).get_materialize_result()
    meta = dict(result.metadata or {})
    model_path = Path(str(meta["model_path"].value if hasattr(meta["model_path"], "value") else meta["model_path"]))
    curve = Path(str(meta["loss_curve_path"].value if hasattr(meta["loss_curve_path"], "value") else meta["loss_curve_path"]))
    meta["loss_curve"] = image_md(curve.read_bytes(), f"{kind} loss")
    meta["model_card"] = dg.MetadataValue.md((model_path / CARD).read_text())
    value = {"kind": kind, "model_path": str(model_path), "sha256": fingerprint(model_path), "config": config.to_dict(), "run_id": context.run.run_id}
    meta["model_sha256"] = value["sha256"]
    return dg.Output(value, metadata=meta)


@dg.asset(group_name=GROUP, deps=UPSTREAM, io_manager_key="json_io", kinds={"pytorch"}, op_tags=GPU,
          description="CT-GLIP: organ-level (grounded) contrastive pretraining; value = checkpoint reference.")
def grounded_model(context: dg.AssetExecutionContext, config: TrainSettings, data: DataRoot, pipes: dg.PipesSubprocessClient):
    return run_training(context, "grounded", config, data, pipes)


@dg.asset(group_name=GROUP, deps=UPSTREAM, io_manager_key="json_io", kinds={"pytorch"}, op_tags=GPU,
          description="Vanilla CLIP baseline: whole volume vs whole report, same encoders, data and steps.")
def global_model(context: dg.AssetExecutionContext, config: TrainSettings, data: DataRoot, pipes: dg.PipesSubprocessClient):
    return run_training(context, "global", config, data, pipes)
