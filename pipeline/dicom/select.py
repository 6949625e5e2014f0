"""Choose the diagnostic axial CT series of a study and say why every other series was skipped."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.dicom.errors import IngestError
from pipeline.dicom.geometry import plane_name, slice_normal
from pipeline.dicom.scan import SliceHeader, required
from pipeline.ids import pseudonym

_LOCALIZER_WORDS = ("LOCALIZER", "SCOUT", "TOPOGRAM", "SCANOGRAM", "SURVIEW")
_DERIVED_WORDS = ("MPR", "MIP", "MINIP", "VRT", "VOLUME", "REFORMATTED", "PROJECTION IMAGE", "CPR")
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@dataclass(frozen=True)
class SelectOptions:
    min_slices: int = 10
    thickness_range_mm: tuple[float, float] = (0.5, 5.0)  # sensible diagnostic reconstructions
    allow_non_axial: bool = True  # when a study has no axial series at all
    # a few slices of a series that differ from the rest in orientation, matrix or image type (a localizer
    # filed under the axial series' UID) are dropped and recorded, up to this share of the series (at least 1);
    # more, and the series is mixed and geometry rejects it
    max_stray_fraction: float = 0.1


@dataclass(frozen=True)
class Candidate:
    series_uid: str
    slices: tuple[SliceHeader, ...]
    plane: str
    coverage_mm: float
    thickness_mm: float
    original: bool
    notes: tuple[str, ...] = ()  # what was dropped from the series before it became a candidate, and why

    def rank(self, options: SelectOptions) -> tuple:
        lo, hi = options.thickness_range_mm
        sensible = lo <= self.thickness_mm <= hi
        # axial first, then original over derived, sensible thickness, coverage (1 cm bins), thinner, more slices
        return (
            self.plane == "axial",
            self.original,
            sensible,
            round(self.coverage_mm / 10.0),
            -self.thickness_mm,
            len(self.slices),
        )


@dataclass(frozen=True)
class SeriesChoice:
    candidates: tuple[Candidate, ...]  # usable series, best first
    skipped: dict[str, str]  # series pseudonym -> reason (for series never considered)


def _localizer(h: SliceHeader) -> bool:
    words = " ".join(h.image_type) + " " + h.series_description.upper()
    return any(w in words for w in _LOCALIZER_WORDS)


def _kind(h: SliceHeader) -> tuple:
    """What the slices of one series share: orientation, matrix, and whether it is a localizer."""
    orient = tuple(round(v, 3) for v in h.orientation) if h.orientation is not None else None
    return (orient, h.rows, h.cols, "LOCALIZER" in h.image_type)


def _what_differs(stray: SliceHeader, usual: SliceHeader) -> str:
    parts = [
        name
        for name, a, b in (
            ("orientation", _kind(stray)[0], _kind(usual)[0]),
            ("matrix", _kind(stray)[1:3], _kind(usual)[1:3]),
            ("image type", _kind(stray)[3], _kind(usual)[3]),
        )
        if a != b
    ]
    return ("a localizer: " if "LOCALIZER" in stray.image_type else "") + "/".join(parts)


def clean_series(
    slices: list[SliceHeader], options: SelectOptions = SelectOptions()
) -> tuple[list[SliceHeader], tuple[str, ...]]:
    """The slices of one series without repeated SOP instances (one file kept of each) and without a few
    stray slices that differ from the rest (a localizer filed under the axial series' UID); notes say what
    went. Many differing slices are a mixed series, not strays: left for geometry to reject."""
    notes = []
    by_sop: dict[str, SliceHeader] = {}
    for h in sorted(slices, key=lambda h: h.path):
        by_sop.setdefault(h.sop_uid, h)
    if len(by_sop) < len(slices):
        repeated = len(slices) - len(by_sop)
        notes.append(f"{repeated} file(s) repeat a SOPInstanceUID of the series: one file kept of each")
        slices = list(by_sop.values())
    if any(h.truncated for h in slices):  # a cut-off file is not a stray: the series is skipped as truncated
        return slices, tuple(notes)
    groups: dict[tuple, list[SliceHeader]] = {}
    for h in slices:
        groups.setdefault(_kind(h), []).append(h)
    if len(groups) > 1:
        usual = max(groups.values(), key=len)
        strays = [h for g in groups.values() if g is not usual for h in g]
        if len(strays) <= max(1, int(options.max_stray_fraction * len(slices))) and len(usual) > len(strays):
            why = sorted({_what_differs(h, usual[0]) for h in strays})
            notes.append(
                f"dropped {len(strays)} stray slice(s) of the series "
                f"({'; '.join(why)} differ from the other {len(usual)})"
            )
            slices = [h for h in slices if _kind(h) == _kind(usual[0])]
    return slices, tuple(notes)


def _skip_reason(slices: list[SliceHeader], options: SelectOptions) -> str | None:
    cut = [s for s in slices if s.truncated]
    if cut:
        return f"truncated: {len(cut)} of {len(slices)} files end early (one {cut[0].truncated})"
    h = slices[0]
    if h.modality != "CT":
        return f"modality {h.modality or 'missing'} is not CT"
    if not any(s.has_pixels for s in slices):
        return "no image pixel data"
    if h.sop_class == _SECONDARY_CAPTURE:
        return "secondary capture"
    if _localizer(h):
        return "localizer/scout"
    if h.n_frames > 1:
        return f"multi-frame object ({h.n_frames} frames; enhanced CT is not read)"
    if h.samples_per_pixel != 1:
        return "not a grey-scale image"
    if len(slices) < options.min_slices:
        return f"too few slices ({len(slices)} < {options.min_slices})"
    if any(s.orientation is None or s.position is None for s in slices):
        return "missing ImageOrientationPatient/ImagePositionPatient"
    return None


def _candidate(series_uid: str, slices: list[SliceHeader], notes: tuple[str, ...] = ()) -> Candidate:
    orientation = required(slices[0].orientation, "ImageOrientationPatient")  # _skip_reason checked it
    normal = slice_normal(orientation)
    d = np.array([s.position for s in slices]) @ normal
    n = len(slices)
    spacing = (d.max() - d.min()) / max(n - 1, 1)
    thickness = slices[0].slice_thickness or spacing
    original = bool(slices[0].image_type[:1] == ("ORIGINAL",)) and not any(
        w in " ".join(slices[0].image_type) for w in _DERIVED_WORDS
    )
    return Candidate(
        series_uid,
        tuple(slices),
        plane_name(orientation),
        float(d.max() - d.min() + spacing),
        float(thickness),
        original,
        notes,
    )


def select_series(series: dict[str, list[SliceHeader]], options: SelectOptions = SelectOptions()) -> SeriesChoice:
    """Rank the usable series of one study (best first); raise ``IngestError`` (stage ``select``) if none.

    Non-axial series are skipped when an axial one exists; the caller tries candidates in order
    (a candidate failing geometry checks falls through to the next).
    """
    skipped: dict[str, str] = {}
    cands: list[Candidate] = []
    for uid, slices in series.items():
        slices, notes = clean_series(slices, options)
        reason = _skip_reason(slices, options)
        if reason:
            skipped[pseudonym("series", uid)] = reason
        else:
            cands.append(_candidate(uid, slices, notes))
    if any(c.plane == "axial" for c in cands):
        for c in [c for c in cands if c.plane != "axial"]:
            skipped[pseudonym("series", c.series_uid)] = f"{c.plane} series while an axial series exists"
        cands = [c for c in cands if c.plane == "axial"]
    elif cands and not options.allow_non_axial:
        for c in cands:
            skipped[pseudonym("series", c.series_uid)] = f"{c.plane} series (non-axial not allowed)"
        cands = []
    if not cands:
        reasons = sorted(set(skipped.values()))
        if any(r.startswith("truncated") for r in reasons):
            reason = "truncated_file"
        elif all(r.startswith("modality") for r in reasons):
            reason = "no_ct_series"
        elif any(r.startswith("too few slices") for r in reasons):
            reason = "too_few_slices"
        else:
            reason = "no_usable_series"
        raise IngestError("select", reason, f"{len(series)} series, none usable: " + "; ".join(reasons))
    cands.sort(key=lambda c: c.rank(options), reverse=True)
    return SeriesChoice(tuple(cands), skipped)
