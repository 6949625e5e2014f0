"""The synthetic cohort: one study at a time from (spec, index), written like a hospital export.

Layout under ``out_dir``: ``dicom/`` (varied folder layouts), ``reports.csv`` (RIS export),
``masks/manifest.csv`` and ``truth/`` (docs/ARCHITECTURE.md). Everything derives from
``(seed, index)``, so any study can be rebuilt alone and memory stays flat for any cohort size.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from pipeline import vocab
from pipeline.atomic import atomic_path, write_parquet
from pipeline.synthetic import identity
from pipeline.synthetic.anatomy import Alterations, Patient, build_anatomy, drawn_organs, index_of, paint
from pipeline.synthetic.appearance import apply_appearance, draw_appearance
from pipeline.synthetic.dicom_writer import SeriesHeader, write_ct_series
from pipeline.synthetic.findings import (
    SIZES,
    Finding,
    VariedLesions,
    alterations,
    place_lesions,
    sample_findings,
    varied_sizes,
)
from pipeline.synthetic.lesions import LESION_COLUMNS
from pipeline.synthetic.reports import Misreport, Report, misreport, write_report
from pipeline.synthetic.series import coronal_reformat, scout
from pipeline.synthetic.shapes import Grid
from pipeline.volume import Volume, save_nifti, spacing_of

log = logging.getLogger(__name__)

FOVS = ("chest", "abdomen_pelvis", "chest_abdomen_pelvis")
# Nominal z extent (top, bottom) in mm of each field of view, before patient scale and jitter.
_FOV_Z = {"chest": (215.0, -70.0), "abdomen_pelvis": (20.0, -440.0), "chest_abdomen_pelvis": (215.0, -440.0)}
_BODY_PART = {
    "chest": "CHEST",
    "abdomen_pelvis": "ABDOMEN",
    "chest_abdomen_pelvis": "CHEST_ABD_PELVIS",
}  # CS: 16 chars max
_AIR_MARGIN_MM = 4.0  # air between the skin and the in-plane edge of the field of view
FAULTS = ("truncated_file", "mr_only", "empty_folder", "missing_slice", "missing_report")


@dataclass(frozen=True)
class CohortSpec:
    """What to generate. Defaults make the demo: 24 studies in well under a minute and ~300 MB."""

    n_studies: int = 24  # regular studies; faulty inputs come on top (see `faults`)
    seed: int = 0  # everything derives from (seed, study index)
    reserved_phrasing: bool = False  # reports use only the held-out paraphrase bank (evaluation)
    faults: bool = True  # add one study/folder per kind in FAULTS, recorded in truth/faults.parquet
    matrix_sizes: tuple[int, ...] = (256, 320, 384, 512)  # in-plane sizes; the smallest covering the body wins
    # Pixel spacing is drawn uniformly, then raised (up to the max) to fit the body. Any range in
    # 0.6-1.0 mm is valid; the demo keeps the upper end so a 256-320 matrix covers the body.
    pixel_spacing_mm: tuple[float, float] = (0.88, 1.0)
    slice_spacings_mm: tuple[float, ...] = (3.0, 4.0, 5.0, 5.0)  # choices (repeats weight them); 1-5 mm are valid
    # Overall patient size. The demo default is a small adult, so the cohort stays small on disk
    # (< 400 MB for 24 studies); (0.9, 1.1) with 512 matrices gives full adult sizes.
    body_scale: tuple[float, float] = (0.66, 0.76)
    repeat_patient_prob: float = 0.25  # chance a study is a follow-up of the previous patient
    companion_series_prob: float = 0.5  # chance of each extra series: a scout, a coronal reformat
    noise_hu: float = 12.0
    fov_weights: tuple[float, float, float] = (0.3, 0.35, 0.35)  # chest, abdomen_pelvis, chest_abdomen_pelvis
    # "uniform": one HU per organ for everyone, one noise level (the demo); "varied": per-study contrast phase,
    # per-patient organ HU, texture, slice blur and noise, recorded in truth/studies.parquet (appearance.py)
    appearance: str = "uniform"
    # "fixed": organs at the patient's scale, "-megaly" well above it (the demo); "varied": normal liver, spleen
    # and heart sizes spread into the "-megaly" range (findings.SIZES), the volume ratio in organ_gold
    organ_sizes: str = "fixed"
    # "simple": one constant-HU sphere inside its organ (the demo); "varied": 5-50 mm, iso-intense to obvious,
    # rim / necrotic, lobulated, at the capsule, several (lesions.py); truth/lesions.parquet has one row per lesion
    lesions: str = "simple"
    report_omission: float = 0.0  # share of image findings the report leaves out
    report_extra: float = 0.0  # share of the report's findings that the image does not show
    # the reports of validation and test patients (by pipeline.pairs' split of their pseudonymous id) use the
    # held-out paraphrase bank, training reports the default one
    reserved_for_evaluation: bool = False
    # train / val / test shares that pipeline.pairs will be run with (its `split_ratios`): the generator needs them to
    # know which patients are evaluated; empty = pipeline.pairs' defaults
    split_ratios: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.appearance not in ("uniform", "varied"):
            raise ValueError(f"appearance must be 'uniform' or 'varied', not {self.appearance!r}")
        if self.organ_sizes not in ("fixed", "varied"):
            raise ValueError(f"organ_sizes must be 'fixed' or 'varied', not {self.organ_sizes!r}")
        if self.lesions not in ("simple", "varied"):
            raise ValueError(f"lesions must be 'simple' or 'varied', not {self.lesions!r}")
        if not (0.0 <= self.report_omission < 1.0 and 0.0 <= self.report_extra < 1.0):
            raise ValueError("report_omission and report_extra are shares in [0, 1)")
        if self.split_ratios and (len(self.split_ratios) != 3 or abs(sum(self.split_ratios) - 1.0) > 1e-6):
            raise ValueError(f"split_ratios must be three shares summing to 1, not {self.split_ratios}")


# Named cohorts: "demo" (what `make run` and most tests use) and "benchmark", the cohort that needs learning
# (issue 14): every realism setting on, reports about as imperfect as real ones (roughly: a radiologist misses some
# 10-30% of image findings on review, and over-calls fewer), the reserved phrasing on validation and test.
PRESETS: dict[str, dict] = {
    "demo": {},
    "benchmark": {
        "appearance": "varied",
        "organ_sizes": "varied",
        "lesions": "varied",
        "report_omission": 0.15,
        "report_extra": 0.05,
        "reserved_for_evaluation": True,
    },
}


def cohort_spec(preset: str = "demo", **overrides) -> CohortSpec:
    """The ``CohortSpec`` of a named preset, with ``overrides`` (n_studies, seed, ...) on top."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, not {preset!r}")
    return CohortSpec(**{**PRESETS[preset], **overrides})


