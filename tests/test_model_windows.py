"""The soft-tissue input channel and the optional global term of the grounded model."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from model.config import SOFT_TISSUE, TrainConfig, replace
from model.eval.segmentation import build_segnet
from model.fake_data import tiny_config
from model.losses import CTGlipLoss, positive_mask, soft_contrastive
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
    with pytest.raises(ValueError, match="inside input_window"):
        replace(cfg, model={"extra_windows": ((-2000.0, 0.0),)})
    with pytest.raises(ValueError, match="hu_window"):
        replace(cfg, data={"hu_window": (-500.0, 500.0)})
    one = CTGlip(replace(cfg, model={"extra_windows": ()}).model)  # checkpoints from before: one channel
    two = CTGlip(cfg.model)
    assert one.encoder.stages[0][0].conv1.conv.in_channels == 1
    assert two.encoder.stages[0][0].conv1.conv.in_channels == 2


def test_segmentation_skip_sees_the_encoder_windows():
    torch.manual_seed(0)
    model = CTGlip(tiny_config().model)
    net = build_segnet(model, (32, 32, 32), width=4)
    assert net.decoder.skip[0].in_channels == 2
    assert net(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 2, 32, 32, 32)


def test_grounded_global_term_is_the_global_loss_on_the_same_features():
    g = torch.Generator().manual_seed(0)
    image, text = F.normalize(torch.randn(4, 8, generator=g), dim=-1), F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    ids = torch.tensor([1, 2, 3, 1])
    scale = torch.tensor(10.0)
    expected = soft_contrastive(image, text, scale, positive_mask(ids))
    assert "global_loss" not in CTGlipLoss(global_weight=0.0)(scale, image_features=image, text_features=text, text_ids=ids)
    out = CTGlipLoss(global_weight=0.5)(scale, image_features=image, text_features=text, text_ids=ids)
    assert torch.allclose(out["global_loss"], 0.5 * expected)
    # which weight the trainer passes: the global model's own, or the grounded model's added term
    assert build_loss(tiny_config()).global_weight == 0.0
    assert build_loss(tiny_config(grounded_global_weight=0.3)).global_weight == 0.3
    assert build_loss(tiny_config(model={"kind": "global"}, global_loss_weight=0.7)).global_weight == 0.7
