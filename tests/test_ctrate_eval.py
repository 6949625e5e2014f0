"""The CT-RATE zero-shot protocol (model.eval.ctrate): the CLI for real on a small CT-RATE-layout release and a
tiny trained model; n/a for constant labels, intervals around values, thresholds from the other split only, the
organ-aware variant with masks and its whole-study fallback, clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctrate_release import save, volume_path, write_labels, write_release
from model.eval.ctrate import CtrateEvalOptions, evaluate_ctrate, main
from model.eval.metrics import choose_threshold
from model.inference import InferenceOptions
from pipeline.vocab import CTRATE_LABELS
from pipeline.vocab import class_map

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = len(CTRATE_LABELS)
CARDIO, EMPH, NODULE = (CTRATE_LABELS.index(n) for n in ("Cardiomegaly", "Emphysema", "Lung nodule"))
VALID = ["valid_1_a_1", "valid_1_a_2", "valid_2_a_1", "valid_3_a_1", "valid_4_a_1", "valid_5_b_1"]  # 5 patients


def labels(*positive: int, always: tuple[int, ...] = ()) -> list[int]:
    return [int(k in positive or k in always) for k in range(N)]


# Cardiomegaly and Emphysema mixed in valid; Lung nodule on every valid volume (one class only); the rest absent
VALID_LABELS = {n: labels(*(CARDIO,) * (i % 2 == 0), *(EMPH,) * (i in (1, 2)), always=(NODULE,)) for i, n in enumerate(VALID)}
TRAIN_LABELS = {"train_1_a_1": labels(CARDIO), "train_1_a_2": labels(CARDIO, EMPH), "train_2_a_1": labels(), "train_3_a_1": labels(EMPH)}


@pytest.fixture(scope="module")
def trained(tiny_model) -> Path:
    return tiny_model


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return write_release(tmp_path_factory.mktemp("ctrate"), TRAIN_LABELS, VALID_LABELS)


def corrected(release: Path, split: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each usable volume of ``split`` as ingest reads it (pipeline.ctrate's rescale and affine applied): HU, affine."""
    from pipeline.ctrate import scan_ctrate
    from pipeline.ingest import manifest_overrides
    from pipeline.volume import load_nifti

    out = {}
    for row in scan_ctrate(release, split).itertuples():
        if row.problem:
            continue
        volume = load_nifti(row.volume_path)
        keys = {"rescale_slope": str(row.rescale_slope), "rescale_intercept": str(row.rescale_intercept), "affine": row.affine}
        hu, affine, _ = manifest_overrides(volume.array, volume.affine, keys)
        out[row.volume_name] = (np.asarray(hu), affine)
    return out


HEART_ONLY = VALID[3:]  # their masks hold the heart but no lung: organ-aware Emphysema falls back to the whole study