def volume_ratios(patient: Patient, alt: Alterations, organs: tuple[str, ...]) -> dict[str, float]:
    """Each organ's painted volume over the same patient's nominal one (no size change), on a coarse grid
    holding the whole torso: neighbours and the body wall clip an enlarged organ, so this is not the factor cubed."""
    from dataclasses import replace

    grid = Grid(np.arange(260.0, -260.0, -5.0), np.arange(260.0, -260.0, -5.0), np.arange(-620.0, 380.0, 5.0))
    nominal, _ = paint(build_anatomy(patient, replace(alt, organ_scale={})), grid, patient)
    actual, _ = paint(build_anatomy(patient, alt), grid, patient)
    return {
        o: round(float((actual == index_of(o)).sum()) / max(float((nominal == index_of(o)).sum()), 1.0), 3)
        for o in organs
    }


def expected_split(patient_mrn: str, ratios: tuple[float, ...] = ()) -> str:
    """The split pipeline.pairs will give this patient with ``ratios`` (default: its own) and its default salt, under
    the pseudonym key of this process (``CTGLIP_PSEUDONYM_KEY``): generate and pair with the same key and ratios."""
    from pipeline.ids import pseudonym
    from pipeline.pairs import PairConfig, assign_split

    cfg = PairConfig()
    return str(
        assign_split(
            pd.Series([pseudonym("patient", patient_mrn)]),
            cast("tuple[float, float, float]", tuple(ratios)) or cfg.split_ratios,  # three shares (CohortSpec checks)
            cfg.split_salt,
        ).iloc[0]
    )


@dataclass(frozen=True)
class ExtraSeries:
    role: str  # "localizer" / "coronal" / "mr"
    hu: np.ndarray
    affine: np.ndarray
    header: SeriesHeader


