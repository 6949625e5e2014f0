"""Lesions painted into a real CT, inside its own organ masks: a quality-assurance set with known truth.

``implant_study(ct, labels, seed)`` takes a CT volume (HU, any grid and dtype) and its organ label map on the same grid
(TotalSegmentator ``total`` v2 indices, ``pipeline.vocab``) and returns the volume with lesions painted in, on the
input's own grid and dtype, with the lesion masks, one truth row per lesion (the columns of the synthetic cohort's
``truth/lesions.parquet``, ``lesions.LESION_COLUMNS``), one row per organ (its ``truth/organ_gold.parquet``) and a
report in the evaluation phrasing. Everything derives from the seed. The lesion models are the synthetic cohort's own
(``lesions.draw_lesion``, ``place_lesion``, ``lesion_values``, ``lesion_row``; ``findings.sample_findings``;
``reports.misreport``, ``write_report``); what changes is the background:

- **contrast against the real parenchyma**: a lesion's HU is drawn against the organ's own median HU near it (the
  voxels of the organ within ``ImplantConfig.background_mm`` x 4 of the lesion's box, earlier lesions excluded), and it
  replaces the organ's local mean intensity (a Gaussian average of the organ's voxels over ``background_mm``), so the
  scan's own noise and fine texture stay inside the lesion;
- **edges at the scan's resolution**: the change is blurred by a Gaussian whose full width at half maximum is the slice
  thickness along the slice axis and one pixel in plane, and cut off outside the organ dilated by ``margin_mm``
  (default: the slice thickness), so every changed voxel lies inside its organ or within that margin of it;
- **varied lesions**: 5-50 mm (capped per kind), iso-intense (|contrast| below the organ's measured noise) to obvious,
  solid, rim-enhancing or necrotic, round or lobulated, at the capsule or deep, one to three per finding: the kinds of
  ``lesions.VARIED`` (liver, renal and pancreatic masses, lung nodules, hepatic and renal cysts);
- **diffuse change**: steatosis lowers the whole liver's attenuation by a drawn shift (``steatosis_shift_hu``),
  blurred at its edge like a lesion; lesions in that liver are drawn against the lowered parenchyma.

Left out, with the reason: **"-megaly"** (hepatomegaly, splenomegaly, cardiomegaly). Enlarging a real organ means
moving every neighbour: a deformation of the whole abdomen that the given label map no longer describes, and that no
mask can check, while scaling the organ alone inside its neighbourhood would paint over real neighbours (a liver grown
into the kidney). Its truth would also be unsound: how large this patient's organ was before is unknown (it may already
be enlarged), so "normal size" could not be asserted of the untouched organs either. Stones, effusions, aneurysms and
fractures are left out as well: they need the geometry of a collecting system, a pleural space, a vessel wall or a
vertebral body that an organ label alone does not give.

The source scan's own findings are unknown: the report calls untouched organs normal, as the synthetic cohort does, so
a scan with real disease makes a noisier phantom.

A whole set: ``write_qa_set(sources, out_dir, n_per_source, seed)`` paints ``n_per_source`` studies into each real CT
and writes, under ``out_dir``:

    scans/<study_key>.nii.gz           the painted CT on the scan's own grid, in its own dtype
    labels/<source>.nii.gz             the organ label map on that grid (v2 indices), one per source scan
    lesions/<study_key>.nii.gz         1 = a tumor's voxel (masses, nodules), as the synthetic cohort's truth/lesions
    lesion_labels/<study_key>.nii.gz   every painted lesion numbered by its row of truth/lesions.parquet in that study
    reports/<study_key>.txt            the report
    scans.csv                          the NIfTI manifest: scan_path, patient_key, study_key, report_key
    reports.csv                        AccessionNumber (= report_key), ReportText
    masks.csv                          the masks manifest: study_key, mask_path, format (nifti_multilabel)
    lesions_manifest.csv               the same for the tumor masks
    truth/lesions.parquet, truth/organ_gold.parquet, truth/studies.parquet
                                       the truth, columns as the synthetic cohort's
    truth/studies/<study_key>.json     each study's fingerprint and rows

Every study of one source scan gets that scan's ``patient_key``: they share one anatomy, so the pair tables keep them in
one split. Writes are atomic; a study whose fingerprint (the source files' content, the config, the seed and its
index) is unchanged is skipped, and the CSVs and tables are rewritten only when their content changes.

``python -m pipeline.synthetic.implant --volume CT.nii.gz --mask SEG.nii.gz --n 20 --out DIR`` runs it on one scan
(``--help``); ``sources_in_folder`` lists the scans of a folder of real CTs with masks, for a whole cohort.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
from scipy.ndimage import binary_erosion, distance_transform_edt, gaussian_filter

from pipeline import vocab
from pipeline.atomic import write_bytes, write_json
from pipeline.synthetic.findings import CATALOG, Finding, sample_findings
from pipeline.synthetic.lesions import (
    LESION_COLUMNS,
    VARIED,
    LesionDraw,
    draw_lesion,
    lesion_count,
    lesion_row,
    lesion_values,
    place_lesion,
)
from pipeline.synthetic.reports import misreport, write_report
from pipeline.volume import Volume, load_nifti, save_nifti

log = logging.getLogger(__name__)

LESION_KINDS = tuple(VARIED)  # focal kinds painted: masses, nodules, cysts
DIFFUSE_KINDS = ("steatosis",)
IMPLANTABLE = LESION_KINDS + DIFFUSE_KINDS
FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))  # a Gaussian's full width at half maximum over its sigma
ORGAN_COLUMNS = [
    "accession",
    "study_uid",
    "organ",
    "in_image",
    "cut_by_fov",
    "image_status",
    "report_status",
    "abnormalities",
    "kinds",
    "report_abnormalities",
    "omitted_kinds",
    "report_only_kinds",
    "size_factor",
    "volume_ratio",
    "volume_ml_native",
]


@dataclass(frozen=True)
class ImplantConfig:
    """What to paint and how. Defaults: every implantable kind at one chance in two per study, reports leaving out
    15% of the findings (as the benchmark cohort's do) in the evaluation phrasing."""

    kinds: tuple[str, ...] = IMPLANTABLE  # catalog kinds drawn (``IMPLANTABLE``); () paints nothing
    finding_prob: float = 0.5  # chance of each kind per study when an organ of it is in the scan
    min_organ_ml: float = 10.0  # organs smaller than this in the scan get no finding
    steatosis_shift_hu: tuple[float, float] = (-45.0, -15.0)  # the liver's attenuation change, drawn uniformly
    slice_thickness_mm: float | None = None  # FWHM of the blur along the slice axis; None: the scan's (meta or spacing)
    margin_mm: float | None = None  # how far outside its organ a change may reach; None: the slice thickness
    background_mm: float = 4.0  # Gaussian sigma of the organ's local mean intensity, which a lesion replaces
    report_omission: float = 0.15  # share of painted findings the report leaves out
    reserved_phrasing: bool = True  # the evaluation paraphrase bank (``phrases.RESERVED``), as test reports use

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(IMPLANTABLE)
        if unknown:
            raise ValueError(
                f"kinds {sorted(unknown)} cannot be implanted; choose from {IMPLANTABLE} "
                "(docstring: why not the others)"
            )
        if not 0.0 <= self.finding_prob <= 1.0 or not 0.0 <= self.report_omission < 1.0:
            raise ValueError("finding_prob is a share in [0, 1], report_omission in [0, 1)")
        lo, hi = self.steatosis_shift_hu
        if not lo <= hi:
            raise ValueError(f"steatosis_shift_hu must be (low, high), not {self.steatosis_shift_hu}")
        for name in ("slice_thickness_mm", "margin_mm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, not {value}")

    def record(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ImplantedStudy:
    volume: Volume  # the painted CT: the input's grid, affine and dtype
    lesion_mask: np.ndarray  # uint8, 1 = a tumor's voxel (masses and nodules), as the synthetic cohort's truth/lesions
    lesion_labels: np.ndarray  # uint16, every painted lesion's voxels numbered by its truth row (1 = first row)
    lesions: pd.DataFrame  # LESION_COLUMNS, one row per painted lesion
    organs: pd.DataFrame  # ORGAN_COLUMNS, one row per organ in the label map
    findings: tuple[Finding, ...]  # what the image shows
    omitted: tuple[Finding, ...]  # shown, not reported
    report: str
    params: dict = field(default_factory=dict)  # slice thickness, margin, seed, ...


@dataclass(frozen=True)
class _Organ:
    """One organ's window on the grid (its box widened by the margin and the background), mask and local statistics."""

    index: int
    window: tuple[slice, ...]
    mask: np.ndarray  # bool, in the window
    near: np.ndarray  # bool, in the window: within the margin of the organ
    mean: np.ndarray  # float32, in the window: the organ's local mean intensity (NaN outside the organ)
    noise_hu: float  # robust SD of the organ's voxels about that mean

    def local(self, box: tuple[slice, ...]) -> tuple[slice, ...]:
        """A full-grid box in window coordinates."""
        return tuple(slice(b.start - w.start, b.stop - w.start) for b, w in zip(box, self.window))


def slice_axis(affine: np.ndarray) -> int:
    """The voxel axis closest to the patient's long (S-I) axis: the axis slices are stacked along."""
    cols = np.asarray(affine, dtype=float)[:3, :3]
    return int(np.argmax(np.abs(cols[2]) / np.linalg.norm(cols, axis=0)))


def _seed(seed: int | Sequence[int]) -> list[int]:
    if np.isscalar(seed):
        return [int(cast(int, seed))]
    return [int(s) for s in cast("Sequence[int]", seed)]


def _names() -> dict[int, str]:
    return dict(vocab.class_map(vocab.V2_TASK))


def _index_of(name: str) -> int:
    return next(i for i, n in _names().items() if n == name)


def fov_of(organs: set[str]) -> str:
    """The synthetic cohort's field-of-view name that best fits the organs in a scan (the report's EXAMINATION line)."""
    chest = any(o.startswith("lung_") or o == "heart" for o in organs)
    abdomen = bool(organs & {"liver", "kidney_left", "kidney_right", "spleen", "urinary_bladder"})
    return "chest_abdomen_pelvis" if chest and abdomen else "chest" if chest else "abdomen_pelvis"


def implant_study(
    ct: Volume,
    labels: Volume | np.ndarray,
    seed: int | Sequence[int],
    config: ImplantConfig = ImplantConfig(),
    accession: str = "",
    study_uid: str = "",
) -> ImplantedStudy:
    """Paint the findings drawn from ``seed`` into ``ct``, inside the organs of ``labels`` (on ``ct``'s grid).

    Voxels the painting does not reach keep their stored value exactly; with nothing drawn (``config.kinds=()`` or no
    organ large enough) the volume comes back bit for bit unchanged."""
    lab = _label_map(ct, labels)
    base = _seed(seed)
    spacing = np.asarray(ct.spacing, dtype=float)
    axis, thickness, margin, sigma_mm = _blur(ct, spacing, config)
    names = _names()
    counts = np.bincount(lab.ravel(), minlength=max(names) + 1)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    present = {names[i] for i in np.flatnonzero(counts).tolist() if i in names}
    eligible = {o for o in present if counts[_index_of(o)] * voxel_ml >= config.min_organ_ml}
    findings = sample_findings(
        np.random.default_rng([*base, 1]), eligible, kinds=tuple(config.kinds), prob=config.finding_prob
    )
    params = {
        "seed": base,
        "slice_thickness_mm": round(thickness, 3),
        "margin_mm": round(margin, 3),
        "slice_axis": axis,
        "blur_fwhm_mm": [round(float(s * FWHM), 3) for s in sigma_mm],
    }

    array = np.asarray(ct.array)
    if findings:
        canvas = _Canvas(lab, array.astype(np.float32), spacing, sigma_mm, margin, config.background_mm)
        kept, shift = _paint_diffuse(canvas, findings, config, np.random.default_rng([*base, 5]))
        if shift is not None:
            params["steatosis_shift_hu"] = round(shift, 1)
        lesions = _paint_lesions(canvas, findings, config, np.random.default_rng([*base, 2]))
        kept += lesions.kept
        out = _cast_changed(array, canvas.work)
    else:
        kept, lesions, out = [], _Lesions.none(lab.shape), array.copy()
    rows = [_lesion_record(lab, out, spacing, painted, accession, study_uid) for painted in lesions.painted]
    # the report: the kept findings, less the omitted share, in the evaluation phrasing
    order = {k: n for n, k in enumerate(CATALOG)}
    kept.sort(key=lambda f: order[f.kind])
    said = misreport(kept, present, config.report_omission, 0.0, np.random.default_rng([*base, 6])) if kept else None
    reported = said.reported if said else []
    report = write_report(
        reported,
        present,
        tuple(sorted(present)),
        fov_of(present),
        np.random.default_rng([*base, 3]),
        reserved=config.reserved_phrasing,
    )
    organ_rows = _organ_rows(
        lab, counts, names, present, kept, said.omitted if said else [], report.status, voxel_ml, accession, study_uid
    )
    params["n_lesions"] = len(rows)
    return ImplantedStudy(
        Volume(out, np.asarray(ct.affine, float).copy(), dict(ct.meta)),
        lesions.mask,
        lesions.labels,
        pd.DataFrame(rows, columns=LESION_COLUMNS),
        pd.DataFrame(organ_rows, columns=ORGAN_COLUMNS),
        tuple(kept),
        tuple(said.omitted if said else ()),
        report.text,
        params,
    )


def _label_map(ct: Volume, labels: Volume | np.ndarray) -> np.ndarray:
    """The label map as integer `total` v2 indices, checked to lie on the CT's grid."""
    lab = np.asarray(labels.array if isinstance(labels, Volume) else labels)
    if lab.shape != ct.shape:
        raise ValueError(
            f"labels {lab.shape} and CT {ct.shape} are not on one grid (resample: pipeline.segment.grid.to_grid_of)"
        )
    if isinstance(labels, Volume) and not np.allclose(labels.affine, ct.affine, atol=1e-3):
        raise ValueError(
            "labels and CT have the same shape but different affines: resample the labels onto the CT first"
        )
    lab = np.rint(lab).astype(np.int64) if lab.dtype.kind not in "iu" else lab
    if lab.size and int(lab.min()) < 0:
        raise ValueError("the label map holds negative values: expected TotalSegmentator `total` (v2) class indices")
    return lab


def _blur(ct: Volume, spacing: np.ndarray, config: ImplantConfig) -> tuple[int, float, float, np.ndarray]:
    """(slice axis, slice thickness mm, margin mm, Gaussian sigma per axis mm): the scan's resolution, at which the
    painted change is blurred and beyond which it does not reach."""
    axis = slice_axis(ct.affine)
    thickness = float(config.slice_thickness_mm or ct.meta.get("slice_thickness") or spacing[axis])
    margin = float(config.margin_mm or thickness)
    sigma_mm = spacing / FWHM
    sigma_mm[axis] = thickness / FWHM
    return axis, thickness, margin, sigma_mm


@dataclass
class _Canvas:
    """The CT being painted (float32 ``work``), its label map and blur, and each organ's statistics, measured when an
    organ is first painted (and again after a diffuse change moved its mean)."""

    lab: np.ndarray
    work: np.ndarray
    spacing: np.ndarray
    sigma_mm: np.ndarray
    margin: float
    background_mm: float
    organs: dict[int, _Organ] = field(default_factory=dict)

    def organ(self, index: int) -> _Organ:
        """The statistics of organ ``index`` on the canvas as it is now."""
        if index not in self.organs:
            self.organs[index] = _organ_stats(index, self.lab, self.work, self.spacing, self.margin, self.background_mm)
        return self.organs[index]


def _paint_diffuse(
    canvas: _Canvas, findings: list[Finding], config: ImplantConfig, rng: np.random.Generator
) -> tuple[list[Finding], float | None]:
    """The diffuse changes first (steatosis: the liver lowered by a drawn shift), so that lesions are drawn against
    the changed parenchyma; the findings painted and the shift (None: none drawn)."""
    kept: list[Finding] = []
    shift = None
    for f in findings:
        if f.kind == "steatosis":
            o = canvas.organ(_index_of(f.organs[0]))
            shift = float(rng.uniform(*config.steatosis_shift_hu))
            _spill(canvas.work, o, np.where(o.mask, np.float32(shift), np.float32(0)), canvas.sigma_mm, canvas.spacing)
            canvas.organs.pop(o.index)  # its local mean moved
            kept.append(Finding(f.kind, f.organs, None, f.hedged))
    return kept, shift


# a painted lesion: its finding, organ index, number within the finding, voxels inside (in its box), box, the
# parenchyma's HU around it, its draw and the organ's noise
Painted = tuple[Finding, int, int, np.ndarray, tuple[slice, ...], float, LesionDraw, float]


@dataclass(frozen=True)
class _Lesions:
    """The focal lesions painted: the tumor mask, every lesion numbered, what was painted and the findings kept."""

    mask: np.ndarray  # uint8, 1 = a tumor's voxel
    labels: np.ndarray  # uint16, lesion numbers in painting order
    painted: list[Painted]
    kept: list[Finding]  # the lesion findings with at least one lesion painted, sized by the largest

    @staticmethod
    def none(shape: tuple[int, ...]) -> _Lesions:
        """Nothing painted."""
        return _Lesions(np.zeros(shape, np.uint8), np.zeros(shape, np.uint16), [], [])


def _paint_lesions(
    canvas: _Canvas, findings: list[Finding], config: ImplantConfig, rng: np.random.Generator
) -> _Lesions:
    """One to a few lesions per lesion finding, each placed inside its organ apart from the others, valued against the
    parenchyma around it; each organ's change blurred into the canvas once all are placed."""
    lab, spacing = canvas.lab, canvas.spacing
    lesions = _Lesions.none(lab.shape)
    taken = np.zeros(lab.shape, bool)
    deltas: dict[int, np.ndarray] = {}
    for f in findings:
        if f.kind not in LESION_KINDS:
            continue
        index = _index_of(f.organs[0])
        o = canvas.organ(index)
        sizes: list[float] = []
        for _ in range(lesion_count(rng)):
            draw = draw_lesion(f.kind, o.noise_hu, rng)
            inside, box, r_in = place_lesion(draw, index, lab, spacing, rng, exclude=taken)
            if not inside.any():
                continue
            box, inside = _within(box, inside, o.window)
            local = o.local(box)
            organ_hu = _parenchyma_hu(o, local, taken[box], spacing, config.background_mm)
            values = lesion_values(draw, f.kind, organ_hu, r_in, rng)
            delta = deltas.setdefault(index, np.zeros(o.mask.shape, np.float32))
            delta[local][inside] = values - o.mean[local][inside]
            taken[box] |= inside
            number = len(lesions.painted) + 1
            lesions.labels[box][inside] = number
            if CATALOG[f.kind].tumor:
                lesions.mask[box][inside] = 1
            lesions.painted.append((f, index, len(sizes), inside, box, organ_hu, draw, o.noise_hu))
            sizes.append(draw.diameter_mm)
        if sizes:
            lesions.kept.append(Finding(f.kind, f.organs, round(max(sizes), 0), f.hedged))
    for index, delta in deltas.items():
        _spill(canvas.work, canvas.organs[index], delta, canvas.sigma_mm, spacing)
    return lesions


def _lesion_record(
    lab: np.ndarray, out: np.ndarray, spacing: np.ndarray, painted: Painted, accession: str, study_uid: str
) -> dict:
    """The truth row of one painted lesion, measured on the painted volume."""
    f, index, number, inside, box, organ_hu, draw, noise = painted
    row = lesion_row(f.kind, f.organs[0], number, inside, box, lab, out, index, organ_hu, spacing, draw)
    return dict(
        row,
        accession=accession,
        study_uid=study_uid,
        noise_hu=round(noise, 2),
        iso_intense=bool(abs(row["mean_contrast_hu"]) < noise),
    )


def _organ_stats(
    index: int, lab: np.ndarray, work: np.ndarray, spacing: np.ndarray, margin: float, background_mm: float
) -> _Organ:
    """The organ's window (box + margin + background reach), mask, local mean and noise."""
    where = np.argwhere(lab == index)
    pad = np.ceil((margin + 3.0 * background_mm) / spacing).astype(int) + 1
    window = tuple(
        slice(max(0, int(a) - int(p)), min(n, int(b) + int(p) + 1))
        for a, b, p, n in zip(where.min(axis=0), where.max(axis=0), pad, lab.shape)
    )
    mask = lab[window] == index
    near = distance_transform_edt(~mask, sampling=spacing) <= margin
    sigma = background_mm / spacing
    weight = gaussian_filter(mask.astype(np.float32), sigma)
    mean = gaussian_filter(np.where(mask, work[window], np.float32(0)), sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(mask, mean / weight, np.float32(np.nan)).astype(np.float32)
    core = binary_erosion(mask)
    resid = (work[window] - mean)[core if core.sum() >= 50 else mask]
    noise = float(1.4826 * np.median(np.abs(resid - np.median(resid)))) if resid.size else 10.0
    return _Organ(index, window, mask, near, mean, max(noise, 1.0))


def _parenchyma_hu(
    o: _Organ, local: tuple[slice, ...], taken: np.ndarray, spacing: np.ndarray, background_mm: float
) -> float:
    """Median HU of the organ's local mean intensity around a lesion's box (``local``, window coordinates), widened
    by four background lengths, lesions excluded: the parenchyma the lesion's contrast is drawn against."""
    pad = np.ceil(4.0 * background_mm / spacing).astype(int)
    wide = tuple(slice(max(0, s.start - int(p)), min(n, s.stop + int(p))) for s, p, n in zip(local, pad, o.mask.shape))
    free = o.mask[wide].copy()
    inner = tuple(slice(s.start - w.start, s.stop - w.start) for s, w in zip(local, wide))
    free[inner] &= ~taken
    values = o.mean[wide][free]
    return float(np.median(values)) if values.size else float(np.nanmedian(o.mean))


def _within(
    box: tuple[slice, ...], inside: np.ndarray, window: tuple[slice, ...]
) -> tuple[tuple[slice, ...], np.ndarray]:
    """A lesion's box cut to its organ's window (every lesion voxel lies in the organ, so none is lost)."""
    cut = tuple(slice(max(b.start, w.start), min(b.stop, w.stop)) for b, w in zip(box, window))
    part = inside[tuple(slice(c.start - b.start, c.stop - b.start) for c, b in zip(cut, box))]
    if int(part.sum()) != int(inside.sum()):
        raise AssertionError("a lesion voxel lies outside its organ's window")
    return cut, part


def _spill(work: np.ndarray, o: _Organ, delta: np.ndarray, sigma_mm: np.ndarray, spacing: np.ndarray) -> None:
    """Add ``delta`` (the organ window's change) to ``work``, blurred to the scan's resolution, cut off outside the
    organ's margin."""
    blurred = gaussian_filter(delta, sigma_mm / spacing, mode="constant", truncate=4.0)
    blurred[~o.near] = 0.0
    work[o.window] += blurred


def _cast_changed(array: np.ndarray, work: np.ndarray) -> np.ndarray:
    """``work`` in ``array``'s dtype (rounded and clipped for integers), keeping each unchanged voxel's stored value."""
    out = array.copy()
    touched = work != array.astype(np.float32)
    values = work[touched]
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    out[touched] = values.astype(array.dtype)
    return out


def _organ_rows(
    lab: np.ndarray,
    counts: np.ndarray,
    names: dict[int, str],
    present: set[str],
    kept: list[Finding],
    omitted: list[Finding],
    status: dict[str, str],
    voxel_ml: float,
    accession: str,
    study_uid: str,
) -> list[dict]:
    """One row per organ of the label map: ``truth/organ_gold.parquet``'s columns (size_factor 1: no size change)."""
    border = np.zeros(len(counts), np.int64)
    for face in (lab[0], lab[-1], lab[:, 0], lab[:, -1], lab[:, :, 0], lab[:, :, -1]):
        border += np.bincount(face.ravel(), minlength=len(counts))[: len(counts)]
    rows = []
    for index in np.flatnonzero(counts).tolist():
        if index not in names:
            continue
        o = names[index]
        shown = [f for f in kept if o in f.organs]
        left = [f for f in omitted if o in f.organs]
        told = [f for f in shown if not any(f is g for g in left)]
        rows.append(
            {
                "accession": accession,
                "study_uid": study_uid,
                "organ": o,
                "in_image": o in present,
                "cut_by_fov": bool(border[index] > 0),
                "image_status": "abnormal" if shown else "normal",
                "report_status": status.get(o, "not_mentioned"),
                "abnormalities": sorted({f.canonical for f in shown}),
                "kinds": sorted({f.kind for f in shown}),
                "report_abnormalities": sorted({f.canonical for f in told}),
                "omitted_kinds": sorted({f.kind for f in left}),
                "report_only_kinds": [],
                "size_factor": 1.0,
                "volume_ratio": float("nan"),
                "volume_ml_native": float(counts[index]) * voxel_ml,
            }
        )
    return rows


# --- a whole set on disk, and the command line ---------------------------------------------------------------

FORMAT = "ct-glip/implant-2"  # bumped when the painting changes what a fingerprint stands for
STUDY_COLUMNS = [
    "study_key",
    "accession",
    "study_uid",
    "patient_key",
    "source",
    "index",
    "seed",
    "findings",
    "omitted_findings",
    "n_lesions",
    "slice_thickness_mm",
    "margin_mm",
    "steatosis_shift_hu",
    "shape_i",
    "shape_j",
    "shape_k",
    "dtype",
    "reserved_phrasing",
]


@dataclass(frozen=True)
class Source:
    """One real CT and its organ masks: ``volume`` a NIfTI file or a DICOM series folder, ``mask`` a multilabel NIfTI
    (``total`` v2 indices, or v1 with ``label_space="v1"``) or a folder of ``<organ>.nii.gz`` masks, on any grid that
    covers the scan."""

    name: str
    volume: Path
    mask: Path
    label_space: str = "v2"


@dataclass(frozen=True)
class QASet:
    out_dir: Path
    nifti_manifest: Path
    reports_csv: Path
    masks_manifest: Path
    studies: pd.DataFrame  # STUDY_COLUMNS
    lesions: pd.DataFrame  # LESION_COLUMNS
    organs: pd.DataFrame  # implant.ORGAN_COLUMNS
    n_written: int
    n_skipped: int


def load_source(source: Source) -> tuple[Volume, Volume]:
    """(CT, organ labels on the CT's grid) of a source."""
    from pipeline.segment.grid import to_grid_of
    from pipeline.segment.precomputed import load_folder, load_multilabel

    if Path(source.volume).is_dir():
        from pipeline.dicom.load import load_dicom_series

        ct = load_dicom_series(source.volume)
        ct = Volume(np.ascontiguousarray(ct.array), ct.affine, ct.meta)
    else:
        ct = load_nifti(source.volume)
        ct = Volume(np.asarray(ct.array), ct.affine, ct.meta)
    if ct.array.ndim != 3:
        raise ValueError(f"{source.volume}: expected a 3-d CT, got shape {ct.array.shape}")
    labels = (
        load_folder(Path(source.mask))
        if Path(source.mask).is_dir()
        else load_multilabel(Path(source.mask), source.label_space)
    )
    if labels.shape != ct.shape or not np.allclose(labels.affine, ct.affine, atol=1e-3):
        labels = to_grid_of(labels, ct)
    if not np.asarray(labels.array).any():
        raise ValueError(f"{source.mask}: no organ of the vocabulary lies inside the scan {source.volume}")
    return ct, Volume(np.asarray(labels.array, np.uint8), ct.affine, {"mask_format": "nifti_multilabel"})


def _content_hash(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def study_key(source: str, index: int) -> str:
    return f"{source}-implant-{index:03d}"


def _write_if_changed(data: bytes, path: Path) -> None:
    if not (path.is_file() and path.read_bytes() == data):
        write_bytes(data, path)


def _csv(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode()


def _parquet(df: pd.DataFrame, path: Path) -> None:
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    _write_if_changed(buf.getvalue(), path)


def write_qa_set(
    sources: Sequence[Source],
    out_dir: str | os.PathLike,
    n_per_source: int,
    seed: int = 0,
    config: ImplantConfig = ImplantConfig(),
    progress: Callable[[str], None] | None = None,
) -> QASet:
    """Paint ``n_per_source`` studies into each source scan and write them under ``out_dir`` (module docstring)."""
    out = Path(out_dir)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must differ: {names}")
    say = progress or log.info
    studies, lesions, organs = [], [], []
    n_written = n_skipped = 0
    total = n_per_source * len(sources)
    done = 0
    for number, source in enumerate(sources):
        t0 = time.perf_counter()
        digest = hashlib.sha256(
            f"{_content_hash(Path(source.volume))}{_content_hash(Path(source.mask))}{source.label_space}".encode()
        ).hexdigest()
        loaded = _source_labels(source, out, digest)
        for index in range(n_per_source):
            key = study_key(source.name, index)
            fp = _study_fingerprint(digest, config, seed, number, index)
            side = out / "truth" / "studies" / f"{key}.json"
            record = _read_json(side)
            done += 1
            if record.get("fingerprint") == fp and all(f.is_file() for f in _study_files(out, key)):
                n_skipped += 1
                say(f"study {done}/{total} {key}: unchanged, skipped")
            else:
                if loaded is None:
                    loaded = load_source(source)
                t1 = time.perf_counter()
                record = _write_study(out, loaded, source, number, index, seed, config, fp)
                n_written += 1
                study = record["study"]
                kinds = ", ".join(sorted(set(study["findings"]))) or "no finding"
                say(
                    f"study {done}/{total} {key}: {study['n_lesions']} lesions ({kinds}), "
                    f"{len(study['omitted_findings'])} left out of the report, {time.perf_counter() - t1:.1f} s"
                )
            studies.append(record["study"])
            lesions.extend(record["lesions"])
            organs.extend(record["organs"])
        log.debug("source %s done in %.1f s", source.name, time.perf_counter() - t0)
    return _write_tables(out, studies, lesions, organs, n_written, n_skipped)


def _source_labels(source: Source, out: Path, digest: str) -> tuple[Volume, Volume] | None:
    """Write the source's label map into the set where it is missing or stale (then the loaded source, else None)."""
    labels_path = out / "labels" / f"{source.name}.nii.gz"
    labels_stamp = out / "labels" / f"{source.name}.json"
    if labels_path.is_file() and _stamp(labels_stamp) == digest:
        return None
    loaded = load_source(source)
    save_nifti(loaded[1], labels_path, dtype=np.uint8)
    write_json({"fingerprint": digest, "volume": str(source.volume), "mask": str(source.mask)}, labels_stamp)
    return loaded


def _study_fingerprint(digest: str, config: ImplantConfig, seed: int, number: int, index: int) -> str:
    """What a study is made of: the source's content, the options, the seed and the study's place in the set."""
    return hashlib.sha256(
        json.dumps(
            {
                "format": FORMAT,
                "source": digest,
                "config": config.record(),
                "seed": seed,
                "source_number": number,
                "index": index,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()


def _study_files(out: Path, key: str) -> list[Path]:
    """A study's files: the scan, the tumor mask, the numbered lesions and the report."""
    return [out / d / f"{key}.nii.gz" for d in ("scans", "lesions", "lesion_labels")] + [out / "reports" / f"{key}.txt"]


def _write_study(
    out: Path,
    loaded: tuple[Volume, Volume],
    source: Source,
    number: int,
    index: int,
    seed: int,
    config: ImplantConfig,
    fp: str,
) -> dict:
    """Paint study ``index`` of source ``number`` and write its files and its record (returned)."""
    ct, labels = loaded
    key = study_key(source.name, index)
    files = _study_files(out, key)
    accession = f"IMP-{source.name}-{index:03d}"
    made = implant_study(ct, labels, (seed, number, index), config, accession=accession, study_uid=key)
    save_nifti(made.volume, files[0], dtype=ct.array.dtype)
    save_nifti(Volume(made.lesion_mask, ct.affine), files[1], dtype=np.uint8)
    save_nifti(Volume(made.lesion_labels, ct.affine), files[2], dtype=np.uint16)
    write_bytes(made.report.encode(), files[3])
    p = made.params
    record = {
        "fingerprint": fp,
        "report": made.report,
        "study": {
            "study_key": key,
            "accession": accession,
            "study_uid": key,
            "patient_key": source.name,
            "source": source.name,
            "index": index,
            "seed": seed,
            "findings": [f.kind for f in made.findings],
            "omitted_findings": [f.kind for f in made.omitted],
            "n_lesions": int(p["n_lesions"]),
            "slice_thickness_mm": p["slice_thickness_mm"],
            "margin_mm": p["margin_mm"],
            "steatosis_shift_hu": p.get("steatosis_shift_hu", float("nan")),
            "shape_i": ct.shape[0],
            "shape_j": ct.shape[1],
            "shape_k": ct.shape[2],
            "dtype": str(ct.array.dtype),
            "reserved_phrasing": config.reserved_phrasing,
        },
        "lesions": made.lesions.to_dict("records"),
        "organs": made.organs.to_dict("records"),
    }
    write_json(record, out / "truth" / "studies" / f"{key}.json")
    return record


def _write_tables(
    out: Path, studies: list[dict], lesions: list[dict], organs: list[dict], n_written: int, n_skipped: int
) -> QASet:
    """The set's manifests (scans, reports, masks, tumor masks) and truth tables, each rewritten only when changed."""
    study_df = pd.DataFrame(studies, columns=STUDY_COLUMNS)
    keys = study_df["study_key"]
    manifest = pd.DataFrame(
        {
            "scan_path": [f"scans/{k}.nii.gz" for k in keys],
            "patient_key": study_df["patient_key"],
            "study_key": keys,
            "report_key": study_df["accession"],
        }
    )
    reports = pd.DataFrame(
        {
            "AccessionNumber": study_df["accession"],
            "ReportText": [(out / "reports" / f"{k}.txt").read_text() for k in keys],
        }
    )
    masks = pd.DataFrame(
        {
            "study_key": keys,
            "mask_path": [f"labels/{s}.nii.gz" for s in study_df["source"]],
            "format": "nifti_multilabel",
        }
    )
    tumors = pd.DataFrame(
        {"study_key": keys, "mask_path": [f"lesions/{k}.nii.gz" for k in keys], "format": "nifti_multilabel"}
    )
    paths = {name: out / name for name in ("scans.csv", "reports.csv", "masks.csv", "lesions_manifest.csv")}
    for name, df in zip(paths, (manifest, reports, masks, tumors)):
        _write_if_changed(_csv(df), paths[name])
    lesion_df = _typed(pd.DataFrame(lesions, columns=LESION_COLUMNS))
    organ_df = pd.DataFrame(organs, columns=ORGAN_COLUMNS)
    _parquet(study_df, out / "truth" / "studies.parquet")
    _parquet(lesion_df, out / "truth" / "lesions.parquet")
    _parquet(organ_df, out / "truth" / "organ_gold.parquet")
    return QASet(
        out,
        paths["scans.csv"],
        paths["reports.csv"],
        paths["masks.csv"],
        study_df,
        lesion_df,
        organ_df,
        n_written,
        n_skipped,
    )


def _typed(lesions: pd.DataFrame) -> pd.DataFrame:
    """The lesion table with the synthetic cohort's column types (JSON round trips turn NaN into None)."""
    floats = ["diameter_mm", "extent_mm", "volume_ml", "contrast_hu", "mean_contrast_hu", "noise_hu"]
    out = lesions.copy()
    out[floats] = out[floats].astype(float)
    for c in ("lesion_no", "voxels"):
        out[c] = out[c].astype(int)
    for c in ("iso_intense", "touches_capsule", "placed_at_edge"):
        out[c] = out[c].astype(bool)
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _stamp(path: Path) -> str | None:
    return _read_json(path).get("fingerprint")


def sources_in_folder(folder: str | os.PathLike) -> list[Source]:
    """The real CTs of a folder with their masks, for a whole "real anatomy" cohort: ``<name>.nii.gz`` beside
    ``<name>_seg.nii.gz`` (a multilabel map) or ``<name>_seg/`` (a folder of organ masks)."""
    root = Path(folder)
    out = []
    for scan in sorted(root.glob("*.nii.gz")):
        name = scan.name[: -len(".nii.gz")]
        if name.endswith("_seg"):
            continue
        for mask in (root / f"{name}_seg.nii.gz", root / f"{name}_seg"):
            if mask.exists():
                out.append(Source(name, scan, mask))
                break
        else:
            log.warning("%s has no %s_seg.nii.gz or %s_seg/ beside it; skipped", scan.name, name, name)
    return out


def _parser() -> argparse.ArgumentParser:
    """The command line's options."""
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.synthetic.implant",
        description="Paint known lesions into a real CT inside its own organ masks and write N studies that the "
        "own-archive NIfTI route reads as they are (scans.csv, reports.csv, masks.csv; docs/OWN_ARCHIVE.md), "
        "with their truth (truth/lesions.parquet, truth/organ_gold.parquet): a quality-assurance phantom made from "
        "your own scan.",
        epilog="Example: python -m pipeline.synthetic.implant --volume ct.nii.gz --mask seg.nii.gz --n 20 --out qa/ "
        "--montage qa.png. Re-running skips studies whose inputs and options are unchanged. What is painted and what "
        "is left out (organ enlargement) is in pipeline/synthetic/implant.py.",
    )
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--volume", type=Path, help="the real CT as NIfTI (HU), any orientation and spacing")
    src.add_argument("--dicom", type=Path, metavar="FOLDER", help="the real CT as a folder holding one DICOM series")
    ap.add_argument(
        "--mask",
        type=Path,
        required=True,
        help="its organ label map: multilabel NIfTI in TotalSegmentator "
        "'total' (v2) indices, or a folder of <organ>.nii.gz masks; any grid covering the scan",
    )
    ap.add_argument(
        "--label-space", choices=("v2", "v1"), default="v2", help="index space of a multilabel --mask (default v2)"
    )
    ap.add_argument("--n", type=int, default=20, help="studies to write (default %(default)s)")
    ap.add_argument(
        "--out", type=Path, required=True, help="output folder (created; existing unchanged studies are kept)"
    )
    ap.add_argument("--seed", type=int, default=0, help="random seed; every study derives from (seed, index)")
    ap.add_argument(
        "--name",
        default="",
        help="the source's name in study keys and as patient_key (default: the file or folder name)",
    )
    ap.add_argument(
        "--kinds", default=",".join(IMPLANTABLE), help="comma-separated kinds to paint (default: all, %(default)s)"
    )
    ap.add_argument(
        "--finding-prob",
        type=float,
        default=ImplantConfig.finding_prob,
        help="chance of each kind per study where its organ is in the scan (default %(default)s)",
    )
    ap.add_argument(
        "--omission",
        type=float,
        default=ImplantConfig.report_omission,
        help="share of painted findings the report leaves out (default %(default)s)",
    )
    ap.add_argument(
        "--slice-thickness",
        type=float,
        default=None,
        metavar="MM",
        help="edge blur FWHM along the slice axis (default: the DICOM SliceThickness, else the slice spacing)",
    )
    ap.add_argument(
        "--margin",
        type=float,
        default=None,
        metavar="MM",
        help="how far outside its organ a change may reach (default: the slice thickness)",
    )
    ap.add_argument(
        "--montage",
        type=Path,
        default=None,
        metavar="PNG",
        help="also write a picture of painted slices with the lesions outlined",
    )
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    return ap


def main(argv: list[str] | None = None) -> int:
    from nibabel.filebasedimages import ImageFileError

    ap = _parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.n < 1:
        ap.error("--n must be at least 1")
    scan = args.volume or args.dicom
    for path, what in ((scan, "--volume/--dicom"), (args.mask, "--mask")):
        if not path.exists():
            ap.error(f"{what} {path} does not exist")
    name = args.name or scan.name.removesuffix(".gz").removesuffix(".nii")
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    try:
        config = ImplantConfig(
            kinds=kinds,
            finding_prob=args.finding_prob,
            report_omission=args.omission,
            slice_thickness_mm=args.slice_thickness,
            margin_mm=args.margin,
        )
    except ValueError as err:
        ap.error(str(err))
    try:
        made = write_qa_set([Source(name, scan, args.mask, args.label_space)], args.out, args.n, args.seed, config)
    except (ValueError, OSError, ImageFileError) as err:  # ImageFileError: a file nibabel cannot read as an image
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.montage is not None:
        from pipeline.synthetic.montage import qa_montage_png

        originals = {name: load_source(Source(name, scan, args.mask, args.label_space))[0]}
        write_bytes(qa_montage_png(made, originals), args.montage)
        log.info("montage: %s", args.montage)
    log.info(
        "%d studies written, %d unchanged, %d lesions in %s; own-archive config: kind nifti, nifti_manifest %s, "
        "reports_csv %s, masks_manifest %s",
        made.n_written,
        made.n_skipped,
        len(made.lesions),
        args.out,
        made.nifti_manifest,
        made.reports_csv,
        made.masks_manifest,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
