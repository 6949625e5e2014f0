"""Slice geometry of one series: sort along the slice normal, validate, build the RAS affine.

Checks (each either corrected safely, with a note, or rejected with a stated reason):
missing geometry, mixed orientation or matrix, duplicate positions, missing slices (a gap of more
than ``gap_factor`` x the median spacing), uneven spacing, gantry tilt (a stack sheared along the
slice normal, from ``GantryDetectorTilt`` or from positions that do not move along the normal).
A sheared but evenly spaced stack is corrected exactly by a sheared affine; resampling through
world coordinates then puts it on an orthogonal grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.dicom.errors import IngestError
from pipeline.dicom.scan import SliceHeader, required

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class GeometryOptions:
    gap_factor: float = 1.5  # a step above gap_factor x median spacing is a missing slice
    spacing_tolerance: float = 0.1  # relative deviation of a step from the median that is still even
    tilt_policy: str = "correct"  # "correct" (sheared affine) or "reject"
    max_tilt_deg: float = 45.0
    drop_duplicate_files: bool = True  # the same SOP instance twice (a copied file) is dropped


@dataclass(frozen=True)
class SeriesGeometry:
    slices: tuple[SliceHeader, ...]  # sorted along the slice normal
    affine: np.ndarray  # (4, 4) RAS; voxel (i, j, k) = (column, row, slice)
    spacing: tuple[float, float, float]  # (column spacing, row spacing, slice spacing along the normal)
    tilt_deg: float
    corrections: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        h = self.slices[0]
        return (int(required(h.cols, "Columns")), int(required(h.rows, "Rows")), len(self.slices))


def slice_normal(orientation: tuple[float, ...]) -> np.ndarray:
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    n = np.cross(row, col)
    return n / np.linalg.norm(n)


def plane_name(orientation: tuple[float, ...]) -> str:
    """axial / coronal / sagittal: the world axis closest to the slice normal."""
    n = np.abs(slice_normal(orientation))
    return ("sagittal", "coronal", "axial")[int(np.argmax(n))]


def _unique(values, ndigits: int) -> set:
    return {tuple(round(float(v), ndigits) for v in x) if isinstance(x, tuple) else x for x in values}


def check_geometry(
    slices: list[SliceHeader] | tuple[SliceHeader, ...], options: GeometryOptions = GeometryOptions()
) -> SeriesGeometry:
    """Sort ``slices`` along their normal and validate them; raise ``IngestError`` (stage ``geometry``)."""
    slices = list(slices)
    _check_complete(slices)
    _check_uniform(slices)
    slices, pos, d, normal = _sorted_along_normal(slices)
    slices, pos, d, corrections = _drop_duplicates(slices, pos, d, options)
    tilt = _tilt(slices, pos, normal)
    _check_collinear(slices, pos, tilt.note)
    _check_spacing(np.diff(d), len(slices), options, tilt.note)
    k_vec, tilt_corrections = _slice_vector(tilt, normal, d, len(slices), options)
    affine, (dc, dr) = _affine(slices[0], k_vec, pos[0])
    return SeriesGeometry(
        slices=tuple(slices),
        affine=affine,
        spacing=(float(dc), float(dr), abs(float(d[-1] - d[0])) / (len(slices) - 1)),
        tilt_deg=float(tilt.deg),
        corrections=tuple(corrections + tilt_corrections),
    )


def _check_complete(slices: list[SliceHeader]) -> None:
    """At least two slices, each with a position, an orientation and a pixel spacing."""
    if len(slices) < 2:
        raise IngestError("geometry", "too_few_slices", f"{len(slices)} slice(s); a volume needs at least 2")
    missing = sum(1 for h in slices if h.position is None or h.orientation is None or h.pixel_spacing is None)
    if missing:
        raise IngestError(
            "geometry",
            "missing_geometry",
            f"{missing} of {len(slices)} slices lack ImagePositionPatient/ImageOrientationPatient/PixelSpacing",
        )


def _check_uniform(slices: list[SliceHeader]) -> None:
    """One orientation, one matrix size and one pixel spacing for every slice."""
    orients = np.array([h.orientation for h in slices])
    if np.abs(orients - orients[0]).max() > 1e-3:
        n = len(_unique([h.orientation for h in slices], 3))
        raise IngestError(
            "geometry", "mixed_orientation", f"{n} different ImageOrientationPatient values in one series"
        )
    matrices = {(h.rows, h.cols) for h in slices}
    spacings = np.array([h.pixel_spacing for h in slices])
    if len(matrices) > 1 or np.abs(spacings - spacings[0]).max() > 1e-3:
        raise IngestError(
            "geometry",
            "mixed_matrix",
            f"{len(matrices)} matrix sizes and {len(_unique([h.pixel_spacing for h in slices], 4))} pixel spacings "
            "in one series",
        )


def _sorted_along_normal(
    slices: list[SliceHeader],
) -> tuple[list[SliceHeader], np.ndarray, np.ndarray, np.ndarray]:
    """(slices, positions (n, 3), distances along the normal (n,), normal), sorted by that distance (stable)."""
    normal = slice_normal(required(slices[0].orientation, "ImageOrientationPatient"))
    pos = np.array([h.position for h in slices])
    d = pos @ normal
    order = np.argsort(d, kind="stable")
    return [slices[i] for i in order], pos[order], d[order], normal


def _drop_duplicates(
    slices: list[SliceHeader], pos: np.ndarray, d: np.ndarray, options: GeometryOptions
) -> tuple[list[SliceHeader], np.ndarray, np.ndarray, list[str]]:
    """Slices at one position: the same instance twice is a copied file (dropped, with a note); two instances at one
    place are not (``duplicate_positions``)."""
    dup = np.flatnonzero(np.abs(np.diff(d)) < 1e-3)
    if not dup.size:
        return slices, pos, d, []
    same_instance = all(slices[i].sop_uid == slices[i + 1].sop_uid for i in dup)
    if not (same_instance and options.drop_duplicate_files):
        raise IngestError(
            "geometry",
            "duplicate_positions",
            f"{int(dup.size)} pair(s) of different slices share one position along the normal (multiple acquisitions?)",
        )
    keep = np.ones(len(slices), bool)
    keep[dup + 1] = False
    slices = [h for h, k in zip(slices, keep) if k]
    if len(slices) < 2:
        raise IngestError("geometry", "too_few_slices", f"{len(slices)} distinct slice(s) after dropping duplicates")
    return slices, pos[keep], d[keep], [f"dropped {int(dup.size)} duplicate file(s) of the same instance"]


@dataclass(frozen=True)
class _Tilt:
    """The gantry tilt of a sorted stack: from positions that step off the normal (shear), or from the header."""

    step_vec: np.ndarray  # the mean step from one slice to the next, mm (LPS)
    sheared: bool  # the stack steps off the normal by more than half a degree
    header_tilt: float  # the largest GantryDetectorTilt, deg
    deg: float  # the shear where sheared, else the header's tilt
    note: str  # what to say about it ("" where there is nothing to say)


def _tilt(slices: list[SliceHeader], pos: np.ndarray, normal: np.ndarray) -> _Tilt:
    """The stack's tilt: the angle between its mean step and the slice normal, and the header's."""
    step_vec = (pos[-1] - pos[0]) / (len(slices) - 1)
    along = float(np.linalg.norm(step_vec))
    shear_deg = float(np.degrees(np.arccos(np.clip(abs(step_vec @ normal) / along, -1, 1)))) if along > 0 else 0.0
    header_tilt = max((abs(h.gantry_tilt) for h in slices), default=0.0)
    sheared = shear_deg > 0.5
    tilt_deg = shear_deg if sheared else header_tilt
    note = ""
    if sheared or header_tilt > 0.5:
        note = f"gantry tilt {tilt_deg:.1f} deg" + (
            " (stack sheared along the slice normal)" if sheared else " in header, stack orthogonal"
        )
    return _Tilt(step_vec, sheared, header_tilt, tilt_deg, note)


def _and_tilt(detail: str, tilt_note: str) -> str:
    """``detail``, then the tilt note where there is one."""
    return detail + (f"; {tilt_note}" if tilt_note else "")


def _check_collinear(slices: list[SliceHeader], pos: np.ndarray, tilt_note: str) -> None:
    """Slice positions on one straight line, within half a pixel."""
    if len(slices) <= 2:
        return
    total = pos[-1] - pos[0]
    t = (pos - pos[0]) @ (total / (np.linalg.norm(total) ** 2 or 1.0))
    resid = np.linalg.norm(pos - (pos[0] + t[:, None] * total), axis=1).max()
    if resid > 0.5 * min(required(slices[0].pixel_spacing, "PixelSpacing")):
        raise IngestError(
            "geometry",
            "irregular_positions",
            _and_tilt(f"slice positions deviate {resid:.2f} mm from a straight line", tilt_note),
        )


def _check_spacing(steps: np.ndarray, n_slices: int, options: GeometryOptions, tilt_note: str) -> None:
    """Even steps between sorted slices; uneven ones are a gap of whole missing slices or uneven spacing."""
    med = float(np.median(steps))
    lo, hi = float(steps.min()), float(steps.max())
    tol = options.spacing_tolerance * med
    if not ((hi - med > tol) or (med - lo > tol)):
        return
    big = steps[steps > med + tol]
    small = steps[steps < med - tol]
    multiples = big / med
    is_gap = (
        small.size == 0
        and big.size > 0
        and bool(np.all(multiples > options.gap_factor))
        and bool(np.all(np.abs(multiples - np.round(multiples)) < options.spacing_tolerance * 2))
    )
    if is_gap:
        where = int(np.argmax(steps))
        n_missing = int(np.round(multiples).sum() - big.size)
        raise IngestError(
            "geometry",
            "missing_slices",
            _and_tilt(
                f"gap of {hi:.2f} mm after sorted slice {where + 1} of {n_slices} (median spacing {med:.2f} mm): "
                f"about {n_missing} slice(s) missing",
                tilt_note,
            ),
        )
    detail = f"slice spacing varies from {lo:.2f} to {hi:.2f} mm (median {med:.2f} mm) over {n_slices} slices"
    raise IngestError("geometry", "uneven_spacing", _and_tilt(detail, tilt_note))


def _slice_vector(
    tilt: _Tilt, normal: np.ndarray, d: np.ndarray, n_slices: int, options: GeometryOptions
) -> tuple[np.ndarray, list[str]]:
    """The affine's k column (LPS mm per slice) and the notes on the tilt: a sheared stack keeps its true step (when
    ``tilt_policy`` allows), an orthogonal one steps along the normal; a tilt over ``max_tilt_deg`` is refused."""
    if tilt.deg > options.max_tilt_deg:
        raise IngestError("geometry", "gantry_tilt", f"{tilt.note} exceeds {options.max_tilt_deg:.0f} deg")
    if tilt.sheared:
        if options.tilt_policy != "correct":
            raise IngestError("geometry", "gantry_tilt", f"{tilt.note}; tilt_policy={options.tilt_policy!r}")
        return tilt.step_vec, [f"{tilt.note}: corrected with a sheared affine (slices placed at their true positions)"]
    return normal * (d[-1] - d[0]) / (n_slices - 1), [tilt.note] if tilt.header_tilt > 0.5 else []


def _affine(first: SliceHeader, k_vec: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """The RAS affine of voxel (i, j, k) = (column, row, slice) from the first sorted slice, and the spacing of its
    columns and rows (mm)."""
    orientation = required(first.orientation, "ImageOrientationPatient")
    row_cos, col_cos = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    dr, dc = required(first.pixel_spacing, "PixelSpacing")  # (between rows, between columns)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * dc  # i: column index
    lps[:3, 1] = col_cos * dr  # j: row index
    lps[:3, 2] = k_vec
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps, (dc, dr)
