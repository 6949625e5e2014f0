"""The abnormality catalog (docs/ARCHITECTURE.md) and how each kind is drawn into the image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.synthetic.anatomy import LOBES, Alterations, checked, index_of, vertebra
from pipeline.synthetic.lesions import VARIED, LesionDraw, draw_lesion, lesion_count, lesion_row, paint_lesion
from pipeline.synthetic.shapes import Grid


@dataclass(frozen=True)
class Kind:
    kind: str  # catalog id
    canonical: str  # the report rules' abnormality name
    organs: tuple[str, ...]
    tumor: bool = False  # gets a lesion mask
    prob: float = 0.2  # chance per study when its organs are in view


_KIDNEYS = (checked("kidney_left"), checked("kidney_right"))
_LOWER = (checked("lung_lower_lobe_left"), checked("lung_lower_lobe_right"))
FRACTURE_LEVELS = ("T12", "L1", "L2", "L3", "L4", "L5")

CATALOG: dict[str, Kind] = {
    k.kind: k
    for k in (
        Kind("liver_mass", "mass", (checked("liver"),), tumor=True, prob=0.3),
        Kind("hepatic_cyst", "cyst", (checked("liver"),), prob=0.25),
        Kind("hepatomegaly", "hepatomegaly", (checked("liver"),), prob=0.15),
        Kind("steatosis", "steatosis", (checked("liver"),), prob=0.2),
        Kind("splenomegaly", "splenomegaly", (checked("spleen"),), prob=0.4),
        Kind("renal_cyst", "cyst", _KIDNEYS, prob=0.35),
        Kind("renal_stone", "stone", _KIDNEYS, prob=0.25),
        Kind("renal_mass", "mass", _KIDNEYS, tumor=True, prob=0.2),
        Kind("pancreatic_mass", "mass", (checked("pancreas"),), tumor=True, prob=0.3),
        Kind("gallstones", "stone", (checked("gallbladder"),), prob=0.4),
        Kind("lung_nodule", "nodule", LOBES, tumor=True, prob=0.5),
        Kind("pleural_effusion", "pleural effusion", _LOWER, prob=0.3),
        Kind("aortic_aneurysm", "aneurysm", (checked("aorta"),), prob=0.3),
        Kind("cardiomegaly", "cardiomegaly", (checked("heart"),), prob=0.4),
        Kind("vertebral_fracture", "fracture", tuple(vertebra(v) for v in FRACTURE_LEVELS), prob=0.3),
    )
}

# What a focal lesion looks like: (HU, radius range in mm).
_FOCAL = {
    "liver_mass": (15.0, (8.0, 22.0)),
    "hepatic_cyst": (5.0, (5.0, 16.0)),
    "renal_cyst": (5.0, (6.0, 16.0)),
    "renal_stone": (900.0, (2.0, 4.0)),
    "renal_mass": (45.0, (10.0, 22.0)),
    "pancreatic_mass": (20.0, (10.0, 16.0)),
    "gallstones": (450.0, (3.0, 6.0)),
    "lung_nodule": (30.0, (3.0, 10.0)),
}


@dataclass(frozen=True)
class Finding:
    kind: str
    organs: tuple[str, ...]  # the organs it is attributed to (one side, one lobe, one level, or both)
    size_mm: float | None = None  # longest diameter where a radiologist would measure one
    hedged: bool = False  # the report will hedge it ("possible", "cannot be excluded")

    @property
    def canonical(self) -> str:
        return CATALOG[self.kind].canonical


def sample_findings(
    rng: np.random.Generator, visible: set[str], kinds: tuple[str, ...] | None = None, prob: float | None = None
) -> list[Finding]:
    """Draw abnormalities for the organs in view; sizes and sites are fixed later when placed. ``kinds``: only these
    catalog kinds (default all); ``prob``: one chance per kind instead of each kind's own."""
    out: list[Finding] = []
    for kind in CATALOG.values():
        if kinds is not None and kind.kind not in kinds:
            continue
        candidates = [o for o in kind.organs if o in visible]
        if not candidates or rng.random() >= (kind.prob if prob is None else prob):
            continue
        if kind.kind == "pleural_effusion" and len(candidates) == 2 and rng.random() < 0.4:
            organs = tuple(candidates)  # bilateral
        else:
            organs = (candidates[int(rng.integers(len(candidates)))],)
        hedge_p = (
            0.25 if kind.kind in ("liver_mass", "pancreatic_mass", "lung_nodule", "hepatic_cyst", "steatosis") else 0.05
        )
        out.append(Finding(kind.kind, organs, hedged=bool(rng.random() < hedge_p)))
    return out


