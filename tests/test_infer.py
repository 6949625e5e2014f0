"""model.infer on a tiny trained model and an unseen study: the CLI for real, organ crops as trained, heatmaps inside
the organs, the text cache, clear errors."""

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
from scipy import ndimage

from model.checkpoint import load_model, preprocessing_of
from model.prompts import prompt_embeddings
from model.fake_data import make_fake_data_root
from model.infer import main
from model.inference import STUDY, InferenceOptions, StudyInput, infer
from model.preprocess import organ_crop
from pipeline.synthetic.dicom_writer import SeriesHeader, write_ct_series
from pipeline.volume import Volume, load_nifti, save_nifti
from pipeline.vocab import class_map

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LAS = np.diag([-3.0, 3.0, 3.0, 1.0])  # the unseen study is stored flipped (LAS): ingest must bring it to RAS
RAS = np.diag([3.0, 3.0, 3.0, 1.0])


@pytest.fixture(scope="module")
def trained(tiny_model) -> Path:
    return tiny_model


@pytest.fixture(scope="module")
def unseen(tmp_path_factory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """A study never trained on (another seed), stored LAS: (volume, mask, RAS HU, RAS labels)."""
    base = tmp_path_factory.mktemp("unseen")
    root = make_fake_data_root(base / "root", n_studies=1, shape=(56, 52, 44), seed=7)
    ct, lab = load_nifti(next((root / "volumes").glob("*.nii.gz"))), load_nifti(next((root / "masks").glob("*.nii.gz")))
    vol, mask = base / "ct.nii.gz", base / "organs.nii.gz"
    save_nifti(Volume(ct.array[::-1].copy(), LAS @ _shift(ct.shape[0])), vol, dtype=np.int16)
    save_nifti(Volume(lab.array[::-1].copy(), LAS @ _shift(ct.shape[0])), mask, dtype=np.uint8)
    return vol, mask, np.asarray(ct.array), np.asarray(lab.array)


def _shift(n: int) -> np.ndarray:
    m = np.eye(4)
    m[0, 3] = -(n - 1)  # voxel i of the flipped array sits where voxel n-1-i of the RAS one did
    return m


def organs_of(labels: np.ndarray, minimum: int) -> dict[int, str]:
    counts = np.bincount(labels.ravel(), minlength=256)
    return {i: class_map()[i] for i in np.flatnonzero(counts[1:] >= minimum) + 1}


def test_cli_writes_embeddings_scores_and_heatmaps_inside_the_organs(trained, unseen, tmp_path):
    vol, mask, _, ras_labels = unseen
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "model.infer", "--checkpoint", str(trained), "--volume", str(vol), "--mask", str(mask),
                          "--query", "mass of the liver", "--query", "the spleen", "--out", str(out), "--text-cache", str(tmp_path / "text")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    emb = pd.read_parquet(out / "embeddings.parquet")
    assert list(emb.columns) == ["organ", "embedding"]
    expected = set(organs_of(ras_labels, preprocessing_of(trained).min_organ_voxels).values())
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
    # away from every organ (farther than its pooling region and an interpolation cell) the map holds its minimum
    reach = int(np.ceil(preprocessing_of(trained).dilation_mm / 3.0)) + 2
    far = ~ndimage.binary_dilation(ras_labels > 0, structure=np.ones((3, 3, 3), bool), iterations=reach)
    assert far.any() and np.all(values[far] == values.min())
    assert np.unique(values[ras_labels > 0]).size > 10  # inside the organs it varies
    assert (out / "heatmaps" / "the_spleen.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["timings_s"]) == {"ingest", "segmentation", "encoder", "zero_shot", "heatmaps"}
    assert "organs embedded" in run.stdout and any((tmp_path / "text").rglob("*.npz"))  # text states cached for the next run


def test_each_organ_is_embedded_from_its_own_crop_as_trained(trained, unseen):
    """The organ rows are encode_organs of model.preprocess.organ_crop on the RAS grid with the checkpoint's record; the
    study row is their normalised mean; every heatmap value is a cosine some organ's cells reach."""
    vol, mask, ras_hu, ras_labels = unseen
    model, pre = load_model(trained), preprocessing_of(trained)
    (result,) = infer(trained, [StudyInput("stu-u", volume=str(vol), mask=str(mask))],
                      InferenceOptions(device="cpu", queries=("mass of the liver",), dictionary_scores=False))
    # the flipped study back on its RAS grid (ingest floors HU at -1024, air)
    np.testing.assert_array_equal(result.grid.array, np.maximum(ras_hu, -1024))
    np.testing.assert_array_equal(result.labels, ras_labels)
    canon = Volume(np.maximum(ras_hu, -1024), RAS)
    organs = organs_of(ras_labels, pre.min_organ_voxels)
    crops = {name: organ_crop(canon, ras_labels, i, name, pre) for i, name in organs.items()}
    rows = result.embeddings.set_index("organ")
    query = torch.from_numpy(prompt_embeddings(model, [["mass of the liver"]]))[0]
    low, high = np.inf, -np.inf
    with torch.no_grad():
        for name, c in crops.items():
            x = {k: torch.from_numpy(np.asarray(getattr(c, k)))[None] for k in ("volume", "mask", "region", "size")}
            want = model.encode_organs(x["volume"][:, None], x["mask"], x["region"], x["size"])[0].numpy()
            np.testing.assert_allclose(rows.loc[name, "embedding"], want, atol=1e-5)
            assert rows.loc[name, "whole"] == c.whole and rows.loc[name, "index_v2"] in organs
            cells = model.cell_embeddings(model.feature_map(x["volume"][:, None], x["mask"]), x["size"]) @ query
            low, high = min(low, float(cells.min())), max(high, float(cells.max()))
    organ_rows = np.stack([rows.loc[n, "embedding"] for n in crops])
    study = organ_rows.mean(0) / np.linalg.norm(organ_rows.mean(0))
    np.testing.assert_allclose(rows.loc[STUDY, "embedding"], study, atol=1e-5)
    heat = result.heatmaps["mass of the liver"]
    assert heat.shape == ras_labels.shape and low - 1e-5 <= heat.min() and heat.max() <= high + 1e-5
    assert set(result.scores) == set()  # dictionary_scores=False


def test_the_training_runs_folder_is_a_checkpoint_too(trained, unseen, tmp_path):
    vol, mask, _, _ = unseen
    run_folder = trained.parent  # data/models/grounded-.../ holding model/
    assert (run_folder / "model") == trained
    args = ["--volume", str(vol), "--mask", str(mask), "--text-cache", ""]
    assert main(["--checkpoint", str(run_folder), *args, "--out", str(tmp_path / "a")]) == 0
    assert main(["--checkpoint", str(trained), *args, "--out", str(tmp_path / "b")]) == 0
    a, b = (pd.read_parquet(tmp_path / d / "embeddings.parquet") for d in ("a", "b"))
    assert np.allclose(np.stack(a["embedding"]), np.stack(b["embedding"]))


def test_a_study_without_an_organ_is_refused_with_the_reason(trained, unseen, tmp_path, capsys):
    vol, mask, _, ras_labels = unseen
    empty = tmp_path / "empty.nii.gz"
    save_nifti(Volume(np.zeros(ras_labels.shape, np.uint8), RAS), empty)
    specks = tmp_path / "specks.nii.gz"  # organs, but each below the checkpoint's minimum of voxels
    tiny = np.zeros(ras_labels.shape, np.uint8)
    tiny[10, 10, 10], tiny[30, 30, 30] = 5, 1
    save_nifti(Volume(tiny, RAS), specks)
    with pytest.raises(ValueError, match="no organ of at least"):  # no mask and no segmenter: no organ map at all
        list(infer(trained, [StudyInput("stu-x", volume=str(vol))], InferenceOptions(device="cpu", segmenter=None)))
    for m in (empty, specks):
        out = tmp_path / m.name.split(".")[0]
        assert main(["--checkpoint", str(trained), "--volume", str(vol), "--mask", str(m), "--out", str(out), "--text-cache", ""]) == 2
        err = capsys.readouterr().err
        assert "no organ of at least" in err and "organ-crop model" in err
        assert not out.exists()


def test_the_cli_caches_text_states_by_default_and_a_second_run_encodes_none(trained, unseen, tmp_path, monkeypatch):
    from model.text import FakeTextBackbone

    vol, mask, _, _ = unseen
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    args = ["--checkpoint", str(trained), "--volume", str(vol), "--mask", str(mask), "--query", "the spleen"]
    assert main([*args, "--out", str(tmp_path / "first")]) == 0
    cached = sorted((tmp_path / "xdg" / "ct-glip" / "text").rglob("*.npz"))
    assert len(cached) > 100  # the dictionary's prompts of the study's organs and the query
    encoded: list[str] = []
    states = FakeTextBackbone.states
    monkeypatch.setattr(FakeTextBackbone, "states", lambda self, texts: encoded.extend(texts) or states(self, texts))
    assert main([*args, "--out", str(tmp_path / "second")]) == 0
    assert encoded == [] and sorted((tmp_path / "xdg" / "ct-glip" / "text").rglob("*.npz")) == cached
    first, second = (json.loads((tmp_path / d / "scores.json").read_text())["organs"] for d in ("first", "second"))
    assert first == second and first
    torch.set_num_threads(2)
    assert main([*args, "--text-cache", "", "--threads", "1", "--out", str(tmp_path / "third")]) == 0  # '' = no disk cache: encoded afresh
    assert len(encoded) > 100 and torch.get_num_threads() == 1


def test_a_dicom_folder_goes_through_the_dicom_reader(trained, unseen, tmp_path):
    vol, mask, _, _ = unseen
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
    vol, mask, _, _ = unseen
    args = ["--volume", str(vol), "--mask", str(mask), "--out", str(tmp_path / "o"), "--text-cache", ""]
    assert main(["--checkpoint", str(tmp_path / "nowhere"), *args]) == 2
    assert "no trained model at" in capsys.readouterr().err
    for fmt, says in (("ct-glip/0", "model format 'ct-glip/0'"), ("ct-glip/1", "train it again")):
        other = tmp_path / fmt.replace("/", "_")
        shutil.copytree(trained, other)
        cfg = json.loads((other / "config.json").read_text())
        (other / "config.json").write_text(json.dumps({**cfg, "format": fmt}))
        assert main(["--checkpoint", str(other), *args]) == 2
        assert says in capsys.readouterr().err
    mr = tmp_path / "mr.nii.gz"  # MR-like intensities: no air near -1000 HU
    save_nifti(Volume(np.random.default_rng(0).integers(0, 1200, size=(40, 40, 30)).astype(np.int16), RAS), mr)
    assert main(["--checkpoint", str(trained), "--volume", str(mr), "--mask", str(mask), "--out", str(tmp_path / "o")]) == 2
    assert "does not look like CT" in capsys.readouterr().err
    assert main(["--checkpoint", str(trained), "--volume", str(vol), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "TotalSegmentator" in err or "weights" in err
    assert not (tmp_path / "o").exists()


def _refused(args: list[str], capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


def test_volumes_without_an_image_are_refused(trained, unseen, tmp_path, capsys):
    """Non-finite or constant volumes give one line and exit 2, never embeddings (issue 29: all-NaN gave exit 0)."""
    vol, mask, ct, _ = unseen
    nifti = load_nifti(vol)
    for name, array, says in (("nan", np.full(ct.shape, np.nan, np.float32), "non-finite"),
                              ("some_inf", np.where(ct > 0, np.inf, ct).astype(np.float32), "non-finite"),
                              ("flat", np.full(ct.shape, -1000, np.int16), "constant")):
        path = tmp_path / f"{name}.nii.gz"
        save_nifti(Volume(array, nifti.affine), path, dtype=array.dtype)
        out = tmp_path / f"o_{name}"
        err = _refused(["--checkpoint", str(trained), "--volume", str(path), "--mask", str(mask), "--out", str(out)], capsys)
        assert says in err
        assert not out.exists()


def test_a_mask_off_the_volume_is_refused(trained, unseen, tmp_path, capsys):
    """A mask on another grid that does not overlap the volume (or covers it too little) names the share it found."""
    vol, mask, _, _ = unseen
    labels = load_nifti(mask)
    far = labels.affine.copy()
    far[:3, 3] += 500.0  # half a metre away: no labelled voxel lands on the volume
    moved = tmp_path / "far.nii.gz"
    save_nifti(Volume(np.asarray(labels.array), far), moved, dtype=np.uint8)
    err = _refused(["--checkpoint", str(trained), "--volume", str(vol), "--mask", str(moved), "--out", str(tmp_path / "o")], capsys)
    assert "does not lie on the volume" in err and "0%" in err


def test_a_header_claiming_too_many_voxels_is_refused_before_reading(trained, unseen, tmp_path, capsys):
    """A NIfTI header of 10000^3 voxels is refused from its header (was a MemoryError traceback)."""
    import nibabel as nib

    vol, mask, _, _ = unseen
    huge = tmp_path / "huge.nii"
    header = nib.Nifti1Header()
    header.set_data_shape((10000, 10000, 10000))
    header.set_data_dtype(np.int16)
    with open(huge, "wb") as f:  # a header and a few bytes: reading the data would need 2 TB
        f.write(header.binaryblock + b"\0" * (352 - len(header.binaryblock)) + b"\0" * 64)
    err = _refused(["--checkpoint", str(trained), "--volume", str(huge), "--mask", str(mask), "--out", str(tmp_path / "o")], capsys)
    assert "10000 x 10000 x 10000" in err and "refused before reading" in err


def test_a_model_folder_may_not_name_a_hub_model(trained, unseen, tmp_path, capsys):
    """text_encoder in a model folder is the packaged encoder or a local folder; a hub id is refused at once, naming
    the file and the key (was five network retries and a traceback)."""
    vol, mask, _, _ = unseen
    for bad in ("someone/bert-base-uncased", "relative/folder", str(tmp_path / "not_there")):
        other = tmp_path / "hub"
        shutil.rmtree(other, ignore_errors=True)
        shutil.copytree(trained, other)
        cfg = json.loads((other / "config.json").read_text())
        cfg["train"]["model"]["text_encoder"] = bad
        (other / "config.json").write_text(json.dumps(cfg))
        err = _refused(["--checkpoint", str(other), "--volume", str(vol), "--mask", str(mask), "--out", str(tmp_path / "o")], capsys)
        assert "config.json" in err and "text_encoder" in err and repr(bad) in err


def test_the_text_cache_comes_from_the_command_line_not_the_model_folder(trained, unseen, tmp_path, monkeypatch):
    """A text_cache_dir written into a model folder's config is ignored: with --text-cache "" nothing is written
    anywhere (issue 29: 10,248 files landed in the folder the config named)."""
    vol, mask, _, _ = unseen
    other, elsewhere = tmp_path / "m", tmp_path / "elsewhere"
    shutil.copytree(trained, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["train"]["text_cache_dir"] = str(elsewhere)
    (other / "config.json").write_text(json.dumps(cfg))
    assert main(["--checkpoint", str(other), "--volume", str(vol), "--mask", str(mask), "--out", str(tmp_path / "o"),
                 "--text-cache", ""]) == 0
    assert not elsewhere.exists()


def test_inference_and_archive_ingest_make_one_canonical_volume(trained, unseen, tmp_path):
    """A study becomes its canonical volume by one path in both (pipeline.ingest.read_nifti, to_canonical): the same
    voxels and grid; an image inference refuses (all NaN) is one ingest rejects, with its reason."""
    from pipeline.ingest import IngestConfig, ingest_archive
    from pipeline.resample import ResampleOptions
    from pipeline.tables import resolve_path

    vol, mask, ct, _ = unseen
    nan = tmp_path / "nan.nii.gz"
    save_nifti(Volume(np.full(ct.shape, np.nan, np.float32), RAS), nan, dtype=np.float32)
    manifest = tmp_path / "scans.csv"
    pd.DataFrame({"scan_path": [str(vol), str(nan)], "patient_key": ["p", "q"], "study_key": ["s", "t"],
                  "report_key": ["", ""]}).to_csv(manifest, index=False)
    spacing = preprocessing_of(trained).spacing_mm
    res = ingest_archive(IngestConfig(tmp_path / "data", nifti_manifest=manifest,
                                      resample=ResampleOptions(spacing=(spacing,) * 3), workers=1))
    ingested = load_nifti(resolve_path(res.ct_studies["volume_path"][0], tmp_path / "data"))
    (result,) = infer(trained, [StudyInput("s", volume=str(vol), mask=str(mask))], InferenceOptions(dictionary_scores=False))
    np.testing.assert_array_equal(result.grid.array, ingested.array)
    np.testing.assert_allclose(result.grid.affine, ingested.affine, atol=1e-4)
    (rej,) = res.rejected_studies.to_dict("records")
    assert (rej["stage"], rej["reason"]) == ("hu_check", "non_finite") and "non-finite" in rej["detail"]