@dataclass(frozen=True)
class SyntheticStudy:
    index: int
    patient_key: str
    fov: str
    header: SeriesHeader  # of the main (diagnostic axial) series
    hu: np.ndarray  # (i, j, k) int16 HU of the main series, exactly what the DICOM files hold
    affine: np.ndarray  # RAS+ of the main series
    labels: np.ndarray  # uint8 `total` v2 indices on the same grid
    lesions: np.ndarray  # uint8, 1 = tumor
    report: str
    findings: tuple[Finding, ...]
    gold: tuple[dict, ...]  # organ_gold rows
    extras: tuple[ExtraSeries, ...] = ()
    params: dict = field(default_factory=dict)
    lesion_rows: tuple[dict, ...] = ()  # truth/lesions.parquet rows, one per painted focal lesion
    misreport: Misreport | None = None  # what the report says against the image (None: exactly the image's findings)

    @property
    def accession(self) -> str:
        return self.header.accession_number

    @property
    def study_uid(self) -> str:
        return self.header.study_instance_uid


@dataclass(frozen=True)
class CohortManifest:
    out_dir: Path
    n_studies: int
    studies: pd.DataFrame  # the rows of truth/studies.parquet
    faults: pd.DataFrame  # the rows of truth/faults.parquet
    dicom_dir: Path
    reports_csv: Path
    masks_manifest: Path
    truth_dir: Path


def patient_plan(spec: CohortSpec, n: int) -> list[tuple[int, int]]:
    """(patient number, visit number) of studies 0..n-1; some patients return for a second study."""
    rng = np.random.default_rng([spec.seed, 7])
    plan: list[tuple[int, int]] = []
    patient = -1
    for _ in range(n):
        if plan and plan[-1][1] == 0 and rng.random() < spec.repeat_patient_prob:
            plan.append((patient, 1))
        else:
            patient += 1
            plan.append((patient, 0))
    return plan


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def _grid(spec: CohortSpec, patient: Patient, fov: str, rng: np.random.Generator) -> tuple[Grid, dict]:
    """A DICOM-natural axial grid (i -> patient left, j -> posterior, k up or down) around the body."""
    from pipeline.synthetic.anatomy import body_half_axes

    s = patient.scale
    top, bottom = (v * s for v in _FOV_Z[fov])
    top += rng.normal(0, 12)
    bottom += rng.normal(0, 12)
    z_probe = np.linspace(bottom, top, 50)
    ax, ay = body_half_axes(z_probe, patient)
    lo, hi = spec.pixel_spacing_mm
    dx = float(rng.uniform(lo, hi))
    dz = float(spec.slice_spacings_mm[int(rng.integers(len(spec.slice_spacings_mm)))])
    nk = int(np.floor((top - bottom) / dz)) + 1
    cx, cy = rng.normal(0, 5), rng.normal(-5, 5)  # the patient is not centred exactly on the table
    # The whole skin outline fits in the in-plane field of view with a margin of air, so organs (all
    # inside the skin) never touch its in-plane faces, here or after resampling: only z cuts happen.
    need = 2 * max(float(ax.max()) + abs(cx), float(ay.max()) + abs(cy)) + 2 * _AIR_MARGIN_MM
    sizes = sorted(spec.matrix_sizes)
    n = next((m for m in sizes if m * hi >= need), sizes[-1])  # the smallest matrix that can cover the body
    dx = max(dx, min(hi, need / n))  # raise the spacing (up to the max) to fit
    half = (n - 1) / 2.0
    xs = cx + dx * (half - np.arange(n))
    ys = cy + dx * (half - np.arange(n))
    head_first = bool(rng.random() < 0.6)  # k runs head to foot in most exports
    zs = top - dz * np.arange(nk) if head_first else (top - dz * (nk - 1)) + dz * np.arange(nk)
    return Grid(xs, ys, zs), {"matrix": n, "pixel_spacing": dx, "slice_spacing": dz, "k_superior": not head_first}


def _affine(grid: Grid) -> np.ndarray:
    a = np.eye(4)
    a[0, 0] = grid.xs[1] - grid.xs[0]
    a[1, 1] = grid.ys[1] - grid.ys[0]
    a[2, 2] = grid.zs[1] - grid.zs[0] if len(grid.zs) > 1 else 1.0
    a[:3, 3] = grid.xs[0], grid.ys[0], grid.zs[0]
    return a


def _visible(organs, grid: Grid) -> set[str]:
    """Organs whose centre lies inside the scanned z range (where a finding could be seen)."""
    zlo, zhi = float(grid.zs.min()), float(grid.zs.max())
    out = set()
    for org in organs:
        lo, hi = org.parts[0].prim.bbox()
        if zlo + 5 <= (lo[2] + hi[2]) / 2 <= zhi - 5:
            out.add(org.name)
    return out


