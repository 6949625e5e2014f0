"""Scan any folder layout of DICOM files with header-only reads, and group slices by study and series."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypeVar

import pydicom
from pydicom.errors import InvalidDicomError

log = logging.getLogger(__name__)

# Suffixes of files that are certainly not DICOM; everything else is tried.
_NOT_DICOM = {".txt", ".json", ".csv", ".md", ".nii", ".gz", ".nrrd", ".png", ".jpg", ".xml", ".html", ".py", ".zip"}
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
T = TypeVar("T")


def _floats(value, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _point(value) -> tuple[float, float, float] | None:
    """Three floats (a position), or None."""
    out = _floats(value, 3)
    return None if out is None else (out[0], out[1], out[2])


def _pair(value) -> tuple[float, float] | None:
    """Two floats (a pixel spacing), or None."""
    out = _floats(value, 2)
    return None if out is None else (out[0], out[1])


def _float(value, default: float | None = None) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _int(value, default: int | None = None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _str(value) -> str:
    return "" if value is None else str(value).strip()


def required(value: T | None, what: str) -> T:
    """A header field the checks before made sure of (``ValueError`` naming ``what`` where it is missing after all)."""
    if value is None:
        raise ValueError(f"{what} is missing")
    return value


@dataclass(frozen=True)
class SliceHeader:
    """What ingest needs from one DICOM file's header. Identifying fields stay in memory only."""

    path: str
    size: int
    mtime_ns: int
    study_uid: str
    series_uid: str
    sop_uid: str
    patient_id: str  # identifying: never written anywhere, only pseudonymized
    accession: str  # identifying: never written anywhere, only pseudonymized
    modality: str
    sop_class: str
    image_type: tuple[str, ...]
    series_number: int | None
    instance_number: int | None
    position: tuple[float, float, float] | None  # ImagePositionPatient, LPS mm
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (row cosines, column cosines)
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns) mm
    rows: int | None
    cols: int | None
    slice_thickness: float | None
    gantry_tilt: float
    slope: float
    intercept: float
    has_rescale: bool
    transfer_syntax: str
    bits_allocated: int | None
    bits_stored: int | None
    pixel_representation: int | None
    samples_per_pixel: int
    n_frames: int
    has_pixels: bool
    body_part: str = ""
    manufacturer: str = ""
    kvp: float | None = None
    series_description: str = ""
    padding_value: int | None = None
    truncated: str = ""  # why the file is incomplete ("" when whole): it ends before or inside its pixel data


@dataclass(frozen=True)
class ScanResult:
    headers: tuple[SliceHeader, ...]
    unreadable: tuple[str, ...] = ()  # files that look like DICOM but could not be parsed
    empty_dirs: tuple[str, ...] = ()  # leaf folders without any DICOM file
    n_files: int = 0
    skipped: tuple[str, ...] = field(default=())  # ignored non-DICOM files


