"""A tiny synthetic data root in the pipeline's table layout, for tests and benchmarks.

Ellipsoid organs inside an ellipsoid body on a 3 mm RAS grid, a few with a lesion, and the three
tables the model reads (``grounded_pairs``, ``abnormality_pairs``, ``study_texts``). Organ
intensities differ and lesions change them, so there is signal to learn. Not a substitute for the
synthetic cohort of ``pipeline/``; it only mirrors the contract in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.atomic import write_parquet
from pipeline.resample import DEMO_SPACING_MM
from pipeline.vocab import index_v2
from pipeline.vocab import organ as vocab_organ
from pipeline.volume import Volume, save_nifti

if TYPE_CHECKING:
    from model.config import TrainConfig

# name, centre (fraction of the grid, RAS: i grows to the patient's right), radii (voxels), HU
_ORGANS = (
    ("liver", (0.68, 0.50, 0.62), (11, 10, 9), 60),
    ("spleen", (0.28, 0.42, 0.62), (6, 6, 7), 45),
    ("kidney_right", (0.62, 0.32, 0.40), (4, 5, 7), 150),
    ("kidney_left", (0.38, 0.32, 0.42), (4, 5, 7), 150),
    ("stomach", (0.40, 0.62, 0.66), (7, 6, 5), 10),
    ("aorta", (0.50, 0.38, 0.50), (2, 2, 14), 200),
)
_ABNORMALITIES: dict[str, dict[str, int | None]] = {  # kind -> lesion HU (None: no lesion drawn)
    "liver": {"cyst": 0, "mass": 110, "steatosis": None},
    "spleen": {"splenomegaly": None},
    "kidney_right": {"cyst": 0, "stone": 700},
    "kidney_left": {"cyst": 0, "stone": 700},
    "stomach": {},
    "aorta": {"aneurysm": None},
}


def _ellipsoid(shape: tuple[int, ...], center: np.ndarray, radii: tuple[float, ...]) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float32)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) <= 1.0


def _phrase(organ: str) -> str:
    return organ.replace("_", " ").replace("kidney left", "left kidney").replace("kidney right", "right kidney")


def make_fake_data_root(
    root: str | os.PathLike,
    n_studies: int = 8,
    shape: tuple[int, int, int] = (72, 72, 64),
    seed: int = 0,
    val_fraction: float = 0.0,
    p_abnormal: float = 0.35,
    spacing_mm: float = DEMO_SPACING_MM,
) -> Path:
    """Write volumes, masks and the three tables under ``root``; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])  # organ sizes are in voxels, whatever the spacing
    gp, ap, st = [], [], []
    for s in range(n_studies):
        sid = f"stu-fake{s:04d}"
        split = "val" if s < round(n_studies * val_fraction) else "train"
        hu = np.full(shape, -1000, dtype=np.int16)
        labels = np.zeros(shape, dtype=np.uint8)
        body = _ellipsoid(shape, np.array(shape) / 2, (shape[0] * 0.45, shape[1] * 0.4, shape[2] * 0.6))
        hu[body] = -90
        sentences = []
        for name, frac, radii, organ_hu in _ORGANS:
            if name != "aorta" and rng.random() < 0.1:
                continue  # e.g. resected or outside the field of view
            center = np.array(frac) * np.array(shape) + rng.integers(-2, 3, size=3)
            choices = list(_ABNORMALITIES[name])
            abnormal = bool(choices) and rng.random() < p_abnormal
            kind = choices[rng.integers(len(choices))] if abnormal else None
            r = tuple(x * (1.3 if kind in ("splenomegaly", "aneurysm") else 1.0) for x in radii)
            m = _ellipsoid(shape, center, r) & body
            labels[m] = index_v2(name)
            hu[m] = organ_hu - (60 if kind == "steatosis" else 0) + rng.integers(-5, 6)
            lesion_hu = _ABNORMALITIES[name].get(kind) if kind else None
            if lesion_hu is not None:
                hu[_ellipsoid(shape, center + rng.integers(-1, 2, size=3), (2.5, 2.5, 2.5)) & m] = lesion_hu
            text = f"{kind.capitalize()} of the {_phrase(name)}." if kind else f"The {_phrase(name)} is unremarkable."
            sentences.append(text)
            o = vocab_organ(name)
            where = np.argwhere(m)
            lo, hi = (where.min(0), where.max(0) + 1) if len(where) else (np.zeros(3), np.zeros(3))
            gp.append(
                dict(
                    pair_id=f"{sid}-{name}",
                    patient_id=f"pat-fake{s:04d}",
                    study_id=sid,
                    organ=name,
                    group=o.group,
                    index_v2=o.index_v2,
                    text=text,
                    text_source="template",
                    status="abnormal" if kind else "normal",
                    abnormalities=[kind] if kind else [],
                    volume_path=f"volumes/{sid}.nii.gz",
                    mask_path=f"masks/{sid}.nii.gz",
                    bbox_mm=[float(v) * spacing_mm for v in (*lo, *hi)],
                    cut_by_fov=bool(len(where) and (lo.min() == 0 or (hi >= np.array(shape)).any())),
                    split=split,
                )
            )
            if kind:
                negatives = [f"{k.capitalize()} of the {_phrase(name)}." for k in choices if k != kind]
                negatives.append(f"The {_phrase(name)} is unremarkable.")
                ap.append(
                    dict(
                        pair_id=f"{sid}-{name}-{kind}",
                        study_id=sid,
                        organ=name,
                        index_v2=o.index_v2,
                        abnormality=kind,
                        positive_text=text,
                        negatives=negatives,
                        split=split,
                    )
                )
        hu += rng.normal(0, 10, size=shape).astype(np.int16)
        save_nifti(Volume(hu, affine), root / "volumes" / f"{sid}.nii.gz", dtype=np.int16)
        save_nifti(Volume(labels, affine), root / "masks" / f"{sid}.nii.gz", dtype=np.uint8)
        st.append(dict(study_id=sid, text="FINDINGS: " + " ".join(sentences), split=split))
    tables = root / "tables"
    write_parquet(pd.DataFrame(gp), tables / "grounded_pairs.parquet")
    ap_cols = ["pair_id", "study_id", "organ", "index_v2", "abnormality", "positive_text", "negatives", "split"]
    write_parquet(pd.DataFrame(ap, columns=ap_cols), tables / "abnormality_pairs.parquet")
    write_parquet(pd.DataFrame(st), tables / "study_texts.parquet")
    return root


def tiny_config(**overrides: object) -> TrainConfig:
    """A seconds-scale config for tests and smoke runs: 16^3 organ crops, a two-stage CNN, hashed-word text."""
    from model.config import demo

    base = dict(
        steps=4,
        checkpoint_every=2,
        batch_size=8,
        warmup_steps=1,
        lr=3e-3,
        model=dict(
            image_encoder="cnn",
            text_encoder="fake",
            embed_dim=32,
            text_trainable_layers=1,
            cnn_channels=(8, 16),
            cnn_strides=(2, 2),
            cnn_blocks=(1, 1),
            cnn_output_stride=2,
            cnn_head_channels=16,
            vit_patch_size=4,
            vit_hidden_size=32,
            vit_mlp_dim=64,
            vit_layers=1,
            vit_heads=2,
        ),
        data=dict(preprocessing=dict(crop_voxels=16), max_shift=1, organs_per_class=2, organs_per_study=2),
    )
    return demo(**_merged(base, overrides))


def _merged(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides``, nested dicts merged at every level (``data={"preprocessing": {...}}`` keeps the
    16-voxel crop)."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
