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
