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
    corrections: list[str] = []
    if len(slices) < 2:
        raise IngestError("geometry", "too_few_slices", f"{len(slices)} slice(s); a volume needs at least 2")
    missing = sum(1 for h in slices if h.position is None or h.orientation is None or h.pixel_spacing is None)
    if missing:
        raise IngestError(
            "geometry",
            "missing_geometry",
            f"{missing} of {len(slices)} slices lack ImagePositionPatient/ImageOrientationPatient/PixelSpacing",
        )

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

    normal = slice_normal(required(slices[0].orientation, "ImageOrientationPatient"))
    pos = np.array([h.position for h in slices])
    d = pos @ normal
    order = np.argsort(d, kind="stable")
    slices = [slices[i] for i in order]
    pos, d = pos[order], d[order]

    # duplicates: the same instance twice is a copied file (safe to drop); two instances at one place are not
    steps = np.diff(d)
    dup = np.flatnonzero(np.abs(steps) < 1e-3)
    if dup.size:
        same_instance = all(slices[i].sop_uid == slices[i + 1].sop_uid for i in dup)
        if same_instance and options.drop_duplicate_files:
            keep = np.ones(len(slices), bool)
            keep[dup + 1] = False
            slices = [h for h, k in zip(slices, keep) if k]
            pos, d = pos[keep], d[keep]
            corrections.append(f"dropped {int(dup.size)} duplicate file(s) of the same instance")
            steps = np.diff(d)
            if len(slices) < 2:
                raise IngestError(
                    "geometry", "too_few_slices", f"{len(slices)} distinct slice(s) after dropping duplicates"
                )
        else:
            raise IngestError(
                "geometry",
                "duplicate_positions",
                f"{int(dup.size)} pair(s) of different slices share one position along the normal "
                "(multiple acquisitions?)",
            )

    # tilt: positions that step off the normal (shear), or a header tilt
    total = pos[-1] - pos[0]
    step_vec = total / (len(slices) - 1)
    along = float(np.linalg.norm(step_vec))
    shear_deg = float(np.degrees(np.arccos(np.clip(abs(step_vec @ normal) / along, -1, 1)))) if along > 0 else 0.0
    header_tilt = max((abs(h.gantry_tilt) for h in slices), default=0.0)
    sheared = shear_deg > 0.5
    tilt_deg = shear_deg if sheared else header_tilt
    tilt_note = ""
    if sheared or header_tilt > 0.5:
        tilt_note = f"gantry tilt {tilt_deg:.1f} deg" + (
            " (stack sheared along the slice normal)" if sheared else " in header, stack orthogonal"
        )

    # positions must lie on one line (within half a pixel)
    if len(slices) > 2:
        t = (pos - pos[0]) @ (total / (np.linalg.norm(total) ** 2 or 1.0))
        resid = np.linalg.norm(pos - (pos[0] + t[:, None] * total), axis=1).max()
        if resid > 0.5 * min(required(slices[0].pixel_spacing, "PixelSpacing")):
            raise IngestError(
                "geometry",
                "irregular_positions",
                f"slice positions deviate {resid:.2f} mm from a straight line"
                + (f"; {tilt_note}" if tilt_note else ""),
            )

    med = float(np.median(steps))
    lo, hi = float(steps.min()), float(steps.max())
    tol = options.spacing_tolerance * med
    uneven = (hi - med > tol) or (med - lo > tol)
    if uneven:
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
                f"gap of {hi:.2f} mm after sorted slice {where + 1} of {len(slices)} (median spacing {med:.2f} mm): "
                f"about {n_missing} slice(s) missing" + (f"; {tilt_note}" if tilt_note else ""),
            )
        detail = f"slice spacing varies from {lo:.2f} to {hi:.2f} mm (median {med:.2f} mm) over {len(slices)} slices"
        if tilt_note:
            detail += f"; {tilt_note}"
        raise IngestError("geometry", "uneven_spacing", detail)

    if tilt_deg > options.max_tilt_deg:
        raise IngestError("geometry", "gantry_tilt", f"{tilt_note} exceeds {options.max_tilt_deg:.0f} deg")
    if sheared:
        if options.tilt_policy != "correct":
            raise IngestError("geometry", "gantry_tilt", f"{tilt_note}; tilt_policy={options.tilt_policy!r}")
        corrections.append(f"{tilt_note}: corrected with a sheared affine (slices placed at their true positions)")
        k_vec = step_vec
    else:
        if header_tilt > 0.5:
            corrections.append(tilt_note)
        k_vec = normal * (d[-1] - d[0]) / (len(slices) - 1)

    orientation = required(slices[0].orientation, "ImageOrientationPatient")
    row_cos, col_cos = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    dr, dc = required(slices[0].pixel_spacing, "PixelSpacing")  # (between rows, between columns)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * dc  # i: column index
    lps[:3, 1] = col_cos * dr  # j: row index
    lps[:3, 2] = k_vec
    lps[:3, 3] = pos[0]
    affine = LPS_TO_RAS @ lps
    return SeriesGeometry(
        slices=tuple(slices),
        affine=affine,
        spacing=(float(dc), float(dr), abs(float(d[-1] - d[0])) / (len(slices) - 1)),
        tilt_deg=float(tilt_deg),
        corrections=tuple(corrections),
    )
