"""CT-GLIP: a 3D image encoder, masked organ pooling and a frozen text encoder in one space.

Shapes: ``b`` studies, ``D, H, W`` input voxels, ``c, d, h, w`` the feature map, ``n`` organ
pairs, ``m`` abnormality pairs, ``k`` dictionary negatives per abnormality pair, ``u`` distinct
texts in a batch, ``e`` the joint embedding size.

The grounded and the global model are the same network: the organ embedding is a masked average
of the feature map, the global embedding the plain average; both go through the same projection.
Only the alignment (the loss, ``ModelConfig.kind``) differs.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import UnetResBlock
from monai.networks.nets import ViT

from model.config import ModelConfig
from model.text import CachedTextEncoder, build_text_encoder

if TYPE_CHECKING:
    from model.data import Batch

log = logging.getLogger(__name__)


class ResidualUNetEncoder(nn.Module):
    """nnU-Net-like residual encoder (instance norm, leaky ReLU) with a light UNet decoder.

    The decoder climbs from the deepest stage back to ``output_stride`` with transposed convs and
    skip connections, so the pooled map is high-resolution but sees the deep context.
    """

    def __init__(self, config: ModelConfig, in_channels: int = 1):
        super().__init__()
        ch, strides, blocks = config.cnn_channels, config.cnn_strides, config.cnn_blocks
        self.stages = nn.ModuleList()
        c_in = in_channels
        for c, s, nb in zip(ch, strides, blocks):
            layers = [UnetResBlock(3, c_in, c, kernel_size=3, stride=s, norm_name="instance")]
            layers += [UnetResBlock(3, c, c, kernel_size=3, stride=1, norm_name="instance") for _ in range(nb - 1)]
            self.stages.append(nn.Sequential(*layers))
            c_in = c
        cumulative = [1]
        for s in strides:
            cumulative.append(cumulative[-1] * s)
        self.out_level = cumulative[1:].index(config.cnn_output_stride)  # stage whose resolution is kept
        self.ups = nn.ModuleList()
        self.merges = nn.ModuleList()
        for lvl in range(len(ch) - 2, self.out_level - 1, -1):
            s = strides[lvl + 1]
            self.ups.append(nn.ConvTranspose3d(ch[lvl + 1], ch[lvl], kernel_size=s, stride=s))
            self.merges.append(UnetResBlock(3, 2 * ch[lvl], ch[lvl], kernel_size=3, stride=1, norm_name="instance"))
        self.out_channels = ch[self.out_level]
        self.output_stride = config.cnn_output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.stages:
            x = stage(x)  # (b, ch[i], D / stride_i, ...)
            skips.append(x)
        lvl = len(skips) - 2
        for up, merge in zip(self.ups, self.merges):
            x = up(x)  # (b, ch[lvl], ...) one level finer
            x = merge(torch.cat([x, skips[lvl]], dim=1))
            lvl -= 1
        return x  # (b, ch[out_level], D / output_stride, H / ..., W / ...)


class ViTEncoder(nn.Module):
    """monai's 3D ViT without class token; patch tokens are laid back out as a map."""

    def __init__(self, config: ModelConfig, in_channels: int = 1):
        super().__init__()
        self.vit = ViT(
            in_channels=in_channels,
            img_size=config.img_size,
            patch_size=config.vit_patch_size,
            hidden_size=config.vit_hidden_size,
            mlp_dim=config.vit_mlp_dim,
            num_layers=config.vit_layers,
            num_heads=config.vit_heads,
            classification=False,
        )
        self.grid = tuple(s // p for s, p in zip(config.img_size, config.vit_patch_size))
        self.out_channels = config.vit_hidden_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.vit(x)  # (b, d*h*w, c), patches in (d, h, w) row-major order
        b, _, c = tokens.shape
        return tokens.reshape(b, *self.grid, c).permute(0, 4, 1, 2, 3).contiguous()  # (b, c, d, h, w)


def build_image_encoder(config: ModelConfig) -> nn.Module:
    encoder = ResidualUNetEncoder if config.image_encoder == "cnn" else ViTEncoder
    return encoder(config, config.in_channels)


class HUWindows(nn.Module):
    """The input (``input_window`` scaled to [-1, 1]) and one channel per extra HU window.

    An extra window inside the input window is an exact re-scaling of the same values, so data
    loading, evaluation and segmentation keep one channel and every checkpoint windows alike.
    """

    def __init__(self, input_window: tuple[float, float], extra: tuple[tuple[float, float], ...]):
        super().__init__()
        self.input_window, self.extra = tuple(input_window), tuple(tuple(w) for w in extra)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.extra:
            return x
        lo, hi = self.input_window
        hu = (x + 1) * ((hi - lo) / 2) + lo  # (b, 1, D, H, W)
        return torch.cat([x, *(((hu.clamp(a, b) - a) * (2 / (b - a)) - 1) for a, b in self.extra)], dim=1)


def organ_weights(labels: torch.Tensor, organ_index: torch.Tensor, size: tuple[int, ...], mode: str = "area") -> torch.Tensor:
    """Each organ's mask brought to the map resolution: ``(n, d, h, w)`` weights in [0, 1].

    ``area``: the fraction of each map cell inside the organ; ``nearest``: a binary mask, with
    the area fraction as fall-back for an organ too small to survive nearest resampling.
    """
    n = organ_index.shape[0]
    if n == 0:
        return labels.new_zeros((0, *size), dtype=torch.float32)
    full = tuple(labels.shape[1:])
    if all(s % t == 0 for s, t in zip(full, size)):
        area = _cell_fractions(labels, organ_index, size)
    else:
        area = torch.cat([F.adaptive_avg_pool3d(_masks(labels, chunk).unsqueeze(1), size).squeeze(1)
                          for chunk in organ_index.split(32)])  # bounds memory: (32, D, H, W) floats at a time
    if mode == "nearest":
        steps = [s // t for s, t in zip(full, size)]
        if all(s == st * t for s, st, t in zip(full, steps, size)):  # nearest of a whole-number downscale: each cell's first voxel
            near = _masks(labels[:, :: steps[0], :: steps[1], :: steps[2]], organ_index)
        else:
            near = torch.cat([F.interpolate(_masks(labels, c).unsqueeze(1), size=size, mode="nearest").squeeze(1)
                              for c in organ_index.split(32)])
        empty = near.flatten(1).sum(1) == 0
        area = torch.where(empty.view(-1, 1, 1, 1), area, near)
    return area


def _masks(labels: torch.Tensor, organ_index: torch.Tensor) -> torch.Tensor:
    return (labels[organ_index[:, 0]] == organ_index[:, 1].view(-1, 1, 1, 1).to(labels.dtype)).float()


def _cell_fractions(labels: torch.Tensor, organ_index: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``adaptive_avg_pool3d`` of every organ's mask where each cell is a whole block of voxels: one
    label histogram per cell, instead of a full-resolution float mask per organ (a third of a demo
    training step)."""
    full = tuple(labels.shape[1:])
    block = [s // t for s, t in zip(full, size)]
    axes = [torch.arange(s, device=labels.device) // b for s, b in zip(full, block)]
    cell = (axes[0].view(-1, 1, 1) * size[1] + axes[1].view(1, -1, 1)) * size[2] + axes[2].view(1, 1, -1)  # (D, H, W)
    n_cells, voxels = size[0] * size[1] * size[2], block[0] * block[1] * block[2]
    out = torch.empty((organ_index.shape[0], n_cells), dtype=torch.float32, device=labels.device)
    for item in organ_index[:, 0].unique().tolist():
        rows = (organ_index[:, 0] == item).nonzero().squeeze(1)
        lab = labels[item].long()
        k = int(lab.max()) + 1
        hist = torch.bincount((cell * k + lab).flatten(), minlength=n_cells * k).view(n_cells, k)
        wanted = organ_index[rows, 1].long()
        counts = hist[:, wanted.clamp(max=k - 1)] * (wanted < k)  # an organ beyond the largest label: no voxel
        out[rows] = (counts.T.float() / voxels)
    return out.view(-1, *size)


class CTGlip(nn.Module):
    def __init__(self, config: ModelConfig, text_encoder: CachedTextEncoder | None = None):
        super().__init__()
        self.config = config
        self.windows = HUWindows(config.input_window, config.extra_windows)
        self.encoder = build_image_encoder(config)
        self.image_proj = nn.Linear(self.encoder.out_channels, config.embed_dim)
        # frozen and cached; a plain attribute (not a submodule) so it stays out of state_dict and DDP
        self.text_encoder = text_encoder if text_encoder is not None else build_text_encoder(config)
        self.text_proj = nn.Linear(self.text_encoder.dim, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))

    # -- image ---------------------------------------------------------------------------
    def input_channels(self, volume: torch.Tensor) -> torch.Tensor:
        return self.windows(volume)  # (b, 1, D, H, W) -> (b, 1 + extra windows, D, H, W)

    def feature_map(self, volume: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.input_channels(volume))  # (b, 1, D, H, W) -> (b, c, d, h, w)

    def pool_organs(self, fmap: torch.Tensor, labels: torch.Tensor, organ_index: torch.Tensor) -> torch.Tensor:
        """Masked average pooling: ``organ_index`` rows (batch item, v2 label) -> (n, e) L2-normalised."""
        c = fmap.shape[1]
        w = organ_weights(labels, organ_index.to(labels.device), tuple(fmap.shape[2:]), self.config.mask_resample)
        w = w.flatten(1).to(fmap.dtype)  # (n, d*h*w)
        flat = fmap.flatten(2)  # (b, c, d*h*w)
        pooled = fmap.new_zeros(organ_index.shape[0], c)  # (n, c)
        for item in organ_index[:, 0].unique().tolist():
            rows = (organ_index[:, 0] == item).nonzero().squeeze(1).to(fmap.device)
            pooled = pooled.index_copy(0, rows, w[rows] @ flat[item].T)  # (n_item, c)
        pooled = pooled / w.sum(1, keepdim=True).clamp_min(1e-6)
        return F.normalize(self.image_proj(pooled), dim=-1)  # (n, e)

    def encode_global(self, volume: torch.Tensor, fmap: torch.Tensor | None = None) -> torch.Tensor:
        fmap = self.feature_map(volume) if fmap is None else fmap  # (b, c, d, h, w)
        return F.normalize(self.image_proj(fmap.mean(dim=(2, 3, 4))), dim=-1)  # (b, e)

    encode_image = encode_global  # open_clip's name

    # -- text ----------------------------------------------------------------------------
    def encode_text(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        vecs = self.text_encoder(list(texts)).to(self.text_proj.weight.device)  # (u, text_dim), frozen
        x = self.text_proj(vecs)  # (u, e)
        return F.normalize(x, dim=-1) if normalize else x

    # -- training forward: outputs are named like the loss's arguments ------------------------
    def scale(self) -> torch.Tensor:
        """The contrastive logit scale: exp(logit_scale), clamped at ``logit_scale_max`` (CLIP's 100)."""
        return self.logit_scale.clamp(max=math.log(self.config.logit_scale_max)).exp()

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        scale = self.scale()
        fmap = self.feature_map(batch.volume)  # (b, c, d, h, w)
        text = self.encode_text(batch.texts)  # (u, e), each distinct text once
        if self.config.kind == "global":
            return {
                "image_features": self.encode_global(batch.volume, fmap),  # (b, e)
                "text_features": text[batch.study_text_idx],  # (b, e)
                "text_ids": batch.text_ids[batch.study_text_idx],  # (b,)
                "logit_scale": scale,
            }
        organ = self.pool_organs(fmap, batch.labels, torch.cat([batch.organ_index, batch.abn_index]))
        n = batch.organ_index.shape[0]
        neg_idx = batch.abn_negative_idx  # (m, k), -1 = padding
        return {
            "organ_features": organ[:n],  # (n, e)
            "organ_text_features": text[batch.organ_text_idx],  # (n, e)
            "organ_text_ids": batch.text_ids[batch.organ_text_idx],  # (n,)
            "organ_labels": batch.organ_index[:, 1],  # (n,)
            "organ_normal": batch.organ_normal,  # (n,) bool
            "abnormality_features": organ[n:],  # (m, e)
            "positive_text_features": text[batch.abn_positive_idx],  # (m, e)
            "negative_text_features": text[neg_idx.clamp_min(0)],  # (m, k, e)
            "negative_mask": neg_idx >= 0,  # (m, k)
            # the global model's inputs too; the loss uses them where TrainConfig.grounded_global_weight > 0
            "image_features": self.encode_global(batch.volume, fmap),  # (b, e)
            "text_features": text[batch.study_text_idx],  # (b, e)
            "text_ids": batch.text_ids[batch.study_text_idx],  # (b,)
            "logit_scale": scale,
        }

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
