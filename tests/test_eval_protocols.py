"""TD, TS, ``evaluate``, the report and the data-root loader, with a tiny stand-in model."""

from __future__ import annotations

import hashlib
import json
import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from eval_stubs import synthetic_data, tiny_glip
from model.eval import EvalConfig, build_report, evaluate, load_eval_data
from model.eval.metrics import roc_auc
from model.eval.report import COLUMNS, checkpoint_provenance, metrics_from_json
from model.eval.segmentation import SegBudget, compare_initialisations, from_state_dict, segmentation_protocol, train_segmentation
from model.preprocess import Preprocessing
from model.eval.tumor import FinetuneBudget, linear_probe, organ_tumor, study_tumor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


FAST = EvalConfig(n_bootstrap=30, td_budget=FinetuneBudget(steps=2), ts_budget=SegBudget(steps=2, width=4))


def test_linear_probe_separates_a_separable_set():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 5))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    x[:, 0] += np.where(y == 1, 2.0, -2.0)  # a wide margin: separable for any sane fit
    scores = linear_probe(x[:60], y[:60], x[60:])
    assert roc_auc(scores, y[60:]) == 1.0
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.all(linear_probe(x[:5], np.zeros(5), x[5:8]) == 0.0)  # one class: constant


def test_tumor_targets():
    data = synthetic_data(n_per_split=2)
    test = data.split("test")
    assert study_tumor(test).tolist() == [1, 0]
    rows = data.organ_rows("test")
    assert organ_tumor(test, rows).tolist() == [1, 0, 0, 0, 0, 0]  # the liver of the first case


def test_segmentation_decoder_reduces_loss_on_a_toy_lesion():
    torch.manual_seed(0)
    vol = np.zeros((16, 16, 16), np.float32)
    lesion = np.zeros(vol.shape, bool)
    lesion[4:10, 4:10, 4:10] = True
    vol[lesion] = 1.0
    net, losses = train_segmentation(tiny_glip(), [(vol, lesion)], SegBudget(steps=15, lr=1e-2, width=4))
    assert np.mean(losses[-3:]) < losses[0]
    assert net(torch.as_tensor(vol)[None, None]).shape == (1, 2, 16, 16, 16)


def test_segmentation_head_starts_at_the_lesion_base_rate():
    """Prior initialisation: the head's bias alone gives the lesion class the training masks' voxel share, so the
    decoder does not spend its first steps learning that lesions are rare (from p = 0.5 it ended on all background)."""
    vol = np.zeros((16, 16, 16), np.float32)
    lesion = np.zeros(vol.shape, bool)
    lesion[4:6, 4:6, 4:6] = True
    net, _ = train_segmentation(tiny_glip(), [(vol, lesion)], SegBudget(steps=0, width=4))
    share = float(torch.softmax(net.decoder.head[-1].bias, 0)[1])
    assert math.isclose(share, lesion.mean(), rel_tol=1e-4)
    off, _ = train_segmentation(tiny_glip(), [(vol, lesion)], SegBudget(steps=0, width=4, prior_init=False))
    assert not math.isclose(float(torch.softmax(off.decoder.head[-1].bias, 0)[1]), lesion.mean(), rel_tol=0.5)


def test_compare_initialisations_uses_equal_budget_and_seed():
    data = synthetic_data(n_per_split=2, size=16)
    train = [(c.volume, c.lesion) for c in data.split("train")]
    test = [(c.volume, c.lesion) for c in data.split("test")]
    torch.manual_seed(5)
    state = tiny_glip().state_dict()
    inits = {"a": from_state_dict(tiny_glip, state), "b": from_state_dict(tiny_glip, state)}
    res = compare_initialisations(inits, train, test, SegBudget(steps=2, width=4), n_boot=10)
    assert res["a"].losses == res["b"].losses  # same weights + same seeds = same run
    assert len(res["a"].per_case) == 2 and 0.0 <= res["a"].dice.value <= 1.0


