"""A tiny stand-in for CT-GLIP's model interface (tests of model/eval only)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from model.eval.data import EvalCase, EvalData


class TinyGlip(nn.Module):
    """feature_map: one stride-2 conv; pool_organs: masked average + projection; text: hashed words."""

    def __init__(self, dim: int = 16, channels: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, channels, 3, stride=2, padding=1)
        self.proj = nn.Linear(channels, dim)
        self.dim = dim
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def feature_map(self, volume: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(volume))  # (b, c, D/2, H/2, W/2)

    def pool_organs(self, fmap: torch.Tensor, labels: torch.Tensor, organ_index: torch.Tensor) -> torch.Tensor:
        lab = F.interpolate(labels[:, None].float(), size=fmap.shape[2:], mode="nearest")[:, 0]  # (b, d, h, w)
        out = []
        for b, v in organ_index.tolist():
            w = (lab[b] == v).float()
            out.append((fmap[b] * w).sum((1, 2, 3)) / w.sum().clamp(min=1))
        return F.normalize(self.proj(torch.stack(out)), dim=-1)  # (n, dim)

    def encode_global(self, volume: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.feature_map(volume).mean((2, 3, 4))), dim=-1)

    def encode_text(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        out = torch.zeros(len(texts), self.dim)
        for i, t in enumerate(texts):
            for word in t.lower().split():
                h = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)
                out[i, h % self.dim] += 1.0
        return F.normalize(out, dim=-1) if normalize else out


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