def header_from_dataset(ds: pydicom.Dataset, path: str, size: int = 0, mtime_ns: int = 0) -> SliceHeader:
    meta = getattr(ds, "file_meta", None)
    ts = _str(meta.get("TransferSyntaxUID")) if meta is not None else ""
    rescale = "RescaleSlope" in ds or "RescaleIntercept" in ds
    return SliceHeader(
        path=path,
        size=size,
        mtime_ns=mtime_ns,
        study_uid=_str(ds.get("StudyInstanceUID")),
        series_uid=_str(ds.get("SeriesInstanceUID")),
        sop_uid=_str(ds.get("SOPInstanceUID"))
        or (_str(meta.get("MediaStorageSOPInstanceUID")) if meta is not None else "")
        or path,
        patient_id=_str(ds.get("PatientID")),
        accession=_str(ds.get("AccessionNumber")),
        modality=_str(ds.get("Modality")).upper(),
        sop_class=_str(ds.get("SOPClassUID")),
        image_type=tuple(_str(v).upper() for v in (ds.get("ImageType") or ())),
        series_number=_int(ds.get("SeriesNumber")),
        instance_number=_int(ds.get("InstanceNumber")),
        position=_point(ds.get("ImagePositionPatient")),
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=_pair(ds.get("PixelSpacing")),
        rows=_int(ds.get("Rows")),
        cols=_int(ds.get("Columns")),
        slice_thickness=_float(ds.get("SliceThickness")),
        gantry_tilt=_float(ds.get("GantryDetectorTilt"), 0.0) or 0.0,
        slope=_float(ds.get("RescaleSlope"), 1.0) or 1.0,
        intercept=_float(ds.get("RescaleIntercept"), 0.0) or 0.0,
        has_rescale=rescale,
        transfer_syntax=ts,
        bits_allocated=_int(ds.get("BitsAllocated")),
        bits_stored=_int(ds.get("BitsStored")),
        pixel_representation=_int(ds.get("PixelRepresentation")),
        samples_per_pixel=_int(ds.get("SamplesPerPixel"), 1) or 1,
        n_frames=_int(ds.get("NumberOfFrames"), 1) or 1,
        has_pixels=ds.get("Rows") is not None and ds.get("Columns") is not None,
        body_part=_str(ds.get("BodyPartExamined")).upper(),
        manufacturer=_str(ds.get("Manufacturer")),
        kvp=_float(ds.get("KVP")),
        series_description=_str(ds.get("SeriesDescription")),
        padding_value=_int(ds.get("PixelPaddingValue")),
    )


def read_header(path: str | os.PathLike) -> SliceHeader:
    """Header-only read (``stop_before_pixels``). Raises ``InvalidDicomError``/``OSError`` etc. on bad files.

    pydicom reads a cut-off file without complaint (what it read is all there is), so the header also says
    whether the file is whole: ``truncated`` tells where it ends early."""
    path = str(path)
    st = os.stat(path)
    with open(path, "rb") as fh:
        ds = pydicom.dcmread(fh, stop_before_pixels=True)
        meta = getattr(ds, "file_meta", None)
        if not (
            ds.get("SOPInstanceUID")
            or ds.get("StudyInstanceUID")
            or ds.get("Modality")
            or (meta is not None and meta.get("MediaStorageSOPInstanceUID"))
        ):
            raise InvalidDicomError("no DICOM instance identity")
        truncated = _truncation(ds, fh, st.st_size)
    h = header_from_dataset(ds, path, st.st_size, st.st_mtime_ns)
    return replace(h, truncated=truncated) if truncated else h


_SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # (FFFE,E0DD), length 0: closes encapsulated pixel data
_DEFLATED = "1.2.840.10008.1.2.1.99"


def _truncation(ds: pydicom.Dataset, fh, size: int) -> str:
    """ "" for a whole file; else where it ends. ``fh`` stands where ``stop_before_pixels`` stopped: at the
    pixel data element's tag, or at the end of the file when the parse ran out of bytes first."""
    meta = getattr(ds, "file_meta", None)
    ts = _str(meta.get("TransferSyntaxUID")) if meta is not None else ""
    if ts == _DEFLATED:  # a deflated stream's offsets are not the file's
        return ""
    pos = fh.tell()
    head = fh.read(12)
    big = ts == "1.2.840.10008.1.2.2"
    order: Literal["big", "little"] = "big" if big else "little"
    if len(head) < 8 or int.from_bytes(head[0:2], order) != 0x7FE0:
        sop_class = _str(ds.get("SOPClassUID")) or (
            _str(meta.get("MediaStorageSOPClassUID")) if meta is not None else ""
        )
        image = "Image Storage" in pydicom.uid.UID(sop_class).name if sop_class else ds.get("Rows") is not None
        # the parse ran out of bytes before any pixel data, in an object that must carry some
        # sizes with thousands separators: a bare run of 5+ digits reads as an identifier to the privacy check
        return f"ends before its pixel data ({size:,} bytes)" if pos >= size and image else ""
    implicit = ts == "1.2.840.10008.1.2"
    if implicit:
        length, start = int.from_bytes(head[4:8], order), pos + 8
    elif head[4:6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"UN"):
        length, start = int.from_bytes(head[8:12], order), pos + 12
    else:
        length, start = int.from_bytes(head[6:8], order), pos + 8
    if length == 0xFFFFFFFF:  # encapsulated frames: the sequence delimiter must be there, at or near the end
        fh.seek(max(start, size - (1 << 16)))
        if _SEQUENCE_END not in fh.read():
            return "ends inside its compressed pixel data (no end of the pixel data sequence)"
        return ""
    if start + length > size:
        return f"ends inside its pixel data ({max(size - start, 0):,} of {length:,} bytes)"
    return ""