def test_segmentation_repeats_average_each_case_over_seeded_runs():
    data = synthetic_data(n_per_split=2, size=16)
    train = [(c.volume, c.lesion) for c in data.split("train")]
    test = [(c.volume, c.lesion) for c in data.split("test")]
    torch.manual_seed(5)
    make = from_state_dict(tiny_glip, tiny_glip().state_dict())
    budget = SegBudget(steps=6, width=4, lr=1e-2, seed=7)
    one = [segmentation_protocol(make, train, test, SegBudget(steps=6, width=4, lr=1e-2, seed=s), n_boot=10) for s in (7, 8)]
    both = segmentation_protocol(make, train, test, SegBudget(steps=6, width=4, lr=1e-2, seed=7, repeats=2), n_boot=10)
    assert one[0].losses != one[1].losses  # another seed, another run
    assert all(0.0 <= d <= 1.0 for run in one for d in run.per_case)
    np.testing.assert_allclose(both.per_case, (one[0].per_case + one[1].per_case) / 2)
    assert both.per_run == (one[0].dice.value, one[1].dice.value)
    assert both.losses == one[0].losses  # the first run's curve
    assert segmentation_protocol(make, train, test, budget, n_boot=10).per_case.tolist() == one[0].per_case.tolist()
    with pytest.raises(ValueError, match="repeats"):
        SegBudget(repeats=0)


def test_evaluate_runs_every_protocol_and_random_row_is_not_applicable():
    data = synthetic_data(n_per_split=4)
    torch.manual_seed(0)
    models = {"grounded": tiny_glip(), "clip": tiny_glip("global"), "random": None}
    result = evaluate(models, data, FAST)
    m = result.metrics()
    assert set(m) == {"grounded", "clip", "random"}
    assert math.isnan(m["random"]["or_acc"].value) and math.isnan(m["random"]["ad_auc"].value)
    assert not result.methods["random"].pretrained and result.notes
    for name in models:
        assert 0.0 <= m[name]["td_auc"].value <= 1.0
        assert 0.0 <= m[name]["ts_dsc"].value <= 1.0
    for name in ("grounded", "clip"):
        assert 0.0 <= m[name]["or_acc"].value <= 1.0
        assert result.methods[name].organ_recognition.classes == ("spleen", "kidney_left", "liver")  # v2 index order
        # no rib or vertebra among these organs: OR without them is the same protocol
        assert m[name]["or_acc_distinct"].value == m[name]["or_acc"].value
    assert result.ad_tasks == (("liver", "mass"),)


def test_report_has_the_papers_shape_and_json_round_trips(tmp_path):
    data = synthetic_data(n_per_split=4)
    torch.manual_seed(0)
    result = evaluate({"grounded": tiny_glip(), "random": None, "clip": tiny_glip("global")}, data,
                      EvalConfig(n_bootstrap=20, protocols=("or", "ad", "td"), td_budget=None))
    ckpt = tmp_path / "g.pt"
    ckpt.write_bytes(b"weights")
    report = build_report(result, {"checkpoints": {"grounded": checkpoint_provenance(ckpt)}, "data_version": "v1"})
    assert list(report.table.index) == ["random", "clip", "grounded"]
    assert list(report.table.columns) == ["OR acc", "AD F1", "AD AUC", "TD AUC", "TS DSC", "OR acc w/o ribs, vertebrae"]
    assert report.table.loc["random", "OR acc"] == "n/a" and report.table.loc["grounded", "TS DSC"] == "n/a"
    assert "OR acc" in report.table_markdown and "|" in report.table_markdown
    (pair,) = result.methods["grounded"].abnormality_detection.pairs
    prevalence = pair.n_pos / (pair.n_pos + pair.n_neg)
    assert f"every organ abnormal (no model): {2 * prevalence / (1 + prevalence):.3f}" in report.table_markdown
    assert list(report.abnormality_table[["organ", "abnormality"]].itertuples(index=False, name=None)) == [("liver", "mass")]
    assert "grounded AUC" in report.abnormality_table and "random AUC" not in report.abnormality_table
    for png in (report.roc_png, report.organ_bars_png, *report.confusion_pngs.values()):
        assert png.startswith(b"\x89PNG")
    record = report.json
    assert json.loads(json.dumps(record, allow_nan=False)) == record
    assert record["provenance"]["data_version"] == "v1" and record["provenance"]["data"] == {"source": "synthetic"}
    assert set(record["methods"]["grounded"]) >= set(COLUMNS)
    assert record["provenance"]["checkpoints"]["grounded"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert record["methods"]["random"]["or_acc"] == {"value": None, "low": None, "high": None}
    back = metrics_from_json(record)
    assert back["grounded"]["td_auc"].value == pytest.approx(result.metrics()["grounded"]["td_auc"].value)


def test_report_json_keeps_each_segmentation_run():
    data = synthetic_data(n_per_split=2, size=16)
    torch.manual_seed(0)
    config = EvalConfig(n_bootstrap=10, protocols=("ts",), ts_budget=SegBudget(steps=2, width=4, repeats=2))
    result = evaluate({"grounded": tiny_glip()}, data, config)
    per_run = build_report(result).json["ts_dsc_per_run"]["grounded"]
    assert per_run == list(result.methods["grounded"].tumor_segmentation.per_run) and len(per_run) == 2


def _nifti(array: np.ndarray, path) -> None:
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))


