"""A saved model's file names and the content fingerprint used for provenance, without torch: a Dagster step
worker that launches training or checks a checkpoint reads them without importing torch and MONAI."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"


def fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (as ``sha256sum``) or of a folder's files (relative names and bytes): provenance."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    for member in sorted(path.rglob("*")):
        if member.is_file():
            h.update(str(member.relative_to(path)).encode())
            h.update(member.read_bytes())
    return h.hexdigest()
