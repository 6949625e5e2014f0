"""Mixed precision, shared by training and serving (neither imports the other for it)."""

from __future__ import annotations

import torch


def autocast(device: torch.device, precision: str):
    """bf16 autocast on ``device`` (``precision`` "bf16"); a no-op context for "float32"."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
