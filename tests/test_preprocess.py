"""One preprocessing path: an organ's crop (model.preprocess), recorded in the checkpoint and fed alike by training,
evaluation and inference."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from model.checkpoint import load_model, preprocessing_of
from model.data import OrganDataset
from model.eval import EvalConfig, evaluate, load_eval_data
from model.fake_data import make_fake_data_root, tiny_config
from model.preprocess import SCALE_STEP_MM, OrganBoxes, Preprocessing, crop_pad, organ_crop, organ_scales, window
from model.train import train
from pipeline.volume import Volume

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HU = (-300.0, 500.0)  # not the default window
LIVER, SPLEEN = 5, 1
BASE = 1.0  # mm, the canonical grid of the hand-made study
PRE = Preprocessing(crop_voxels=8, spacing_mm=BASE, dilation_mm=2.0, margin_mm=2.0, hu_window=HU, min_organ_voxels=8)


def grown(mask: np.ndarray, mm: float) -> np.ndarray:
    """``mask`` dilated by ``mm`` along each axis (a cube of side 2 r + 1 voxels), by scipy's binary dilation."""
    r = int(round(mm / BASE))
    return ndimage.binary_dilation(mask, structure=np.ones((2 * r + 1,) * 3, bool)) if r else mask


def study() -> tuple[Volume, np.ndarray]:
    """A 48^3 study at 1 mm: a 16 x 10 x 12 voxel liver (40 HU) and a small spleen (20 HU) just beside it, in fat."""
    labels = np.zeros((48, 48, 48), np.uint8)
    labels[10:26, 12:22, 14:26] = LIVER
    labels[27:31, 14:18, 18:22] = SPLEEN
    hu = np.full(labels.shape, -100, np.int16)
    hu[labels == LIVER] = 40
    hu[labels == SPLEEN] = 20
    return Volume(hu, np.diag([BASE, BASE, BASE, 1.0])), labels


def expected_spacing(extent_mm: float, pre: Preprocessing) -> float:
    """The scale rule, restated: the finest multiple of 0.5 mm, not finer than the grid, at which the dilated organ
    and its margin on both sides fit in crop_voxels."""
    s = pre.base_mm
    while s * pre.crop_voxels < extent_mm + 2 * (pre.dilation_mm + pre.margin_mm) - 1e-9:
        s += SCALE_STEP_MM
    return s


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


def test_crop_pad_fills_outside():
    a = np.arange(27).reshape(3, 3, 3)
    out = crop_pad(a, [-1, 0, 1], (3, 3, 3), fill=-5)
    assert (out[0] == -5).all() and (out[:, :, 2] == -5).all() and out[1, 0, 0] == a[0, 0, 1]
    assert (crop_pad(a, [5, 0, 0], (2, 2, 2), fill=7) == 7).all()  # wholly outside


def test_organ_scales_fit_the_largest_dilated_training_instance_in_half_millimetres():
    extents = {"liver": [12.0, 16.0, 14.5], "spleen": [9.0, 17.0], "adrenal_gland_left": [3.0], "empty": []}
    scales = dict(organ_scales(extents, PRE))
    assert set(scales) == {"liver", "spleen", "adrenal_gland_left"}  # a class without instances gets none
    for organ, s in scales.items():
        largest = max(extents[organ])
        assert s == expected_spacing(largest, PRE)
        assert s % SCALE_STEP_MM == 0 and s >= BASE
        assert s * PRE.crop_voxels >= largest + 2 * (PRE.dilation_mm + PRE.margin_mm)  # it fits ...
        assert s == BASE or (s - SCALE_STEP_MM) * PRE.crop_voxels < largest + 2 * (PRE.dilation_mm + PRE.margin_mm)  # ... not coarser than needed
    assert scales["liver"] == 3.0 and scales["spleen"] == 3.5  # 16 + 8 = 24 mm = 8 x 3; 17 + 8 = 25 mm -> 3.5
    assert scales["adrenal_gland_left"] == 1.5  # 3 + 8 = 11 mm over 8 voxels: 1.375 -> 1.5
    wide = dataclasses.replace(PRE, crop_voxels=16)  # 11 mm over 16 voxels would be 0.69 mm: never finer than the grid
    assert dict(organ_scales({"adrenal_gland_left": [3.0]}, wide)) == {"adrenal_gland_left": BASE}
    coarse = Preprocessing(crop_voxels=8, spacing_mm=3.0, dilation_mm=2.0, margin_mm=2.0)
    assert dict(organ_scales({"adrenal_gland_left": [3.0]}, coarse)) == {"adrenal_gland_left": 3.0}