@pytest.fixture(scope="module")
def masks(release, tmp_path_factory) -> Path:
    """TotalSegmentator-style label maps on each volume's corrected grid (an organ-crop model embeds organs, so every
    scored volume needs one): soft tissue as heart, the lungs as two upper lobes (left half of the grid, right half)."""
    folder = tmp_path_factory.mktemp("masks")
    names = {v: k for k, v in class_map().items()}
    for split in ("train", "valid"):
        for name, (hu, affine) in corrected(release, split).items():
            lab = np.where(hu == 40, names["heart"], 0).astype(np.uint8)
            if name not in HEART_ONLY:
                lungs = (hu > -900) & (hu < -500)
                left = np.zeros(hu.shape, bool)
                left[: hu.shape[0] // 2] = True
                lab[lungs & left] = names["lung_upper_lobe_left"]
                lab[lungs & ~left] = names["lung_upper_lobe_right"]
            save(folder / f"{name}.nii.gz", lab, affine)
    return folder


def test_cli_scores_the_18_labels_with_intervals_and_thresholds_from_train(trained, release, masks, tmp_path):
    out = tmp_path / "results.json"
    run = subprocess.run([sys.executable, "-m", "model.eval.ctrate", "--checkpoint", str(trained), "--data", str(release),
                          "--split", "valid", "--out", str(out), "--masks", str(masks), "--bootstrap", "200", "--device", "cpu",
                          "--text-cache", ""], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    res = json.loads(out.read_text())
    assert res["split"] == "valid" and res["n_volumes"] == len(VALID) and res["n_patients"] == 5
    assert res["thresholds"]["split"] == "train" and res["thresholds"]["n_volumes"] == len(TRAIN_LABELS)
    # left out with their reasons: the unreadable train volume and the one without a label row
    assert {(s["volume_name"], s["reason"] == "no label row") for s in res["skipped"]} == {("train_5_a_1", False), ("train_4_b_1", True)}
    assert res["anchors"]["CT-CLIP"] == 0.733 and res["anchors"]["fVLM"] == 0.778
    scores = pd.read_csv(tmp_path / "results.scores.csv")
    for variant, part in (("ct-clip", res), ("organ-aware", res["organ_aware"])):
        assert sorted(part["labels"]) == sorted(CTRATE_LABELS)  # all 18, n/a or not
        for k, label in enumerate(CTRATE_LABELS):
            entry = part["labels"][label]
            assert entry["n_pos"] == sum(v[k] for v in VALID_LABELS.values()) and entry["n_pos"] + entry["n_neg"] == len(VALID)
            if k in (CARDIO, EMPH):
                auc = entry["auc"]
                assert 0 <= auc["low"] <= auc["value"] <= auc["high"] <= 1
                assert entry["f1"] == "n/a" or 0 <= entry["f1"]["low"] <= entry["f1"]["value"] <= entry["f1"]["high"] <= 1
            else:  # one class only in valid: n/a, not a number
                assert entry["auc"] == entry["f1"] == "n/a" and entry["why"] == "one class only in the split"
        assert part["n_labels_in_macro"] == 2
        assert 0 <= part["macro_auc"]["low"] <= part["macro_auc"]["value"] <= part["macro_auc"]["high"] <= 1
        # the threshold of each label is the F1-best one on the train volumes' scores and labels
        train_rows = scores[(scores["split"] == "train") & (scores["variant"] == variant)]
        for label in (CTRATE_LABELS[CARDIO], CTRATE_LABELS[EMPH]):
            rows = train_rows[train_rows["label"] == label]
            assert part["labels"][label]["threshold"] == pytest.approx(choose_threshold(rows["logit"], rows["truth"]))
    # one score per volume, variant and label; probabilities are the softmax of the recorded logits
    valid_rows = scores[scores["split"] == "valid"]
    assert len(valid_rows) == 2 * N * len(VALID) and not valid_rows.duplicated(["volume_name", "variant", "label"]).any()
    assert np.allclose(scores["probability"], 1 / (1 + np.exp(-scores["logit"])))
    # organ-aware: a volume whose mask lacks a label's organs is scored on the whole study; labels without organs keep
    # CT-CLIP's pair
    organ = res["organ_aware"]
    assert organ["n_volumes_with_mask"] == len(VALID)
    assert organ["labels"]["Cardiomegaly"]["organs"] == ["heart"] and organ["labels"]["Cardiomegaly"]["n_fallback"] == 0
    assert organ["labels"]["Emphysema"]["n_fallback"] == len(HEART_ONLY)
    assert organ["labels"]["Pleural effusion"]["organs"] == [] and organ["labels"]["Pleural effusion"]["n_fallback"] == 0
    pivot = valid_rows.pivot_table(index=["volume_name", "label"], columns="variant", values="logit")
    assert np.allclose(pivot.xs("Pleural effusion", level="label")["ct-clip"], pivot.xs("Pleural effusion", level="label")["organ-aware"])
    sources = valid_rows[(valid_rows["variant"] == "organ-aware") & (valid_rows["label"] == "Emphysema")].set_index("volume_name")["source"]
    assert sources[VALID[0]] == "lung_upper_lobe_left,lung_upper_lobe_right" and sources[VALID[5]] == "fallback:whole_study"
    assert "macro AUC" in run.stdout and "CT-CLIP 0.733, fVLM 0.778" in run.stdout


def test_the_evaluated_split_labels_never_choose_a_threshold(trained, release, masks, tmp_path, caplog):
    """Flipping every valid label leaves the thresholds as they were and turns each AUC into 1 - AUC."""
    flipped = tmp_path / "flipped"
    shutil.copytree(release, flipped)
    write_labels(flipped, "valid", {n: [1 - x for x in v] for n, v in VALID_LABELS.items()})
    options = CtrateEvalOptions(n_boot=50, cache_dir=str(tmp_path / "cache"), masks_dir=str(masks),
                                inference=InferenceOptions(segmenter=None, dictionary_scores=False, device="cpu"))
    a, b = (evaluate_ctrate(trained, root, options) for root in (release, flipped))
    # a re-run takes every embedding from the cache, and scores the same
    with caplog.at_level("INFO", logger="model.eval.ctrate"):
        again = evaluate_ctrate(trained, release, options)
    assert "valid: 0 volumes embedded, 6 from the cache" in caplog.text and "train: 0 volumes embedded, 4 from the cache" in caplog.text
    pd.testing.assert_frame_equal(again.scores, a.scores)
    assert a.organ_aware_not_run == "" and len(a.variants) == 2
    for x, y in zip(a.variants[0].labels, b.variants[0].labels):
        assert x.threshold == y.threshold and (x.n_pos, x.n_neg) == (y.n_neg, y.n_pos)
        assert x.auc.applicable == y.auc.applicable
        if x.auc.applicable:
            assert y.auc.value == pytest.approx(1 - x.auc.value)
    assert sum(r.threshold is not None for r in a.variants[0].labels) == 2  # Cardiomegaly, Emphysema have train positives


def test_a_volume_without_organs_is_left_out_with_its_reason(trained, release, masks, tmp_path):
    """An organ-crop model embeds organs: a volume with no organ map (no mask, no segmenter) is listed as skipped,
    and the rest are scored."""
    partial = tmp_path / "masks"
    shutil.copytree(masks, partial)
    (partial / f"{VALID[4]}.nii.gz").unlink()
    options = CtrateEvalOptions(n_boot=20, threshold_split=None, masks_dir=str(partial),
                                inference=InferenceOptions(segmenter=None, dictionary_scores=False, device="cpu"))
    result = evaluate_ctrate(trained, release, options)
    assert result.n_volumes == len(VALID) - 1
    (reason,) = result.skipped.loc[result.skipped["volume_name"] == VALID[4], "reason"]
    assert "no organ" in reason


def test_without_any_organ_map_the_command_stops_with_a_clear_error(trained, release, tmp_path, capsys):
    """No masks and no segmenter: no volume can be embedded by an organ-crop model, the command says so (exit 2)."""
    out = str(tmp_path / "r.json")
    assert main(["--checkpoint", str(trained), "--data", str(release), "--out", out, "--threshold-split", "none",
                 "--device", "cpu", "--text-cache", "", "--bootstrap", "10"]) == 2
    err = capsys.readouterr().err
    assert "organ" in err
    assert not Path(out).exists()


def test_clear_errors(trained, release, tmp_path, capsys):
    """The CLI's main in-process (the subprocess run above covers the command itself)."""
    out = str(tmp_path / "r.json")
    assert main(["--checkpoint", str(tmp_path / "nowhere"), "--data", str(release), "--out", out]) == 2
    assert "no trained model at" in capsys.readouterr().err
    empty = tmp_path / "no_valid"
    shutil.copytree(release, empty)
    shutil.rmtree(volume_path(empty, VALID[0]).parents[2])  # dataset/valid
    assert main(["--checkpoint", str(trained), "--data", str(empty), "--out", out]) == 2
    assert "no valid volumes under" in capsys.readouterr().err
    assert main(["--checkpoint", str(trained), "--data", str(release), "--out", out, "--split", "train", "--threshold-split", "train"]) == 2
    assert "another split" in capsys.readouterr().err
    # the configured segmenter needs TotalSegmentator's weights: the command stops and names what is missing
    assert main(["--checkpoint", str(trained), "--data", str(release), "--out", out, "--segmenter", "totalsegmentator",
                 "--device", "cpu", "--text-cache", ""]) == 2
    err = capsys.readouterr().err
    assert "TotalSegmentator" in err or "weights" in err, err
    assert not Path(out).exists()