def synthesize_study(spec: CohortSpec, index: int) -> SyntheticStudy:
    """Study ``index`` of the cohort, in memory: the main series' HU and affine, truth and report."""
    patient_no, visit = patient_plan(spec, index + 1)[index]
    person, patient, first_date = _patient(spec, patient_no)
    # the study's own stream: the steps below draw from it in this order, which keeps every study as it was
    rng = np.random.default_rng([spec.seed, index, 2])
    date = first_date if visit == 0 else identity.study_date(rng, after=first_date)
    fov = FOVS[int(rng.choice(3, p=np.asarray(spec.fov_weights) / sum(spec.fov_weights)))]
    grid, params = _grid(spec, patient, fov, rng)
    findings, alt, ratios, params = _findings(spec, index, patient_no, patient, grid, params, rng)
    image = _image(spec, index, patient, alt, grid, findings, params, rng)
    drawn = drawn_organs()
    in_image = {o for o in drawn if image.counts[index_of(o)] > 0}
    scanner = identity.SCANNERS[int(rng.integers(len(identity.SCANNERS)))]
    accession = identity.accession(rng, date, index)
    split = expected_split(person[1], spec.split_ratios)
    reserved = spec.reserved_phrasing or (spec.reserved_for_evaluation and split != "train")
    report, said = _report(spec, index, visit, first_date, image.findings, in_image, drawn, fov, reserved, rng)
    params = dict(image.params, split=split, reserved_phrasing=reserved)
    study_uid = _uid(spec.seed, index, "study")
    header = _series_header(spec, index, person, accession, study_uid, date, fov, scanner, params, rng)
    gold = _organ_gold(drawn, image, in_image, report, said, alt, ratios, accession, study_uid)
    extras = _companions(spec, image, header, rng)
    params = dict(params, patient_scale=patient.scale, visit=visit, n_slices=int(image.hu.shape[2]))
    rows = tuple(
        dict(
            r,
            accession=accession,
            study_uid=study_uid,
            noise_hu=float(image.noise_hu),
            iso_intense=bool(abs(r["mean_contrast_hu"]) < image.noise_hu),
        )
        for r in image.lesion_rows
    )
    return SyntheticStudy(
        index,
        f"patient-{spec.seed}-{patient_no}",
        fov,
        header,
        image.hu,
        image.affine,
        image.labels,
        image.lesions,
        report.text,
        tuple(image.findings),
        gold,
        extras,
        params,
        rows,
        said,
    )


def _patient(spec: CohortSpec, patient_no: int) -> tuple[tuple[str, str, str, str], Patient, str]:
    """The patient's identity (name, MRN, birth date, sex), body and first study date, from the patient's stream."""
    prng = np.random.default_rng([spec.seed, patient_no, 1])
    person = identity.person(prng)
    patient = Patient(
        scale=float(prng.uniform(*spec.body_scale)),
        fat_mm=float(prng.uniform(8, 24)),
        width=float(prng.uniform(0.92, 1.08)),
        seed=int(prng.integers(2**31)),
    )
    return person, patient, identity.study_date(prng)


def _findings(
    spec: CohortSpec,
    index: int,
    patient_no: int,
    patient: Patient,
    grid: Grid,
    params: dict,
    rng: np.random.Generator,
) -> tuple[list[Finding], Alterations, dict[str, float], dict]:
    """The findings of the organs in the field of view, the whole-organ alterations they make and, with varied organ
    sizes, every organ's size (recorded in ``params``) with its painted volume against the nominal one."""
    findings = sample_findings(rng, _visible(build_anatomy(patient), grid))
    alt, findings = alterations(findings, rng)
    # every realism setting draws from its own random stream: with them off the demo stays bit for bit as it was
    if spec.organ_sizes != "varied":
        return findings, alt, {}, params
    alt, findings = varied_sizes(
        findings,
        alt,
        np.random.default_rng([spec.seed, patient_no, 4]),
        np.random.default_rng([spec.seed, index, 4]),
    )
    params = dict(params, organ_scale=json.dumps({o: round(alt.organ_scale[o], 3) for o in sorted(alt.organ_scale)}))
    return findings, alt, volume_ratios(patient, alt, tuple(SIZES)), params


