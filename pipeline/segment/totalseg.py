"""The ``totalsegmentator`` segmenter: TotalSegmentator's Python API on the canonical volume.

Weights are looked up where TotalSegmentator itself looks (``TOTALSEG_WEIGHTS_PATH``, else
``TOTALSEG_HOME_DIR``/nnunet/results, else ~/.totalsegmentator/nnunet/results) and checked *before*
the library is imported: its own download has no timeout, so a missing model must fail here, offline.
Usage statistics are switched off in TotalSegmentator's config before every run.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.segment.config import SegmenterConfig
from pipeline.segment.grid import resample_nearest
from pipeline.volume import Volume

TASK = "total"  # v2 indices, the index space of every label map here
INSTALL_HINT = "pip install 'ct-glip[segment]'"


class WeightsMissingError(FileNotFoundError):
    """TotalSegmentator's model weights are not on disk (and will not be downloaded)."""


class SegmenterDependencyError(ImportError):
    """TotalSegmentator's runtime dependencies (nnU-Net) are not installed."""


def totalseg_home() -> tuple[Path, str]:
    """TotalSegmentator's home folder and the rule that chose it (mirrors ``totalsegmentator.config``)."""
    if "TOTALSEG_HOME_DIR" in os.environ:
        return Path(os.environ["TOTALSEG_HOME_DIR"]), "$TOTALSEG_HOME_DIR"
    home = Path("/tmp") if str(Path.home()) == "/" else Path.home()
    return home / ".totalsegmentator", "the default ~/.totalsegmentator"


def weights_dir() -> tuple[Path, str]:
    """The folder holding the ``Dataset...`` weight folders, and the rule that chose it."""
    if "TOTALSEG_WEIGHTS_PATH" in os.environ:
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"]), "$TOTALSEG_WEIGHTS_PATH"
    home, rule = totalseg_home()
    return home / "nnunet" / "results", f"{rule}/nnunet/results"


RELEASES = "https://github.com/wasserth/TotalSegmentator/releases/download"


def _weight_configs(fast: bool) -> list[dict]:
    try:  # plain data, importable without TotalSegmentator's dependencies
        from totalsegmentator.map_tasks_config import TASK_CONFIGS, TASK_ID_WEIGHTS_CONFIGS
    except ImportError as err:
        raise SegmenterDependencyError(f"the totalsegmentator backend needs TotalSegmentator: {INSTALL_HINT}") from err

    ids = TASK_CONFIGS[TASK]["sub_modes"]["fast" if fast else "default"]["task_id"]
    return [TASK_ID_WEIGHTS_CONFIGS[i] for i in (ids if isinstance(ids, list) else [ids])]


def required_weights(fast: bool = True) -> list[str]:
    """The ``Dataset...`` folder names task ``total`` needs, from TotalSegmentator's own task table."""
    return [c["foldername"] for c in _weight_configs(fast)]


def weight_urls(fast: bool = True) -> list[str]:
    """Where TotalSegmentator would download those folders from (as zips), for an offline copy."""
    return [f"{RELEASES}/{c['version']}/{c['foldername']}.zip" for c in _weight_configs(fast)]


def _has_checkpoint(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*/fold_*/checkpoint_final.pth"))


def check_weights(fast: bool = True) -> Path:
    """The weights folder, or :class:`WeightsMissingError` naming where it looked and how to install offline."""
    root, rule = weights_dir()
    needed = required_weights(fast)
    missing = [name for name in needed if not _has_checkpoint(root / name)]
    if not missing:
        return root
    raise WeightsMissingError(
        f"TotalSegmentator weights for task {TASK!r}{' (fast)' if fast else ''} not found: missing "
        f"{', '.join(missing)} (with */fold_*/checkpoint_final.pth) in {root} (chosen by {rule}; looked up "
        "via TOTALSEG_WEIGHTS_PATH, else TOTALSEG_HOME_DIR/nnunet/results, else ~/.totalsegmentator/nnunet/results). "
        "Nothing was downloaded. To install offline: on a machine with network fetch "
        f"{' '.join(weight_urls(fast))}, then run `totalseg_import_weights -i <zip>` here, or unzip / copy the "
        "Dataset folder(s) into that folder (or point TOTALSEG_WEIGHTS_PATH at a folder that holds them). "
        "Alternatively use the 'precomputed' segmenter backend."
    )


def check_dependencies() -> None:
    """Raise :class:`SegmenterDependencyError` unless nnU-Net (TotalSegmentator's engine) is importable."""
    missing = [m for m in ("nnunetv2", "totalsegmentator") if importlib.util.find_spec(m) is None]
    if missing:
        raise SegmenterDependencyError(
            f"the totalsegmentator backend needs {', '.join(missing)}, which is not installed: {INSTALL_HINT}"
        )


def disable_usage_stats() -> None:
    """Opt out of TotalSegmentator's usage statistics (``send_usage_stats: false`` in its config.json)."""
    from totalsegmentator.config import set_config_key, setup_totalseg

    setup_totalseg()
    set_config_key("send_usage_stats", False)
    set_config_key("statistics_disclaimer_shown", True)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def segment_totalsegmentator(study_id: str, volume: Volume, config: SegmenterConfig) -> Volume:
    """TotalSegmentator ``total`` on ``volume``; uint8 label map (v2 indices) on ``volume``'s grid."""
    check_weights(config.fast)  # first: never let the library reach for the network
    check_dependencies()
    disable_usage_stats()
    from totalsegmentator.python_api import totalsegmentator

    img = nib.Nifti1Image(np.asarray(volume.array, dtype=np.float32), volume.affine)
    seg = totalsegmentator(
        img,
        None,
        task=TASK,
        fast=config.fast,
        device=resolve_device(config.device),
        statistics=False,
        radiomics=False,
        quiet=True,
        ml=True,
    )
    labels = Volume(np.asarray(seg.dataobj).astype(np.uint8), np.asarray(seg.affine, float))
    out = resample_nearest(labels, volume.shape, volume.affine)
    return Volume(out.array, out.affine, {"study_id": study_id, "segmenter": f"totalsegmentator/{TASK}"})
