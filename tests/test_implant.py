"""Lesions painted into real anatomy (``pipeline.synthetic.implant``): the painting stays inside its organs, the truth
table measures what is in the image, nothing requested changes nothing, the report says what the truth lists less the
omitted share, and the command line writes a set the own-archive NIfTI route reads as it is.

The invariants run on a small phantom everywhere (organ ellipsoids with noise, on a flipped anisotropic grid) and on the
real CT of ../shared (TotalSegmentator's example), which skips where that is absent.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import distance_transform_edt

from pipeline import vocab
from pipeline.report.api import extract_findings
from pipeline.synthetic.implant import (IMPLANTABLE, LESION_KINDS, ImplantConfig, Source, implant_study, slice_axis,
                                        write_qa_set)
from pipeline.synthetic.lesions import LESION_COLUMNS
from pipeline.volume import Volume, load_nifti, save_nifti

REPO = Path(__file__).resolve().parents[1]
INDEX = {n: i for i, n in vocab.class_map(vocab.V2_TASK).items()}
EVERY_KIND = ImplantConfig(finding_prob=1.0, report_omission=0.0)  # every kind where its organ is in the scan
# the phantom's organs: (centre mm, half-axes mm, HU)
PHANTOM = {
    "liver": ((-60.0, 10.0, 0.0), (75.0, 60.0, 55.0), 60.0),
    "spleen": ((85.0, -20.0, 10.0), (30.0, 40.0, 45.0), 48.0),
    "kidney_right": ((-55.0, -50.0, -70.0), (25.0, 25.0, 45.0), 32.0),
    "kidney_left": ((60.0, -50.0, -70.0), (25.0, 25.0, 45.0), 32.0),
    "pancreas": ((10.0, 10.0, -45.0), (45.0, 14.0, 14.0), 40.0),
    "lung_lower_lobe_right": ((-70.0, -20.0, 95.0), (55.0, 60.0, 35.0), -850.0),
}


def phantom(seed: int = 0, dtype=np.int16) -> tuple[Volume, Volume]:
    """A torso-sized phantom on a flipped, anisotropic grid (LPS-like, 2.5 x 2.5 x 4 mm): fat, organ ellipsoids, noise."""
    shape, spacing = (96, 80, 60), np.array([2.5, 2.5, 4.0])
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [120.0, 100.0, -120.0]
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = (ijk @ affine[:3, :3].T + affine[:3, 3]).T.reshape(3, *shape)
    hu = np.where(((xyz[0] / 150) ** 2 + (xyz[1] / 110) ** 2) <= 1, -100.0, -1000.0)
    labels = np.zeros(shape, np.uint8)
    for name, (c, r, value) in PHANTOM.items():
        inside = sum(((xyz[a] - c[a]) / r[a]) ** 2 for a in range(3)) <= 1
        labels[inside & (labels == 0)] = INDEX[name]
        hu[inside] = value
    hu += np.random.default_rng(seed).normal(0.0, 12.0, shape)
    return Volume(np.rint(hu).astype(dtype), affine), Volume(labels, affine)


@pytest.fixture(scope="module")
def real_ct(realdata) -> tuple[Volume, Volume]:
    ts = realdata / "totalsegmentator"
    return load_nifti(ts / "example_ct_sm.nii.gz"), load_nifti(ts / "example_seg.nii.gz")


@pytest.fixture(params=["phantom", "real"])
def scan(request) -> tuple[Volume, Volume]:
    return phantom() if request.param == "phantom" else request.getfixturevalue("real_ct")


def _within(mask: np.ndarray, margin_mm: float, spacing) -> np.ndarray:
    return distance_transform_edt(~mask, sampling=spacing) <= margin_mm


def _studies(scan, seeds=range(6), config: ImplantConfig = EVERY_KIND):
    ct, labels = scan
    return [implant_study(ct, labels, (11, s), config, accession=f"A{s}", study_uid=f"S{s}") for s in seeds]


def test_every_painted_voxel_lies_inside_its_organ_or_its_margin(scan):
    ct, labels = scan
    lab = np.asarray(labels.array)
    spacing = ct.spacing
    for made in _studies(scan):
        assert made.volume.array.dtype == ct.array.dtype and np.array_equal(made.volume.affine, ct.affine)
        changed = made.volume.array != np.asarray(ct.array)
        allowed = np.zeros(lab.shape, bool)
        for organ in {o for f in made.findings for o in f.organs}:
            allowed |= _within(lab == INDEX[organ], made.params["margin_mm"], spacing)
        assert changed.any() == bool(made.findings)
        assert not (changed & ~allowed).any(), f"{int((changed & ~allowed).sum())} changed voxels outside the organs' margin"
        # every lesion's own voxels lie inside its own organ's label, with no margin
        for number, row in enumerate(made.lesions.itertuples(), 1):
            voxels = made.lesion_labels == number
            assert voxels.sum() == row.voxels > 0
            assert (lab[voxels] == INDEX[row.organ]).all()
        tumor = made.lesions["kind"].isin(["liver_mass", "renal_mass", "pancreatic_mass", "lung_nodule"]).to_numpy()
        assert np.array_equal(made.lesion_mask > 0, np.isin(made.lesion_labels, np.flatnonzero(tumor) + 1))


def test_truth_table_measures_the_painted_image(scan):
    """Voxels, volume and extent from the lesion's own voxels; mean contrast against the untouched parenchyma around
    it (the organ's voxels 2-6 voxels away, beyond the blur), within the organ's noise SD plus 5 HU (the truth's
    parenchyma is a wider neighbourhood's median: in solid organs the two agree within a few HU, in a lung near the
    diaphragm they differ by up to its texture); the drawn diameter bounds the painted extent, and a round lesion inside
    its organ spans it to a voxel."""
    ct, labels = scan
    lab = np.asarray(labels.array)
    spacing = np.asarray(ct.spacing)
    rows = 0
    for made in _studies(scan):
        out = made.volume.array.astype(float)
        assert list(made.lesions.columns) == LESION_COLUMNS
        any_lesion = made.lesion_labels > 0
        for number, row in enumerate(made.lesions.itertuples(), 1):
            voxels = made.lesion_labels == number
            pts = np.argwhere(voxels) * spacing
            extent = float(np.max(pts.max(axis=0) - pts.min(axis=0) + spacing))
            assert row.extent_mm == pytest.approx(extent, abs=0.051)
            assert row.volume_ml == pytest.approx(voxels.sum() * spacing.prod() / 1000)
            assert row.extent_mm <= row.diameter_mm + spacing.max() + 0.051
            if row.shape == "round" and not row.touches_capsule:
                assert abs(row.extent_mm - row.diameter_mm) <= spacing.max() + 0.051
            dist = distance_transform_edt(~any_lesion, sampling=spacing)
            ring = (lab == INDEX[row.organ]) & (dist >= 2 * spacing.max()) & _within(voxels, 6 * spacing.max(), spacing)
            if ring.sum() < 20:
                continue
            measured = out[voxels].mean() - np.median(out[ring])
            assert abs(row.mean_contrast_hu - measured) <= row.noise_hu + 5.0, (row, measured)
            assert row.iso_intense == (abs(row.mean_contrast_hu) < row.noise_hu)
            rows += 1
    assert rows >= 10


def test_large_solid_lesions_keep_their_drawn_contrast():
    """Deep, round, solid lesions of 15 mm or more: the painted mean contrast is the drawn one, less the edge blur."""
    seen = 0
    for made in _studies(phantom(), seeds=range(30), config=ImplantConfig(kinds=("liver_mass", "renal_mass"), finding_prob=1.0)):
        big = made.lesions[(made.lesions["pattern"] == "solid") & (made.lesions["shape"] == "round")
                           & ~made.lesions["touches_capsule"] & (made.lesions["diameter_mm"] >= 15)]
        for row in big.itertuples():
            assert row.mean_contrast_hu == pytest.approx(row.contrast_hu, abs=0.25 * abs(row.contrast_hu) + 5.0)
            seen += 1
    assert seen >= 5


@pytest.mark.parametrize("config", [ImplantConfig(kinds=()), ImplantConfig(finding_prob=0.0)], ids=["no_kinds", "no_chance"])
@pytest.mark.parametrize("dtype", [np.int16, np.float64])
def test_nothing_requested_returns_the_volume_bit_for_bit(config, dtype):
    ct, labels = phantom(dtype=dtype)
    ct = Volume(ct.array + (0.123 if dtype == np.float64 else 0), ct.affine)  # values float32 cannot hold
    made = implant_study(ct, labels, 5, config)
    assert made.volume.array.dtype == ct.array.dtype
    assert made.volume.array.tobytes() == ct.array.tobytes()
    assert made.lesions.empty and not made.lesion_mask.any() and not made.findings
    assert "No acute abnormality" in made.report


def test_voxels_the_painting_misses_keep_their_stored_values():
    """A float64 scan: painting goes through float32, yet every voxel outside the margin keeps its exact value."""
    ct, labels = phantom(dtype=np.float64)
    ct = Volume(ct.array + 0.123, ct.affine)
    made = implant_study(ct, labels, 3, EVERY_KIND)
    lab = np.asarray(labels.array)
    allowed = np.zeros(lab.shape, bool)
    for organ in {o for f in made.findings for o in f.organs}:
        allowed |= _within(lab == INDEX[organ], made.params["margin_mm"], ct.spacing)
    assert made.findings and np.array_equal(made.volume.array[~allowed], ct.array[~allowed])


def _said(report: str) -> set[tuple[str, str]]:
    """(organ, abnormality) pairs the report rules read as abnormal or uncertain."""
    return {(f.organ, f.abnormality) for f in extract_findings(report) if f.status != "normal" and f.organ}


def test_report_mentions_exactly_the_truth_lesions_less_the_omitted_share(scan):
    ct, labels = scan
    made_all = _studies(scan, seeds=range(8), config=ImplantConfig(finding_prob=0.7, report_omission=0.3))
    n_findings = n_omitted = 0
    for made in made_all:
        shown = {(f.organs[0], f.kind) for f in made.findings}
        # the truth table's lesions are exactly the focal findings, each at the size of its largest lesion
        assert set(zip(made.lesions["organ"], made.lesions["kind"])) == {s for s in shown if s[1] in LESION_KINDS}
        for f in made.findings:
            if f.kind in LESION_KINDS:
                mine = made.lesions[(made.lesions["organ"] == f.organs[0]) & (made.lesions["kind"] == f.kind)]
                assert f.size_mm == round(mine["diameter_mm"].max(), 0)
        omitted = {(f.organs[0], f.kind) for f in made.omitted}
        assert omitted <= shown
        told = shown - omitted
        # read by the report rules, as the evaluation reads reports: every told finding under its own name, and no
        # organ called abnormal that the truth does not name (a told mass may also be read as a "lesion")
        said = _said(made.report)
        assert {(o, vocab_canonical(k)) for o, k in told} <= said, made.report
        assert {o for o, _ in said} == {o for o, _ in told}, made.report
        gold = made.organs.set_index("organ")
        for organ, kind in shown:
            assert kind in gold.at[organ, "kinds"] and gold.at[organ, "image_status"] == "abnormal"
            assert (kind in gold.at[organ, "omitted_kinds"]) == ((organ, kind) in omitted)
        n_findings += len(shown)
        n_omitted += len(omitted)
    assert n_findings >= 15
    assert 0.1 <= n_omitted / n_findings <= 0.55  # 0.3 asked; a binomial share of a few dozen findings


def vocab_canonical(kind: str) -> str:
    from pipeline.synthetic.findings import CATALOG

    return CATALOG[kind].canonical


def test_config_refuses_what_it_cannot_paint():
    with pytest.raises(ValueError, match="cannot be implanted"):
        ImplantConfig(kinds=("hepatomegaly",))
    with pytest.raises(ValueError, match="report_omission"):
        ImplantConfig(report_omission=1.0)
    ct, labels = phantom()
    with pytest.raises(ValueError, match="not on one grid"):
        implant_study(ct, Volume(np.asarray(labels.array)[:-1], labels.affine), 0)
    assert set(IMPLANTABLE) == set(LESION_KINDS) | {"steatosis"}


def test_steatosis_lowers_the_liver_by_the_drawn_shift():
    ct, labels = phantom()
    made = next(m for m in _studies((ct, labels), seeds=range(20), config=ImplantConfig(kinds=("steatosis",), finding_prob=0.8))
                if m.findings)
    liver = np.asarray(labels.array) == INDEX["liver"]
    deep = ~_within(~liver, 3 * max(ct.spacing), ct.spacing)
    shift = made.volume.array[deep].astype(float).mean() - ct.array[deep].astype(float).mean()
    assert shift == pytest.approx(made.params["steatosis_shift_hu"], abs=0.6)
    assert made.organs.set_index("organ").at["liver", "abnormalities"] == ["steatosis"]


def test_slice_axis_follows_the_patient_axis():
    assert slice_axis(np.diag([-0.8, -0.8, 5.0, 1.0])) == 2
    sagittal = np.array([[0, 0, 1.0, 0], [1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])
    assert slice_axis(sagittal) == 1


# --- the command line and the own-archive route ------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.synthetic.implant", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def check_set(out: Path, n: int, ct: Volume) -> pd.DataFrame:
    """The files a set holds, on the scan's grid and dtype, and its manifests in the own-archive columns."""
    scans = pd.read_csv(out / "scans.csv")
    assert list(scans.columns) == ["scan_path", "patient_key", "study_key", "report_key"] and len(scans) == n
    assert list(pd.read_csv(out / "reports.csv").columns) == ["AccessionNumber", "ReportText"]
    masks = pd.read_csv(out / "masks.csv")
    assert list(masks.columns) == ["study_key", "mask_path", "format"] and set(masks["study_key"]) == set(scans["study_key"])
    assert scans["patient_key"].nunique() == 1  # one anatomy: one patient
    for row in scans.itertuples():
        img = nib.load(out / row.scan_path)
        assert img.shape == ct.shape and np.allclose(img.affine, ct.affine, atol=1e-4)
        assert img.get_data_dtype() == ct.array.dtype
        lesion = nib.load(out / "lesions" / f"{row.study_key}.nii.gz")
        assert lesion.shape == ct.shape and (out / "reports" / f"{row.study_key}.txt").is_file()
    lesions = pd.read_parquet(out / "truth" / "lesions.parquet")
    assert list(lesions.columns) == LESION_COLUMNS
    return scans


def test_cli_on_the_shared_ct_writes_a_set_and_skips_it_when_unchanged(realdata, tmp_path):
    ts = realdata / "totalsegmentator"
    out = tmp_path / "qa"
    args = ["--volume", str(ts / "example_ct_sm.nii.gz"), "--mask", str(ts / "example_seg.nii.gz"), "--n", "3",
            "--out", str(out), "--seed", "4", "--montage", str(tmp_path / "qa.png")]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert "study 3/3" in done.stderr and "3 studies written" in done.stderr
    assert (tmp_path / "qa.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_set(out, 3, load_nifti(ts / "example_ct_sm.nii.gz"))
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run_cli(*args[:-2])
    assert again.returncode == 0 and again.stderr.count("unchanged, skipped") == 3
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
    other = run_cli(*args[:-4], "--out", str(out), "--seed", "5")  # another seed: every study is made again
    assert other.returncode == 0 and "3 studies written" in other.stderr


def test_cli_explains_bad_input(tmp_path):
    done = run_cli("--volume", str(tmp_path / "nope.nii.gz"), "--mask", str(tmp_path / "nope.nii.gz"), "--out", str(tmp_path))
    assert done.returncode == 2 and "does not exist" in done.stderr
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("not a CT")
    done = run_cli("--volume", str(not_an_image), "--mask", str(not_an_image), "--out", str(tmp_path / "qa"))
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert not (tmp_path / "qa" / "scans.csv").exists()
    done = run_cli("--help")
    assert done.returncode == 0 and "--montage" in done.stdout and "own-archive" in done.stdout


def test_cli_on_a_ct_of_another_size_spacing_and_dtype(realdata, tmp_path):
    """The shared CT resampled to 2 x 2.5 x 4 mm on a flipped (LPS-like) float32 grid, its mask left on the original
    grid: the set comes out on the new scan's own grid and dtype, with the organs where the mask puts them."""
    from pipeline.resample import Grid, resample_to_grid

    ts = realdata / "totalsegmentator"
    ct = load_nifti(ts / "example_ct_sm.nii.gz")
    affine = np.diag([-2.0, -2.5, 4.0, 1.0])
    corner = ct.world(np.array([ct.shape[0] - 1, ct.shape[1] - 1, 0]))[0]  # right-most, front-most, lowest voxel
    affine[:3, 3] = corner + [-6.0, -10.0, 6.0]
    shape = (170, 110, 18)
    array = resample_to_grid(np.asarray(ct.array, np.float32), ct.affine, Grid.make(np.array(shape), affine), fill=-1024.0).numpy().astype(np.float32)
    scan = save_nifti(Volume(array, affine), tmp_path / "other.nii.gz", dtype=np.float32)
    out = tmp_path / "qa"
    done = run_cli("--volume", str(scan), "--mask", str(ts / "example_seg.nii.gz"), "--n", "2", "--out", str(out),
                   "--finding-prob", "1.0")
    assert done.returncode == 0, done.stderr
    check_set(out, 2, load_nifti(scan))
    lesions = pd.read_parquet(out / "truth" / "lesions.parquet")
    assert len(lesions) and (lesions["voxels"] > 0).all()
    labels = np.asarray(load_nifti(out / "labels" / "other.nii.gz").array)
    assert labels.shape == shape and (labels == INDEX["liver"]).sum() > 1000


def test_cli_on_the_shared_dicom_series(realdata, tmp_path):
    """The 20-slice real DICOM series (512 x 512, 0.98 mm pixels, JPEG 2000) with its LAS-oriented segmentation."""
    ts = realdata / "totalsegmentator"
    out = tmp_path / "qa"
    done = run_cli("--dicom", str(ts / "example_ct_dicom"), "--mask", str(ts / "example_seg_dicom.nii.gz"), "--n", "2",
                   "--out", str(out), "--kinds", "liver_mass,hepatic_cyst", "--finding-prob", "1.0")
    assert done.returncode == 0, done.stderr
    from pipeline.dicom.load import load_dicom_series

    check_set(out, 2, load_dicom_series(ts / "example_ct_dicom"))
    lesions = pd.read_parquet(out / "truth" / "lesions.parquet")
    assert set(lesions["organ"]) == {"liver"} and len(lesions) >= 2


def test_own_archive_nifti_route_reads_the_set_as_it_is(realdata, tmp_path):
    """Ingest (the NIfTI manifest), the precomputed segmenter (the masks manifest) and the report reader (the reports
    CSV) take the written set with nothing rejected."""
    from pipeline.ingest import IngestConfig, ingest_archive
    from pipeline.segment import SegmenterConfig
    from pipeline.segment.batch import SegmentJob, segment_studies

    ts = realdata / "totalsegmentator"
    made = write_qa_set([Source("real", ts / "example_ct_sm.nii.gz", ts / "example_seg.nii.gz")], tmp_path / "qa", 2, seed=1,
                        config=ImplantConfig(finding_prob=0.8))
    root = tmp_path / "data"
    result = ingest_archive(IngestConfig(data_root=root, dicom_root=tmp_path / "no_dicom", nifti_manifest=made.nifti_manifest,
                                         workers=1))
    assert result.rejected_studies.empty and len(result.ct_studies) == 2
    assert result.ct_studies["patient_id"].nunique() == 1
    jobs = [SegmentJob(r.study_id, r.volume_path, r.series_id) for r in result.ct_studies.itertuples()]
    seg = segment_studies(jobs, root / "masks", SegmenterConfig(manifest=str(made.masks_manifest)), workers=1, data_root=root)
    assert seg.rejected.empty and seg.organ_stats["study_id"].nunique() == 2 and len(seg.organ_stats) > 20
    reports = pd.read_csv(made.reports_csv)
    told = {k for s in made.studies.itertuples() for k in s.findings if k not in s.omitted_findings}
    said = {a for text in reports["ReportText"] for _, a in _said(text)}
    assert {vocab_canonical(k) for k in told} <= said


@pytest.mark.slow
def test_own_archive_config_runs_the_set_until_pairs(realdata, tmp_path):
    """docs/OWN_ARCHIVE.md's NIfTI config, pointed at a written set, through the Dagster CLI up to the pair tables."""
    from test_own_archive import readme_config, run_until_pairs

    from pipeline.tables import read_table

    ts = realdata / "totalsegmentator"
    made = write_qa_set([Source("real", ts / "example_ct_sm.nii.gz", ts / "example_seg.nii.gz")], tmp_path / "qa", 2, seed=2,
                        config=ImplantConfig(finding_prob=0.8))
    config = readme_config("my_nifti_archive.yaml", tmp_path)
    config["resources"]["source"]["config"].update(nifti_manifest=str(made.nifti_manifest), reports_csv=str(made.reports_csv),
                                                   masks_manifest=str(made.masks_manifest))
    done = run_until_pairs(config, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    root = tmp_path / "data"
    assert len(read_table("ct_studies", root)) == 2 and read_table("rejected_studies", root).empty
    findings = read_table("report_findings", root)
    told = {vocab_canonical(k) for s in made.studies.itertuples() for k in s.findings if k not in s.omitted_findings}
    assert told <= set(findings["abnormality"].dropna())
    assert len(read_table("grounded_pairs", root)) > 0


# --- scoring trained models on implanted studies ------------------------------------------------------------------


@pytest.mark.usefixtures("one_torch_thread")
def test_implanted_studies_go_through_the_test_split_evaluation(realdata, tiny_model, tmp_path):
    """Two implanted studies of the shared CT as the test split, others as train and validation: the organ rows carry the
    image truth, the crops the checkpoint's own preprocessing, and AD, TD, TS and the no-learning rows are scored."""
    from model.checkpoint import load_model, preprocessing_of
    from model.eval import EvalConfig
    from model.eval.baseline import no_learning
    from model.eval.data import merge_eval_data
    from model.eval.implanted import REAL_SPLIT, implanted_eval_data, score_implanted, with_implanted
    from model.eval.segmentation import SegBudget

    ts = realdata / "totalsegmentator"
    pre = preprocessing_of(tiny_model)
    parts, features = {}, []
    for split, seed in (("train", 1), ("val", 2), (REAL_SPLIT, 3)):
        made = write_qa_set([Source(split, ts / "example_ct_sm.nii.gz", ts / "example_seg.nii.gz")], tmp_path / split, 2,
                            seed=seed, config=ImplantConfig(finding_prob=0.9))
        parts[split], f = implanted_eval_data([made.out_dir], pre, tmp_path / "canonical", split=split, workers=1)
        features.append(f)
        gold = made.organs.set_index(["study_uid", "organ"])
        for row in parts[split].organs.itertuples():  # the image truth, not the report
            assert row.status == gold.at[(row.study_id, row.organ), "image_status"]
            assert sorted(row.abnormalities) == sorted(gold.at[(row.study_id, row.organ), "abnormalities"])
    real = parts[REAL_SPLIT]
    assert real.crops.volume.shape[1:] == (pre.crop_voxels,) * 3 and real.organs["patient_id"].nunique() == 2
    assert (real.organs["lesion_mm"] > 0).any()  # painted tumors reach the canonical grid's crops
    data = with_implanted(merge_eval_data([parts["train"], parts["val"]]), real)
    assert set(data.organs["split"]) == {"train", "val", REAL_SPLIT}
    model = load_model(tiny_model)
    config = EvalConfig(protocols=("ad", "td", "ts"), n_bootstrap=10, ts_budget=SegBudget(steps=1, repeats=1))
    result = score_implanted({"grounded": model, "clip": model}, data, config)
    assert result.config.test_split == REAL_SPLIT and result.tumor_organs
    grounded = result.methods["grounded"]
    assert grounded.tumor_detection is not None and grounded.tumor_segmentation is not None
    assert set(grounded.metrics(n_boot=10)) >= {"td_auc", "ts_dsc"}
    baseline = no_learning(data, pd.concat(features), result, "image")
    assert baseline.tumor_detection is not None
    with pytest.raises(ValueError, match="no organ row"):
        score_implanted({"grounded": model}, merge_eval_data([parts["train"], parts["val"]]), config)


def test_source_resource_kind_real_anatomy(realdata, tmp_path):
    """``kind: real_anatomy`` paints a folder of real CTs with masks into <data>/source, and ingest reads it."""
    import dagster as dg

    from assets.ingest import ingest, source_archive
    from assets.io import ParquetIOManager
    from assets.partitions import SHARD_KEYS
    from assets.resources import ArchiveSource, DataRoot
    from pipeline.tables import read_table

    folder = tmp_path / "real_cts"
    folder.mkdir()
    ts = realdata / "totalsegmentator"
    (folder / "abdomen.nii.gz").symlink_to(ts / "example_ct_sm.nii.gz")
    (folder / "abdomen_seg.nii.gz").symlink_to(ts / "example_seg.nii.gz")
    (folder / "lonely.nii.gz").symlink_to(ts / "example_ct_sm.nii.gz")  # no mask beside it: skipped
    source = ArchiveSource(kind="real_anatomy", anatomy_dir=str(folder), n_studies=2, seed=3)
    resources = {"data": DataRoot(path=str(tmp_path / "data")), "source": source, "table_io": ParquetIOManager(path=str(tmp_path / "data"))}
    result = dg.materialize([source_archive], resources=resources)
    meta = result.asset_materializations_for_node("source_archive")[0].metadata
    assert meta["scans"].value == 1 and meta["studies"].value == 2
    paths = source.paths(tmp_path / "data")
    assert paths.nifti_manifest.is_file() and (paths.truth_dir / "organ_gold.parquet").is_file() and paths.dicom_dir is None
    shards = {"dagster/asset_partition_range_start": SHARD_KEYS[0], "dagster/asset_partition_range_end": SHARD_KEYS[-1]}
    assert dg.materialize([ingest], resources=resources, tags=shards, run_config={"ops": {"ingest": {"config": {"workers": 1}}}}).success
    assert len(read_table("ct_studies", tmp_path / "data")) == 2
    with pytest.raises(ValueError, match="anatomy_dir"):
        ArchiveSource(kind="real_anatomy").paths(tmp_path)
    # the config docs/OWN_ARCHIVE.md shows is one this resource takes
    from test_own_archive import readme_config

    shown = readme_config("my_real_anatomy.yaml", tmp_path)["resources"]["source"]["config"]
    assert ArchiveSource(**shown).paths(tmp_path / "data").nifti_manifest == tmp_path / "data" / "source" / "scans.csv"
