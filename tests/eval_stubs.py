"""Tiny real CT-GLIP networks and a small evaluation data root written to disk (tests of model/eval only).

``write_eval_root`` writes what ``model.eval.load_eval_data`` reads -- NIfTI volumes, label maps and lesion masks at
1 mm, ``tables/grounded_pairs.parquet`` (the reports' labels) and ``source/truth/organ_gold.parquet`` (the image truth)
-- so the protocols are tested on crops made by the one preprocessing path. Study k of each split:

- liver (40 HU) with a bright lesion (+100 HU): 11^3 voxels (13.6 mm) when k % 3 == 0, 4^3 (5.0 mm) when k % 3 == 1,
  none when k % 3 == 2; the image truth calls both lesions "mass", the report misses the small one;
- spleen: enlarged ("splenomegaly", image and report) when k is odd;
- left kidney, always normal; the fifth left rib (a counted structure), always normal.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from model.config import ModelConfig
from model.network import CTGlip
from model.preprocess import Preprocessing
from pipeline.ids import pseudonym
from pipeline.volume import Volume, save_nifti
from pipeline.vocab import organ as vocab_organ

TINY = ModelConfig(
    image_encoder="cnn", text_encoder="fake", fake_text_dim=16, embed_dim=16, text_trainable_layers=1,
    cnn_channels=(4, 8), cnn_strides=(2, 2), cnn_blocks=(1, 1), cnn_output_stride=2,
)
PRE = Preprocessing(crop_voxels=16, spacing_mm=1.0, dilation_mm=1.0, margin_mm=1.0, min_organ_voxels=8)
SHAPE = (40, 40, 40)
SPLITS = ("train", "val", "test")
BIG, SMALL = 11, 4  # lesion cube sides (voxels = mm)


def tiny_glip(kind: str = "grounded") -> CTGlip:
    """A real CT-GLIP network, small enough for 16^3 crops in milliseconds (weights from torch's RNG)."""
    return CTGlip(dataclasses.replace(TINY, kind=kind), PRE)


def cube_diameter(side: int) -> float:
    """Volume-equivalent diameter (mm) of a cube of ``side`` 1 mm voxels."""
    return (6.0 * side**3 / math.pi) ** (1 / 3)


def study_uid(split: str, k: int) -> str:
    return f"1.2.826.0.1.{SPLITS.index(split)}.{k}"


def study_id(split: str, k: int) -> str:
    return pseudonym("study", study_uid(split, k))


def lesion_side(k: int) -> int:
    return (BIG, SMALL, 0)[k % 3]


def write_eval_root(root: Path, n_per_split: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for d in ("volumes", "masks", "lesions", "tables", "source/truth"):
        (root / d).mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    idx = {n: vocab_organ(n).index_v2 for n in ("liver", "spleen", "kidney_left", "rib_left_5")}
    pairs, gold = [], []
    for split in SPLITS:
        for k in range(n_per_split):
            sid, pid = study_id(split, k), f"pat-{split}-{k}"
            labels = np.zeros(SHAPE, np.uint8)
            labels[4:20, 4:20, 4:20] = idx["liver"]
            big_spleen = k % 2 == 1
            labels[24 : 34 if big_spleen else 30, 6:12, 6:12] = idx["spleen"]
            labels[6:12, 26:32, 24:30] = idx["kidney_left"]
            labels[30:36, 30:33, 30:36] = idx["rib_left_5"]
            hu = np.full(SHAPE, -100.0)
            for name, value in (("liver", 40), ("spleen", 45), ("kidney_left", 150), ("rib_left_5", 700)):
                hu[labels == idx[name]] = value
            lesion = np.zeros(SHAPE, np.uint8)
            side = lesion_side(k)
            if side:
                lesion[6 : 6 + side, 6 : 6 + side, 6 : 6 + side] = 1
                hu[lesion > 0] += 100
            hu += rng.normal(0, 5, SHAPE)
            save_nifti(Volume(hu.astype(np.int16), affine), root / "volumes" / f"{sid}.nii.gz", dtype=np.int16)
            save_nifti(Volume(labels, affine), root / "masks" / f"{sid}.nii.gz", dtype=np.uint8)
            save_nifti(Volume(lesion, affine), root / "lesions" / f"{sid}.nii.gz", dtype=np.uint8)
            image = {"liver": ["mass"] if side else [], "spleen": ["splenomegaly"] if big_spleen else [],
                     "kidney_left": [], "rib_left_5": []}
            report = dict(image, liver=["mass"] if side == BIG else [])  # the report misses the small lesion
            for name, abn in report.items():
                pairs.append({"pair_id": f"{sid}-{name}", "patient_id": pid, "study_id": sid, "organ": name,
                              "index_v2": idx[name], "status": "abnormal" if abn else "normal", "abnormalities": abn,
                              "split": split, "text": "t", "volume_path": f"volumes/{sid}.nii.gz",
                              "mask_path": str(root / "masks" / f"{sid}.nii.gz"), "cut_by_fov": False})
            for name, abn in image.items():
                gold.append({"study_uid": study_uid(split, k), "organ": name, "image_status": "abnormal" if abn else "normal",
                             "abnormalities": abn})
    pd.DataFrame(pairs).to_parquet(root / "tables" / "grounded_pairs.parquet")
    pd.DataFrame(gold).to_parquet(root / "source" / "truth" / "organ_gold.parquet")
    return root


def spy_reads(monkeypatch) -> tuple[list[pd.DataFrame], list[str]]:
    """Record every parquet frame and NIfTI path read from now on (pandas, ``pipeline.volume`` and ``model.data``), so a
    test can say which split's rows and files were read. Reads in worker processes are not seen."""
    import model.data
    import pipeline.volume

    frames: list[pd.DataFrame] = []
    opened: list[str] = []
    read_parquet, load_nifti = pd.read_parquet, pipeline.volume.load_nifti

    def spy_parquet(*args, **kwargs):
        df = read_parquet(*args, **kwargs)
        frames.append(df)
        return df

    def spy_nifti(path, *args, **kwargs):
        opened.append(str(path))
        return load_nifti(path, *args, **kwargs)

    monkeypatch.setattr(pd, "read_parquet", spy_parquet)
    monkeypatch.setattr(pipeline.volume, "load_nifti", spy_nifti)
    monkeypatch.setattr(model.data, "load_nifti", spy_nifti)
    return frames, opened