def test_load_eval_data_reads_the_data_root(tmp_path):
    (tmp_path / "tables").mkdir()
    for d in ("volumes", "masks", "lesions"):
        (tmp_path / d).mkdir()
    rows = []
    for k, split in enumerate(["train", "val", "test"]):
        sid = f"stu-{k}"
        lab = np.zeros((20, 20, 20), np.uint8)
        lab[5:10, 5:10, 5:10] = 5
        lab[12:13, 12:13, 12:13] = 1  # one voxel of spleen: below min_organ_voxels
        _nifti(np.full(lab.shape, -1000, np.int16), tmp_path / "volumes" / f"{sid}.nii.gz")
        _nifti(lab, tmp_path / "masks" / f"{sid}.nii.gz")
        if split == "test":
            les = np.zeros(lab.shape, np.uint8)
            les[6:8, 6:8, 6:8] = 1
            _nifti(les, tmp_path / "lesions" / f"{sid}.nii.gz")
        for organ, idx, status, abn in (("liver", 5, "abnormal", ["mass"]), ("spleen", 1, "normal", [])):
            rows.append({"pair_id": f"{sid}-{organ}", "patient_id": f"pat-{k}", "study_id": sid, "organ": organ,
                         "index_v2": idx, "status": status, "abnormalities": abn, "split": split,
                         "volume_path": f"volumes/{sid}.nii.gz", "mask_path": str(tmp_path / "masks" / f"{sid}.nii.gz")})
    pd.DataFrame(rows).to_parquet(tmp_path / "tables" / "grounded_pairs.parquet")
    pre = Preprocessing(crop_size=(8, 8, 8), spacing_mm=1.0)
    data = load_eval_data(tmp_path, pre)
    assert [c.split for c in data.cases] == ["train", "val", "test"]
    assert all(c.volume.shape == (8, 8, 8) and c.volume.dtype == np.float32 for c in data.cases)
    assert data.cases[0].volume.max() == pytest.approx(-1.0)  # -1000 HU -> -1
    assert data.cases[2].lesion.sum() == 8 and data.cases[0].lesion.sum() == 0  # missing mask = no lesion
    assert data.organs["organ"].tolist() == ["liver"] * 3  # the one-voxel spleen is dropped
    assert data.organs.loc[0, "abnormalities"] == ["mass"] and data.organ_rows("test")["study_id"].tolist() == ["stu-2"]
    assert data.provenance["n_cases"] == {"train": 1, "val": 1, "test": 1} and data.provenance["missing_lesion_masks"] == 2
    assert len(load_eval_data(tmp_path, pre, missing_lesion="exclude").cases) == 1
    assert data.provenance["preprocessing"]["crop_size"] == [8, 8, 8]
    assert [c.split for c in load_eval_data(tmp_path, pre, splits=("train", "val")).cases] == ["train", "val"]
    with pytest.raises(ValueError, match="spacing"):
        load_eval_data(tmp_path, Preprocessing(crop_size=(8, 8, 8), spacing_mm=3.0))


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
    assert one.text_encoder is trained.text_encoder  # the frozen text encoder is shared, not a parameter
    torch.manual_seed(3)
    a = randomly_initialised(trained)
    torch.manual_seed(3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), randomly_initialised(trained).parameters()))


def test_no_learning_row_reads_what_organ_intensity_gives_away():
    import pandas as pd

    from model.eval.baseline import no_learning, stats_features
    from pipeline.segment.stats import organ_stats
    from pipeline.volume import Volume

    data = synthetic_data(n_per_split=6)
    stats = [organ_stats(c.study_id, Volume(c.labels.astype(np.uint8), np.eye(4)), Volume(c.volume * 1000, np.eye(4)))
             for c in data.cases]
    features = stats_features(pd.concat(stats, ignore_index=True))
    assert list(features.columns[:3]) == ["hu_mean", "hu_std", "volume_ml"]
    result = no_learning(data, features, [("liver", "mass")], EvalConfig(n_bootstrap=20))
    m = result.metrics()
    # the lesion is 20 noise SDs brighter than its liver: the liver's mean HU separates the classes exactly
    assert m["ad_auc"].value == 1.0 and m["td_auc"].value == 1.0
    assert math.isnan(m["or_acc"].value) and math.isnan(m["ts_dsc"].value) and not result.pretrained
