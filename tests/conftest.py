"""Shared fixtures. Real public files live in ../shared/realdata; tests using them skip where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("CTGLIP_REALDATA", REPO.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    """Path to ../shared/realdata, or skip the test cleanly where it is not present."""
    if not REALDATA.is_dir():
        pytest.skip(f"real public CT files not found at {REALDATA}")
    return REALDATA


@pytest.fixture(scope="session")
def tiny_graph(tmp_path_factory):
    """The whole asset graph at a tiny budget, run once per session into a persistent Dagster home."""
    from tiny_graph import materialize_tiny_graph

    with pytest.MonkeyPatch.context() as mp:  # the session-scoped run must not see a developer's key either
        mp.delenv("CTGLIP_PSEUDONYM_KEY", raising=False)
        return materialize_tiny_graph(tmp_path_factory.mktemp("tiny_graph"))


@pytest.fixture(scope="session")
def fake_data_root(tmp_path_factory) -> Path:
    """Ten fake studies (two in val, half the organs abnormal) with their tables, read-only: for the tests that load,
    crop or train on a data root without writing into it."""
    from model.fake_data import make_fake_data_root

    return make_fake_data_root(tmp_path_factory.mktemp("fake"), n_studies=10, shape=(48, 48, 40), val_fraction=0.2,
                               p_abnormal=0.5)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """An exported tiny CTGlip, trained two steps on four fake studies: for the tests that apply a model."""
    from model.fake_data import make_fake_data_root, tiny_config
    from model.train import train

    base = tmp_path_factory.mktemp("tiny_model")
    root = make_fake_data_root(base / "train", n_studies=4, shape=(40, 40, 36))
    return train(tiny_config(steps=2, batch_size=2, checkpoint_every=2), root, base / "run").model_path


@pytest.fixture(autouse=True)
def _demo_pseudonym_key(monkeypatch):
    # Tests must not depend on a key set in the developer's shell.
    monkeypatch.delenv("CTGLIP_PSEUDONYM_KEY", raising=False)


@pytest.fixture()
def one_torch_thread():
    """Tiny tensors: extra threads only add contention on a shared two-core CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