def test_an_organ_crop_is_centred_at_its_class_scale_and_holds_the_whole_dilated_organ():
    ct, labels = study()
    pre = dataclasses.replace(PRE, organ_spacing=organ_scales({"liver": [16.0]}, PRE))
    c = organ_crop(ct, labels, LIVER, "liver", pre)
    n = pre.crop_voxels
    assert c.volume.shape == c.mask.shape == c.region.shape == (n, n, n) and c.volume.dtype == np.float32
    assert c.spacing_mm == 3.0 and c.source_voxels == 24 and c.whole
    box = np.argwhere(labels == LIVER)
    centre = (box.min(0) + box.max(0)) / 2
    assert np.all(np.abs(np.array(c.start) + (c.source_voxels - 1) / 2 - centre) <= 0.5)  # centred on the organ's box
    # the region is the organ dilated by dilation_mm: its share, summed at the crop's scale, counts the dilated voxels
    dilated = grown(labels == LIVER, PRE.dilation_mm)
    factor = (c.source_voxels / n) ** 3
    assert float(c.mask.sum()) * factor == pytest.approx((labels == LIVER).sum())
    assert float(c.region.sum()) * factor == pytest.approx(dilated.sum())
    assert c.region.max() == pytest.approx(1.0) and np.all(c.region >= c.mask)
    # the crop is the area mean of the windowed HU: fat around, liver inside
    w_fat, w_liver = window(np.array([-100.0]), HU)[0], window(np.array([40.0]), HU)[0]
    assert c.volume.min() >= w_fat - 1e-6 and c.volume.max() <= w_liver + 1e-6
    inside = c.mask == 1.0
    np.testing.assert_allclose(c.volume[inside], w_liver, atol=1e-6)
    # its own size, measured on the whole label map: log volume (ml) and log box extents (mm)
    ml = (labels == LIVER).sum() * BASE**3 / 1000
    sides = (box.max(0) - box.min(0) + 1) * BASE
    np.testing.assert_allclose(c.size, [(math.log(ml + 1e-3) - 4) / 2, *(np.log(sides) - 4)], rtol=1e-6)
    # a shift moves the crop by whole crop voxels of its scale
    shifted = organ_crop(ct, labels, LIVER, "liver", pre, shift=(1, 0, -1))
    assert np.subtract(shifted.start, c.start).tolist() == [3, 0, -3]


def test_a_class_without_a_recorded_scale_is_fitted_per_instance_and_small_organs_keep_the_grid():
    ct, labels = study()
    c = organ_crop(ct, labels, SPLEEN, "spleen", PRE)  # 4 voxels: 4 + 8 mm fits 8 voxels at 1.5 mm
    assert c.spacing_mm == expected_spacing(4.0, PRE) == 1.5 and c.whole
    tiny = Preprocessing(crop_voxels=16, spacing_mm=BASE, dilation_mm=2.0, margin_mm=2.0)
    assert organ_crop(ct, labels, SPLEEN, "spleen", tiny).spacing_mm == BASE  # never finer than the grid


def test_a_scale_too_fine_for_the_organ_cuts_it_and_says_so():
    ct, labels = study()
    fine = dataclasses.replace(PRE, organ_spacing=(("liver", 1.0),))
    c = organ_crop(ct, labels, LIVER, "liver", fine)
    assert c.source_voxels == 8 and not c.whole
    assert c.mask.min() == 1.0  # all of the 8^3 view is liver, the organ runs past every side
    # the size features still describe the whole organ
    np.testing.assert_allclose(c.size, organ_crop(ct, labels, LIVER, "liver", PRE).size)


def test_a_crop_past_the_volume_edge_is_padded_with_air():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[0:6, 0:6, 0:6] = LIVER
    ct = Volume(np.full(labels.shape, 40, np.int16), np.eye(4))
    c = organ_crop(ct, labels, LIVER, "liver", Preprocessing(crop_voxels=16, spacing_mm=1.0, dilation_mm=0.0, margin_mm=1.0))
    assert c.start == (-5, -5, -5) and c.whole
    assert c.volume[0, 0, 0] == -1.0 and c.mask[0, 0, 0] == 0.0  # air, background
    assert c.volume[8, 8, 8] == pytest.approx(window(np.array([40.0]), (-1000.0, 1000.0))[0])


def test_lesion_source_keeps_only_the_organs_own_lesion():
    ct, labels = study()
    lesion = np.zeros(labels.shape, bool)
    lesion[16:20, 15:19, 18:22] = True  # in the liver
    lesion[29:31, 15:17, 19:21] = True  # in the spleen: partly in the liver's crop, outside its dilated region
    pre = dataclasses.replace(PRE, organ_spacing=(("liver", 3.0),))
    c = organ_crop(ct, labels, LIVER, "liver", pre, lesion=lesion)
    src = tuple(slice(s, s + c.source_voxels) for s in c.start)
    region = grown(labels == LIVER, PRE.dilation_mm)
    assert c.source is not None and c.source.lesion.shape == (24, 24, 24)
    np.testing.assert_array_equal(c.source.lesion, (lesion & region)[src])
    np.testing.assert_array_equal(c.source.mask, (labels == LIVER)[src])
    assert lesion[src].sum() > c.source.lesion.sum()  # the spleen's lesion was in view, and left out
    assert c.source.lesion.sum() == 4 * 4 * 4
    assert float(c.lesion.sum()) * (24 / 8) ** 3 == pytest.approx(64)
    with pytest.raises(ValueError, match="differ"):
        organ_crop(ct, labels, LIVER, "liver", pre, lesion=lesion[:-1])


