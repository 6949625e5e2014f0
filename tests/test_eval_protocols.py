"""The evaluation on organ crops: the data-root loader, TD strata, TS on the canonical grid, fitted rows, ``evaluate``
and the report, with tiny real networks (tests/eval_stubs.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from eval_stubs import PRE, cube_diameter, lesion_side, spy_reads, study_id, tiny_glip, write_eval_root
from model.eval import EvalConfig, build_report, evaluate, load_eval_data
from model.eval.metrics import Estimate, roc_auc
from model.eval.probe import fitted_method, linear_probe
from model.eval.report import COLUMNS, checkpoint_provenance, metrics_from_json
from model.eval.results import HEADLINE, MethodResult, metric_items
from model.eval.segmentation import SegBudget, predict_masks, sample_patches, segmentation_protocol, train_segmentation
from model.eval.tumor import STRATA, td_items, tumor_organs, tumor_word, zero_shot_tumor_detection
from model.eval.zero_shot import task_group

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = EvalConfig(n_bootstrap=30, ts_budget=SegBudget(steps=2, width=4))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_eval_root(tmp_path_factory.mktemp("eval_root"))


@pytest.fixture(scope="module")
def data(root):
    return load_eval_data(root, PRE)


# --- the loader ----------------------------------------------------------------------------------


def test_load_eval_data_crops_every_organ_and_measures_its_lesion(root, data):
    organs = data.organs
    assert set(organs["organ"]) == {"liver", "spleen", "kidney_left"}  # the rib (a counted structure) is left out
    assert data.provenance["n_cases"] == {"train": 6, "val": 6, "test": 6} and data.provenance["counted_structures"] is False
    n = len(organs)
    assert organs["row"].tolist() == list(range(n)) and data.crops.volume.shape == (n, 16, 16, 16)
    assert data.crops.volume.dtype == np.float16 and data.crops.mask.dtype == np.uint8 and data.crops.size.shape == (n, 4)
    assert organs["whole"].all() and data.provenance["whole_in_view"] == 1.0
    for r in organs.itertuples():
        k = int(r.patient_id.rsplit("-", 1)[1])
        side = lesion_side(k) if r.organ == "liver" else 0
        assert r.lesion_mm == pytest.approx(cube_diameter(side) if side else 0.0)
        assert (r.row in data.crops.blocks) == bool(side)  # the canonical-grid window of each organ with a lesion
        if side:  # its lesion is the whole lesion (inside the liver's region), its organ the whole liver
            block = data.crops.blocks[r.row]
            assert block.lesion.sum() == side**3 and block.mask.sum() == 16**3 and (block.region >= block.mask).all()
            assert block.volume.shape == block.lesion.shape == (data.crops.source_voxels[r.row],) * 3
    # labels: the image truth, the report's beside it (the report misses the small lesions)
    small = organs[(organs["organ"] == "liver") & (organs["lesion_mm"].between(0.1, 10))]
    assert len(small) == 6 and (small["status"] == "abnormal").all() and (small["report_status"] == "normal").all()
    assert all(a == ["mass"] for a in small["abnormalities"]) and all(a == [] for a in small["report_abnormalities"])
    assert data.provenance["organ_rows_from_image_truth"] == n and "image truth" in data.provenance["labels"]
    by_report = load_eval_data(root, PRE, splits=("test",), labels="report")
    liver = by_report.organs[by_report.organs["organ"] == "liver"]
    assert (liver["status"] == np.where(liver["lesion_mm"] >= 10, "abnormal", "normal")).all()
    with pytest.raises(ValueError, match="labels must be"):
        load_eval_data(root, PRE, labels="both")


def test_counted_structures_and_small_organs(root):
    with_ribs = load_eval_data(root, PRE, splits=("val",), counted_structures=True)
    assert (with_ribs.organs["organ"] == "rib_left_5").sum() == 6
    big_only = load_eval_data(root, dataclasses.replace(PRE, min_organ_voxels=300), splits=("val",))
    spleens = big_only.organs[big_only.organs["organ"] == "spleen"]  # 216 voxels normal, 360 enlarged
    assert len(spleens) == 3 and (spleens["status"] == "abnormal").all()
    assert load_eval_data(root, PRE, splits=("val",), max_cases_per_split=2).provenance["n_cases"] == {"val": 2}


def test_a_study_without_a_lesion_mask_is_taken_as_lesion_free(root, tmp_path):
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    (copy / "lesions" / f"{study_id('val', 0)}.nii.gz").unlink()  # a big lesion there: now unknown, counted as none
    data = load_eval_data(copy, PRE, splits=("val",))
    assert data.provenance["missing_lesion_masks"] == 1
    rows = data.organs[data.organs["study_id"] == study_id("val", 0)]
    assert (rows["lesion_mm"] == 0).all() and not set(rows["row"]) & set(data.crops.blocks)


def test_load_eval_data_never_reads_the_test_split_unless_asked(root, monkeypatch):
    frames, opened = spy_reads(monkeypatch)
    data = load_eval_data(root, PRE, splits=("train", "val"), workers=1)  # in this process, where the spies are
    test = {study_id("test", k) for k in range(6)}
    test_uids = {f"1.2.826.0.1.2.{k}" for k in range(6)}
    assert set(data.organs["split"]) == {"train", "val"} and frames and opened
    for df in frames:
        assert "split" not in df or not (df["split"] == "test").any()
        assert "study_id" not in df or not set(df["study_id"]) & test
        if "image_status" in df:  # the image truth: only the asked studies' rows
            assert not set(df["study_uid"]) & test_uids
    assert not [p for p in opened if any(sid in p for sid in test)]


# --- tumor detection ------------------------------------------------------------------------------


def test_td_strata_are_lesions_of_10_mm_or_more_and_the_smaller_ones_against_organs_without():
    rows = pd.DataFrame({"organ": ["liver"] * 6 + ["spleen"], "lesion_mm": [0.0, 10.0, 9.99, 25.0, 0.0, 5.0, 30.0],
                         "patient_id": list("abcdefg")})
    take, y = td_items(rows, ["liver"], "organ")
    assert take.tolist() == [0, 1, 3, 4] and y.tolist() == [0, 1, 1, 0]  # the spleen is not a tumor class here
    take, y = td_items(rows, ["liver"], "organ_small")
    assert take.tolist() == [0, 2, 4, 5] and y.tolist() == [0, 1, 0, 1]
    assert set(STRATA) == {"organ", "organ_small"}


def test_tumor_classes_and_words_come_from_the_training_split(data):
    tr = data.organ_rows("train")
    assert tumor_organs(tr) == ["liver"]
    assert tumor_word("liver", tr) == "mass"
    nodules = tr.assign(report_abnormalities=[["nodule"] if o == "liver" else [] for o in tr["organ"]])
    assert tumor_word("liver", nodules) == "nodule"


def test_zero_shot_td_scores_each_stratum_with_its_organs(data):
    te, va = data.organ_rows("test"), data.organ_rows("val")
    negated, affirmed = np.array([1.0, 0.0]), np.array([0.0, 1.0])

    def emb(rows: pd.DataFrame) -> np.ndarray:  # embeddings that say "lesion" in proportion to its size
        return np.stack([np.ones(len(rows)), rows["lesion_mm"].to_numpy() / 10.0], axis=1)

    td = zero_shot_tumor_detection(emb(te), te, emb(va), va, ["liver"], {"liver": (negated, affirmed)}, n_boot=20)
    assert td.auc["organ"].value == 1.0 and td.auc["organ_small"].value == 1.0
    s, y = td.scores["organ"]
    assert y.sum() == 2 and len(y) == 4  # test livers: two lesions of 13.6 mm, two without
    s, y = td.scores["organ_small"]
    assert y.sum() == 2 and len(y) == 4  # two of 5 mm, the same two without
    assert len(td.groups["organ"]) == 4


def test_zero_shot_td_puts_each_tumor_class_on_its_validation_scale_before_pooling():
    """Two tumor classes whose zero-shot scores sit at different levels (a lung's "nodule" against a kidney's "mass"):
    each class's scores are standardised by its own validation organs (labels unread), so a class-wise perfect ranking
    stays perfect once pooled; the raw scores pooled would not be."""
    negated, affirmed = np.array([1.0, 0.0]), np.array([0.0, 1.0])

    def rows(n: int, split: str) -> pd.DataFrame:
        return pd.DataFrame({"organ": ["liver"] * n + ["kidney_left"] * n, "lesion_mm": [0.0, 15.0] * n,
                             "patient_id": [f"{split}{i}" for i in range(2 * n)]})

    te, va = rows(4, "t"), rows(4, "v")
    offset = np.where(te["organ"] == "liver", 0.0, 0.6)  # the kidney's scores sit higher, lesion or not
    score = np.where(te["lesion_mm"] > 0, 0.2, 0.0) + offset  # within each class, lesions score 0.2 above

    def embed(scores: np.ndarray) -> np.ndarray:  # unit 2-d embeddings whose score against the prompts is ``scores``
        theta = np.pi / 4 + np.arcsin(np.asarray(scores) / np.sqrt(2))
        return np.stack([np.cos(theta), np.sin(theta)], axis=1)

    prompts_ = {o: (negated, affirmed) for o in ("liver", "kidney_left")}
    td = zero_shot_tumor_detection(embed(score), te, embed(score), va, ["liver", "kidney_left"], prompts_, n_boot=10)
    assert td.auc["organ"].value == 1.0
    _, y = td.scores["organ"]
    assert roc_auc(score, y) < 1.0  # pooled without the per-class scale, kidneys without a lesion outrank livers with one


# --- tumor segmentation -----------------------------------------------------------------------------


class Oracle(torch.nn.Module):
    """A segmenter that reads the lesion off the intensities (the stub's lesions are 100 HU above their organ): what a
    perfect network would predict, patch by patch."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold
        self.p = torch.nn.Parameter(torch.zeros(()))  # a device to run on

    def forward(self, volume, mask):
        fg = (volume[:, 0] > self.threshold).float() * 20 - 10
        return torch.stack([torch.zeros_like(fg), fg], 1)


def lesion_rows(data, split: str, low: float = 0.0) -> np.ndarray:
    rows = data.organ_rows(split)
    return rows.loc[rows["row"].isin(list(data.crops.blocks)) & (rows["lesion_mm"] >= low), "row"].to_numpy()


def test_dice_is_scored_on_the_canonical_grid_over_a_sliding_window_of_patches(data):
    """A segmenter right at every voxel of every patch scores Dice 1 on each test organ's window of the canonical grid,
    whatever the window's size against the patch (the liver's window is 24 voxels, a patch 16)."""
    from model.preprocess import window

    threshold = float(window(np.array([90.0]), PRE.hu_window)[0])  # halfway between the liver (40 HU) and its lesion
    rows = lesion_rows(data, "test")
    blocks = [data.crops.blocks[r] for r in rows]
    assert all(b.volume.shape[0] > PRE.crop_voxels for b in blocks)
    preds = predict_masks(Oracle(threshold), blocks, PRE.crop_voxels)
    for pred, b in zip(preds, blocks):
        assert pred.shape == b.lesion.shape and pred.dtype == bool
        assert (pred == b.lesion).all()
    empty = predict_masks(Oracle(2.0), blocks, PRE.crop_voxels)  # a segmenter that never says lesion
    assert not any(p.any() for p in empty)


def test_training_patches_oversample_lesions():
    from model.preprocess import SourceBlock

    size = 8
    lesion = np.zeros((20, 20, 20), bool)
    lesion[2:4, 2:4, 2:4] = True  # 8 of 8,000 voxels
    organ = np.zeros_like(lesion)
    organ[1:19, 1:19, 1:19] = True
    block = SourceBlock(np.zeros(lesion.shape, np.float32), organ, organ, lesion)
    volumes, masks, targets = sample_patches([block], 16, size, 0.5, np.random.default_rng(0))
    assert volumes.shape == masks.shape == targets.shape == (16, size, size, size)
    assert all(t.any() for t in targets[:8])  # the first half centred on a lesion voxel (a shift of a quarter patch at most)
    assert targets[:8].mean() > 10 * lesion.mean()


def test_segmentation_results_by_lesion_size_bin(data):
    te = data.organ_rows("test")
    rows = lesion_rows(data, "test")
    torch.manual_seed(0)
    result = segmentation_protocol(tiny_glip, data, lesion_rows(data, "train"), rows, SegBudget(steps=2, width=4),
                                   groups=te.set_index("row").loc[rows, "patient_id"].to_numpy(), n_boot=20)
    assert len(result.per_case) == len(rows) == 4 and np.all((result.per_case >= 0) & (result.per_case <= 1))
    np.testing.assert_allclose(result.lesion_mm, te.set_index("row").loc[rows, "lesion_mm"])
    ge10, lt10 = result.in_bin(10.0), result.in_bin(0.0, 10.0)
    assert np.isnan(ge10).sum() == 2 and np.isnan(lt10).sum() == 2
    np.testing.assert_array_equal(np.where(result.lesion_mm >= 10, result.per_case, np.nan), ge10)
    m = MethodResult("m", True, tumor_segmentation=result)
    (fn, (per_case,), groups) = metric_items(m, "ts_dsc_ge10")
    assert fn(per_case) == pytest.approx(np.nanmean(ge10)) and len(groups) == 4
    assert metric_items(m, "ts_dsc")[0](result.per_case) == pytest.approx(result.per_case.mean())


def test_segmentation_repeats_average_each_case_over_seeded_runs(data):
    train_rows, test_rows = lesion_rows(data, "train"), lesion_rows(data, "test")
    torch.manual_seed(5)
    state = tiny_glip().state_dict()

    def make():
        model = tiny_glip()
        model.load_state_dict(state)
        return model

    one = [segmentation_protocol(make, data, train_rows, test_rows, SegBudget(steps=4, width=4, lr=1e-2, seed=s), n_boot=10)
           for s in (7, 8)]
    both = segmentation_protocol(make, data, train_rows, test_rows, SegBudget(steps=4, width=4, lr=1e-2, seed=7, repeats=2), n_boot=10)
    assert one[0].losses != one[1].losses  # another seed, another run
    np.testing.assert_allclose(both.per_case, np.nanmean(np.stack([one[0].per_case, one[1].per_case]), axis=0))
    np.testing.assert_allclose(both.per_run, (one[0].dice.value, one[1].dice.value))
    assert both.losses == one[0].losses  # the first run's curve
    with pytest.raises(ValueError, match="repeats"):
        SegBudget(repeats=0)


def test_segmentation_trains_on_lesion_patches_and_starts_at_their_base_rate(data):
    blocks = [data.crops.blocks[r] for r in lesion_rows(data, "train")]
    torch.manual_seed(0)
    budget = SegBudget(steps=0, width=4)
    net, _ = train_segmentation(tiny_glip(), blocks, PRE.crop_voxels, budget)
    share = float(torch.softmax(net.decoder.head[-1].bias.detach(), 0)[1])
    patches = sample_patches(blocks, 32, PRE.crop_voxels, budget.lesion_share, np.random.default_rng(budget.seed))
    assert 0 < share < 0.5 and math.isclose(share, float(patches[2].mean()), rel_tol=1e-4)
    # the same start trained 30 steps: lower loss on a fixed batch of patches than untrained
    from model.eval.segmentation import dice_ce_loss

    vol, mask, target = (torch.from_numpy(a) for a in sample_patches(blocks, 16, PRE.crop_voxels, 0.5, np.random.default_rng(99)))

    def fixed_loss(n_steps: int) -> float:
        torch.manual_seed(0)
        net, losses = train_segmentation(tiny_glip(), blocks, PRE.crop_voxels, SegBudget(steps=n_steps, width=4, lr=1e-2))
        assert len(losses) == n_steps
        with torch.no_grad():
            return float(dice_ce_loss(net(vol[:, None], mask.float()), target[:, None].long(), fg_weight=10.0))

    assert fixed_loss(30) < fixed_loss(0)
    with pytest.raises(ValueError, match="at least one training organ with a lesion"):
        train_segmentation(tiny_glip(), [], PRE.crop_voxels, SegBudget(steps=1))


def test_dice_ce_loss_is_near_zero_for_a_confident_correct_prediction():
    from model.eval.segmentation import dice_ce_loss

    target = torch.zeros((1, 1, 4, 4, 4), dtype=torch.long)
    target[..., :2] = 1
    logits = torch.cat([(target == 0).float(), (target == 1).float()], 1) * 50.0
    assert float(dice_ce_loss(logits, target)) < 1e-3
    assert float(dice_ce_loss(-logits, target)) > 1.0


def test_dice_ce_loss_leaves_the_background_out_of_the_dice():
    """Hand-computed: 64 voxels, one lesion voxel, uniform logits (p = 0.5 everywhere).
    CE = ln 2; foreground Dice = 1 - 2 * 0.5 / (0.5 * 64 + 1) = 1 - 1 / 33 (background left out)."""
    from model.eval.segmentation import dice_ce_loss

    target = torch.zeros((1, 1, 4, 4, 4), dtype=torch.long)
    target[0, 0, 0, 0, 0] = 1
    loss = float(dice_ce_loss(torch.zeros((1, 2, 4, 4, 4)), target))
    assert loss == pytest.approx(math.log(2) + 1 - 1 / 33, abs=1e-5)


def test_dice_ce_loss_weighs_the_lesion_in_the_cross_entropy():
    """Hand-computed: logits favour background by 1 everywhere; 63 background voxels cost ln(1 + e^-1)
    each, the lesion voxel ln(1 + e); the weighted mean is (63 a + w b) / (63 + w)."""
    from model.eval.segmentation import dice_ce_loss

    target = torch.zeros((1, 1, 4, 4, 4), dtype=torch.long)
    target[0, 0, 0, 0, 0] = 1
    logits = torch.zeros((1, 2, 4, 4, 4))
    logits[:, 0] = 1.0
    a, b = math.log1p(math.exp(-1)), math.log1p(math.e)
    p_fg = 1 / (1 + math.e)
    dice = 1 - (2 * p_fg + 1e-5) / (64 * p_fg + 1 + 1e-5)
    for w in (1.0, 20.0):
        expected = (63 * a + w * b) / (63 + w) + dice
        assert float(dice_ce_loss(logits, target, fg_weight=w)) == pytest.approx(expected, abs=1e-5)


# --- fitted rows ------------------------------------------------------------------------------------


def test_linear_probe_separates_a_separable_set():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 5))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    x[:, 0] += np.where(y == 1, 2.0, -2.0)  # a wide margin: separable for any sane fit
    scores = linear_probe(x[:60], y[:60], x[60:])
    assert roc_auc(scores, y[60:]) == 1.0
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.all(linear_probe(x[:5], np.zeros(5), x[5:8]) == 0.0)  # one class: constant


