"""Varied focal lesions (``CohortSpec.lesions="varied"``) and the per-lesion truth of every cohort.

The demo draws each focal lesion as one constant-HU sphere wholly inside its organ, so an organ's mean
HU tells lesion from normal. Here a lesion, drawn from its own random stream, has
- a diameter from 5 mm up to 50 mm (log-uniform: small lesions are common), capped per organ;
- a lesion-to-organ contrast from iso-intense (|contrast| below the study's noise) to obvious;
- a pattern: solid, an enhancing rim, or a necrotic (fluid) core;
- a shape: round, or lobulated (a union of lobes that stays inside the drawn diameter);
- sometimes a site at the organ's edge (the lesion is clipped to the organ label, so it touches the capsule);
- sometimes siblings in the same organ.
The lesion mask is exactly the painted voxels (it feeds tumor segmentation). ``lesion_row`` measures
what ends up in the image, for both the demo and the varied lesions: truth/lesions.parquet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt

PATTERNS = ("solid", "rim", "necrotic")
SHAPES = ("round", "lobulated")
# kind -> (diameter range in mm, tissue): "solid" lesions take a contrast to their organ, "fluid" ones
# (cysts) are water, "nodule" ones are soft tissue to ground glass inside air.
VARIED: dict[str, tuple[tuple[float, float], str]] = {
    "liver_mass": ((5.0, 50.0), "solid"),
    "renal_mass": ((5.0, 40.0), "solid"),
    "pancreatic_mass": ((5.0, 35.0), "solid"),
    "lung_nodule": ((5.0, 30.0), "nodule"),
    "hepatic_cyst": ((5.0, 40.0), "fluid"),
    "renal_cyst": ((5.0, 30.0), "fluid"),
}
ISO_SHARE = 0.2  # solid lesions whose |contrast| is below the study's noise
EDGE_SHARE = 0.3  # lesions placed at the organ's edge (touching the capsule)
SEVERAL_SHARE = 0.25  # findings with 2-3 lesions in the organ
# the columns of truth/lesions.parquet: ``lesion_row``'s and the study's (accession, study_uid, noise_hu, iso_intense)
LESION_COLUMNS = [
    "accession",
    "study_uid",
    "organ",
    "kind",
    "lesion_no",
    "diameter_mm",
    "extent_mm",
    "voxels",
    "volume_ml",
    "contrast_hu",
    "mean_contrast_hu",
    "noise_hu",
    "iso_intense",
    "pattern",
    "shape",
    "touches_capsule",
    "placed_at_edge",
]


@dataclass(frozen=True)
class LesionDraw:
    diameter_mm: float
    contrast_hu: float  # solid part minus the organ's unenhanced HU (fluid / nodule: the tissue's HU minus it)
    pattern: str
    shape: str
    at_edge: bool


def draw_lesion(kind: str, noise_hu: float, rng: np.random.Generator) -> LesionDraw:
    """One lesion of ``kind`` (a key of ``VARIED``); ``noise_hu`` is the study's noise SD."""
    (dmin, dmax), tissue = VARIED[kind]
    diameter = float(np.exp(rng.uniform(np.log(dmin), np.log(dmax))))
    iso = tissue == "solid" and rng.random() < ISO_SHARE
    if tissue == "solid":
        magnitude = (
            rng.uniform(0.1, 0.6) * noise_hu if iso else float(np.exp(rng.uniform(np.log(noise_hu), np.log(120.0))))
        )
        contrast = float(magnitude * (-1 if rng.random() < 0.7 else 1))  # most masses are hypoattenuating
    else:
        contrast = float("nan")  # set against the organ's HU when painted
    pattern = "solid"
    if tissue == "solid" and not iso and diameter >= 15.0:
        pattern = PATTERNS[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
    shape = SHAPES[int(rng.random() < (0.5 if tissue != "fluid" else 0.15))]
    return LesionDraw(round(diameter, 1), contrast, pattern, shape, bool(rng.random() < EDGE_SHARE))


def lesion_count(rng: np.random.Generator) -> int:
    return 1 + int(rng.integers(1, 3)) if rng.random() < SEVERAL_SHARE else 1


def paint_lesion(
    draw: LesionDraw,
    kind: str,
    organ_idx: int,
    label: np.ndarray,
    hu: np.ndarray,
    spacing: np.ndarray,
    rng: np.random.Generator,
    grow_label: bool = False,
) -> tuple[np.ndarray, tuple[slice, ...], float] | None:
    """Paint one lesion in place: (its voxels in the returned window, the window, the organ's HU), or None
    where the organ is too small to hold one. ``grow_label``: the lesion may push the organ's outline into
    the fat around it (a pancreatic mass), never into another organ."""
    organ = label == organ_idx
    if int(organ.sum()) < 8:
        return None
    organ_hu = float(np.median(hu[organ]))
    inside, box, r_in = place_lesion(draw, organ_idx, label, spacing, rng, grow_label, organ=organ)
    hu[box][inside] = lesion_values(draw, kind, organ_hu, r_in, rng)
    return inside, box, organ_hu


def place_lesion(
    draw: LesionDraw,
    organ_idx: int,
    label: np.ndarray,
    spacing: np.ndarray,
    rng: np.random.Generator,
    grow_label: bool = False,
    organ: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[slice, ...], np.ndarray]:
    """Where one lesion lies: (its voxels in the returned window, the window, their normalised radius, <= 1), clipped
    to the organ label (at least 8 voxels of it). ``exclude`` (full size): voxels the lesion may not take (an earlier
    lesion's); the result may then be empty."""
    organ = label == organ_idx if organ is None else organ
    idx = np.argwhere(organ)
    radius = draw.diameter_mm / 2
    reach = np.ceil(radius / spacing).astype(int) + 1
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    box = tuple(
        slice(max(0, int(a) - int(r)), min(n, int(b) + int(r))) for a, b, r, n in zip(lo, hi, reach, label.shape)
    )
    sub = organ[box]
    if draw.at_edge:  # a centre inside the organ, less than half a radius from its boundary
        depth = distance_transform_edt(sub, sampling=spacing)
        near = np.argwhere(sub & (depth <= max(radius / 2, float(spacing.max()))))
        centre = near[int(rng.integers(len(near)))] if len(near) else np.argwhere(sub)[0]
    else:  # the deepest of a few random voxels, so most of the lesion lies inside
        depth = distance_transform_edt(sub, sampling=spacing)
        picks = np.argwhere(sub)[rng.integers(int(sub.sum()), size=24)]
        centre = max(picks, key=lambda p: min(float(depth[tuple(p)]), radius + 2.0 * float(spacing.max())))
    grids = np.ogrid[tuple(slice(0, s.stop - s.start) for s in box)]
    offset = [(g - c) * s for g, c, s in zip(grids, centre, spacing)]
    rho = _shape_field(draw, radius, offset, rng)  # <= 1 inside the lesion
    shape = rho <= 1.0
    shape[tuple(centre)] = True  # even a small lesion shows in its voxel
    lab = label[box]
    if grow_label:
        lab[shape & (lab == 0)] = organ_idx
    inside = shape & (lab == organ_idx)
    if exclude is not None:
        inside &= ~exclude[box]
    return inside, box, rho[inside]


def lesion_values(
    draw: LesionDraw, kind: str, organ_hu: float, r_in: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """HU of a lesion's voxels (``r_in``: their normalised radius) against an organ of ``organ_hu``: the drawn contrast
    for solid tissue, water for a cyst, ground glass to soft tissue for a nodule; an enhancing rim or a fluid core."""
    tissue = VARIED[kind][1]
    values = np.full(len(r_in), organ_hu + draw.contrast_hu, np.float32)
    if tissue == "fluid":
        values[:] = rng.uniform(0.0, 15.0)
    elif tissue == "nodule":
        values[:] = rng.uniform(-600.0, 60.0)  # ground glass to solid
    if draw.pattern == "rim":  # an enhancing shell around a duller centre
        values[r_in > 0.75] = organ_hu + abs(draw.contrast_hu) + float(rng.uniform(20.0, 60.0))
    elif draw.pattern == "necrotic":  # a fluid core in a solid wall
        values[r_in < 0.5] = float(rng.uniform(5.0, 20.0))
    return values


def _shape_field(draw: LesionDraw, radius: float, offset: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Normalised radius of the lesion (<= 1 inside); a lobulated one is a union of lobes within ``radius``."""
    dist = np.sqrt(sum(o**2 for o in offset))
    if draw.shape == "round":
        return dist / radius
    rho = dist / (0.6 * radius)
    for _ in range(int(rng.integers(2, 5))):
        r = radius * float(rng.uniform(0.3, 0.5))
        u = rng.standard_normal(3)
        c = u / np.linalg.norm(u) * (radius - r)  # every lobe stays inside the drawn diameter
        rho = np.minimum(rho, np.sqrt(sum((o - ci) ** 2 for o, ci in zip(offset, c))) / r)
    return rho


def lesion_row(
    kind: str,
    organ: str,
    number: int,
    inside: np.ndarray,
    box: tuple[slice, ...],
    label: np.ndarray,
    hu: np.ndarray,
    organ_idx: int,
    organ_hu: float,
    spacing: np.ndarray,
    draw: LesionDraw,
) -> dict:
    """What one painted lesion is in the image: size, contrast, pattern, and whether it reaches the capsule."""
    n = int(inside.sum())
    if n:  # work on the lesion's own bounding box, one voxel wider, whatever window it came in
        where = np.argwhere(inside)
        crop = tuple(
            slice(max(0, int(a) - 1), min(int(b) + 2, m))
            for a, b, m in zip(where.min(axis=0), where.max(axis=0), inside.shape)
        )
        box = tuple(slice(w.start + c.start, w.start + c.stop) for w, c in zip(box, crop))
        inside = inside[crop]
    pts = np.argwhere(inside) * spacing
    extent = float(np.max(pts.max(axis=0) - pts.min(axis=0) + spacing)) if n else 0.0
    # a lesion voxel with a 6-neighbour outside the organ (and outside the lesion) lies on the capsule; beyond
    # the image's edge the tissue goes on (a cut by the field of view is no capsule)
    organ_or_lesion = (label[box] == organ_idx) | inside
    touches = bool((inside & ~binary_erosion(organ_or_lesion, border_value=1)).any())
    return {
        "kind": kind,
        "organ": organ,
        "lesion_no": number,
        "diameter_mm": draw.diameter_mm,
        "extent_mm": round(extent, 1),
        "voxels": n,
        "volume_ml": n * float(np.prod(spacing)) / 1000.0,
        "contrast_hu": round(draw.contrast_hu, 1) if draw.contrast_hu == draw.contrast_hu else float("nan"),
        "mean_contrast_hu": round(float(hu[box][inside].mean()) - organ_hu, 1) if n else float("nan"),
        "pattern": draw.pattern,
        "shape": draw.shape,
        "touches_capsule": touches,
        "placed_at_edge": draw.at_edge,
    }
