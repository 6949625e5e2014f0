"""The soft-tissue input channel, the organ-mask channel, and which loss terms each kind of model trains."""

from __future__ import annotations

import json

import pytest
import torch

from model.config import SOFT_TISSUE, TrainConfig, replace
from model.eval.segmentation import build_segnet
from model.fake_data import tiny_config
from model.network import CTGlip, HUWindows
from model.train import build_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_soft_tissue_channel_rescales_the_wide_window_exactly():
    hu = torch.tensor([-1000.0, -400.0, -160.0, 40.0, 240.0, 700.0])
    x = (hu / 1000.0).view(1, 1, 6, 1, 1)  # (-1000, 1000) scaled to [-1, 1]
    out = HUWindows((-1000.0, 1000.0), (SOFT_TISSUE,))(x)
    assert out.shape == (1, 2, 6, 1, 1)
    assert torch.equal(out[:, :1], x)  # the input stays the first channel
    # W400 L40: -160 -> -1, 40 -> 0, 240 -> 1; outside it clipped
    assert torch.allclose(out[0, 1].flatten(), torch.tensor([-1.0, -1.0, -1.0, 0.0, 1.0, 1.0]), atol=1e-6)
    # 45 HU of a liver mass against the liver: 0.045 wide, 0.225 in the soft-tissue channel
    pair = HUWindows((-1000.0, 1000.0), (SOFT_TISSUE,))(torch.tensor([0.015, 0.060]).view(1, 1, 2, 1, 1))
    assert float(pair[0, 1, 1] - pair[0, 1, 0]) == pytest.approx(0.225, abs=1e-5)
    assert HUWindows((-1000.0, 1000.0), ())(x) is x


def test_window_config_is_checked_and_survives_json():
    cfg = tiny_config()
    assert cfg.model.extra_windows == (SOFT_TISSUE,)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # lists back to nested tuples
    with pytest.raises(ValueError, match="inside the input window"):
        replace(cfg, model={"extra_windows": ((-2000.0, 0.0),)})
    # the window has one home, the preprocessing record: the network scales its extra windows from it
    narrow = replace(cfg, data={"preprocessing": {"hu_window": (-500.0, 500.0)}})
    assert CTGlip(narrow.model, narrow.data.preprocessing).windows.input_window == (-500.0, 500.0)
    # channels: the input, one per extra window, the organ mask
    for windows, mask, channels in (((), False, 1), ((), True, 2), ((SOFT_TISSUE,), True, 3)):
        model_cfg = replace(cfg, model={"extra_windows": windows, "mask_channel": mask}).model
        assert model_cfg.in_channels == channels
        assert CTGlip(model_cfg, cfg.data.preprocessing).encoder.stages[0][0].conv1.conv.in_channels == channels


def test_segmentation_skip_sees_the_encoder_input_channels():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = CTGlip(cfg.model, cfg.data.preprocessing)
    net = build_segnet(model, 16, width=4)
    assert net.decoder.skip[0].in_channels == 3  # HU, soft tissue, organ mask
    assert net(torch.zeros(1, 1, 16, 16, 16), torch.zeros(1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


def test_each_kind_trains_its_own_terms():
    grounded, glob = build_loss(tiny_config()), build_loss(tiny_config(model={"kind": "global"}, global_loss_weight=0.7))
    assert grounded.global_weight == 0.0 and glob.global_weight == 0.7
    weights = build_loss(tiny_config(organ_loss_weight=2.0, identity_loss_weight=0.5, abnormality_loss_weight=3.0))
    assert (weights.organ_weight, weights.identity_weight, weights.abnormality_weight) == (2.0, 0.5, 3.0)
    assert not build_loss(tiny_config(false_negative_aware=False)).false_negative_aware
