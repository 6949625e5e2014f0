"""Options of the segmentation stage, grouped in frozen dataclasses (no 40-keyword entry points)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Backend = Literal["totalsegmentator", "precomputed"]
LabelSpace = Literal["v2", "v1"]
MASK_FORMATS = ("nifti_multilabel", "nifti_folder", "dicom_seg")


@dataclass(frozen=True)
class SegmenterConfig:
    """Which segmenter runs and how.

    ``precomputed`` reads masks listed in ``source/masks/manifest.csv`` (``manifest`` overrides
    where; ``None`` means ``<data root>/source/masks/manifest.csv``, resolved when called).
    ``label_space`` is the index space of ``nifti_multilabel`` masks (``v1`` = ``total_v1``, relabelled
    to v2). ``seg_labels`` adds DICOM-SEG segment label -> v2 class pairs to the vocabulary's own
    matching. ``totalsegmentator`` runs task ``total`` with ``fast`` (3 mm model) on ``device``
    (``auto``: GPU when torch sees one, else CPU).
    """

    backend: Backend = "precomputed"
    manifest: str | None = None
    label_space: LabelSpace = "v2"
    seg_labels: tuple[tuple[str, str], ...] = ()
    fast: bool = True
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.backend not in ("totalsegmentator", "precomputed"):
            raise ValueError(f"unknown segmenter backend {self.backend!r}; use 'totalsegmentator' or 'precomputed'")
        if self.label_space not in ("v2", "v1"):
            raise ValueError(f"label_space must be 'v2' or 'v1', got {self.label_space!r}")


@dataclass(frozen=True)
class StatsConfig:
    """Thresholds of the organ quality flags.

    ``too_small``: volume below ``min_volume_ml``. ``fragmented``: the largest 26-connected component
    holds less than ``min_largest_component`` of the organ's voxels (skipped when ``check_fragments``
    is off). ``cut_by_fov``: the organ touches a face of the field of view (within ``fov_margin`` voxels).
    """

    min_volume_ml: float = 1.0
    min_largest_component: float = 0.9
    check_fragments: bool = True
    fov_margin: int = 0
