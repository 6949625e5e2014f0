"""Tiny real CT-GLIP networks and synthetic evaluation data (tests of model/eval only)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from model.config import ModelConfig
from model.eval.data import EvalCase, EvalData
from model.network import CTGlip

TINY = ModelConfig(
    image_encoder="cnn", text_encoder="fake", fake_text_dim=16, img_size=(16, 16, 16), embed_dim=16,
    cnn_channels=(4, 8), cnn_strides=(2, 2), cnn_blocks=(1, 1), cnn_output_stride=2,
)


def tiny_glip(kind: str = "grounded") -> CTGlip:
    """A real CT-GLIP network, small enough for 16^3 volumes in milliseconds (weights from torch's RNG)."""
    return CTGlip(dataclasses.replace(TINY, kind=kind))


ORGANS = (("liver", 5), ("spleen", 1), ("kidney_left", 3))


def synthetic_data(n_per_split: int = 4, size: int = 16, seed: int = 0) -> EvalData:
    """Cubes of three organs; every other case has a bright lesion in the liver."""
    rng = np.random.default_rng(seed)
    cases, rows = [], []
    for split in ("train", "val", "test"):
        for k in range(n_per_split):
            sid = f"stu-{split}-{k}"
            labels = np.zeros((size,) * 3, np.int64)
            labels[2:8, 2:8, 2:8] = 5
            labels[10:14, 2:6, 2:6] = 1
            labels[2:6, 10:14, 10:14] = 3
            volume = rng.normal(0, 0.05, labels.shape).astype(np.float32) + 0.3 * (labels > 0)
            lesion = np.zeros(labels.shape, bool)
            tumor = k % 2 == 0
            if tumor:
                lesion[3:6, 3:6, 3:6] = True
                volume[lesion] += 1.0
            cases.append(EvalCase(sid, f"pat-{split}-{k}", split, volume, labels, lesion))
            for organ, idx in ORGANS:
                abn = ["mass"] if (tumor and organ == "liver") else []
                rows.append({"study_id": sid, "patient_id": f"pat-{split}-{k}", "split": split, "organ": organ,
                             "index_v2": idx, "status": "abnormal" if abn else "normal", "abnormalities": abn})
    return EvalData(tuple(cases), pd.DataFrame(rows), {"source": "synthetic"})
