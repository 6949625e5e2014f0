"""One preprocessing path: a checkpoint records how it was fed, and evaluation feeds it the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.checkpoint import load_model, preprocessing_of
from model.data import StudyDataset
from model.eval import EvalConfig, evaluate, load_eval_data
from model.fake_data import make_fake_data_root, tiny_config
from model.preprocess import Preprocessing, crop_centre, crop_pad, prepare_study, window
from model.train import train
from pipeline.volume import Volume, load_nifti

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CROP, HU = (24, 24, 24), (-300.0, 500.0)  # neither is the default (64^3, -1000..1000)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = make_fake_data_root(tmp_path_factory.mktemp("fake"), n_studies=8, shape=(40, 40, 32), val_fraction=0.5)
    cfg = tiny_config(steps=2, checkpoint_every=2, batch_size=2,
                      model={"img_size": CROP, "input_window": HU}, data={"crop_size": CROP, "hu_window": HU,
                                                                           "crop_center": "organs", "min_organ_voxels": 20})
    result = train(cfg, root, tmp_path_factory.mktemp("run"))
    return root, result.model_path


def test_window_clips_and_scales_to_minus_one_one():
    hu = np.array([-2000, -300, 100, 500, 3000], np.int16)
    np.testing.assert_allclose(window(hu, HU), [-1.0, -1.0, 0.0, 1.0, 1.0])
    assert window(hu, HU).dtype == np.float32


def test_window_equals_monai_scale_intensity_range():
    from monai.transforms import ScaleIntensityRange

    hu = np.random.default_rng(0).normal(0, 700, (9, 8, 7)).astype(np.int16)
    for lo, hi in (HU, (-1000.0, 1000.0), (-160.0, 240.0)):
        monai = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=-1.0, b_max=1.0, clip=True, dtype=np.float32)
        np.testing.assert_allclose(window(hu, (lo, hi)), np.asarray(monai(hu.astype(np.float32))), atol=1e-6)


def test_prepare_study_crops_pads_and_counts_organs():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[0:4, 0:4, 0:4] = 5  # 64 voxels, at the corner: the crop runs past the edge
    labels[8, 8, 8] = 1  # one voxel, outside the crop
    hu = np.full(labels.shape, 40, np.int16)
    pre = Preprocessing(crop_size=(6, 6, 6), spacing_mm=2.0, hu_window=HU, min_organ_voxels=8)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    np.testing.assert_allclose(crop_centre(labels, [5]), (1.5, 1.5, 1.5))
    np.testing.assert_allclose(crop_centre(labels, [5, 1]), (4.0, 4.0, 4.0))  # the box of every organ asked for
    p = prepare_study(Volume(hu, affine), Volume(labels, affine), [5, 1], pre, centre=crop_centre(labels, [5]))
    assert p.volume.shape == p.labels.shape == (6, 6, 6) and p.kept == (5,)
    assert p.start == (-1, -1, -1) and p.labels[0].max() == 0  # padded with background ...
    assert p.volume[0, 0, 0] == -1.0 and p.volume[3, 3, 3] == pytest.approx(window(np.array([40]), HU)[0])  # ... and air
    with pytest.raises(ValueError, match="spacing"):
        prepare_study(Volume(hu, np.eye(4)), Volume(labels, np.eye(4)), [5], pre)


def test_checkpoint_records_how_it_was_fed(trained):
    _, path = trained
    pre = preprocessing_of(path)
    assert pre == Preprocessing(crop_size=CROP, spacing_mm=3.0, hu_window=HU, min_organ_voxels=20)
    assert Preprocessing.from_record(pre.to_record()) == pre


def test_evaluation_feeds_a_checkpoint_as_training_did(trained):
    root, path = trained
    pre = preprocessing_of(path)
    data = load_eval_data(root, pre, splits=("train", "val"))
    assert data.provenance["preprocessing"]["hu_window"] == list(HU)
    # the same study through training's dataset (no augmentation) and through evaluation: one input
    cfg = tiny_config(model={"img_size": CROP, "input_window": HU},
                      data={"crop_size": CROP, "hu_window": HU, "crop_center": "organs", "min_organ_voxels": 20})
    ds = StudyDataset(root, cfg.data, split="train", train=False)
    for i, study in enumerate(ds.studies):
        case = next(c for c in data.cases if c.study_id == study.study_id)
        item = ds[i]
        assert case.volume.shape == CROP
        np.testing.assert_array_equal(item["volume"][0].numpy(), case.volume)
        np.testing.assert_array_equal(item["labels"].numpy(), case.labels)
        rows = data.organs[data.organs["study_id"] == study.study_id]
        assert sorted(rows["index_v2"].astype(int)) == sorted(o.label for o in item["organs"])
        ct, labels = load_nifti(study.volume_path), load_nifti(study.mask_path)
        p = prepare_study(ct, labels, [o.label for o in study.organs], pre)
        np.testing.assert_array_equal(p.volume, case.volume)  # the checkpoint's crop and window, not the defaults
        np.testing.assert_allclose(case.volume, window(crop_pad(ct.array, p.start, CROP, -1024), HU))
    result = evaluate({"grounded": load_model(path)}, data,
                      EvalConfig(protocols=("or", "ad"), val_split="train", test_split="val", n_bootstrap=10))
    acc = result.metrics()["grounded"]["or_acc"]
    assert 0.0 <= acc.value <= 1.0 and len(result.methods["grounded"].organ_recognition.y_true) == len(data.organ_rows("val"))


def test_evaluation_rejects_a_volume_of_another_spacing(trained):
    root, path = trained
    pre = Preprocessing(crop_size=CROP, spacing_mm=1.5, hu_window=HU)
    with pytest.raises(ValueError, match="expects 1.5 mm"):
        load_eval_data(root, pre, splits=("train",))