def _looks_like_dicom(path: str) -> bool:
    suffix = Path(path).suffix.lower()
    if suffix in {".dcm", ".dicom", ".ima", ""}:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
        return head[128:132] == b"DICM"
    except OSError:
        return False


def _read_many(paths: list[str]) -> tuple[list[SliceHeader], list[str], list[str]]:
    headers: list[SliceHeader] = []
    bad: list[str] = []
    ignored: list[str] = []
    for p in paths:
        try:
            h = read_header(p)
        except Exception:  # noqa: BLE001 - any parse failure makes the file unreadable, not the scan
            (bad if _looks_like_dicom(p) else ignored).append(p)
            continue
        if h.sop_class == _DICOMDIR_CLASS:
            ignored.append(p)
            continue
        headers.append(h)
    return headers, bad, ignored


def list_files(root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """All candidate files under ``root`` (hidden ones and obvious non-DICOM suffixes skipped) and the
    leaf folders that hold no file at all."""
    files: list[str] = []
    empty: list[str] = []
    for dirpath, dirnames, filenames in os.walk(os.fspath(root)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = [f for f in sorted(filenames) if not f.startswith(".")]
        if not names and not dirnames:
            empty.append(dirpath)
        for f in names:
            if Path(f).suffix.lower() not in _NOT_DICOM:
                files.append(os.path.join(dirpath, f))
    return files, empty


def scan_dicom(
    root: str | os.PathLike, workers: int = 1, chunk: int = 256, executor: Executor | None = None
) -> ScanResult:
    """Read every file's header under ``root`` (any layout), in ``workers`` processes (or on ``executor``)."""
    files, empty = list_files(root)
    chunks = [files[i : i + chunk] for i in range(0, len(files), chunk)]
    headers: list[SliceHeader] = []
    bad: list[str] = []
    ignored: list[str] = []
    if executor is not None and len(chunks) > 1:
        parts = list(executor.map(_read_many, chunks))
    elif workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_read_many, chunks))
    else:
        parts = [_read_many(c) for c in chunks]
    for h, b, i in parts:
        headers.extend(h)
        bad.extend(b)
        ignored.extend(i)
    # leaf folders whose files are all non-DICOM hold no image either
    seen_dirs = {os.path.dirname(h.path) for h in headers} | {os.path.dirname(b) for b in bad}
    empty_dirs = list(empty)
    for d in sorted({os.path.dirname(p) for p in ignored} - seen_dirs):
        if not any(e.is_dir() for e in os.scandir(d)):
            empty_dirs.append(d)
    log.info(
        "scanned %d files: %d DICOM headers, %d unreadable, %d empty folders",
        len(files),
        len(headers),
        len(bad),
        len(empty_dirs),
    )
    return ScanResult(tuple(headers), tuple(bad), tuple(empty_dirs), len(files), tuple(ignored))


def group_studies(headers: list[SliceHeader] | tuple[SliceHeader, ...]) -> dict[str, dict[str, list[SliceHeader]]]:
    """``{StudyInstanceUID: {SeriesInstanceUID: [slices]}}``, keys in sorted order.

    Anonymised exports sometimes blank the UIDs; such files are grouped by their folder
    (key ``dir:<folder>``), which becomes the study and series key (and is only ever pseudonymized).
    """
    studies: dict[str, dict[str, list[SliceHeader]]] = defaultdict(lambda: defaultdict(list))
    for h in headers:
        folder = "dir:" + os.path.dirname(h.path)
        studies[h.study_uid or folder][h.series_uid or folder].append(h)
    return {s: {k: v[k] for k in sorted(v)} for s, v in sorted(studies.items())}
