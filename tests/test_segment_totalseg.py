"""The TotalSegmentator backend fails fast and offline when weights or dependencies are missing."""

from __future__ import annotations

import importlib.util
import socket
import time

import numpy as np
import pytest

from pipeline.segment import SegmenterConfig, SegmenterDependencyError, WeightsMissingError, segment
from pipeline.segment.totalseg import required_weights
from pipeline.volume import Volume

CT = Volume(np.zeros((8, 8, 8), np.int16), np.eye(4))
CONFIG = SegmenterConfig(backend="totalsegmentator")


@pytest.fixture()
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_empty_weights_folder_fails_fast_and_offline(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(WeightsMissingError) as err:
        segment("stu-x", CT, CONFIG)
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert str(tmp_path) in message and "TOTALSEG_WEIGHTS_PATH" in message and "TOTALSEG_HOME_DIR" in message
    assert "totalseg_import_weights" in message and required_weights(fast=True)[0] in message
    assert list(tmp_path.iterdir()) == []  # nothing created, nothing downloaded


def test_home_dir_rule_is_named(tmp_path, monkeypatch, no_network):
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path))
    with pytest.raises(WeightsMissingError, match="TOTALSEG_HOME_DIR"):
        segment("stu-x", CT, CONFIG)


@pytest.mark.skipif(importlib.util.find_spec("nnunetv2") is not None, reason="nnU-Net is installed here")
def test_missing_nnunet_says_how_to_install(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path))
    for name in required_weights(fast=True):  # weights "present": the dependency check comes next
        fold = tmp_path / name / "trainer__plans__3d_fullres" / "fold_0"
        fold.mkdir(parents=True)
        (fold / "checkpoint_final.pth").touch()
    with pytest.raises(SegmenterDependencyError, match=r"pip install 'ct-glip\[segment\]'"):
        segment("stu-x", CT, CONFIG)