@dataclass(frozen=True)
class _Image:
    """The main series of a study as painted: HU, labels, lesions, and what painting them decided."""

    hu: np.ndarray  # (i, j, k) int16
    affine: np.ndarray
    labels: np.ndarray  # uint8 `total` v2 indices
    lesions: np.ndarray  # uint8, 1 = tumor
    counts: np.ndarray  # (256,) voxels per label
    border: np.ndarray  # (256,) voxels per label on the volume's faces (cut by the field of view)
    findings: list[Finding]  # those painted
    lesion_rows: list[dict]  # one truth row per painted focal lesion
    noise_hu: float
    params: dict  # the grid's parameters, with the appearance drawn (varied appearance)


def _image(
    spec: CohortSpec,
    index: int,
    patient: Patient,
    alt: Alterations,
    grid: Grid,
    findings: list[Finding],
    params: dict,
    rng: np.random.Generator,
) -> _Image:
    """The torso painted with its alterations, its appearance (varied: from the study's appearance stream), the focal
    lesions and the noise, stored as int16 HU."""
    labels, hu = paint(build_anatomy(patient, alt), grid, patient)
    affine = _affine(grid)
    noise_hu = spec.noise_hu
    look = None
    if spec.appearance == "varied":
        arng = np.random.default_rng([spec.seed, index, 3])
        names = vocab.class_map(vocab.V2_TASK)
        look = draw_appearance(
            arng, [names[int(i)] for i in np.unique(labels) if int(i) in names], params["slice_spacing"]
        )
        noise_hu = look.noise_hu
    varied = VariedLesions(np.random.default_rng([spec.seed, index, 5]), noise_hu) if spec.lesions == "varied" else None
    lesions, findings, lesion_rows = place_lesions(findings, labels, hu, grid, rng, varied)
    if look is not None:
        hu = apply_appearance(hu, labels, look, spacing_of(affine), arng)
        params = dict(params, **look.record())
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(noise_hu)
    hu_i16 = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    counts = np.bincount(labels.ravel(), minlength=256)
    border = np.zeros(256, dtype=np.int64)
    for face in (labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]):
        border += np.bincount(face.ravel(), minlength=256)
    return _Image(hu_i16, affine, labels, lesions, counts, border, findings, lesion_rows, noise_hu, params)


def _report(
    spec: CohortSpec,
    index: int,
    visit: int,
    first_date: str,
    findings: list[Finding],
    in_image: set[str],
    drawn: tuple[str, ...],
    fov: str,
    reserved: bool,
    rng: np.random.Generator,
) -> tuple[Report, Misreport | None]:
    """The study's report, of the image's findings or (with omissions or extras) of what its misreport says; a
    follow-up names the first study."""
    comparison = None
    if visit == 1:
        comparison = f"CT dated {first_date[:4]}-{first_date[4:6]}-{first_date[6:]}."
    said = None
    if spec.report_omission or spec.report_extra:
        said = misreport(
            findings, in_image, spec.report_omission, spec.report_extra, np.random.default_rng([spec.seed, index, 6])
        )
    report = write_report(
        said.reported if said else findings,
        in_image,
        drawn,
        fov,
        rng,
        reserved=reserved,
        comparison=comparison,
        radiologist=identity.RADIOLOGISTS[int(rng.integers(len(identity.RADIOLOGISTS)))],
    )
    return report, said


def _series_header(
    spec: CohortSpec,
    index: int,
    person: tuple[str, str, str, str],
    accession: str,
    study_uid: str,
    date: str,
    fov: str,
    scanner: tuple[str, str],
    params: dict,
    rng: np.random.Generator,
) -> SeriesHeader:
    """The main series' DICOM header: the patient, the study, and a drawn time, series number, site and kVp."""
    name, mrn, birth, sex = person
    return SeriesHeader(
        patient_name=name,
        patient_id=mrn,
        patient_birth_date=birth,
        patient_sex=sex,
        accession_number=accession,
        study_instance_uid=study_uid,
        series_instance_uid=_uid(spec.seed, index, "series", 2),
        frame_of_reference_uid=_uid(spec.seed, index, "for"),
        study_date=date,
        study_time=f"{int(rng.integers(7, 19)):02d}{int(rng.integers(60)):02d}{int(rng.integers(60)):02d}",
        study_id=str(1000 + index),
        study_description=f"CT {fov.replace('_', ' ').upper()} W CONTRAST",
        series_number=2 + int(rng.integers(3)),
        series_description=f"AXIAL {params['slice_spacing']:.1f} SOFT TISSUE",
        institution_name=identity.INSTITUTIONS[int(rng.integers(len(identity.INSTITUTIONS)))],
        manufacturer=scanner[0],
        manufacturer_model_name=scanner[1],
        kvp=float(rng.choice([100.0, 120.0, 120.0, 140.0])),
        body_part_examined=_BODY_PART[fov],
        contrast_bolus_agent="OMNIPAQUE 350",
        rescale_intercept=-1024.0 if rng.random() < 0.7 else 0.0,
    )


