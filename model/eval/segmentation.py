"""Tumor segmentation (TS): a small decoder on a pretrained encoder's feature map, fine-tuned on
the training split's lesion masks (Dice + cross-entropy), scored by Dice on the test split.
The loss and the Dice are MONAI's (``DiceLoss``, ``DiceMetric`` via ``metrics.dice``).

``compare_initialisations`` runs the same budget and seeds for every initialisation (random,
global CLIP, grounded), so only the encoder's starting weights differ.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from model.eval import metrics
from model.eval.features import model_device
from model.eval.metrics import Estimate

Case = tuple[np.ndarray, np.ndarray]  # (volume (D, H, W) float, lesion mask (D, H, W) bool)


@dataclass(frozen=True)
class SegBudget:
    steps: int = 20  # optimisation steps
    batch_size: int = 1  # cases per step
    lr: float = 3e-3  # decoder learning rate (at 1e-3, 200 steps still predicted background only)
    encoder_lr: float = 1e-4  # encoder learning rate (0 freezes the encoder)
    width: int = 8  # decoder channels (16: twice the time a step, same validation Dice)
    fg_weight: float = 20.0  # cross-entropy weight of the lesion class: lesions are ~0.1% of the voxels, and
    # unweighted the decoder settled on all background for every initialisation (Dice 0 after 120-200 steps)
    seed: int = 0  # decoder initialisation and case order: equal for every initialisation compared
    prior_init: bool = True  # start the head at the training masks' lesion fraction (see ``SegDecoder.set_prior``);
    # from p = 0.5 the decoder spent its steps pushing every voxel to background and stayed there (Dice 0 for every
    # initialisation after 60 and 300 steps on validation)
    repeats: int = 1  # runs with seeds seed, seed + 1, ...; each test case's Dice is averaged over them, since
    # one run's decoder can stay on the background class while another leaves it

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
    dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=batch_dice,
                    smooth_nr=smooth, smooth_dr=smooth)(logits, target)
    return ce + dice


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(0.01)
    )


class SegDecoder(nn.Module):
    """UNet-style: from the (b, c, d, h, w) feature map, transposed-conv x2 steps with conv blocks up
    to the input size, then a full-resolution skip from the volume itself and a 1x1 head (2 classes)."""

    def __init__(self, in_channels: int, n_up: int, width: int = 16, n_classes: int = 2, skip_channels: int = 1) -> None:
        super().__init__()
        self.bottleneck = _block(in_channels, width)
        self.ups = nn.ModuleList(
            nn.ModuleDict({"up": nn.ConvTranspose3d(width, width, 2, stride=2), "conv": _block(width, width)})
            for _ in range(n_up)
        )
        self.skip = _block(skip_channels, width)
        self.head = nn.Sequential(_block(2 * width, width), nn.Conv3d(width, n_classes, 1))

    def forward(self, fmap: torch.Tensor, volume: torch.Tensor) -> torch.Tensor:
        x = self.bottleneck(fmap)  # (b, w, d, h, w')
        for stage in self.ups:
            x = stage["conv"](stage["up"](x))
        if x.shape[2:] != volume.shape[2:]:
            x = nn.functional.interpolate(x, size=volume.shape[2:], mode="trilinear", align_corners=False)
        return self.head(torch.cat([x, self.skip(volume)], 1))  # (b, n_classes, D, H, W)

    @torch.no_grad()
    def set_prior(self, fraction: float) -> None:
        """Head bias so the initial softmax gives the foreground classes ``fraction`` of the mass (RetinaNet's
        prior initialisation): the decoder starts at the base rate and its first steps go to telling lesion from
        background instead of learning that lesions are rare."""
        fraction = min(max(float(fraction), 1e-6), 0.5)
        head = self.head[-1]
        k = head.out_channels - 1
        head.bias.zero_()
        head.bias[1:] = math.log(fraction / k) - math.log(1.0 - fraction)


class SegNet(nn.Module):
    """Encoder (anything with ``feature_map``) + ``SegDecoder``."""

    def __init__(self, encoder: nn.Module, decoder: SegDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder.feature_map(volume), _input_channels(self.encoder, volume))


def _input_channels(encoder: nn.Module, volume: torch.Tensor) -> torch.Tensor:
    """What the encoder sees (its HU windows, where it has several): the decoder's full-resolution skip."""
    channels = getattr(encoder, "input_channels", None)
    return channels(volume) if callable(channels) else volume


def build_segnet(encoder: nn.Module, sample_shape: tuple[int, int, int], width: int = 16) -> SegNet:
    """Probe the encoder once to size the decoder: channels and the number of x2 steps."""
    device = model_device(encoder)
    with torch.no_grad():
        probe = torch.zeros((1, 1, *sample_shape), device=device)
        fmap, skip = encoder.feature_map(probe), _input_channels(encoder, probe)
    ratio = max(s / f for s, f in zip(sample_shape, fmap.shape[2:]))
    n_up = max(int(round(math.log2(ratio))), 0)
    return SegNet(encoder, SegDecoder(fmap.shape[1], n_up, width, skip_channels=skip.shape[1])).to(device)


