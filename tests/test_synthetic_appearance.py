"""The varied appearance: organ HU, phase, texture, blur and noise change per study, recorded as ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import vocab
from pipeline.synthetic.appearance import PHASES, Appearance, apply_appearance, draw_appearance, enhancement
from pipeline.synthetic.cohort import CohortSpec, synthesize_study

LIVER, SPLEEN = vocab.organ("liver").index_v2, vocab.organ("spleen").index_v2


def test_offsets_and_enhancement_move_an_organ_and_its_lesion_together():
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[:6] = LIVER
    labels[6:] = SPLEEN
    hu = np.where(labels == LIVER, 60.0, 45.0).astype(np.float32)
    hu[1:3, 1:3, 1:3] = 30.0  # a lesion inside the liver's label
    look = Appearance("portal_venous", 10.0, 0.0, 8.0, 0.0, {"liver": 7.0, "spleen": -4.0})
    out = apply_appearance(hu, labels, look, (1.0, 1.0, 1.0), np.random.default_rng(0))
    assert out[5, 5, 5] == pytest.approx(60 + 7 + enhancement("liver", "portal_venous"))
    assert out[8, 8, 8] == pytest.approx(45 - 4 + enhancement("spleen", "portal_venous"))
    assert out[5, 5, 5] - out[2, 2, 2] == pytest.approx(30.0)  # the lesion-to-organ contrast is kept
    assert enhancement("liver", "non_contrast") == 0 and enhancement("aorta", "arterial") > enhancement("aorta", "portal_venous")
    textured = apply_appearance(hu, labels, Appearance("non_contrast", 10.0, 5.0, 3.0, 0.6, {}), (1.0, 1.0, 1.0),
                                np.random.default_rng(0))
    assert 1.0 < float(np.std(textured[6:] - hu[6:])) < 10.0  # texture (and blur) on the spleen


def test_draws_differ_between_studies_and_stay_in_range():
    draws = [draw_appearance(np.random.default_rng(i), ["liver", "spleen"], 5.0) for i in range(30)]
    assert {d.phase for d in draws} == set(PHASES)
    assert all(8.0 <= d.noise_hu <= 25.0 and set(d.organ_offset_hu) == {"liver", "spleen"} for d in draws)
    assert np.std([d.organ_offset_hu["liver"] for d in draws]) > 5.0
    assert max(d.blur_sigma_slices for d in draws) > min(d.blur_sigma_slices for d in draws)


def test_varied_study_records_its_ground_truth_and_keeps_the_anatomy():
    uniform = synthesize_study(CohortSpec(n_studies=1, seed=5), 0)
    varied = synthesize_study(CohortSpec(n_studies=1, seed=5, appearance="varied"), 0)
    np.testing.assert_array_equal(uniform.labels, varied.labels)  # the appearance has its own random stream
    np.testing.assert_array_equal(uniform.lesions, varied.lesions)
    assert uniform.report == varied.report
    truth = varied.params
    assert truth["phase"] in PHASES and 8.0 <= truth["noise_hu"] <= 25.0
    offsets = json.loads(truth["organ_offset_hu"])
    names = vocab.class_map(vocab.V2_TASK)
    assert set(offsets) == {names[int(i)] for i in np.unique(varied.labels) if int(i) in names}
    organ = max(("liver", "spleen", "heart", "aorta"), key=lambda o: int((varied.labels == vocab.organ(o).index_v2).sum()))
    inside = (varied.labels == vocab.organ(organ).index_v2) & ~varied.lesions.astype(bool)
    shift = float(varied.hu[inside].mean()) - float(uniform.hu[inside].mean())
    assert shift == pytest.approx(offsets[organ] + enhancement(organ, truth["phase"]), abs=6.0)
    with pytest.raises(ValueError, match="appearance"):
        CohortSpec(appearance="vivid")
