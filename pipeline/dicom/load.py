"""Read the pixels of one validated series into a HU `Volume` (RAS affine, ``array[i, j, k]``).

Uncompressed little-endian pixel data is taken straight from the file buffer; anything else
(JPEG 2000, JPEG lossless, RLE, ...) goes through pydicom's pixel handlers, which use the
pylibjpeg plugins. Rescale slope/intercept are applied exactly once, per slice.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

import numpy as np
import pydicom

from pipeline.dicom.errors import IngestError
from pipeline.dicom.geometry import GeometryOptions, SeriesGeometry, check_geometry
from pipeline.dicom.scan import SliceHeader, group_studies, read_header, required
from pipeline.ids import pseudonym
from pipeline.volume import Volume

log = logging.getLogger(__name__)

_NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", ""}
_TS_NAMES = {
    "1.2.840.10008.1.2.4.90": "JPEG 2000 lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.4.57": "JPEG lossless",
    "1.2.840.10008.1.2.4.70": "JPEG lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS near-lossless",
    "1.2.840.10008.1.2.5": "RLE lossless",
    "1.2.840.10008.1.2.2": "explicit VR big endian",
}


@dataclass
class LoadTimings:
    """Seconds spent per step (filled in by `load_series` when passed)."""

    read: float = 0.0  # file open + header parse of the full read
    decode: float = 0.0  # pixel bytes -> stored values (incl. decompression)
    rescale: float = 0.0
    extra: dict = field(default_factory=dict)


def _stored_pixels(ds: pydicom.Dataset, h: SliceHeader) -> np.ndarray:
    """Stored values of one single-frame slice, shape (rows, cols)."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    bits = int(ds.get("BitsAllocated", 16))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    stored = int(ds.get("BitsStored", bits))
    ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    if ts in _NATIVE_LE and bits == 16 and "PixelData" in ds:
        raw = ds.PixelData
        need = rows * cols * 2
        if len(raw) < need:
            raise IngestError("decode", "truncated_file", f"pixel data holds {len(raw):,} of {need:,} bytes")
        arr = np.frombuffer(raw, dtype=np.int16 if signed else np.uint16, count=rows * cols).reshape(rows, cols)
        if stored < 16:
            if signed:  # sign-extend from the high bit of BitsStored
                shift = 16 - stored
                arr = (arr << shift) >> shift
            else:
                arr = arr & np.uint16((1 << stored) - 1)
        return arr
    if "PixelData" not in ds:
        raise IngestError("decode", "no_pixel_data", "a slice has no PixelData element")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a rejection with its syntax named
        name = _TS_NAMES.get(ts, ts or "unknown transfer syntax")
        reason = "truncated_file" if "length" in str(exc).lower() or "truncat" in str(exc).lower() else "decode_failed"
        raise IngestError("decode", reason, f"{name}: {type(exc).__name__}: {str(exc)[:160]}") from None
    if arr.shape != (rows, cols):
        raise IngestError("decode", "unexpected_pixel_shape", f"decoded {arr.shape}, expected {(rows, cols)}")
    return arr


