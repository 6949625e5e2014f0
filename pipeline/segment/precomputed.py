"""The ``precomputed`` segmenter: masks that arrive with the studies, put on the canonical grid.

``source/masks/manifest.csv`` lists ``mask_path`` (relative to the manifest), ``format``
(``nifti_multilabel``: one label map, v2 or v1 indices; ``nifti_folder``: TotalSegmentator's ``<organ>.nii.gz``
per class; ``dicom_seg``) and, to name the study, at least one of the columns ``SeriesInstanceUID``,
``StudyInstanceUID``, ``study_key`` (a NIfTI source's manifest key) or ``study_id`` (the ``stu-…`` id ingest
reports, for studies whose exported UIDs are blank). A row uses the first of these it fills, in that order. UIDs
become pseudonyms on read; nothing else leaves this module. A row that names no study is a problem of that
row (``manifest_problems``), never a failure of every study.
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

MANIFEST_COLUMNS = ("mask_path", "format")
# The first of these a row fills names its study: a series UID, a study UID (or, for a NIfTI source, the
# manifest's study_key), or the pseudonymous study_id ingest reported.
KEY_COLUMNS = ("SeriesInstanceUID", "StudyInstanceUID", "study_key", "study_id")
_KEY_KINDS = ("series", "study", "study", None)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class MaskNotFoundError(KeyError):
    """The manifest lists no mask for a study."""


@dataclass(frozen=True)
class MaskRecord:
    key: str  # the study's pseudonym (stu-…) or its series' (ser-…)
    path: Path
    format: str
    line: int  # line of the manifest file (the header is line 1)


@dataclass(frozen=True)
class ManifestProblem:
    line: int
    detail: str  # names the file and the line, never an identifier


@dataclass(frozen=True)
class Manifest:
    records: dict[str, MaskRecord]
    problems: tuple[ManifestProblem, ...]


def manifest_path(config: SegmenterConfig) -> Path:
    if config.manifest is not None:
        return Path(config.manifest)
    from pipeline.tables import data_root

    return data_root() / "source" / "masks" / "manifest.csv"


def read_manifest(path: str | os.PathLike) -> dict[str, MaskRecord]:
    """Study or series pseudonym -> mask record, from the manifest at ``path`` (cached until the file changes).
    Rows that name no study are left out; ``manifest_problems`` says which and why."""
    return dict(_load_manifest(path).records)


def manifest_problems(path: str | os.PathLike, study_ids: set[str], series_ids: set[str]) -> list[ManifestProblem]:
    """The manifest's bad rows: no key, a duplicate key, or a key that matches none of the ingested
    ``study_ids`` / ``series_ids`` (pseudonyms)."""
    manifest = _load_manifest(path)
    problems = list(manifest.problems)
    for key, record in manifest.records.items():
        if key not in study_ids and key not in series_ids:
            column = "SeriesInstanceUID" if key.startswith("ser-") else "study key"
            problems.append(
                ManifestProblem(
                    record.line, f"{Path(path).resolve()}, line {record.line}: its {column} matches no ingested study"
                )
            )
    return sorted(problems, key=lambda p: p.line)


def _load_manifest(path: str | os.PathLike) -> Manifest:
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(
            f"mask manifest not found: {path} (expected columns {', '.join(MANIFEST_COLUMNS)} "
            f"and one of {', '.join(KEY_COLUMNS)})"
        )
    return _read_manifest(path, path.stat().st_mtime_ns, pseudonym_key())


def _row_key(row: dict) -> str | None:
    for column, kind in zip(KEY_COLUMNS, _KEY_KINDS):
        value = str(row.get(column) or "").strip()
        if not value:
            continue
        if kind is None:  # already a pseudonym
            return value if value.startswith("stu-") else None
        return pseudonym(kind, value)
    return None


@lru_cache(maxsize=8)
def _read_manifest(path: Path, _mtime: int, _key: bytes) -> Manifest:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing or not any(c in df.columns for c in KEY_COLUMNS):
        raise ValueError(
            f"{path}: missing column(s) {missing or ['one of ' + ', '.join(KEY_COLUMNS)]}; "
            f"expected {list(MANIFEST_COLUMNS)} and one of {list(KEY_COLUMNS)}"
        )
    out: dict[str, MaskRecord] = {}
    problems: list[ManifestProblem] = []
    for line, row in enumerate(df.to_dict("records"), start=2):
        where = f"{path}, line {line}"
        fmt = row["format"].strip()
        if fmt not in MASK_FORMATS:
            raise ValueError(f"{where}: unknown mask format {fmt!r}; expected one of {MASK_FORMATS}")
        key = _row_key(row)
        if key is None:
            problems.append(
                ManifestProblem(
                    line,
                    f"{where}: names no study (fill {', '.join(c for c in KEY_COLUMNS if c in df.columns)}; "
                    "a study_id starts with 'stu-')",
                )
            )
        elif key in out:
            problems.append(
                ManifestProblem(line, f"{where}: names the same study as line {out[key].line}; the first is used")
            )
        else:
            out[key] = MaskRecord(key, (path.parent / row["mask_path"].strip()).resolve(), fmt, line)
    return Manifest(out, tuple(problems))


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
    assert ref is not None  # files is not empty
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
        raise FileNotFoundError(f"mask of {record.key} (manifest line {record.line}) not found: {record.path}")
    if record.format == "nifti_multilabel":
        return load_multilabel(record.path, config.label_space)
    if record.format == "nifti_folder":
        return load_folder(record.path)
    return load_dicom_seg(record.path, config.seg_labels)


def segment_precomputed(study_id: str, volume: Volume, config: SegmenterConfig, series_id: str = "") -> Volume:
    """The study's precomputed mask on ``volume``'s grid (uint8, v2 indices), found by its series or study."""
    path = manifest_path(config)
    records = read_manifest(path)
    record = records.get(series_id) if series_id else None
    record = record or records.get(study_id)
    if record is None:
        raise MaskNotFoundError(
            f"{study_id}: no mask listed in {path} (name the study in a row by its SeriesInstanceUID, its "
            f"StudyInstanceUID, or study_id {study_id})"
        )
    mask = load_mask(record, config)
    out = resample_nearest(mask, volume.shape, volume.affine)
    if np.any(mask.array) and not np.any(out.array):
        log.warning("%s: the %s mask does not overlap the study's field of view", study_id, record.format)
    return Volume(
        out.array.astype(np.uint8, copy=False), out.affine, {"study_id": study_id, "mask_format": record.format}
    )
