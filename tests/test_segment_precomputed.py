"""The precomputed segmenter: every mask format lands on the canonical grid, whatever its orientation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from pipeline import vocab
from pipeline.ids import pseudonym
from pipeline.segment import MaskNotFoundError, SegmenterConfig, manifest_problems, read_manifest, segment
from pipeline.volume import Volume, save_nifti

V2 = {n: i for i, n in vocab.class_map("total").items()}
V1 = {n: i for i, n in vocab.class_map("total_v1").items()}
V1_FROM_V2 = np.zeros(256, np.uint8)  # v2 -> v1 for the organs used here, only to write a v1 file
for _name in ("liver", "spleen", "kidney_left"):
    V1_FROM_V2[V2[_name]] = V1[_name]


def _canonical() -> tuple[Volume, Volume]:
    """A small RAS CT grid and a label map with three organs on it."""
    affine = np.diag([1.5, 1.5, 2.5, 1.0])
    affine[:3, 3] = [-20.0, -30.0, 100.0]
    labels = np.zeros((24, 20, 12), np.uint8)
    labels[2:10, 3:12, 1:6] = V2["liver"]
    labels[14:20, 5:15, 4:11] = V2["spleen"]
    labels[10:13, 14:18, 0:3] = V2["kidney_left"]
    ct = Volume(np.full(labels.shape, 40, np.int16), affine)
    return ct, Volume(labels, affine)


def _reoriented(vol: Volume, codes: str) -> Volume:
    t = ornt_transform(axcodes2ornt(vol.orientation), axcodes2ornt(tuple(codes)))
    return Volume(apply_orientation(vol.array, t), vol.affine @ inv_ornt_aff(t, vol.shape))


@pytest.fixture()
def mask_source(tmp_path):
    ct, labels = _canonical()
    masks = tmp_path / "source" / "masks"
    las = _reoriented(labels, "LAS")
    save_nifti(las, masks / "multi" / "a.nii.gz")
    v1 = Volume(np.asarray(V1_FROM_V2)[las.array], las.affine)
    save_nifti(v1, masks / "multi_v1" / "c.nii.gz")
    psl = _reoriented(labels, "PSL")
    for name in ("liver", "spleen", "kidney_left"):
        save_nifti(Volume((psl.array == V2[name]).astype(np.uint8), psl.affine), masks / "folder" / "b" / f"{name}.nii.gz")
    save_nifti(Volume(np.zeros(psl.shape, np.uint8), psl.affine), masks / "folder" / "b" / "brain.nii.gz")
    pd.DataFrame({
        "StudyInstanceUID": ["1.2.3.1", "1.2.3.2", "1.2.3.3"],
        "mask_path": ["multi/a.nii.gz", "folder/b", "multi_v1/c.nii.gz"],
        "format": ["nifti_multilabel", "nifti_folder", "nifti_multilabel"],
    }).to_csv(masks / "manifest.csv", index=False)
    return tmp_path, ct, labels


def test_manifest_uses_pseudonyms_only(mask_source):
    root, _, _ = mask_source
    records = read_manifest(root / "source" / "masks" / "manifest.csv")
    assert set(records) == {pseudonym("study", f"1.2.3.{i}") for i in (1, 2, 3)}
    assert all(r.key.startswith("stu-") and "1.2.3" not in r.key for r in records.values())
    assert [r.line for r in records.values()] == [2, 3, 4]


def test_manifest_names_a_study_by_series_study_key_or_study_id(mask_source):
    root, ct, labels = mask_source
    manifest = root / "source" / "masks" / "by_key.csv"
    pd.DataFrame({
        "SeriesInstanceUID": ["1.2.9.1", "", "", "", "", ""],
        "StudyInstanceUID": ["", "", "", "", "", "1.2.3.1"],
        "study_key": ["", "scan-7", "", "", "scan-7", "anon-folder"],
        "study_id": ["", "", pseudonym("study", "anon-folder"), "", "", ""],
        "mask_path": ["multi/a.nii.gz"] * 6,
        "format": ["nifti_multilabel"] * 6,
    }).to_csv(manifest, index=False)
    config = SegmenterConfig(manifest=str(manifest))
    by_series = segment(pseudonym("study", "1.2.3.1"), ct, config, series_id=pseudonym("series", "1.2.9.1"))
    assert np.array_equal(by_series.array, labels.array)
    for study in ("scan-7", "anon-folder"):
        assert np.array_equal(segment(pseudonym("study", study), ct, config).array, labels.array)

    known = {pseudonym("study", s) for s in ("scan-7", "anon-folder")}
    problems = manifest_problems(manifest, known, {pseudonym("series", "1.2.9.1")})
    # line 5 names nothing, line 6 repeats line 3's study_key, line 7's StudyInstanceUID comes before its
    # study_key and matches nothing; each names the file and the line, and no identifier
    assert [p.line for p in problems] == [5, 6, 7]
    assert "names no study" in problems[0].detail and "same study as line 3" in problems[1].detail
    assert "study key matches no ingested study" in problems[2].detail
    assert all(str(manifest) in p.detail and "scan-7" not in p.detail and "1.2.3" not in p.detail for p in problems)
    problems = manifest_problems(manifest, known, set())
    assert [p.line for p in problems] == [2, 5, 6, 7] and "SeriesInstanceUID matches no ingested study" in problems[0].detail


def test_manifest_without_a_key_column_is_refused(tmp_path):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"mask_path": ["a.nii.gz"], "format": ["nifti_multilabel"]}).to_csv(manifest, index=False)
    with pytest.raises(ValueError, match="one of SeriesInstanceUID, StudyInstanceUID, study_key, study_id"):
        read_manifest(manifest)


def test_multilabel_and_folder_land_identically(mask_source, monkeypatch):
    root, ct, labels = mask_source
    monkeypatch.setenv("CTGLIP_DATA", str(root))  # default manifest location under the data root
    multi = segment(pseudonym("study", "1.2.3.1"), ct, SegmenterConfig())
    folder = segment(pseudonym("study", "1.2.3.2"), ct, SegmenterConfig())
    assert multi.array.dtype == np.uint8 and multi.shape == ct.shape
    assert np.allclose(multi.affine, ct.affine)
    assert np.array_equal(multi.array, labels.array)
    assert np.array_equal(folder.array, labels.array)


def test_v1_multilabel_is_relabelled(mask_source):
    root, ct, labels = mask_source
    config = SegmenterConfig(manifest=str(root / "source" / "masks" / "manifest.csv"), label_space="v1")
    assert np.array_equal(segment(pseudonym("study", "1.2.3.3"), ct, config).array, labels.array)


def test_unknown_study_raises(mask_source):
    root, ct, _ = mask_source
    config = SegmenterConfig(manifest=str(root / "source" / "masks" / "manifest.csv"))
    with pytest.raises(MaskNotFoundError, match="SeriesInstanceUID, its StudyInstanceUID, or study_id stu-"):
        segment(pseudonym("study", "9.9.9"), ct, config)
