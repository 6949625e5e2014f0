"""Vocabulary index tables and world-coordinate nearest-neighbour resampling (no real data needed)."""

from __future__ import annotations

import numpy as np
import pytest
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from pipeline import vocab
from pipeline.segment import match_organ, relabel_v1_to_v2, resample_nearest, v1_to_v2_lut
from pipeline.volume import Volume


def test_v1_relabel_follows_vocab():
    v1 = {n: i for i, n in vocab.class_map("total_v1").items()}
    v2 = {n: i for i, n in vocab.class_map("total").items()}
    lut = v1_to_v2_lut()
    assert lut[v1["liver"]] == v2["liver"]
    assert lut[v1["heart_ventricle_left"]] == v2["heart"]
    assert lut[v1["pulmonary_artery"]] == 0  # no v2 counterpart
    arr = np.array([[[0, v1["spleen"], v1["heart_myocardium"]]]], dtype=np.uint8)
    assert relabel_v1_to_v2(arr).tolist() == [[[0, v2["spleen"], v2["heart"]]]]


@pytest.mark.parametrize(
    "label, organ",
    [("Liver", "liver"), ("Left Kidney", "kidney_left"), ("kidney_right", "kidney_right"),
     ("Urinary Bladder", "urinary_bladder"), ("heart_atrium_left", "heart"), ("GREEN", None)],
)
def test_match_organ(label, organ):
    assert match_organ(label) == organ


def _reoriented(vol: Volume, codes: tuple[str, str, str]) -> Volume:
    t = ornt_transform(axcodes2ornt(vol.orientation), axcodes2ornt(codes))
    return Volume(apply_orientation(vol.array, t), vol.affine @ inv_ornt_aff(t, vol.shape))


@pytest.mark.parametrize("codes", [("L", "A", "S"), ("P", "S", "L"), ("I", "R", "P")])
def test_resample_undoes_any_orientation(codes):
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [10, -5, 3]
    ras = Volume(rng.integers(0, 5, (7, 8, 9)).astype(np.uint8), affine)
    moved = _reoriented(ras, codes)
    assert moved.orientation == "".join(codes)
    assert np.array_equal(resample_nearest(moved, ras.shape, ras.affine).array, ras.array)


def test_resample_general_affine_pads_outside_with_zero():
    src = Volume(np.ones((4, 4, 4), np.uint8), np.eye(4))
    target = np.diag([0.5, 0.5, 0.5, 1.0])  # finer grid, half of it outside the source
    out = resample_nearest(src, (12, 12, 12), target).array
    assert out[:7, :7, :7].all() and not out[8:].any()