def _per_organ(findings: list[Finding]) -> dict[str, list[Finding]]:
    """The findings of each organ they name."""
    out: dict[str, list[Finding]] = {}
    for f in findings:
        for o in f.organs:
            out.setdefault(o, []).append(f)
    return out


def _organ_gold(
    drawn: tuple[str, ...],
    image: _Image,
    in_image: set[str],
    report: Report,
    said: Misreport | None,
    alt: Alterations,
    ratios: dict[str, float],
    accession: str,
    study_uid: str,
) -> tuple[dict, ...]:
    """One truth row per drawn organ (``truth/organ_gold.parquet``): what the image shows, what the report says."""
    voxel_ml = float(abs(np.linalg.det(image.affine[:3, :3]))) / 1000.0
    by_organ = _per_organ(image.findings)  # the image truth
    said_by = _per_organ(said.reported) if said else by_organ
    omitted = _per_organ(said.omitted) if said else {}
    extra = _per_organ(said.report_only) if said else {}
    return tuple(
        {
            "accession": accession,
            "study_uid": study_uid,
            "organ": o,
            "in_image": o in in_image,
            "cut_by_fov": bool(image.border[index_of(o)] > 0),
            "image_status": "abnormal" if o in by_organ else "normal",
            "report_status": report.status.get(o, "not_mentioned"),
            "abnormalities": sorted({f.canonical for f in by_organ.get(o, [])}),  # what the image shows
            "kinds": sorted({f.kind for f in by_organ.get(o, [])}),
            "report_abnormalities": sorted({f.canonical for f in said_by.get(o, [])}),  # what the report says
            "omitted_kinds": sorted({f.kind for f in omitted.get(o, [])}),  # in the image, not in the report
            "report_only_kinds": sorted({f.kind for f in extra.get(o, [])}),  # in the report, not in the image
            "size_factor": float(alt.organ_scale.get(o, 1.0)),  # radius factor against the patient's nominal organ
            "volume_ratio": ratios.get(o, float("nan")),  # painted volume against it (organ_sizes="varied" only)
            "volume_ml_native": float(image.counts[index_of(o)]) * voxel_ml,
        }
        for o in drawn
    )


def _companions(
    spec: CohortSpec, image: _Image, header: SeriesHeader, rng: np.random.Generator
) -> tuple[ExtraSeries, ...]:
    """The extra series some exports hold beside the main one: a scout and a coronal reformat, each by chance."""
    extras = []
    if rng.random() < spec.companion_series_prob:
        loc, loc_aff = scout(image.hu, image.affine)
        extras.append(
            ExtraSeries(
                "localizer", loc, loc_aff, _companion(header, 1, "TOPOGRAM", ("ORIGINAL", "PRIMARY", "LOCALIZER"), 0)
            )
        )
    if rng.random() < spec.companion_series_prob:
        cor, cor_aff = coronal_reformat(image.hu, image.affine, slab_mm=5.0)
        extras.append(
            ExtraSeries(
                "coronal",
                cor,
                cor_aff,
                _companion(header, 5, "COR 5.0 MPR", ("DERIVED", "SECONDARY", "REFORMATTED"), 1),
            )
        )
    return tuple(extras)


def _companion(h: SeriesHeader, number: int, desc: str, image_type: tuple[str, ...], salt: int) -> SeriesHeader:
    from dataclasses import replace

    return replace(
        h,
        series_number=number,
        series_description=desc,
        image_type=image_type,
        series_instance_uid=_uid(h.series_instance_uid, "companion", salt),
        slice_thickness=None,
    )


def _series_dirs(study: SyntheticStudy, root: Path, rng: np.random.Generator) -> tuple[str, dict[str, Path]]:
    """Vary the archive layout between studies, as exports from different systems do."""
    h = study.header
    roles = ["main"] + [e.role for e in study.extras]
    layout = ("nested", "flat", "dated", "uid")[int(rng.integers(4))]
    if layout == "nested":
        base = root / h.patient_id / f"{h.study_date}_{h.accession_number}"
        dirs = {r: base / f"S{n + 1:03d}_{r.upper()}" for n, r in enumerate(roles)}
    elif layout == "flat":
        base = root / f"export_{int(rng.integers(16**8)):08x}"
        dirs = {r: base for r in roles}
    elif layout == "dated":
        base = root / h.study_date[:4] / h.study_date[4:6] / h.accession_number
        dirs = {r: base / f"SERIES{n + 1}" for n, r in enumerate(roles)}
    else:
        base = root / h.study_instance_uid
        dirs = {"main": base / h.series_instance_uid}
        dirs.update({e.role: base / e.header.series_instance_uid for e in study.extras})
    return layout, dirs


