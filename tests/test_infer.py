"""model.infer on a tiny trained model and an unseen study: the CLI for real, the sliding window, clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch

from model.checkpoint import load_model, preprocessing_of
from model.fake_data import make_fake_data_root
from model.infer import main
from model.inference import STUDY, InferenceOptions, StudyInput, infer
from model.preprocess import window
from pipeline.synthetic.dicom_writer import SeriesHeader, write_ct_series
from pipeline.volume import Volume, load_nifti, save_nifti

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LAS = np.diag([-3.0, 3.0, 3.0, 1.0])  # the unseen study is stored flipped (LAS): ingest must bring it to RAS


@pytest.fixture(scope="module")
def trained(tiny_model) -> Path:
    return tiny_model


@pytest.fixture(scope="module")
def unseen(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """A study never trained on (another seed), larger than one crop, stored LAS: (volume, mask, RAS labels)."""
    base = tmp_path_factory.mktemp("unseen")
    root = make_fake_data_root(base / "root", n_studies=1, shape=(56, 52, 44), seed=7)
    ct, lab = load_nifti(next((root / "volumes").glob("*.nii.gz"))), load_nifti(next((root / "masks").glob("*.nii.gz")))
    vol, mask = base / "ct.nii.gz", base / "organs.nii.gz"
    save_nifti(Volume(ct.array[::-1].copy(), LAS @ _shift(ct.shape[0])), vol, dtype=np.int16)
    save_nifti(Volume(lab.array[::-1].copy(), LAS @ _shift(ct.shape[0])), mask, dtype=np.uint8)
    return vol, mask, np.asarray(lab.array)


def _shift(n: int) -> np.ndarray:
    m = np.eye(4)
    m[0, 3] = -(n - 1)  # voxel i of the flipped array sits where voxel n-1-i of the RAS one did
    return m


def test_cli_writes_embeddings_scores_and_heatmaps(trained, unseen, tmp_path):
    vol, mask, ras_labels = unseen
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "model.infer", "--checkpoint", str(trained), "--volume", str(vol), "--mask", str(mask),
                          "--query", "mass of the liver", "--query", "the spleen", "--out", str(out), "--text-cache", str(tmp_path / "text")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    emb = pd.read_parquet(out / "embeddings.parquet")
    assert list(emb.columns) == ["organ", "embedding"]
    counts = np.bincount(ras_labels.ravel())
    from pipeline.vocab import class_map
    expected = {class_map()[i] for i in np.flatnonzero(counts[1:] >= 8) + 1}
    assert set(emb["organ"]) == expected | {STUDY} and emb["organ"].iloc[-1] == STUDY
    vecs = np.stack(emb["embedding"].to_numpy())
    assert vecs.shape[1] == 32 and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    scores = json.loads((out / "scores.json").read_text())["organs"]
    assert set(scores) == expected and {"score", "probability"} <= set(next(iter(scores["liver"].values())))
    assert all(0 < v["probability"] < 1 for o in scores.values() for v in o.values())
    heat = nib.load(out / "heatmaps" / "mass_of_the_liver.nii.gz")
    assert heat.shape == ras_labels.shape and nib.aff2axcodes(heat.affine) == ("R", "A", "S")
    assert np.allclose(np.diag(heat.affine)[:3], 3.0)
    values = np.asarray(heat.dataobj)
    assert -1 <= values.min() < values.max() <= 1
    assert (out / "heatmaps" / "the_spleen.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["timings_s"]) == {"ingest", "segmentation", "encoder", "zero_shot", "heatmaps"}
    assert "organs embedded" in run.stdout and any((tmp_path / "text").rglob("*.npy"))  # prompts cached for the next run


def test_the_cli_caches_prompt_vectors_by_default_and_a_second_run_encodes_none(trained, unseen, tmp_path, monkeypatch):
    from model.text import FakeTextBackbone

    vol, mask, _ = unseen
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    args = ["--checkpoint", str(trained), "--volume", str(vol), "--mask", str(mask), "--query", "the spleen"]
    assert main([*args, "--out", str(tmp_path / "first")]) == 0
    cached = sorted((tmp_path / "xdg" / "ct-glip" / "text").rglob("*.npy"))
    assert len(cached) > 100  # the dictionary's prompts of the study's organs and the query
    encoded: list[str] = []
    encode = FakeTextBackbone.encode
    monkeypatch.setattr(FakeTextBackbone, "encode", lambda self, texts: encoded.extend(texts) or encode(self, texts))
    assert main([*args, "--out", str(tmp_path / "second")]) == 0
    assert encoded == [] and sorted((tmp_path / "xdg" / "ct-glip" / "text").rglob("*.npy")) == cached
    first, second = (json.loads((tmp_path / d / "scores.json").read_text())["organs"] for d in ("first", "second"))
    assert first == second and first
    torch.set_num_threads(2)
    assert main([*args, "--text-cache", "", "--threads", "1", "--out", str(tmp_path / "third")]) == 0  # '' = no disk cache: encoded afresh
    assert len(encoded) > 100 and torch.get_num_threads() == 1


def test_the_sliding_window_of_a_one_crop_study_is_the_network_itself(trained, tmp_path):
    """A study exactly one crop large: the stitched map is the network's own map, the study embedding its encode_global."""
    model, pre = load_model(trained), preprocessing_of(trained)
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 400, size=pre.crop_size).astype(np.int16)
    labels = np.zeros(pre.crop_size, np.uint8)
    labels[4:20, 6:22, 8:24] = 5  # liver
    save_nifti(Volume(hu, np.diag([3.0, 3.0, 3.0, 1.0])), tmp_path / "ct.nii.gz")
    save_nifti(Volume(labels, np.diag([3.0, 3.0, 3.0, 1.0])), tmp_path / "m.nii.gz")
    (result,) = infer(trained, [StudyInput("stu-one", volume=str(tmp_path / "ct.nii.gz"), mask=str(tmp_path / "m.nii.gz"))], InferenceOptions(device="cpu"))
    x = torch.from_numpy(window(hu.astype(np.float32), pre.hu_window))[None, None]
    with torch.no_grad():
        fmap = model.feature_map(x)
        direct = model.encode_global(x, fmap)[0].numpy()
        liver = model.pool_organs(fmap, torch.from_numpy(labels.astype(np.int64))[None], torch.tensor([[0, 5]]))[0].numpy()
    rows = result.embeddings.set_index("organ")["embedding"]
    assert np.allclose(rows[STUDY], direct, atol=1e-4) and np.allclose(rows["liver"], liver, atol=1e-4)