def alterations(findings: list[Finding], rng: np.random.Generator) -> tuple[Alterations, list[Finding]]:
    """Whole-organ changes for the anatomy builder, and the findings with their sizes filled in."""
    scale: dict[str, float] = {}
    liver_hu = aneurysm = fractured = None
    height = 1.0
    out = []
    for f in findings:
        size = f.size_mm
        if f.kind == "hepatomegaly":
            scale["liver"] = rng.uniform(1.2, 1.3)
            size = round(float(2 * 75 * scale["liver"] * 1.1 / 10), 1) * 10  # craniocaudal span
        elif f.kind == "splenomegaly":
            scale["spleen"] = rng.uniform(1.4, 1.6)
            size = round(float(2 * 55 * scale["spleen"] / 10), 1) * 10
        elif f.kind == "cardiomegaly":
            scale["heart"] = rng.uniform(1.2, 1.35)
        elif f.kind == "steatosis":
            liver_hu = float(rng.uniform(-5, 25))
        elif f.kind == "aortic_aneurysm":
            aneurysm = float(rng.uniform(20, 30))
            size = round(2 * aneurysm)
        elif f.kind == "vertebral_fracture":
            fractured, height = f.organs[0], float(rng.uniform(0.5, 0.7))
        out.append(Finding(f.kind, f.organs, size, f.hedged))
    return Alterations(scale, liver_hu, aneurysm, fractured, height), out


# Radius factor of an organ with its "-megaly" finding: (normal SD, normal clip, megaly range). The
# normal spread's upper tail reaches into the megaly range, as in people: size alone does not decide.
SIZES: dict[str, tuple[str, float, tuple[float, float], tuple[float, float]]] = {
    "liver": ("hepatomegaly", 0.09, (0.8, 1.25), (1.12, 1.35)),
    "spleen": ("splenomegaly", 0.12, (0.75, 1.35), (1.2, 1.6)),
    "heart": ("cardiomegaly", 0.08, (0.82, 1.22), (1.12, 1.35)),
}


def varied_sizes(
    findings: list[Finding], alt: Alterations, patient_rng: np.random.Generator, rng: np.random.Generator
) -> tuple[Alterations, list[Finding]]:
    """``CohortSpec.organ_sizes="varied"``: every patient's liver, spleen and heart get a normal size
    (``patient_rng``, the same at a follow-up), the "-megaly" ones a size from the megaly range (``rng``);
    the findings' measured sizes follow. The volume ratio to the patient's nominal organ is the factor cubed."""
    scale = dict(alt.organ_scale)
    normal = {o: float(np.clip(patient_rng.normal(1.0, sd), *clip)) for o, (_, sd, clip, _) in SIZES.items()}
    megaly = {kind: organ for organ, (kind, *_) in SIZES.items()}
    out = []
    for f in findings:
        size = f.size_mm
        if f.kind in megaly:
            organ = megaly[f.kind]
            scale[organ] = float(rng.uniform(*SIZES[organ][3]))
            if f.kind == "hepatomegaly":
                size = round(float(2 * 75 * scale[organ] * 1.1 / 10), 1) * 10
            elif f.kind == "splenomegaly":
                size = round(float(2 * 55 * scale[organ] / 10), 1) * 10
        out.append(Finding(f.kind, f.organs, size, f.hedged))
    for organ, factor in normal.items():
        scale.setdefault(organ, factor)
    return Alterations(scale, alt.liver_hu, alt.aneurysm_radius, alt.fractured, alt.fracture_height), out


@dataclass(frozen=True)
class VariedLesions:
    """``CohortSpec.lesions="varied"``: the lesions' own random stream and the study's noise SD."""

    rng: np.random.Generator
    noise_hu: float