def _rows(split: str, n: int, image: np.ndarray, report: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({
        "study_id": [f"{split}-{i}" for i in range(n)], "patient_id": [f"p-{split}-{i}" for i in range(n)], "organ": "liver",
        "status": np.where(image, "abnormal", "normal"), "abnormalities": [["mass"] if p else [] for p in image],
        "report_status": np.where(report, "abnormal", "normal"), "report_abnormalities": [["mass"] if p else [] for p in report],
        "lesion_mm": np.where(image, 15.0, 0.0),
    })


def test_fitted_rows_learn_from_image_truth_or_from_what_reports_say():
    """The training reports miss half the masses, always those whose feature is weakest: fitted on the reports, the
    regression learns a threshold that calls them normal; fitted on the image truth, it does not. Both are scored on
    the same test items against the image truth."""
    rng = np.random.default_rng(0)
    y = {s: np.tile([1, 1, 0, 0], 10) for s in ("train", "val", "test")}
    strength = {s: np.where(y[s] == 1, np.tile([3.0, 1.0, 0, 0], 10), 0.0) for s in y}  # strong and faint masses
    features = {s: np.stack([strength[s] + 0.1 * rng.normal(size=40), rng.normal(size=40)], axis=1) for s in y}
    told = y["train"] & (strength["train"] > 2)  # the reports name only the strong ones
    rows = {"train": _rows("train", 40, y["train"], told), "val": _rows("val", 40, y["val"], y["val"]),
            "test": _rows("test", 40, y["test"], y["test"])}
    image = fitted_method("probe", features, rows, [("liver", "mass")], ["liver"], labels="image", n_boot=20)
    report = fitted_method("probe", features, rows, [("liver", "mass")], ["liver"], labels="report", n_boot=20)
    assert not image.pretrained and image.organ_recognition is None and image.tumor_segmentation is None
    (pi,), (pr,) = image.abnormality_detection.pairs, report.abnormality_detection.pairs
    assert np.array_equal(pi.labels, pr.labels) and np.array_equal(pi.labels, y["test"])  # same items, image truth
    assert not np.allclose(pi.scores, pr.scores)
    faint = np.tile([False, True, False, False], 10)
    assert pi.scores[faint].min() > 0.5 > pr.scores[faint].max()  # the report-fitted row calls the faint masses normal
    assert pi.f1.value > pr.f1.value
    for r in (image, report):
        assert set(r.tumor_detection.auc) == set(STRATA)
    with pytest.raises(ValueError, match="labels must be"):
        fitted_method("x", features, rows, [], [], labels="gold")


def test_no_learning_reads_what_organ_intensity_gives_away(root, data):
    """The liver's lesion (+100 HU) lifts its mean HU by 33 HU (big) or 1.6 HU (small) against a standard error of
    0.08 HU: intensity statistics rank every liver with a lesion above every liver without."""
    from model.eval.baseline import FEATURES, no_learning, read_features

    features = read_features(root, data.organs["study_id"].unique())
    assert list(features.columns) == list(FEATURES)
    result = evaluate({"grounded": tiny_glip()}, data, EvalConfig(protocols=("ad",), n_bootstrap=20))
    assert ("liver", "mass") in result.ad_tasks
    image, report = no_learning(data, features, result, "image"), no_learning(data, features, result, "report")
    assert (image.name, report.name) == ("no_learning", "no_learning_report") and not image.pretrained
    pair = next(p for p in image.abnormality_detection.pairs if (p.organ, p.abnormality) == ("liver", "mass"))
    assert pair.auc.value == 1.0
    m = image.metrics(20)
    assert m["td_auc"].value == 1.0 and m["td_auc_small"].value == 1.0
    assert not m["or_acc"].applicable and not m["ts_dsc"].applicable


# --- evaluate and the report --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def result(data):
    torch.manual_seed(0)
    models = {"grounded": tiny_glip(), "clip": tiny_glip("global"), "random": None}
    return evaluate(models, data, FAST)


def test_evaluate_runs_every_protocol_and_the_random_row_has_only_ts_and_its_probe(result, data):
    assert set(result.methods) == {"grounded", "clip", "random", "probe_grounded", "probe_clip", "probe_random"}
    assert result.ad_tasks == (("liver", "mass"), ("spleen", "splenomegaly"))
    assert result.tumor_organs == ("liver",)
    m = result.metrics()
    random = result.methods["random"]
    assert not random.pretrained and result.notes
    assert random.organ_recognition is None and random.abnormality_detection is None and random.tumor_detection is None
    assert random.tumor_segmentation is not None and 0.0 <= m["random"]["ts_dsc"].value <= 1.0
    for name in ("grounded", "clip"):
        method = result.methods[name]
        assert method.organ_recognition.classes == ("spleen", "kidney_left", "liver")  # v2 index order
        assert len(method.organ_recognition.y_true) == len(data.organ_rows("test"))
        assert 0.0 <= m[name]["or_acc"].value <= 1.0 and 0.0 <= m[name]["td_auc"].value <= 1.0
        assert m[name]["ad_auc_size"].applicable and m[name]["ad_auc_focal"].applicable and not m[name]["ad_auc_diffuse"].applicable
        assert m[name]["ts_dsc_ge10"].applicable and m[name]["ts_dsc_lt10"].applicable
    for name in ("probe_grounded", "probe_clip", "probe_random"):
        probe = result.methods[name]
        assert not probe.pretrained and probe.organ_recognition is None and probe.tumor_segmentation is None
        assert m[name]["ad_auc"].applicable and m[name]["td_auc"].applicable and not m[name]["or_acc"].applicable
        # scored on the same test items as the zero-shot rows, so paired differences line up
        for a, b in zip(probe.abnormality_detection.pairs, result.methods["grounded"].abnormality_detection.pairs):
            assert np.array_equal(a.labels, b.labels)
        assert np.array_equal(probe.tumor_detection.scores["organ"][1], result.methods["grounded"].tumor_detection.scores["organ"][1])
    assert result.provenance["ts_cases"] == {"train": 4, "test": 4}  # the tumor class's organs with a lesion
    assert task_group("splenomegaly") == "size" and task_group("mass") == "focal" and task_group("steatosis") == "diffuse"


def test_a_split_without_organs_leaves_the_probes_without_tasks_not_broken(root):
    """A small cohort can have a split without any organ row (the tiny graph's validation split, for one): its
    embeddings are an empty (0, e) matrix, the probes score what the other splits allow, and nothing raises."""
    from model.eval.features import organ_embeddings

    data = load_eval_data(root, PRE, splits=("train", "test"))  # no validation rows at all
    model = tiny_glip()
    assert organ_embeddings(model, data, data.organ_rows("val")).shape == (0, 16)
    result = evaluate({"grounded": model}, data, EvalConfig(protocols=("td", "probe"), n_bootstrap=10))
    assert result.ad_tasks == () and result.methods["probe_grounded"].tumor_detection is not None


def test_report_has_the_papers_shape_and_json_round_trips(result, tmp_path):
    ckpt = tmp_path / "g.pt"
    ckpt.write_bytes(b"weights")
    report = build_report(result, {"checkpoints": {"grounded": checkpoint_provenance(ckpt)}, "data_version": "v1"})
    assert list(report.table.index) == ["random", "probe_random", "clip", "probe_clip", "grounded", "probe_grounded"]
    assert list(report.table.columns) == list(COLUMNS.values())
    assert report.table.loc["random", "OR acc"] == "n/a" and report.table.loc["probe_grounded", "TS DSC"] == "n/a"
    assert report.table.loc["random", "TS DSC"] != "n/a"
    assert "OR acc" in report.table_markdown and "|" in report.table_markdown
    assert set(report.abnormality_table[["organ", "abnormality"]].itertuples(index=False, name=None)) == set(result.ad_tasks)
    assert "grounded AUC" in report.abnormality_table and "random AUC" not in report.abnormality_table
    for png in (report.roc_png, report.organ_bars_png, *report.confusion_pngs.values()):
        assert png.startswith(b"\x89PNG")
    record = report.json
    assert json.loads(json.dumps(record, allow_nan=False)) == record
    assert record["provenance"]["data_version"] == "v1" and record["provenance"]["data"]["n_cases"]["test"] == 6
    assert record["headline_metrics"] == list(HEADLINE) and record["tumor_organs"] == ["liver"]
    assert set(record["methods"]["grounded"]) >= set(COLUMNS)
    assert record["provenance"]["checkpoints"]["grounded"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert record["methods"]["random"]["or_acc"] == {"value": None, "low": None, "high": None}
    assert record["ts_dsc_per_run"]["grounded"] == list(result.methods["grounded"].tumor_segmentation.per_run)
    back = metrics_from_json(record)
    for name, metrics in result.metrics().items():
        for k, e in metrics.items():
            got = back[name][k]
            assert got.applicable == e.applicable and (not e.applicable or got.value == pytest.approx(e.value))


def test_random_row_redraws_every_parameter_and_differs_per_repeat():
    from model.eval.features import randomly_initialised

    trained = tiny_glip()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)  # stands for training: no parameter is at its initial value any more
    one, two = randomly_initialised(trained, seed=1), randomly_initialised(trained, seed=2)
    names = [n for n, _ in trained.named_parameters()]
    assert names == [n for n, _ in one.named_parameters()]
    for (name, p), q, r in zip(trained.named_parameters(), one.parameters(), two.parameters()):
        assert not torch.equal(p, q), name  # nothing is kept from the trained model
        if q.flatten().unique().numel() > 1:  # random, not a constant start (norm weights, logit scale)
            assert not torch.equal(q, r), name  # each draw is a new network
    assert one.text.states is trained.text.states  # the frozen text part is shared, not a parameter
    torch.manual_seed(3)
    a = randomly_initialised(trained)
    torch.manual_seed(3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), randomly_initialised(trained).parameters()))


def test_estimates_of_a_method_that_did_not_run_are_missing():
    empty = MethodResult("none", False)
    assert all(not e.applicable for e in empty.metrics(10).values())
    assert metric_items(empty, "td_auc") is None and not Estimate.missing().applicable
