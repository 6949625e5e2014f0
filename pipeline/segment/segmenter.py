"""One entry for the segmentation stage: ``segment(study_id, volume, config) -> label map``."""

from __future__ import annotations

from pipeline.segment.config import SegmenterConfig
from pipeline.segment.precomputed import segment_precomputed
from pipeline.segment.totalseg import segment_totalsegmentator
from pipeline.volume import Volume


def segment(study_id: str, volume: Volume, config: SegmenterConfig = SegmenterConfig(), series_id: str = "") -> Volume:
    """Organ label map of ``volume`` (uint8, ``total`` v2 indices) on ``volume``'s own grid. ``series_id`` (the
    series pseudonym ingest chose) lets precomputed masks be found by SeriesInstanceUID."""
    if config.backend == "totalsegmentator":
        return segment_totalsegmentator(study_id, volume, config)
    return segment_precomputed(study_id, volume, config, series_id)