def test_a_dicom_folder_goes_through_the_dicom_reader(trained, unseen, tmp_path):
    vol, mask, _ = unseen
    ct = load_nifti(vol)
    header = SeriesHeader(patient_name="DOE^JANE", patient_id="MRN1", patient_birth_date="19560311", patient_sex="F",
                          accession_number="ACC1", study_instance_uid=pydicom.uid.generate_uid(entropy_srcs=["s"]),
                          series_instance_uid=pydicom.uid.generate_uid(entropy_srcs=["se"]),
                          frame_of_reference_uid=pydicom.uid.generate_uid(entropy_srcs=["f"]), study_date="20230405")
    write_ct_series(np.asarray(ct.array), ct.affine, tmp_path / "series", header)
    (from_dicom,) = infer(trained, [StudyInput("stu-d", dicom=str(tmp_path / "series"), mask=str(mask))], InferenceOptions(device="cpu"))
    (from_nifti,) = infer(trained, [StudyInput("stu-n", volume=str(vol), mask=str(mask))], InferenceOptions(device="cpu"))
    assert np.array_equal(from_dicom.grid.array, from_nifti.grid.array)
    a, b = (np.stack(r.embeddings["embedding"].to_numpy()) for r in (from_dicom, from_nifti))
    assert np.allclose(a, b, atol=1e-5)


def test_clear_errors(trained, unseen, tmp_path, capsys):
    vol, mask, _ = unseen
    args = ["--volume", str(vol), "--mask", str(mask), "--out", str(tmp_path / "o")]
    assert main(["--checkpoint", str(tmp_path / "nowhere"), *args]) == 2
    assert "no trained model at" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "format": "ct-glip/0"}))
    assert main(["--checkpoint", str(other), *args]) == 2
    assert "model format 'ct-glip/0'" in capsys.readouterr().err
    mr = tmp_path / "mr.nii.gz"  # MR-like intensities: no air near -1000 HU
    save_nifti(Volume(np.random.default_rng(0).integers(0, 1200, size=(40, 40, 30)).astype(np.int16), np.diag([3.0, 3.0, 3.0, 1.0])), mr)
    assert main(["--checkpoint", str(trained), "--volume", str(mr), "--mask", str(mask), "--out", str(tmp_path / "o")]) == 2
    assert "does not look like CT" in capsys.readouterr().err
    assert main(["--checkpoint", str(trained), "--volume", str(vol), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "TotalSegmentator" in err or "weights" in err
    assert not (tmp_path / "o").exists()

