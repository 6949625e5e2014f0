"""Tumor segmentation (TS): a small decoder on an encoder's stride-2 feature map, fine-tuned with the encoder on patches
of the canonical grid (``crop_voxels`` cubed) from the training split's organs with a lesion, half the patches centred
on a lesion (Dice + cross-entropy); scored by Dice on the test split's organs with a lesion, a sliding window of patches
over each organ's crop window, on the canonical grid. The loss and the Dice are MONAI's (``DiceLoss``, ``DiceMetric``
via ``metrics.dice``). ``segmentation_protocol`` runs the same budget and seeds for every initialisation (random, global
CLIP, grounded), so only the encoder's starting weights differ; Dice is reported over all cases and per size bin of the
case's largest lesion.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar, cast

import numpy as np
import torch
from torch import nn

from model.eval import metrics
from model.eval.data import EvalData
from model.eval.features import model_device
from model.eval.metrics import Estimate
from model.preprocess import SourceBlock, crop_pad

if TYPE_CHECKING:
    from model.network import CTGlip

M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class SegBudget:
    steps: int = 20  # optimisation steps
    batch_size: int = 8  # patches per step (crop_voxels cubed at the canonical spacing)
    lr: float = 3e-3  # decoder learning rate
    encoder_lr: float = 1e-4  # encoder learning rate (0 freezes the encoder)
    width: int = 16  # decoder channels
    fg_weight: float = 10.0  # cross-entropy weight of the lesion class (a few percent of a patch's voxels)
    lesion_share: float = 0.5  # this share of each batch's patches is centred on a lesion (lesion oversampling)
    seed: int = 0  # decoder initialisation and case order: equal for every initialisation compared
    prior_init: bool = True  # start the head at the training masks' lesion fraction (see ``SegDecoder.set_prior``)
    repeats: int = 1  # runs with seeds seed, seed + 1, ...; each test case's Dice is averaged over them

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"SegBudget.repeats must be at least 1, got {self.repeats}")


def dice_ce_loss(
    logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5, batch_dice: bool = True, fg_weight: float = 1.0
) -> torch.Tensor:
    """nnU-Net's default loss from kept parts: MONAI's soft ``DiceLoss`` of the foreground classes
    (the background is left out: with it, a small lesion's Dice is swamped and an all-background
    prediction scores well; with ``batch_dice`` the Dice sums over the batch before dividing) plus
    torch's cross-entropy with the foreground classes weighted ``fg_weight``. (MONAI's
    ``DiceCELoss`` would apply the class weight to the Dice term as well.)
    ``logits`` (b, k, D, H, W), ``target`` (b, 1, D, H, W) int."""
    from monai.losses import DiceLoss

    weight = torch.full((logits.shape[1],), float(fg_weight), dtype=logits.dtype, device=logits.device)
    weight[0] = 1.0
    ce = nn.functional.cross_entropy(logits, target[:, 0], weight=weight)
    dice = DiceLoss(
        include_background=False, to_onehot_y=True, softmax=True, batch=batch_dice, smooth_nr=smooth, smooth_dr=smooth
    )(logits, target)
    return ce + dice


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(0.01)
    )


class SegDecoder(nn.Module):
    """UNet-style: from the (n, c, d, h, w) feature map, transposed-conv x2 steps with conv blocks up to the crop's
    size, then a full-resolution skip from the encoder's input channels and a 1x1 head (2 classes)."""

    def __init__(
        self, in_channels: int, n_up: int, width: int = 16, n_classes: int = 2, skip_channels: int = 1
    ) -> None:
        super().__init__()
        self.bottleneck = _block(in_channels, width)
        self.ups = nn.ModuleList(
            nn.ModuleDict({"up": nn.ConvTranspose3d(width, width, 2, stride=2), "conv": _block(width, width)})
            for _ in range(n_up)
        )
        self.skip = _block(skip_channels, width)
        self.head = nn.Sequential(_block(2 * width, width), nn.Conv3d(width, n_classes, 1))

    def forward(self, fmap: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        x = self.bottleneck(fmap)  # (n, w, d, h, w')
        for stage in cast("list[nn.ModuleDict]", self.ups):
            x = stage["conv"](stage["up"](x))
        if x.shape[2:] != inputs.shape[2:]:
            x = nn.functional.interpolate(x, size=inputs.shape[2:], mode="trilinear", align_corners=False)
        return self.head(torch.cat([x, self.skip(inputs)], 1))  # (n, n_classes, D, H, W)

    @torch.no_grad()
    def set_prior(self, fraction: float) -> None:
        """Head bias so the initial softmax gives the foreground classes ``fraction`` of the mass (RetinaNet's
        prior initialisation): the decoder starts at the base rate and its first steps go to telling lesion from
        background instead of learning that lesions are rare."""
        fraction = min(max(float(fraction), 1e-6), 0.5)
        head = cast(nn.Conv3d, self.head[-1])  # the 1x1 output convolution, built with a bias
        bias = cast(torch.Tensor, head.bias)
        k = head.out_channels - 1
        bias.zero_()
        bias[1:] = math.log(fraction / k) - math.log(1.0 - fraction)


class SegNet(nn.Module):
    """Encoder (anything with ``feature_map(volume, mask)`` and ``input_channels``) + ``SegDecoder``."""

    def __init__(self, encoder: CTGlip, decoder: SegDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, volume: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder.feature_map(volume, mask), self.encoder.input_channels(volume, mask))


def build_segnet(encoder: CTGlip, crop_voxels: int, width: int = 16) -> SegNet:
    """Probe the encoder once to size the decoder: channels and the number of x2 steps."""
    device = model_device(encoder)
    with torch.no_grad():
        probe, mask = (
            torch.zeros((1, 1, *(crop_voxels,) * 3), device=device),
            torch.zeros((1, *(crop_voxels,) * 3), device=device),
        )
        fmap, skip = encoder.feature_map(probe, mask), encoder.input_channels(probe, mask)
    n_up = max(int(round(math.log2(crop_voxels / fmap.shape[2]))), 0)
    return SegNet(encoder, SegDecoder(fmap.shape[1], n_up, width, skip_channels=skip.shape[1])).to(device)


def sample_patches(
    blocks: Sequence[SourceBlock], n: int, size: int, lesion_share: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` patches of ``size`` cubed canonical voxels from ``blocks``: the first ``lesion_share`` centred on a lesion
    voxel, the others on any voxel of the organ (mostly lesion-free). Returns volumes (n, s, s, s) float32, organ masks
    and lesion targets (n, s, s, s) bool."""
    volumes, masks, targets = [], [], []
    n_lesion = math.ceil(lesion_share * n)
    for k in range(n):
        b = blocks[int(rng.integers(len(blocks)))]
        where = np.argwhere(b.lesion if k < n_lesion else b.mask)
        centre = where[int(rng.integers(len(where)))] + rng.integers(-size // 4, size // 4 + 1, size=3)
        start = [int(c) - size // 2 for c in centre]
        volumes.append(crop_pad(np.asarray(b.volume, dtype=np.float32), start, (size,) * 3, -1.0))
        masks.append(crop_pad(b.mask, start, (size,) * 3, False))
        targets.append(crop_pad(b.lesion, start, (size,) * 3, False))
    return np.stack(volumes), np.stack(masks), np.stack(targets)


def train_segmentation(
    encoder: CTGlip, blocks: Sequence[SourceBlock], crop_voxels: int, budget: SegBudget = SegBudget()
) -> tuple[SegNet, list[float]]:
    """Fine-tune ``SegNet(encoder, decoder)`` on patches of the canonical grid around the training organs' lesions
    (``blocks``), lesions oversampled (``lesion_share``); returns the network and the loss per step."""
    if not blocks:
        raise ValueError("tumor segmentation needs at least one training organ with a lesion")
    torch.manual_seed(budget.seed)  # the decoder starts identical for every encoder
    net = build_segnet(encoder, crop_voxels, budget.width)
    rng = np.random.default_rng(budget.seed)
    if budget.prior_init:
        net.decoder.set_prior(
            float(
                sample_patches(blocks, 32, crop_voxels, budget.lesion_share, np.random.default_rng(budget.seed))[
                    2
                ].mean()
            )
        )
    device = model_device(net)
    groups = [{"params": net.decoder.parameters(), "lr": budget.lr}]
    if budget.encoder_lr > 0:
        groups.append({"params": [p for p in net.encoder.parameters() if p.requires_grad], "lr": budget.encoder_lr})
    opt = torch.optim.Adam(groups)
    losses: list[float] = []
    net.train()
    for _ in range(budget.steps):
        vol, mask, target = (
            torch.from_numpy(a).to(device)
            for a in sample_patches(blocks, budget.batch_size, crop_voxels, budget.lesion_share, rng)
        )
        loss = dice_ce_loss(net(vol[:, None], mask.float()), target[:, None].long(), fg_weight=budget.fg_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    net.eval()
    return net, losses


@torch.no_grad()
def predict_masks(
    net: SegNet, blocks: Sequence[SourceBlock], crop_voxels: int, overlap: float = 0.25
) -> list[np.ndarray]:
    """Each block's lesion prediction on the canonical grid: MONAI's sliding window of patches over the block (the
    organ's crop window), kept inside the organ's region."""
    from monai.inferers import SlidingWindowInferer

    device = model_device(net)
    inferer = SlidingWindowInferer(
        roi_size=(crop_voxels,) * 3,
        sw_batch_size=4,
        overlap=overlap,
        mode="gaussian",
        padding_mode="constant",
        cval=-1.0,
    )

    def predict(x: torch.Tensor) -> torch.Tensor:  # channels: intensities, organ mask
        return net(x[:, :1], (x[:, 1] > 0.5).float()).softmax(1)[:, 1:2]

    out = []
    for b in blocks:
        x = torch.from_numpy(np.stack([np.asarray(b.volume, dtype=np.float32), b.mask.astype(np.float32)]))[None].to(
            device
        )
        prob = cast(torch.Tensor, inferer(x, predict))[0, 0].cpu().numpy()  # predict gives one tensor
        out.append((prob > 0.5) & b.region)
    return out


@dataclass(frozen=True)
class SegResult:
    dice: Estimate  # mean Dice over test cases with its bootstrap interval
    per_case: np.ndarray  # Dice per test case (the mean over the runs)
    lesion_mm: np.ndarray  # each test case's largest lesion (mm): the size bins
    losses: tuple[float, ...]  # training loss per step of the first run
    per_run: tuple[float, ...] = ()  # mean Dice of each run (seed, seed + 1, ...)
    groups: np.ndarray | None = None  # bootstrap group (patient) of each test case

    def in_bin(self, low: float, high: float = np.inf) -> np.ndarray:
        """``per_case`` with the cases outside [low, high) mm set to NaN (so paired statistics keep their alignment)."""
        keep = (self.lesion_mm >= low) & (self.lesion_mm < high)
        return np.where(keep, self.per_case, np.nan)


def segmentation_protocol(
    make_encoder: Callable[[], CTGlip],
    data: EvalData,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    budget: SegBudget = SegBudget(),
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
) -> SegResult:
    """For each of ``budget.repeats`` seeds: build an encoder with ``make_encoder()`` (called under that seed, so a
    random initialisation is reproducible), fine-tune with a fresh decoder on ``train_rows``' lesion organs, and score
    Dice on ``test_rows`` (organs with a lesion) on the canonical grid. A case's Dice is its mean over the runs; the
    interval resamples patients."""
    test_rows = np.asarray(test_rows, dtype=int)
    train_blocks = [data.crops.blocks[r] for r in train_rows if r in data.crops.blocks]
    test_blocks = [data.crops.blocks[r] for r in test_rows]
    size = data.preprocessing.crop_voxels
    means, per_run_case, curves = [], [], []
    for r in range(budget.repeats):
        run = replace(budget, seed=budget.seed + r, repeats=1)
        torch.manual_seed(run.seed)
        net, losses = train_segmentation(make_encoder(), train_blocks, size, run)
        mean, case_dice = metrics.mean_dice(
            predict_masks(net, test_blocks, size), [b.lesion for b in test_blocks], float("nan")
        )
        means.append(mean)
        per_run_case.append(case_dice)
        curves.append(tuple(losses))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_case = np.nanmean(np.stack(per_run_case), axis=0) if len(test_rows) else np.zeros(0)
    dice = (
        metrics.estimate(metrics.NANMEAN, per_case, n=n_boot, seed=budget.seed, groups=groups)
        if len(test_rows)
        else Estimate.missing()
    )
    lesion_mm = (
        data.organs.set_index("row").loc[test_rows, "lesion_mm"].to_numpy(dtype=float)
        if len(test_rows)
        else np.zeros(0)
    )
    return SegResult(dice, per_case, lesion_mm, curves[0], tuple(means), None if groups is None else np.asarray(groups))


def from_model(model: M) -> Callable[[], M]:
    """An encoder factory returning a fresh copy of ``model`` (so fine-tuning never touches it)."""
    return lambda: copy.deepcopy(model)
