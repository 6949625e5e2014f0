"""The synthetic label maps look like real segmentation masks: one piece per organ, none at the in-plane edge."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from pipeline import vocab
from pipeline.resample import canonical_grid
from pipeline.segment.grid import resample_nearest
from pipeline.volume import Volume
from pipeline.synthetic.cohort import CohortSpec, synthesize_study

_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
_MIN_ML = 1.0  # below this, organ_stats flags an organ too_small anyway (a sliver at a z cut)
# A few studies of the demo cohort (every field of view, fractures, enlarged organs) and a larger patient.
CASES = [(CohortSpec(), i) for i in (0, 3, 7, 13)] + [
    (replace(CohortSpec(), seed=3, body_scale=(0.95, 1.05), matrix_sizes=(512,), slice_spacings_mm=(5.0,)), 1),
]


def _fragmented(labels: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Organ -> largest-component fraction, for organs of at least ``_MIN_ML`` below 95 %."""
    names = vocab.class_map(vocab.V2_TASK)
    out = {}
    for value, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        comp, n = ndimage.label(labels[box] == value, structure=_CONNECTIVITY)
        sizes = np.bincount(comp.ravel())[1:]
        if sizes.sum() * voxel_ml >= _MIN_ML and sizes.max() / sizes.sum() < 0.95:
            out[names[value]] = round(float(sizes.max() / sizes.sum()), 3)
    return out


@pytest.fixture(scope="module", params=range(len(CASES)), ids=lambda i: f"case{i}")
def study(request):
    spec, index = CASES[request.param]
    return synthesize_study(spec, index)


def test_every_organ_is_one_piece_native_and_at_3mm(study):
    voxel_ml = abs(float(np.linalg.det(study.affine[:3, :3]))) / 1000.0
    assert _fragmented(study.labels, voxel_ml) == {}
    grid = canonical_grid(study.labels.shape, study.affine, 3.0)
    canonical = resample_nearest(Volume(study.labels, study.affine), grid.shape, grid.matrix).array
    assert _fragmented(canonical, 27.0 / 1000.0) == {}


def test_organs_stay_off_the_in_plane_border(study):
    """Only z cuts happen: the body fits inside the in-plane field of view with a margin of air."""
    lab = study.labels
    for face in (lab[:2], lab[-2:], lab[:, :2], lab[:, -2:]):
        assert not face.any()
    grid = canonical_grid(lab.shape, study.affine, 3.0)
    canonical = resample_nearest(Volume(lab, study.affine), grid.shape, grid.matrix).array
    for face in (canonical[0], canonical[-1], canonical[:, 0], canonical[:, -1]):
        assert not face.any()


def test_gold_cut_by_fov_is_touching_any_face(study):
    lab = study.labels
    touching = set()
    for face in (lab[0], lab[-1], lab[:, 0], lab[:, -1], lab[:, :, 0], lab[:, :, -1]):
        touching |= {int(v) for v in np.unique(face) if v}
    names = vocab.class_map(vocab.V2_TASK)
    for row in study.gold:
        assert row["cut_by_fov"] == (vocab.organ(row["organ"]).index_v2 in touching), row["organ"]
    assert {names[v] for v in touching} <= {r["organ"] for r in study.gold}


def test_hedged_findings_are_uncertain_in_the_gold():
    """A hedged finding ("The heart is likely mildly enlarged.") reads uncertain, unless another is certain."""
    spec = CohortSpec()
    seen = 0
    for index in range(24):
        s = synthesize_study(spec, index)
        status = {r["organ"]: r["report_status"] for r in s.gold}
        for f in s.findings:
            certain = [g for g in s.findings if not g.hedged and set(g.organs) & set(f.organs)]
            if f.hedged and not certain:
                seen += 1
                assert all(status[o] == "uncertain" for o in f.organs), (index, f)
    assert seen > 0
