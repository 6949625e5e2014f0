"""Segment a shard of studies: label maps on the canonical grid plus organ statistics, in parallel.

A failing study becomes one rejection row (stage ``segmentation``) and the rest go on. Studies whose
canonical volume, mask source and options did not change are skipped (fingerprint beside the mask).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.atomic import write_json, write_parquet
from pipeline.segment.config import SegmenterConfig, StatsConfig
from pipeline.segment.segmenter import segment
from pipeline.segment.stats import COLUMNS as STATS_COLUMNS
from pipeline.segment.stats import organ_stats
from pipeline.tables import resolve_path
from pipeline.volume import load_nifti, save_nifti

log = logging.getLogger(__name__)

REJECTED_COLUMNS = ["study_id", "stage", "reason", "detail"]


STATS_VERSION = "2"  # bump when organ_stats gains or changes a column, so cached rows are recomputed


@dataclass(frozen=True)
class SegmentJob:
    study_id: str
    volume_path: str
    series_id: str = ""  # the series ingest chose (pseudonym): precomputed masks may name it


@dataclass(frozen=True)
class SegmentResult:
    organ_stats: pd.DataFrame
    rejected: pd.DataFrame
    n_unchanged: int


def _stat(path: Path) -> str:
    try:
        s = path.stat()
        return f"{s.st_size}:{s.st_mtime_ns}"
    except OSError:
        return "missing"


def _fingerprint(job: SegmentJob, volume: Path, config: SegmenterConfig, stats: StatsConfig) -> str:
    parts = [
        STATS_VERSION,
        job.volume_path,
        job.series_id,
        _stat(volume),
        json.dumps(asdict(config), sort_keys=True, default=str),
        json.dumps(asdict(stats), sort_keys=True),
    ]
    if config.manifest:
        parts.append(_stat(Path(config.manifest)))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _one(
    job: SegmentJob, out_dir: Path, config: SegmenterConfig, stats_config: StatsConfig, root: Path
) -> tuple[pd.DataFrame | None, dict | None, bool]:
    volume = resolve_path(job.volume_path, root)
    mask_path = out_dir / f"{job.study_id}.nii.gz"
    side = out_dir / f"{job.study_id}.json"
    cached_stats = out_dir / f"{job.study_id}.stats.parquet"
    fp = _fingerprint(job, volume, config, stats_config)
    try:
        if (
            side.is_file()
            and json.loads(side.read_text()).get("fingerprint") == fp
            and mask_path.is_file()
            and cached_stats.is_file()
        ):
            return pd.read_parquet(cached_stats), None, True
        ct = load_nifti(volume)
        labels = segment(job.study_id, ct, config, job.series_id)
        if not np.any(labels.array):
            raise ValueError("segmentation is empty: no organ labelled on the canonical grid")
        save_nifti(labels, mask_path, dtype=np.uint8)
        df = organ_stats(job.study_id, labels, ct, stats_config)
        write_parquet(df, cached_stats)
        write_json({"fingerprint": fp}, side)
        return df, None, False
    except Exception as exc:  # noqa: BLE001 - one bad study must not take the shard down
        reason = type(exc).__name__
        log.warning("segmentation rejected %s: %s: %s", job.study_id, reason, exc)
        return (
            None,
            {"study_id": job.study_id, "stage": "segmentation", "reason": reason, "detail": str(exc)[:500]},
            False,
        )


def segment_studies(
    jobs: Sequence[SegmentJob],
    out_dir: Path,
    config: SegmenterConfig = SegmenterConfig(),
    stats_config: StatsConfig = StatsConfig(),
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
    data_root: Path | None = None,
) -> SegmentResult:
    """Label maps to ``out_dir/<study_id>.nii.gz`` and one organ_stats frame for all ``jobs``. A relative
    ``volume_path`` (as ct_studies stores it) is under ``data_root``, by default the folder holding ``out_dir``
    (``<data>/masks`` beside ``<data>/volumes``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frames, rejected, unchanged = [], [], 0
    root = Path(data_root) if data_root is not None else Path(out_dir).resolve().parent
    args = [(job, out_dir, config, stats_config, root) for job in jobs]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = pool.map(_one, *zip(*args))
            outcomes = list(_with_progress(results, len(jobs), progress))
    else:
        outcomes = list(_with_progress((_one(*a) for a in args), len(jobs), progress))
    for df, rej, skipped in outcomes:
        if df is not None:
            frames.append(df)
        if rej is not None:
            rejected.append(rej)
        unchanged += skipped
    stats = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=STATS_COLUMNS)
    return SegmentResult(stats, pd.DataFrame(rejected, columns=REJECTED_COLUMNS), unchanged)


def _with_progress(results, total: int, progress):
    for done, result in enumerate(results, start=1):
        if progress is not None:
            progress(done, total)
        yield result
