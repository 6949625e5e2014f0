"""CT-GLIP: a 3D image encoder on organ crops, organ pooling and a partly trainable text encoder in one space.

Shapes: ``n`` organ crops of ``D = H = W = crop_voxels`` voxels (``Preprocessing``: what the network consumes),
``c, d, h, w`` the feature map, ``u`` distinct texts in a batch, ``s`` studies, ``e`` the joint embedding size.

The grounded and the global model are the same network: an organ's embedding is pooled from the feature map of its own
crop (masked mean, masked max and the organ's size), a study's is the mean of its organs'. Only the alignment (the
loss, ``ModelConfig.kind``) differs.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import UnetBasicBlock, UnetResBlock
from monai.networks.nets import ViT

from model.config import ModelConfig, check_input
from model.preprocess import SIZE_FEATURES, Preprocessing
from model.text import CachedTextStates, TextTower, build_text_states

if TYPE_CHECKING:
    from model.data import Batch

log = logging.getLogger(__name__)


def _norm(name: str) -> str | tuple:
    return ("group", {"num_groups": 4}) if name == "group" else name


class ResidualUNetEncoder(nn.Module):
    """nnU-Net-like residual encoder (MONAI's ``UnetResBlock``) with a light UNet decoder.

    The decoder climbs from the deepest stage back to ``output_stride`` with transposed convs and skip connections, so
    the pooled map is fine (6 mm cells on a 3 mm crop at stride 2) but sees the deep context."""

    def __init__(self, config: ModelConfig, in_channels: int = 1):
        super().__init__()
        ch, strides, blocks, norm = config.cnn_channels, config.cnn_strides, config.cnn_blocks, _norm(config.cnn_norm)
        self.stages = nn.ModuleList()
        c_in = in_channels
        for c, s, nb in zip(ch, strides, blocks):
            layers = [UnetResBlock(3, c_in, c, kernel_size=3, stride=s, norm_name=norm)]
            layers += [UnetResBlock(3, c, c, kernel_size=3, stride=1, norm_name=norm) for _ in range(nb - 1)]
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
            self.merges.append(UnetResBlock(3, 2 * ch[lvl], ch[lvl], kernel_size=3, stride=1, norm_name=norm))
        self.out_channels = ch[self.out_level]
        self.head: nn.Module = nn.Identity()
        if config.cnn_head_channels:
            # the fine map has few channels (its stage's): a 1x1 expansion gives the masked max more detectors at
            # ~no cost
            self.head = UnetBasicBlock(
                3, self.out_channels, config.cnn_head_channels, kernel_size=1, stride=1, norm_name=norm
            )
            self.out_channels = config.cnn_head_channels
        self.output_stride = config.cnn_output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.stages:
            x = stage(x)  # (n, ch[i], D / stride_i, ...)
            skips.append(x)
        lvl = len(skips) - 2
        for up, merge in zip(self.ups, self.merges):
            x = up(x)  # (n, ch[lvl], ...) one level finer
            x = merge(torch.cat([x, skips[lvl]], dim=1))
            lvl -= 1
        return self.head(x)  # (n, out_channels, D / output_stride, H / ..., W / ...)


class ViTEncoder(nn.Module):
    """MONAI's 3D ViT without class token; patch tokens are laid back out as a map."""

    def __init__(self, config: ModelConfig, crop_voxels: int, in_channels: int = 1):
        super().__init__()
        size, patch = crop_voxels, config.vit_patch_size
        self.vit = ViT(
            in_channels=in_channels,
            img_size=(size,) * 3,
            patch_size=(patch,) * 3,
            hidden_size=config.vit_hidden_size,
            mlp_dim=config.vit_mlp_dim,
            num_layers=config.vit_layers,
            num_heads=config.vit_heads,
            classification=False,
        )
        self.grid = (size // patch,) * 3
        self.out_channels = config.vit_hidden_size
        self.output_stride = patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.vit(x)  # (n, d*h*w, c), patches in (d, h, w) row-major order
        n, _, c = tokens.shape
        return tokens.reshape(n, *self.grid, c).permute(0, 4, 1, 2, 3).contiguous()  # (n, c, d, h, w)


def build_image_encoder(config: ModelConfig, crop_voxels: int) -> ResidualUNetEncoder | ViTEncoder:
    if config.image_encoder == "cnn":
        return ResidualUNetEncoder(config, config.in_channels)  # any crop size its strides tile
    return ViTEncoder(config, crop_voxels, config.in_channels)


class HUWindows(nn.Module):
    """The input (``input_window`` scaled to [-1, 1]) and one channel per extra HU window.

    An extra window inside the input window is an exact re-scaling of the same values, so data loading, evaluation and
    inference keep one intensity channel and every checkpoint windows alike."""

    def __init__(self, input_window: tuple[float, float], extra: tuple[tuple[float, float], ...]):
        super().__init__()
        self.input_window, self.extra = tuple(input_window), tuple(tuple(w) for w in extra)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.extra:
            return x
        lo, hi = self.input_window
        hu = (x + 1) * ((hi - lo) / 2) + lo  # (n, 1, D, H, W)
        return torch.cat([x, *(((hu.clamp(a, b) - a) * (2 / (b - a)) - 1) for a, b in self.extra)], dim=1)


def region_weights(region: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """The pooling region at the map's resolution: ``(n, d, h, w)``, each cell's share inside the region."""
    return F.adaptive_avg_pool3d(region[:, None].float(), size)[:, 0]


def pool_map(fmap: torch.Tensor, weights: torch.Tensor, mode: str) -> torch.Tensor:
    """Masked mean (``mode="mean"``), or masked mean and masked max over the cells the region touches: (n, c) or
    (n, 2c)."""
    w = weights.to(fmap.dtype)[:, None]  # (n, 1, d, h, w)
    mean = (fmap * w).sum((2, 3, 4)) / w.sum((2, 3, 4)).clamp_min(1e-6)
    if mode == "mean":
        return mean
    touched = (w > 0).expand_as(fmap)
    peak = fmap.masked_fill(~touched, float("-inf")).amax((2, 3, 4))
    peak = torch.where(torch.isfinite(peak), peak, mean)  # an empty region (no cell touched): the mean, zeros
    return torch.cat([mean, peak], dim=1)


class CTGlip(nn.Module):
    """The network ``config`` describes, for the crops ``preprocessing`` makes (their size and HU window)."""

    def __init__(self, config: ModelConfig, preprocessing: Preprocessing, text_states: CachedTextStates | None = None):
        super().__init__()
        check_input(config, preprocessing)
        self.config, self.preprocessing = config, preprocessing
        self.windows = HUWindows(preprocessing.hu_window, config.extra_windows)
        self.encoder = build_image_encoder(config, preprocessing.crop_voxels)
        c = self.encoder.out_channels
        if config.organ_pooling == "mean":
            self.image_proj: nn.Module = nn.Linear(c, config.embed_dim)
        else:
            self.image_proj = nn.Sequential(
                nn.Linear(2 * c + SIZE_FEATURES, 2 * config.embed_dim),
                nn.GELU(),
                nn.Linear(2 * config.embed_dim, config.embed_dim),
            )
        self.text = TextTower(
            text_states if text_states is not None else build_text_states(config), config.text_pooling
        )
        self.text_proj = nn.Linear(self.text.dim, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))

    # -- image ---------------------------------------------------------------------------
    def input_channels(self, volume: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(n, 1, D, H, W) intensities and (n, D, H, W) organ masks -> the encoder's input channels."""
        x = self.windows(volume)
        return torch.cat([x, mask[:, None].to(x.dtype)], dim=1) if self.config.mask_channel else x

    def feature_map(self, volume: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.input_channels(volume, mask))  # (n, c, d, h, w)

    def pooled(self, fmap: torch.Tensor, region: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        """The projection's input: pooled map features, and the organ's size where the pooling keeps it."""
        d, h, w = fmap.shape[2:]
        feats = pool_map(fmap, region_weights(region, (d, h, w)), self.config.organ_pooling)
        return feats if self.config.organ_pooling == "mean" else torch.cat([feats, size.to(feats.dtype)], dim=1)

    def encode_organs(
        self,
        volume: torch.Tensor,
        mask: torch.Tensor,
        region: torch.Tensor,
        size: torch.Tensor,
        fmap: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Organ crops -> (n, e) L2-normalised embeddings."""
        fmap = self.feature_map(volume, mask) if fmap is None else fmap
        return F.normalize(self.image_proj(self.pooled(fmap, region, size)), dim=-1)

    def cell_embeddings(self, fmap: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        """(n, d, h, w, e): each map cell embedded as if it were the whole region (mean = max = the cell): heatmaps."""
        cells = fmap.permute(0, 2, 3, 4, 1)  # (n, d, h, w, c)
        if self.config.organ_pooling != "mean":
            sizes = size.to(cells.dtype)[:, None, None, None, :].expand(*cells.shape[:4], size.shape[-1])
            cells = torch.cat([cells, cells, sizes], dim=-1)
        return F.normalize(self.image_proj(cells), dim=-1)

    @staticmethod
    def study_embeddings(organs: torch.Tensor, study_index: torch.Tensor, n_studies: int) -> torch.Tensor:
        """(s, e): each study's embedding, the normalised mean of its organs' embeddings."""
        total = organs.new_zeros(n_studies, organs.shape[1]).index_add(0, study_index, organs)
        return F.normalize(total, dim=-1)

    # -- text ----------------------------------------------------------------------------
    def encode_text(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        x = self.text_proj(self.text(list(texts)))  # (u, e)
        return F.normalize(x, dim=-1) if normalize else x

    # -- training forward: outputs are named like the loss's arguments ------------------------
    def scale(self) -> torch.Tensor:
        """The contrastive logit scale: exp(logit_scale), clamped at ``logit_scale_max`` (CLIP's 100)."""
        return self.logit_scale.clamp(max=math.log(self.config.logit_scale_max)).exp()

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        scale = self.scale()
        organ = self.encode_organs(batch.volume, batch.mask, batch.region, batch.size)  # (n, e)
        text = self.encode_text(batch.texts)  # (u, e), each distinct text once
        if self.config.kind == "global":
            return {
                "image_features": self.study_embeddings(organ, batch.study_index, len(batch.study_text_idx)),  # (s, e)
                "text_features": text[batch.study_text_idx],  # (s, e)
                "text_ids": batch.text_ids[batch.study_text_idx],  # (s,)
                "logit_scale": scale,
            }
        return {
            "organ_features": organ,  # (n, e)
            "organ_text_features": text[batch.organ_text_idx],  # (n, e)
            "organ_labels": batch.labels,  # (n,) v2 class
            "organ_findings": batch.finding_ids,  # (n,) id of the organ's abnormality set (0: none)
            "name_features": text[batch.name_text_idx],  # (n, e)
            "dictionary_features": organ[batch.dict_item],  # (r, e)
            "affirmed_features": text[batch.dict_affirmed_idx],  # (r, e)
            "negated_features": text[batch.dict_negated_idx],  # (r, e)
            "dictionary_labels": batch.dict_label,  # (r,) 1 = the organ has the abnormality
            "dictionary_weights": batch.dict_weight,  # (r,) class balance of the (organ, abnormality) task
            "logit_scale": scale,
        }

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