def _native_tail(h: SliceHeader) -> np.ndarray | None:
    """Fast path for uncompressed 16-bit slices: the pixel data is the file's last element, so its
    bytes are the file's tail. Verified against the element's tag and length; None if not so."""
    if (
        h.transfer_syntax not in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
        or h.bits_allocated != 16
        or h.samples_per_pixel != 1
        or h.n_frames != 1
    ):
        return None
    rows, cols = int(required(h.rows, "Rows")), int(required(h.cols, "Columns"))
    nbytes = rows * cols * 2
    explicit = h.transfer_syntax == "1.2.840.10008.1.2.1"
    head = 12 if explicit else 8
    with open(h.path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size < nbytes + head:
            return None
        fh.seek(size - nbytes - head)
        data = fh.read()
    tag = data[:head]
    ok = tag[:4] == b"\xe0\x7f\x10\x00" and (
        (explicit and tag[4:6] in (b"OW", b"OB") and int.from_bytes(tag[8:12], "little") == nbytes)
        or (not explicit and int.from_bytes(tag[4:8], "little") == nbytes)
    )
    if not ok:
        return None
    arr = np.frombuffer(data, dtype=np.int16 if h.pixel_representation == 1 else np.uint16, offset=head).reshape(
        rows, cols
    )
    stored = h.bits_stored or 16
    if stored < 16:
        if h.pixel_representation == 1:
            shift = 16 - stored
            arr = (arr << shift) >> shift
        else:
            arr = arr & np.uint16((1 << stored) - 1)
    return arr


def read_slice(h: SliceHeader) -> np.ndarray:
    """Stored values of the file behind ``h`` (full read)."""
    try:
        ds = pydicom.dcmread(h.path)
    except Exception as exc:  # noqa: BLE001
        raise IngestError("decode", "unreadable_file", f"a slice file cannot be read ({type(exc).__name__})") from None
    return _stored_pixels(ds, h)


def load_series(
    slices: list[SliceHeader] | tuple[SliceHeader, ...],
    geometry: GeometryOptions | SeriesGeometry = GeometryOptions(),
    timings: LoadTimings | None = None,
) -> Volume:
    """Validate, sort and read one series into HU. ``array[i, j, k]`` = (column, row, slice along the normal)."""
    geo = geometry if isinstance(geometry, SeriesGeometry) else check_geometry(slices, geometry)
    hs = geo.slices
    rows, cols, n = int(required(hs[0].rows, "Rows")), int(required(hs[0].cols, "Columns")), len(hs)
    integral = all(h.slope == 1.0 and float(h.intercept).is_integer() for h in hs)
    if integral:  # int16 holds every value when the stored range shifted by the intercept fits
        bits = max((h.bits_stored or 16) for h in hs)
        signed = any(h.pixel_representation == 1 for h in hs)
        lo_s, hi_s = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        icpt = [int(h.intercept) for h in hs]
        integral = lo_s + min(icpt) >= -32768 and hi_s + max(icpt) <= 32767
    buf = np.empty((n, rows, cols), dtype=np.int16 if integral else np.float32)
    t_read = t_dec = t_res = 0.0
    for k, h in enumerate(hs):
        t0 = perf_counter()
        try:
            stored = _native_tail(h)
            if stored is None:
                ds = pydicom.dcmread(h.path)
        except Exception as exc:  # noqa: BLE001
            raise IngestError(
                "decode", "unreadable_file", f"slice {k + 1} of {n} cannot be read ({type(exc).__name__})"
            ) from None
        t1 = perf_counter()
        if stored is None:
            try:
                stored = _stored_pixels(ds, h)
            except IngestError as err:
                raise IngestError(err.stage, err.reason, f"slice {k + 1} of {n}: {err.detail}") from None
            except Exception as exc:  # noqa: BLE001 - a slice pydicom cannot give pixels for is named, never an internal error
                raise IngestError(
                    "decode", "decode_failed", f"slice {k + 1} of {n}: {type(exc).__name__}: {str(exc)[:160]}"
                ) from None
        t2 = perf_counter()
        if integral:
            # unsigned here has at most 15 bits, so the int16 view is value-preserving
            np.add(
                stored.view(np.int16) if stored.dtype == np.uint16 else stored,
                np.int16(h.intercept),
                out=buf[k],
                casting="unsafe",
            )
        else:
            np.multiply(stored, np.float32(h.slope), out=buf[k], casting="unsafe")
            buf[k] += np.float32(h.intercept)
        t3 = perf_counter()
        t_read += t1 - t0
        t_dec += t2 - t1
        t_res += t3 - t2
    if timings is not None:
        timings.read += t_read
        timings.decode += t_dec
        timings.rescale += t_res
    h0 = hs[0]
    meta = {
        "source_format": "dicom",
        "series_id": pseudonym("series", h0.series_uid) if h0.series_uid else "",
        "n_slices": n,
        "slice_thickness": h0.slice_thickness,
        "tilt_deg": geo.tilt_deg,
        "corrections": list(geo.corrections),
        "manufacturer": h0.manufacturer,
        "kvp": h0.kvp,
        "body_part": h0.body_part,
        "transfer_syntax": h0.transfer_syntax,
        "native_spacing": geo.spacing,
    }
    # (k, row, col) -> (i=col, j=row, k): a view, no copy
    return Volume(array=buf.transpose(2, 1, 0), affine=geo.affine, meta=meta)


def load_dicom_series(source: str | os.PathLike | list, geometry: GeometryOptions = GeometryOptions()) -> Volume:
    """One series from a folder or a list of files -> HU `Volume` in RAS. The folder must hold one series.

    Raises `IngestError` with a stated reason (too few slices, missing slices, uneven spacing, ...).
    """
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        paths = (
            [root]
            if root.is_file()
            else sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        )
    else:
        paths = [Path(p) for p in source]
    headers = []
    for p in paths:
        try:
            headers.append(read_header(p))
        except Exception:  # noqa: BLE001 - non-DICOM files beside the series are ignored
            log.debug("skipping a non-DICOM file")
    if not headers:
        raise IngestError("scan", "no_dicom_files", f"none of {len(paths)} file(s) is readable DICOM")
    studies = group_studies(headers)
    series = [s for st in studies.values() for s in st.values()]
    if len(series) != 1:
        raise IngestError(
            "scan", "multiple_series", f"{len(series)} series found; pass one series (or use ingest_study)"
        )
    return load_series(series[0], geometry)
