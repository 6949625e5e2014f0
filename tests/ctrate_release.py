"""A small CT-RATE release written the way the real one is laid out (synthetic content), for the CT-RATE tests:
``write_release(root)`` writes dataset/{train,valid}/<patient>/<scan>/<volume>.nii.gz and the four CSV kinds."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from pipeline.vocab import CTRATE_LABELS

SHAPE = (40, 40, 24)
XY, Z = 0.75, 1.5
METADATA_COLUMNS = [
    "VolumeName", "Manufacturer", "SeriesDescription", "ManufacturerModelName", "PatientSex", "PatientAge",
    "ReconstructionDiameter", "RescaleIntercept", "RescaleSlope", "RescaleType", "ImageOrientationPatient",
    "ImagePositionPatient", "XYSpacing", "ZSpacing", "Rows", "Columns", "NumberofSlices",
]  # fmt: skip
REPORT_COLUMNS = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]


def phantom_hu(n_slices: int = SHAPE[2], lung: int = -850) -> np.ndarray:
    """Air around an elliptic body of soft tissue (40 HU) holding two lungs (``lung`` HU), int16 HU."""
    i, j = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    body = ((i - 20) / 16) ** 2 + ((j - 20) / 12) ** 2 <= 1
    lungs = (((i - 13) / 5) ** 2 + ((j - 20) / 6) ** 2 <= 1) | (((i - 27) / 5) ** 2 + ((j - 20) / 6) ** 2 <= 1)
    plane = np.where(lungs, lung, np.where(body, 40, -1000)).astype(np.int16)
    return np.repeat(plane[:, :, None], n_slices, axis=2)


def ras_affine(xy: float = XY, z: float = Z) -> np.ndarray:
    return np.diag([xy, xy, z, 1.0])


def save(path: Path, array: np.ndarray, affine: np.ndarray | None, scaling: tuple[float, float] | None = None) -> None:
    """A NIfTI as the releases store them; ``affine=None`` writes no geometry at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array, affine)  # None: no qform/sform, unit voxels
    if scaling is not None:
        img.header.set_slope_inter(*scaling)
    nib.save(img, str(path))


def meta_row(name: str, xy: float = XY, z: float = Z, intercept: float = -1024.0) -> list:
    return [f"{name}.nii.gz", "SIEMENS", "THORAX 1.5", "SOMATOM", "F", "056Y", "380", intercept, 1, "HU",
            "[1, 0, 0, 0, 1, 0]", "[-150.0, -160.0, -300.0]", f"[{xy}, {xy}]", z, SHAPE[0], SHAPE[1], SHAPE[2]]


TRAIN = ["train_1_a_1", "train_1_a_2", "train_2_a_1", "train_3_a_1", "train_4_b_1"]  # train_5_a_1 is unreadable
# Cardiomegaly (label 2) on every labelled train volume; train_4_b_1 has no label row
TRAIN_LABELS = {n: [int(k == 2) for k in range(len(CTRATE_LABELS))] for n in TRAIN if n != "train_4_b_1"}
VALID_LABELS = {"valid_1_a_1": [0] * len(CTRATE_LABELS)}


def volume_path(root: Path, name: str) -> Path:
    split, patient, scan, _ = name.split("_")
    return root / "dataset" / split / f"{split}_{patient}" / f"{split}_{patient}_{scan}" / f"{name}.nii.gz"


def write_release(root: Path, train_labels: Mapping[str, Sequence[int]] = TRAIN_LABELS,
                  valid_labels: Mapping[str, Sequence[int]] = VALID_LABELS) -> Path:
    """The release under ``root``: the train volumes of ``TRAIN`` (each showing one of the rules of pipeline.ctrate),
    one valid volume per key of ``valid_labels`` (the k-th with lungs at -850 + 40 k HU, so they differ), and the
    label CSVs from the two mappings (volume name -> the 18 labels)."""
    ds = root / "dataset"
    hu = phantom_hu()

    def vol(name: str) -> Path:
        return volume_path(root, name)

    # v2: values stored in HU with a real header, while the metadata still lists intercept -1024
    save(vol("train_1_a_1"), hu, ras_affine())
    # a second reconstruction of the same scan: thicker slices, less coverage
    save(vol("train_1_a_2"), hu[:, :, :8], ras_affine(z=3.0))
    # first release: raw stored values (HU + 1024) and a blank header (an identity affine); the metadata carries
    # rescale and spacing
    save(vol("train_2_a_1"), (hu.astype(np.int32) + 1024).astype(np.int16), np.eye(4))
    # raw values with the rescale in the NIfTI header itself: applied by the reader, never again
    save(vol("train_3_a_1"), (hu.astype(np.int32) + 1024).astype(np.int16), ras_affine(), scaling=(1.0, -1024.0))
    # header spacing disagreeing with the metadata's
    save(vol("train_4_b_1"), hu, ras_affine(xy=0.8))
    valid = list(valid_labels)
    for k, name in enumerate(valid):
        save(vol(name), phantom_hu(lung=-850 + 40 * k), ras_affine())
    vol("train_5_a_1").parent.mkdir(parents=True)
    vol("train_5_a_1").write_bytes(b"\x1f\x8b truncated download")  # unreadable: a row with its problem, not a crash

    def csv(rel: str, columns: list[str], rows: list[list]) -> None:
        (ds / rel).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows, columns=columns).to_csv(ds / rel, index=False)

    csv("metadata/train_metadata.csv", METADATA_COLUMNS, [meta_row(n) for n in TRAIN])
    csv("metadata/validation_metadata.csv", METADATA_COLUMNS, [meta_row(n) for n in valid])
    reports = [[f"{n}.nii.gz", "Cough.", "Non-contrast chest CT.", f"Findings of {n[:-2]}. The heart is enlarged.",
                "Not given." if n.startswith("train_4") else "Cardiomegaly."] for n in TRAIN]
    csv("radiology_text_reports/train_reports.csv", REPORT_COLUMNS, reports)
    csv("radiology_text_reports/validation_reports.csv", REPORT_COLUMNS, [[f"{n}.nii.gz", "", "", "Normal.", "Normal."] for n in valid])
    write_labels(root, "train", train_labels)
    write_labels(root, "valid", valid_labels)
    return root


def write_labels(root: Path, split: str, labels: Mapping[str, Sequence[int]]) -> None:
    """The split's multi_abnormality_labels CSV (volume name -> the 18 labels), replacing one already there."""
    path = root / "dataset" / "multi_abnormality_labels" / f"{split}_predicted_labels.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [[f"{n}.nii.gz", *map(int, v)] for n, v in labels.items()]
    pd.DataFrame(rows, columns=["VolumeName", *CTRATE_LABELS]).to_csv(path, index=False)
