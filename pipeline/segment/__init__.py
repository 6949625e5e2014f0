"""Organ segmentation and organ statistics.

``segment(study_id, volume, config)`` -> uint8 label map (``total`` v2 indices) on ``volume``'s grid,
from TotalSegmentator or from precomputed masks; ``organ_stats(study_id, labels, ct, config)`` ->
one row per organ; ``overlay_png`` / ``coverage_png`` -> pictures.
"""

from pipeline.segment.config import SegmenterConfig, StatsConfig
from pipeline.segment.grid import resample_nearest, to_grid_of
from pipeline.segment.labels import match_organ, relabel_v1_to_v2, v1_to_v2_lut
from pipeline.segment.pictures import coverage_png, overlay_png
from pipeline.segment.precomputed import (
    ManifestProblem,
    MaskNotFoundError,
    MaskRecord,
    load_mask,
    manifest_problems,
    read_manifest,
)
from pipeline.segment.segmenter import segment
from pipeline.segment.stats import COLUMNS as STATS_COLUMNS
from pipeline.segment.stats import organ_stats
from pipeline.segment.totalseg import SegmenterDependencyError, WeightsMissingError, check_weights

__all__ = [
    "SegmenterConfig",
    "StatsConfig",
    "segment",
    "organ_stats",
    "STATS_COLUMNS",
    "overlay_png",
    "coverage_png",
    "resample_nearest",
    "to_grid_of",
    "relabel_v1_to_v2",
    "v1_to_v2_lut",
    "match_organ",
    "read_manifest",
    "manifest_problems",
    "ManifestProblem",
    "load_mask",
    "MaskRecord",
    "MaskNotFoundError",
    "WeightsMissingError",
    "SegmenterDependencyError",
    "check_weights",
]