def _batch(cases: Sequence[Case], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    vol = torch.as_tensor(np.stack([c[0] for c in cases]), dtype=torch.float32, device=device)[:, None]
    les = torch.as_tensor(np.stack([c[1] for c in cases]).astype(np.int64), device=device)[:, None]
    return vol, les


def train_segmentation(encoder: nn.Module, train: Sequence[Case], budget: SegBudget = SegBudget()) -> tuple[SegNet, list[float]]:
    """Fine-tune ``SegNet(encoder, decoder)`` on ``train``; returns the network and the loss per step.
    Volumes of one batch must share a shape (use a fixed crop)."""
    if not train:
        raise ValueError("tumor segmentation needs at least one training case")
    torch.manual_seed(budget.seed)  # the decoder starts identical for every encoder
    net = build_segnet(encoder, tuple(train[0][0].shape), budget.width)
    if budget.prior_init:
        net.decoder.set_prior(float(np.mean([np.mean(c[1]) for c in train])))
    device = model_device(net)
    groups = [{"params": net.decoder.parameters(), "lr": budget.lr}]
    if budget.encoder_lr > 0:
        groups.append({"params": [p for p in net.encoder.parameters() if p.requires_grad], "lr": budget.encoder_lr})
    opt = torch.optim.Adam(groups)
    rng = np.random.default_rng(budget.seed)
    losses: list[float] = []
    net.train()
    for _ in range(budget.steps):
        pick = rng.choice(len(train), size=min(budget.batch_size, len(train)), replace=False)
        vol, les = _batch([train[i] for i in pick], device)
        loss = dice_ce_loss(net(vol), les, fg_weight=budget.fg_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    net.eval()
    return net, losses


@torch.no_grad()
def predict_masks(net: SegNet, cases: Sequence[Case]) -> list[np.ndarray]:
    device = model_device(net)
    out = []
    for vol, les in cases:
        v, _ = _batch([(vol, les)], device)
        out.append(net(v).argmax(1)[0].cpu().numpy().astype(bool))
    return out


@dataclass(frozen=True)
class SegResult:
    dice: Estimate  # mean Dice over test cases with its bootstrap interval
    per_case: np.ndarray  # Dice per test case (the mean over the runs)
    losses: tuple[float, ...]  # training loss per step of the first run
    per_run: tuple[float, ...] = ()  # mean Dice of each run (seed, seed + 1, ...)
    groups: np.ndarray | None = None  # bootstrap group (patient) of each test case


def segmentation_protocol(
    make_encoder: Callable[[], nn.Module],
    train: Sequence[Case],
    test: Sequence[Case],
    budget: SegBudget = SegBudget(),
    groups: np.ndarray | None = None,
    empty: float = 1.0,
    n_boot: int = 1000,
) -> SegResult:
    """For each of ``budget.repeats`` seeds: build an encoder with ``make_encoder()`` (called under
    that seed, so a random initialisation is reproducible), fine-tune with a fresh decoder, and score
    Dice on ``test`` (``empty``: the Dice of a case with neither lesion nor prediction, see
    ``metrics.dice``). A case's Dice is its mean over the runs; the interval resamples cases."""
    means, per_run_case, curves = [], [], []
    for r in range(budget.repeats):
        run = replace(budget, seed=budget.seed + r, repeats=1)
        torch.manual_seed(run.seed)
        net, losses = train_segmentation(make_encoder(), train, run)
        mean, dice = metrics.mean_dice(predict_masks(net, test), [c[1] for c in test], empty)
        means.append(mean)
        per_run_case.append(dice)
        curves.append(tuple(losses))
    with warnings.catch_warnings():  # a case with neither lesion nor prediction in any run stays nan (empty=nan)
        warnings.simplefilter("ignore", RuntimeWarning)
        per_case = np.nanmean(np.stack(per_run_case), axis=0) if len(test) else np.zeros(0)
    dice = metrics.estimate(metrics.NANMEAN, per_case, n=n_boot, seed=budget.seed, groups=groups) if len(test) else Estimate.missing()
    return SegResult(dice, per_case, curves[0], tuple(means), None if groups is None else np.asarray(groups))


def from_state_dict(factory: Callable[[], nn.Module], state_dict: Mapping[str, torch.Tensor] | None) -> Callable[[], nn.Module]:
    """An encoder factory: ``factory()`` (random weights) then, unless ``state_dict`` is None, those weights."""

    def make() -> nn.Module:
        enc = factory()
        if state_dict is not None:
            enc.load_state_dict(state_dict)
        return enc

    return make


def from_model(model: nn.Module) -> Callable[[], nn.Module]:
    """An encoder factory returning a fresh copy of ``model`` (so fine-tuning never touches it)."""
    return lambda: copy.deepcopy(model)


def compare_initialisations(
    inits: Mapping[str, Callable[[], nn.Module]],
    train: Sequence[Case],
    test: Sequence[Case],
    budget: SegBudget = SegBudget(),
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
) -> dict[str, SegResult]:
    """``segmentation_protocol`` for each initialisation with the same data, budget and seeds."""
    return {name: segmentation_protocol(make, train, test, budget, groups, n_boot=n_boot) for name, make in inits.items()}