def place_lesions(
    findings: list[Finding],
    label: np.ndarray,
    hu: np.ndarray,
    grid: Grid,
    rng: np.random.Generator,
    varied: VariedLesions | None = None,
) -> tuple[np.ndarray, list[Finding], list[dict]]:
    """Paint focal lesions and effusions in place; return the lesion mask, the findings kept and one
    truth row per painted lesion (``lesions.lesion_row``).

    A focal lesion sits on a random voxel of its organ; it is dropped (not reported, not in the
    gold) when the organ is not in the image, so the report never describes what is not there.
    With ``varied``, the kinds in ``lesions.VARIED`` are drawn by ``lesions.draw_lesion`` instead.
    """
    lesion = np.zeros(label.shape, dtype=np.uint8)
    spacing = np.abs([grid.xs[1] - grid.xs[0], grid.ys[1] - grid.ys[0], grid.zs[1] - grid.zs[0]])
    kept: list[Finding] = []
    rows: list[dict] = []
    for f in findings:
        if f.kind == "pleural_effusion":
            ok = all(_effusion(label, hu, grid, index_of(o), rng) for o in f.organs)
            if ok:
                kept.append(f)
            continue
        if f.kind not in _FOCAL:
            kept.append(f)
            continue
        organ_idx = index_of(f.organs[0])
        if varied is not None and f.kind in VARIED:
            drawn = []
            for n in range(lesion_count(varied.rng)):
                draw = draw_lesion(f.kind, varied.noise_hu, varied.rng)
                hit = paint_lesion(
                    draw, f.kind, organ_idx, label, hu, spacing, varied.rng, grow_label=f.kind == "pancreatic_mass"
                )
                if hit is None:
                    break
                inside, box, organ_hu = hit
                if CATALOG[f.kind].tumor:
                    lesion[box][inside] = 1
                rows.append(
                    lesion_row(f.kind, f.organs[0], n, inside, box, label, hu, organ_idx, organ_hu, spacing, draw)
                )
                drawn.append(draw.diameter_mm)
            if drawn:
                kept.append(Finding(f.kind, f.organs, round(max(drawn), 0), f.hedged))
            continue
        value, (rmin, rmax) = _FOCAL[f.kind]
        radius = float(rng.uniform(rmin, rmax))
        center = _pick_center(label == organ_idx, radius, spacing, rng)
        if center is None:
            continue
        organ_hu = float(np.median(hu[label == organ_idx]))
        count = 1 + int(rng.integers(3)) if f.kind == "gallstones" else 1
        for n in range(count):
            c = center if n == 0 else _pick_center(label == organ_idx, radius, spacing, rng) or center
            sphere = _sphere(label.shape, c, radius, spacing)
            if f.kind == "pancreatic_mass":
                # a mass expands the gland's outline into the fat around it; it encases the splenic
                # vein and pushes the bowel aside rather than cutting them, so neighbours stay whole
                label[sphere & (label == 0)] = organ_idx
            inside = sphere & (label == organ_idx)
            inside[c] = True  # even a 2 mm stone shows in its voxel
            hu[inside] = value + (hu[inside] - hu[inside].mean()) * 0.2 if f.kind == "pancreatic_mass" else value
            if CATALOG[f.kind].tumor:
                lesion[inside] = 1
            box = tuple(slice(0, s) for s in label.shape)
            rows.append(
                lesion_row(
                    f.kind,
                    f.organs[0],
                    n,
                    inside,
                    box,
                    label,
                    hu,
                    organ_idx,
                    organ_hu,
                    spacing,
                    LesionDraw(round(2 * radius, 1), value - organ_hu, "solid", "round", False),
                )
            )
        kept.append(Finding(f.kind, f.organs, round(2 * radius, 0), f.hedged))
    return lesion, kept, rows


def _pick_center(mask: np.ndarray, radius: float, spacing: np.ndarray, rng: np.random.Generator):
    idx = np.flatnonzero(mask)
    if idx.size < 8:
        return None
    best, best_frac = None, -1.0
    for _ in range(12):
        c = np.unravel_index(int(idx[rng.integers(idx.size)]), mask.shape)
        sphere = _sphere(mask.shape, c, radius, spacing)
        frac = float(mask[sphere].mean()) if sphere.any() else 0.0
        if frac > best_frac:
            best, best_frac = c, frac
        if frac > 0.9:
            break
    return best


def _sphere(shape, center, radius: float, spacing: np.ndarray) -> np.ndarray:
    """Boolean ball of ``radius`` mm around a voxel (anisotropic spacing), full-size for simplicity."""
    out = np.zeros(shape, dtype=bool)
    lo = [max(0, int(c - radius / s) - 1) for c, s in zip(center, spacing)]
    hi = [min(n, int(c + radius / s) + 2) for c, n, s in zip(center, shape, spacing)]
    grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, center, spacing))
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = d2 <= radius**2
    return out


def _effusion(label: np.ndarray, hu: np.ndarray, grid: Grid, lobe_idx: int, rng: np.random.Generator) -> bool:
    """Replace the dependent (posterior) part of a lower lobe by fluid; the lobe keeps the rest."""
    mask = label == lobe_idx
    ys = grid.ys
    if mask.sum() < 50:
        return False
    # the patient lies supine, so fluid collects at the most posterior (lowest y) part of the lobe
    y_lobe = ys[mask.any(axis=(0, 2))]
    cut = min(float(y_lobe.min()) + float(rng.uniform(12, 35)), float(y_lobe.max()) - 5)
    # a moderate effusion: the lobe keeps most of its volume, not a thin anterior sliver
    cut = min(cut, float(np.quantile(ys[np.nonzero(mask)[1]], 0.2)))
    # a meniscus: the fluid rises along the lateral chest wall (a curved surface, not a flat plane)
    xc = float(grid.xs[np.nonzero(mask)[0]].mean())
    fluid = mask & (ys[None, :, None] < cut + 0.006 * (grid.xs[:, None, None] - xc) ** 2)
    if fluid.sum() < 10:
        return False
    label[fluid] = 0
    hu[fluid] = 12.0
    return True