def test_a_volume_of_another_spacing_or_an_absent_organ_is_refused():
    ct, labels = study()
    with pytest.raises(ValueError, match="expects 1.0 mm"):
        organ_crop(Volume(ct.array, np.diag([1.5, 1.5, 1.5, 1.0])), labels, LIVER, "liver", PRE, study_id="stu-x")
    with pytest.raises(ValueError, match="not in the label map"):
        organ_crop(ct, labels, 42, "heart", PRE)


def test_organ_boxes_count_and_find_every_label():
    _, labels = study()
    boxes = OrganBoxes.of(labels)
    assert boxes.counts[LIVER] == 16 * 10 * 12 and boxes.counts[SPLEEN] == 64
    assert boxes.boxes[LIVER] == (slice(10, 26), slice(12, 22), slice(14, 26))
    assert boxes.present(65) == [LIVER] and boxes.present(8) == [SPLEEN, LIVER]


def test_the_record_round_trips_and_an_older_kind_is_refused():
    pre = dataclasses.replace(PRE, organ_spacing=(("liver", 3.0), ("spleen", 1.5)))
    assert Preprocessing.from_record(pre.to_record()) == pre
    old = {k: v for k, v in pre.to_record().items() if k != "kind"}
    with pytest.raises(ValueError, match="trained again"):
        Preprocessing.from_record(old)
    with pytest.raises(ValueError, match="multiple of 4"):
        Preprocessing(crop_voxels=10)


# --- a trained checkpoint is fed as it was trained -----------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = make_fake_data_root(tmp_path_factory.mktemp("fake"), n_studies=8, shape=(40, 40, 32), val_fraction=0.5)
    cfg = tiny_config(steps=2, checkpoint_every=2, batch_size=4,
                      data={"preprocessing": {"hu_window": HU, "min_organ_voxels": 20, "dilation_mm": 3.0}})
    result = train(cfg, root, tmp_path_factory.mktemp("run"))
    return root, result.model_path


def test_checkpoint_records_how_it_was_fed(trained):
    import pandas as pd

    root, path = trained
    pre = preprocessing_of(path)
    assert (pre.crop_voxels, pre.spacing_mm, pre.hu_window, pre.min_organ_voxels, pre.dilation_mm) == (16, 3.0, HU, 20, 3.0)
    assert Preprocessing.from_record(pre.to_record()) == pre
    # the organ scales were chosen on the training split: each class's largest instance the scan does not cut fits
    pairs = pd.read_parquet(root / "tables" / "grounded_pairs.parquet")
    train_rows = pairs[(pairs["split"] == "train") & ~pairs["cut_by_fov"]]
    scales = dict(pre.organ_spacing)
    assert set(scales) == set(train_rows["organ"])
    for organ, g in train_rows.groupby("organ"):
        largest = max(float((np.asarray(b)[3:] - np.asarray(b)[:3]).max()) for b in g["bbox_mm"])
        assert scales[organ] == expected_spacing(largest, pre)


def test_evaluation_feeds_a_checkpoint_as_training_did(trained):
    root, path = trained
    pre = preprocessing_of(path)
    data = load_eval_data(root, pre, splits=("train", "val"))
    assert data.provenance["preprocessing"] == pre.to_record()
    cfg = tiny_config(data={"preprocessing": {"hu_window": HU, "min_organ_voxels": 20, "dilation_mm": 3.0}})
    ds = OrganDataset(root, cfg, "train", train=False)
    assert ds.preprocessing == pre  # training's own choice of scales, re-derived: the record holds it
    rows = data.organ_rows("train")
    assert len(rows) == len(ds.items)
    for i, it in enumerate(ds.items):
        row = rows[(rows["study_id"] == ds.studies[it.study].study_id) & (rows["organ"] == it.organ)].iloc[0]
        x = ds.crop(i)
        t = data.crops.tensors(np.array([row["row"]]))
        np.testing.assert_allclose(t["volume"][0].numpy(), x["volume"].numpy(), atol=1e-3)  # stored as float16
        np.testing.assert_allclose(t["region"][0].numpy(), x["region"].numpy(), atol=1 / 255)  # stored as bytes
        np.testing.assert_array_equal(t["size"][0].numpy(), x["size"].numpy())
    result = evaluate({"grounded": load_model(path)}, data,
                      EvalConfig(protocols=("or", "ad"), val_split="train", test_split="val", n_bootstrap=10))
    acc = result.metrics()["grounded"]["or_acc"]
    assert 0.0 <= acc.value <= 1.0 and len(result.methods["grounded"].organ_recognition.y_true) == len(data.organ_rows("val"))


def test_evaluation_rejects_a_volume_of_another_spacing(trained):
    root, path = trained
    pre = dataclasses.replace(preprocessing_of(path), spacing_mm=1.5)
    with pytest.raises(ValueError, match="expects 1.5 mm"):
        load_eval_data(root, pre, splits=("train",))
