"""On the synthetic cohort, organ_stats volumes equal the ground truth's on the canonical grid and match native volumes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.ingest import IngestConfig, ingest_archive
from pipeline.resample import Grid, ResampleOptions
from pipeline.segment import SegmenterConfig, resample_nearest
from pipeline.segment.batch import SegmentJob, segment_studies
from pipeline.synthetic.cohort import CohortSpec, generate_cohort
from pipeline.volume import load_nifti
from pipeline.ids import pseudonym


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    manifest = generate_cohort(CohortSpec(n_studies=2, seed=11, faults=False), root / "source")
    studies = ingest_archive(IngestConfig(data_root=root, dicom_root=manifest.dicom_dir, resample=ResampleOptions(spacing=(3.0,) * 3), workers=1)).ct_studies
    jobs = [SegmentJob(s, v) for s, v in zip(studies["study_id"], studies["volume_path"])]
    result = segment_studies(jobs, root / "masks", SegmenterConfig(manifest=str(manifest.masks_manifest)), workers=1)
    assert result.rejected.empty
    return root, manifest, studies, result.organ_stats


def test_stats_equal_ground_truth_on_canonical_grid(cohort):
    root, manifest, studies, stats = cohort
    truth = pd.read_parquet(manifest.truth_dir / "studies.parquet")
    for uid in truth["study_uid"]:
        sid = pseudonym("study", uid)
        grid = Grid.from_nifti(root / "volumes" / f"{sid}.nii.gz")
        native = load_nifti(manifest.truth_dir / "labels" / f"{uid}.nii.gz")
        on_grid = resample_nearest(native, grid.shape, grid.matrix).array
        voxel_ml = float(np.prod(grid.spacing)) / 1000.0
        counts = np.bincount(on_grid.ravel().astype(np.int64))
        mine = stats[stats["study_id"] == sid].set_index("index_v2")["volume_ml"]
        expected = {i: counts[i] * voxel_ml for i in np.nonzero(counts)[0] if i > 0}
        assert set(mine.index) == set(expected)
        for index, ml in expected.items():
            assert mine[index] == pytest.approx(ml, rel=1e-9)


def test_stats_match_native_volumes_for_large_organs(cohort):
    root, manifest, studies, stats = cohort
    gold = pd.read_parquet(manifest.truth_dir / "organ_gold.parquet")
    gold = gold[gold["in_image"] & (gold["volume_ml_native"] > 50)].copy()
    gold["study_id"] = gold["study_uid"].map(lambda u: pseudonym("study", u))
    merged = gold.merge(stats, on=["study_id", "organ"])
    assert len(merged) >= 10
    rel = (merged["volume_ml"] - merged["volume_ml_native"]).abs() / merged["volume_ml_native"]
    worst = merged.loc[rel.idxmax(), ["organ", "volume_ml", "volume_ml_native"]].to_dict()
    assert rel.max() < 0.03, worst