def _write_study(
    study: SyntheticStudy, dicom_root: Path, truth: Path, rng: np.random.Generator
) -> tuple[str, Path, list[Path]]:
    layout, dirs = _series_dirs(study, dicom_root, rng)
    scramble = layout == "flat" or rng.random() < 0.4
    syntax = ImplicitVRLittleEndian if rng.random() < 0.2 else ExplicitVRLittleEndian
    seed = int(rng.integers(2**31)) if scramble else None
    # Flat folders mix series, so their names must never collide: always random there.
    main = write_ct_series(
        study.hu, study.affine, dirs["main"], study.header, file_order_seed=seed, transfer_syntax=syntax
    )
    for extra in study.extras:
        s = int(rng.integers(2**31)) if (scramble or layout == "flat") else None
        write_ct_series(
            extra.hu, extra.affine, dirs[extra.role], extra.header, file_order_seed=s, transfer_syntax=syntax
        )
    save_nifti(Volume(study.labels, study.affine), truth / "labels" / f"{study.study_uid}.nii.gz", dtype=np.uint8)
    save_nifti(Volume(study.lesions, study.affine), truth / "lesions" / f"{study.study_uid}.nii.gz", dtype=np.uint8)
    return layout, dirs["main"], main


def _study_files(spec: CohortSpec, index: int, fault: str | None, out_dir: Path) -> dict:
    """Generate and write study ``index`` (with its fault); returns its report and truth rows. Runs in a worker
    process."""
    dicom_root, truth = out_dir / "dicom", out_dir / "truth"
    study = synthesize_study(spec, index)
    wrng = np.random.default_rng([spec.seed, index, 3])
    layout, folder, paths = _write_study(study, dicom_root, truth, wrng)
    detail = ""
    if fault == "truncated_file":
        victim = paths[len(paths) // 3]
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
        detail = victim.relative_to(out_dir).as_posix()
    elif fault == "missing_slice":
        victim = paths[len(paths) // 2]
        victim.unlink()
        detail = f"instance {len(paths) // 2 + 1} of {len(paths)} removed"
    return {
        "report": None if fault == "missing_report" else (study.accession, study.report),
        "fault": fault
        and {
            "fault": fault,
            "accession": study.accession,
            "study_uid": study.study_uid,
            "folder": folder.relative_to(out_dir).as_posix(),
            "detail": detail,
        },
        "study": {
            "accession": study.accession,
            "study_uid": study.study_uid,
            "patient_key": study.patient_key,
            "fov": study.fov,
            "series_uid": study.header.series_instance_uid,
            "extra_series": [e.role for e in study.extras],
            "layout": layout,
            "fault": fault,
            "findings": [f.kind for f in study.findings],
            "seed": spec.seed,
            "index": index,
            "omitted_findings": [f.kind for f in study.misreport.omitted] if study.misreport else [],
            "report_only_findings": [f.kind for f in study.misreport.report_only] if study.misreport else [],
            **{k: study.params[k] for k in sorted(study.params)},
            "shape_i": study.hu.shape[0],
            "shape_j": study.hu.shape[1],
            "shape_k": study.hu.shape[2],
        },
        "gold": list(study.gold),
        "lesions": list(study.lesion_rows),
        "manifest": {
            "StudyInstanceUID": study.study_uid,
            "mask_path": f"../truth/labels/{study.study_uid}.nii.gz",
            "format": "nifti_multilabel",
        },
        "log": f"{study.fov}, {study.hu.shape[2]} slices, {len(study.findings)} findings"
        + (f", fault={fault}" if fault else ""),
    }


def generate_cohort(spec: CohortSpec, out_dir: Path, workers: int | None = None) -> CohortManifest:
    """Write the cohort under ``out_dir`` (replacing a previous one) and return where things are. Studies are made by
    ``workers`` processes (default: one per CPU, at most 4); every study derives from (seed, index) alone, so the
    cohort is the same for any number of workers."""
    from functools import partial

    from pipeline.pool import process_map

    out_dir = Path(out_dir)
    dicom_root, truth = out_dir / "dicom", out_dir / "truth"
    for sub in (dicom_root, truth, out_dir / "masks"):
        if sub.exists():
            shutil.rmtree(sub)  # a re-run must not leave stale studies behind
    dicom_root.mkdir(parents=True)
    fault_kinds = FAULTS if spec.faults else ()
    ct_faults = [f for f in fault_kinds if f in ("truncated_file", "missing_slice", "missing_report")]
    total = spec.n_studies + len(ct_faults)
    faults_at = [ct_faults[i - spec.n_studies] if i >= spec.n_studies else None for i in range(total)]
    workers = workers or min(os.cpu_count() or 1, 4)
    study_rows, gold_rows, fault_rows, manifest_rows, lesion_rows = [], [], [], [], []
    reports_csv = out_dir / "reports.csv"
    make = partial(_study_files, spec, out_dir=out_dir)
    with atomic_path(reports_csv, suffix=".csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["AccessionNumber", "ReportText"])
        made_all = process_map(
            make, range(total), faults_at, workers=min(workers, total), preload=["pipeline.synthetic.cohort"]
        )
        for index, made in enumerate(made_all):
            if made["report"] is not None:
                writer.writerow(list(made["report"]))
            if made["fault"]:
                fault_rows.append(made["fault"])
            study_rows.append(made["study"])
            gold_rows.extend(made["gold"])
            lesion_rows.extend(made["lesions"])
            manifest_rows.append(made["manifest"])
            log.info("study %d/%d: %s", index + 1, total, made["log"])
    if "mr_only" in fault_kinds:
        fault_rows.append(_write_mr_only(spec, dicom_root, out_dir))
    if "empty_folder" in fault_kinds:
        empty = dicom_root / f"EXPORT_{spec.seed:04d}_EMPTY"
        empty.mkdir(parents=True)
        fault_rows.append(
            {
                "fault": "empty_folder",
                "accession": "",
                "study_uid": "",
                "folder": empty.relative_to(out_dir).as_posix(),
                "detail": "no files",
            }
        )
    studies = pd.DataFrame(study_rows)
    faults = pd.DataFrame(fault_rows, columns=["fault", "accession", "study_uid", "folder", "detail"])
    write_parquet(studies, truth / "studies.parquet")
    write_parquet(pd.DataFrame(gold_rows), truth / "organ_gold.parquet")
    write_parquet(faults, truth / "faults.parquet")
    write_parquet(pd.DataFrame(lesion_rows, columns=LESION_COLUMNS), truth / "lesions.parquet")
    manifest = out_dir / "masks" / "manifest.csv"
    with atomic_path(manifest, suffix=".csv") as tmp:
        pd.DataFrame(manifest_rows).to_csv(tmp, index=False)
    return CohortManifest(out_dir, spec.n_studies, studies, faults, dicom_root, reports_csv, manifest, truth)


def _write_mr_only(spec: CohortSpec, dicom_root: Path, out_dir: Path) -> dict:
    """A study that holds only an MR series: the ingest must reject it as not CT."""
    rng = np.random.default_rng([spec.seed, 99])
    name, mrn, birth, sex = identity.person(rng)
    date = identity.study_date(rng)
    study_uid = _uid(spec.seed, "mr", "study")
    header = SeriesHeader(
        patient_name=name,
        patient_id=mrn,
        patient_birth_date=birth,
        patient_sex=sex,
        accession_number=identity.accession(rng, date, 90000 + spec.seed % 1000),
        study_instance_uid=study_uid,
        series_instance_uid=_uid(spec.seed, "mr", "series"),
        frame_of_reference_uid=_uid(spec.seed, "mr", "for"),
        study_date=date,
        modality="MR",
        study_description="MR ABDOMEN",
        series_description="T2 HASTE AX",
        manufacturer="SIEMENS",
        manufacturer_model_name="MAGNETOM Vida",
        body_part_examined="ABDOMEN",
        rescale_intercept=0.0,
        window_center=300.0,
        window_width=600.0,
    )
    signal = rng.integers(0, 800, size=(96, 96, 12)).astype(np.int16)
    affine = np.diag([-1.5, -1.5, 6.0, 1.0])
    folder = dicom_root / mrn / f"{date}_MR"
    write_ct_series(signal, affine, folder, header)
    return {
        "fault": "mr_only",
        "accession": header.accession_number,
        "study_uid": study_uid,
        "folder": folder.relative_to(out_dir).as_posix(),
        "detail": "modality MR",
    }
