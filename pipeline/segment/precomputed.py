"""The ``precomputed`` segmenter: masks that arrive with the studies, put on the canonical grid.

``source/masks/manifest.csv`` lists ``StudyInstanceUID``, ``mask_path`` (relative to the manifest) and
``format``: ``nifti_multilabel`` (one label map, v2 or v1 indices), ``nifti_folder`` (TotalSegmentator's
``<organ>.nii.gz`` per class) or ``dicom_seg``. UIDs become ``study`` pseudonyms on read; nothing else
leaves this module.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.ids import pseudonym, pseudonym_key
from pipeline.segment.config import MASK_FORMATS, SegmenterConfig
from pipeline.segment.grid import resample_nearest
from pipeline.segment.labels import match_organ, relabel_v1_to_v2, v2_index
from pipeline.volume import Volume, load_nifti

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("StudyInstanceUID", "mask_path", "format")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class MaskNotFoundError(KeyError):
    """The manifest lists no mask for a study."""


@dataclass(frozen=True)
class MaskRecord:
    study_id: str
    path: Path
    format: str


def manifest_path(config: SegmenterConfig) -> Path:
    if config.manifest is not None:
        return Path(config.manifest)
    from pipeline.tables import data_root

    return data_root() / "source" / "masks" / "manifest.csv"


def read_manifest(path: str | os.PathLike) -> dict[str, MaskRecord]:
    """study_id -> mask record, from the manifest at ``path`` (cached until the file changes)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"mask manifest not found: {path} (expected columns {', '.join(MANIFEST_COLUMNS)})")
    return dict(_read_manifest(path, path.stat().st_mtime_ns, pseudonym_key()))


@lru_cache(maxsize=8)
def _read_manifest(path: Path, _mtime: int, _key: bytes) -> tuple[tuple[str, MaskRecord], ...]:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(MANIFEST_COLUMNS)}")
    out: dict[str, MaskRecord] = {}
    for row in df.itertuples(index=False):
        fmt = row.format.strip()
        if fmt not in MASK_FORMATS:
            raise ValueError(f"{path}: unknown mask format {fmt!r}; expected one of {MASK_FORMATS}")
        study_id = pseudonym("study", row.StudyInstanceUID)
        out[study_id] = MaskRecord(study_id, (path.parent / row.mask_path.strip()).resolve(), fmt)
    return tuple(out.items())


def _checked_v2(array: np.ndarray, what: str) -> np.ndarray:
    n = max(v2_index().values())
    if array.size and (array.min() < 0 or array.max() > n):
        bad = np.unique(array[(array < 0) | (array > n)])
        log.warning("%s: label values %s are outside the v2 vocabulary (1..%d); set to 0", what, bad[:10].tolist(), n)
        array = np.where((array < 0) | (array > n), 0, array)
    return array.astype(np.uint8)


def load_multilabel(path: Path, label_space: str = "v2") -> Volume:
    vol = load_nifti(path)
    array = np.rint(np.asarray(vol.array)).astype(np.int64) if vol.array.dtype.kind == "f" else vol.array
    array = relabel_v1_to_v2(array) if label_space == "v1" else _checked_v2(np.asarray(array), str(path))
    return Volume(array.astype(np.uint8), vol.affine, {"mask_format": "nifti_multilabel"})


def _organ_files(folder: Path) -> list[tuple[int, Path]]:
    files = []
    for f in sorted(folder.iterdir()):
        if not f.name.endswith((".nii", ".nii.gz")):
            continue
        name = f.name.removesuffix(".gz").removesuffix(".nii")
        organ = match_organ(name)
        if organ is None:
            log.warning("%s: %r is not a vocabulary class; skipped", folder, f.name)
            continue
        files.append((v2_index()[organ], f))
    return sorted(files)


def load_folder(folder: Path) -> Volume:
    """A folder of ``<organ>.nii.gz`` binary masks as one v2 label map (on the first mask's grid)."""
    files = _organ_files(folder)
    if not files:
        raise FileNotFoundError(f"no <organ>.nii.gz masks of vocabulary classes in {folder}")
    ref = None
    for index, f in files:
        m = load_nifti(f)
        if ref is None:
            ref = Volume(np.zeros(m.shape, np.uint8), m.affine, {"mask_format": "nifti_folder"})
        if m.shape != ref.shape or not np.allclose(m.affine, ref.affine, atol=1e-4):
            m = resample_nearest(Volume(np.asarray(m.array) > 0, m.affine), ref.shape, ref.affine)
        ref.array[np.asarray(m.array) > 0] = index
    return ref


def load_dicom_seg(path: Path, extra_labels: tuple[tuple[str, str], ...] = ()) -> Volume:
    """A DICOM-SEG as a v2 label map on its own frames' grid; segments named outside the vocabulary are dropped.

    Segments are matched by SegmentLabel, then by the SegmentedPropertyType code meaning. Where
    segments overlap, the higher segment number wins (highdicom's combination order).
    """
    import highdicom as hd

    seg = hd.seg.segread(str(path))
    extra = {k.strip().lower(): v for k, v in extra_labels}
    lut = np.zeros(max(int(s.SegmentNumber) for s in seg.SegmentSequence) + 1, np.uint8)
    for s in seg.SegmentSequence:
        candidates = [str(getattr(s, "SegmentLabel", ""))]
        candidates += [str(c.CodeMeaning) for c in getattr(s, "SegmentedPropertyTypeCodeSequence", [])]
        organ = next((extra[c.lower()] for c in candidates if c.lower() in extra), None)
        organ = organ or next((o for o in map(match_organ, candidates) if o is not None), None)
        if organ is None:
            log.warning("%s: segment %s %r matches no vocabulary class; dropped", path, s.SegmentNumber, candidates)
            continue
        lut[int(s.SegmentNumber)] = v2_index()[match_organ(organ) or organ]
    hv = seg.get_volume(combine_segments=True, skip_overlap_checks=True, dtype=np.uint16)
    return Volume(lut[np.asarray(hv.array)], LPS_TO_RAS @ np.asarray(hv.affine, float), {"mask_format": "dicom_seg"})


def load_mask(record: MaskRecord, config: SegmenterConfig) -> Volume:
    """The mask of ``record`` on its own grid, in v2 indices."""
    if not record.path.exists():
        raise FileNotFoundError(f"mask of {record.study_id} not found: {record.path}")
    if record.format == "nifti_multilabel":
        return load_multilabel(record.path, config.label_space)
    if record.format == "nifti_folder":
        return load_folder(record.path)
    return load_dicom_seg(record.path, config.seg_labels)


def segment_precomputed(study_id: str, volume: Volume, config: SegmenterConfig) -> Volume:
    """The study's precomputed mask on ``volume``'s grid (uint8, v2 indices)."""
    records = read_manifest(manifest_path(config))
    if study_id not in records:
        raise MaskNotFoundError(f"{study_id}: no mask listed in {manifest_path(config)}")
    record = records[study_id]
    mask = load_mask(record, config)
    out = resample_nearest(mask, volume.shape, volume.affine)
    if np.any(mask.array) and not np.any(out.array):
        log.warning("%s: the %s mask does not overlap the study's field of view", study_id, record.format)
    return Volume(out.array.astype(np.uint8, copy=False), out.affine, {"study_id": study_id, "mask_format": record.format})
