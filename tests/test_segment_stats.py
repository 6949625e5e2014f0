"""Organ statistics and pictures on small synthetic label maps."""

from __future__ import annotations

import io

import matplotlib.image
import numpy as np
import pandas as pd

from pipeline import vocab
from pipeline.segment import STATS_COLUMNS, StatsConfig, coverage_png, organ_stats, overlay_png
from pipeline.volume import Volume

LIVER, SPLEEN, PANCREAS = (vocab.organ(n).index_v2 for n in ("liver", "spleen", "pancreas"))
AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


def _study() -> tuple[Volume, Volume]:
    lab = np.zeros((20, 20, 10), np.uint8)
    lab[3:9, 4:12, 2:7] = LIVER  # inside the field of view
    lab[12:18, 10:19, 5:10] = SPLEEN  # touches the last slice
    lab[2:4, 15:17, 3:5] = PANCREAS  # two pieces of 8 voxels: fragmented
    lab[6:8, 15:17, 3:5] = PANCREAS
    ct = np.where(lab == LIVER, 60, np.where(lab == SPLEEN, 45, -100)).astype(np.int16)
    return Volume(ct, AFFINE), Volume(lab, AFFINE)


def test_stats_columns_flags_and_geometry():
    ct, labels = _study()
    df = organ_stats("stu-1", labels, ct, StatsConfig(min_volume_ml=0.5))
    assert list(df.columns) == list(STATS_COLUMNS)
    rows = df.set_index("organ")
    liver, spleen, pancreas = rows.loc["liver"], rows.loc["spleen"], rows.loc["pancreas"]
    assert liver.voxels == 6 * 8 * 5 and liver.volume_ml == 240 * 12 / 1000
    assert liver.bbox_vox == [3, 4, 2, 9, 12, 7]
    assert liver.bbox_mm == [5.0, 7.0, 4.5, 17.0, 23.0, 19.5]
    assert np.allclose(liver.centroid_mm, [11.0, 15.0, 12.0])
    assert liver.hu_mean == 60 and liver.hu_std == 0 and liver.quality_flags == []
    assert spleen.cut_by_fov and spleen.quality_flags == ["cut_by_fov"]
    assert set(pancreas.quality_flags) == {"too_small", "fragmented"}
    assert liver.cut_face_ratio == 0.0 and spleen.cut_face_ratio == 1.0  # a box: full width at the cut


def test_cut_face_ratio_is_the_area_at_the_cut_over_the_largest_section():
    """A cone whose tip is cut off: the section on the last slice over the widest section, per face touched."""
    lab = np.zeros((21, 21, 12), np.uint8)
    ii, jj = np.mgrid[:21, :21]
    for k in range(12):  # radius 10 at k=0, shrinking towards k=11, which is the field of view's last slice
        lab[:, :, k][(ii - 10) ** 2 + (jj - 10) ** 2 <= (10 - 0.8 * k) ** 2] = LIVER
    areas = (lab == LIVER).sum(axis=(0, 1))
    # the disc of radius 10 also touches the i and j faces, at single voxels: small ratios there
    row = organ_stats("stu-4", Volume(lab, AFFINE), None).iloc[0]
    assert row.cut_by_fov
    assert row.cut_face_ratio == areas[0] / areas.max() == 1.0  # k=0 is the widest slice and a face
    row = organ_stats("stu-5", Volume(lab[:, :, 1:], AFFINE), None).iloc[0]  # cut where it already narrows
    assert row.cut_face_ratio == areas[1] / areas[1:].max() == 1.0
    lab[:, :, 0] = 0  # the widest slice off the face: only the tip end (k=11) and in-plane faces are touched
    padded = np.pad(lab, ((2, 2), (2, 2), (0, 0)))
    row = organ_stats("stu-6", Volume(padded, AFFINE), None).iloc[0]
    assert row.cut_by_fov and row.cut_face_ratio == areas[11] / areas[1:].max()
    assert 0 < row.cut_face_ratio < 0.2


def test_stats_of_empty_map_and_without_ct():
    ct, labels = _study()
    empty = organ_stats("stu-2", Volume(np.zeros((4, 4, 4), np.uint8), np.eye(4)), None)
    assert empty.empty and list(empty.columns) == list(STATS_COLUMNS)
    assert organ_stats("stu-3", labels, None)["hu_mean"].isna().all()


def _is_png(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(io.BytesIO(data), format="png")
    return image.shape[:2]


def test_overlay_and_coverage_pngs():
    ct, labels = _study()
    h, w = _is_png(overlay_png([("stu-1", ct, labels), ("stu-2", ct, labels)]))
    assert h > 200 and w > 300
    stats = pd.concat([organ_stats("stu-1", labels, ct), organ_stats("stu-2", labels, ct).head(1)])
    h, w = _is_png(coverage_png(stats))
    assert h > 100 and w > 100
