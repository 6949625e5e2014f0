"""Convert an old pickled ct-glip checkpoint (``model.pt`` or ``checkpoints/step_*.pt``) into a model folder.

    python -m model.convert OLD_DIR            # OLD_DIR/model.pt -> OLD_DIR/model/
    python -m model.convert OLD.pt --out NEW   # any old checkpoint file -> NEW/

The file is read with ``torch.load(weights_only=True)`` first, which runs no code from it. Old step
checkpoints hold numpy RNG states that this refuses; ``--trust`` then reads the file as a full
pickle, which runs whatever code the file holds: use it only on a file whose origin you trust
(one your own training wrote). The result (``model.safetensors``, ``config.json``, ``README.md``) is
what ``model.checkpoint.load_model`` reads.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import WEIGHTS, load_model, save_model
from model.config import TrainConfig, io_metadata

log = logging.getLogger(__name__)


def convert(source: str | Path, out: str | Path | None = None, trust: bool = False) -> Path:
    """Write the model folder for an old checkpoint file (or a folder holding ``model.pt``); returns it."""
    source = Path(source)
    path = source / "model.pt" if source.is_dir() else source
    if not path.is_file():
        raise FileNotFoundError(f"no old checkpoint at {path} (give the file, or a folder holding model.pt)")
    try:
        old: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trust:
            raise PermissionError(
                f"{path} holds more than tensors and plain values, so reading it would run code from the file. "
                "If your own training wrote it (or you otherwise trust its origin), rerun with --trust."
            ) from None
        old = torch.load(path, map_location="cpu", weights_only=False)  # the user vouched for this file
    if not isinstance(old, dict) or "model" not in old or "config" not in old:
        raise ValueError(f"{path} is not a ct-glip checkpoint (expected a dict with 'model' and 'config')")
    train = TrainConfig.from_dict(old["config"])
    history = list(old.get("history") or [])
    last = history[-1] if history else {}
    config = {
        "train": train.to_dict(),
        "io": old.get("io") or io_metadata(train),
        "step": int(old.get("step") or 0),
        "training": {
            "final_losses": {k: float(v) for k, v in last.items() if k == "loss" or k.endswith("_loss")},
            "converted_from": path.name,
        },
    }
    target = Path(out) if out is not None else path.parent / "model"
    save_model(target, old["model"], config)
    load_model(target)  # the folder must load before we say it is done
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="old checkpoint file, or a training folder holding model.pt")
    ap.add_argument("--out", type=Path, default=None, help="model folder to write (default: model/ beside the file)")
    ap.add_argument("--trust", action="store_true", help="allow a full pickle load (runs code from the file): only for files you trust")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        target = convert(args.source, args.out, args.trust)
    except (FileNotFoundError, PermissionError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {target / WEIGHTS} and its config; load it with model.checkpoint.load_model('{target}')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
