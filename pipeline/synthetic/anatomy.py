"""A parametric torso in RAS+ mm (+x = patient right, +y = anterior, +z = superior; nibabel's RAS).

Organs are superquadrics and tubes placed at nominal adult positions, then scaled per patient and
jittered per organ, so size, position and shape vary. Painting order matters: later organs
overwrite earlier ones (the heart and liver carve the lung bases, vessels run through fat, bones
overwrite the muscles around them). Viscera are clipped to the body cavity and the musculoskeletal
organs to the inside of the subcutaneous fat, so no organ pokes out of the skin (an enlarged liver
presses on the abdominal wall instead) and every organ is one connected piece, as a real
segmentation mask is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline import vocab
from pipeline.synthetic.shapes import Grid, LungLobe, Primitive, Superquadric, Tube, rasterize

# Vertebral levels drawn, top to bottom, with their nominal height (body + disc) in mm.
THORACIC = tuple(f"T{n}" for n in range(1, 13))
LUMBAR = tuple(f"L{n}" for n in range(1, 6))
_LEVEL_HEIGHT = {**{lvl: 24.0 for lvl in THORACIC}, **{lvl: 33.0 for lvl in LUMBAR}}
_SACRUM_TOP = -270.0  # nominal z of the top of S1
RIB_NUMBERS = tuple(range(1, 13))


def checked(name: str) -> str:
    """A `total` v2 class name, verified against TotalSegmentator's own class map."""
    if vocab.organ(name).index_v2 is None:
        raise KeyError(f"{name!r} is not a `total` v2 class")
    return name


def vertebra(level: str) -> str:
    return checked(f"vertebrae_{level}")


def lobe(side: str, which: str) -> str:
    return checked(f"lung_{which}_lobe_{side}")


LOBES = tuple(
    lobe(s, w)
    for s, w in (("left", "upper"), ("left", "lower"), ("right", "upper"), ("right", "middle"), ("right", "lower"))
)


@dataclass(frozen=True)
class Part:
    prim: Primitive
    hu: float
    cortex_hu: float | None = None  # bone: a denser outer shell where the normalised radius > cortex
    cortex: float = 0.75
    displaces: bool = True  # False: fills only unlabelled voxels (an aneurysm sac grows around its neighbours)


@dataclass(frozen=True)
class OrganModel:
    name: str  # a `total` v2 class name
    parts: tuple[Part, ...]
    subtract: tuple[Primitive, ...] = ()  # e.g. the spinal canal out of a vertebra
    wall: bool = False  # musculoskeletal: clipped to the inside of the fat, not to the body cavity


@dataclass(frozen=True)
class Alterations:
    """Whole-organ abnormalities, applied while the anatomy is built (focal lesions come later)."""

    organ_scale: dict[str, float] = field(default_factory=dict)  # radius factor per organ
    liver_hu: float | None = None  # steatosis lowers it
    aneurysm_radius: float | None = None  # mm, infrarenal aorta
    fractured: str | None = None  # vertebra class name
    fracture_height: float = 1.0  # remaining fraction of the vertebral body height


@dataclass(frozen=True)
class Patient:
    scale: float  # overall body size
    fat_mm: float  # subcutaneous fat
    width: float  # extra lateral factor (habitus)
    seed: int  # for per-organ jitter


def level_z(scale: float) -> dict[str, tuple[float, float]]:
    """(top, bottom) z of every vertebral level, built upward from the sacrum."""
    out: dict[str, tuple[float, float]] = {}
    z = _SACRUM_TOP
    for lvl in reversed(THORACIC + LUMBAR):
        h = _LEVEL_HEIGHT[lvl]
        out[lvl] = ((z + h) * scale, z * scale)
        z += h
    return out


def body_half_axes(z: np.ndarray, patient: Patient) -> tuple[np.ndarray, np.ndarray]:
    """Half-width (x) and half-depth (y) of the skin outline at heights z (mm)."""
    s = patient.scale
    knots = np.array([-560, -420, -300, -200, -60, 60, 200, 260, 320]) * s
    ax = np.array([145, 160, 158, 148, 146, 152, 148, 95, 60]) * s * patient.width
    ay = np.array([105, 112, 108, 118, 118, 112, 100, 70, 55]) * s
    fat = patient.fat_mm
    return np.interp(z, knots, ax) + fat * 0.6, np.interp(z, knots, ay) + fat * 0.4


def build_anatomy(patient: Patient, alt: Alterations = Alterations()) -> list[OrganModel]:
    """Organs in painting order, for one patient with the given whole-organ alterations."""
    d = _Draw(patient, alt, np.random.default_rng(patient.seed))
    levels = level_z(1.0)
    _lungs(d)
    _viscera(d)
    _vessels(d)
    _muscles(d)
    _spine(d, levels)
    _pelvis(d)
    _ribs(d, levels)
    _sternum(d)
    return d.organs


def _xyz(v) -> tuple[float, float, float]:
    """Three floats (a point in mm)."""
    x, y, z = (float(c) for c in v)
    return (x, y, z)


@dataclass(frozen=True)
class _Draw:
    """One patient's organs as they are drawn: positions and sizes at the patient's scale, jittered from one
    generator, so the organs are drawn in one order (painting order) for a patient to come out the same."""

    patient: Patient
    alt: Alterations
    rng: np.random.Generator
    organs: list[OrganModel] = field(default_factory=list)

    @property
    def s(self) -> float:
        return self.patient.scale

    def at(self, x: float, y: float, z: float, jitter: float = 0.0) -> tuple[float, float, float]:
        """A nominal position (mm) at the patient's size and habitus, jittered by ``jitter`` mm."""
        j = self.rng.normal(0.0, jitter, 3) if jitter else np.zeros(3)
        s = self.s
        return (float(x * s * self.patient.width**0.5 + j[0]), float(y * s + j[1]), float(z * s + j[2]))

    def size(self, a: float, b: float, c: float, name: str = "", vary: float = 0.1) -> tuple[float, float, float]:
        """Nominal radii (mm) at the patient's size, varied by ``vary`` and scaled by the organ's alteration."""
        f = self.rng.uniform(1 - vary, 1 + vary) * self.alt.organ_scale.get(name, 1.0) * self.s
        return (a * f, b * f, c * f)

    def tube(self, points, radius, jitter: float = 3.0) -> Tube:
        """A tube through nominal points (jittered together) with nominal radii (one, or one per point)."""
        j = self.rng.normal(0.0, jitter, 3)
        pts = tuple(_xyz(np.add(self.at(*p), j)) for p in points)
        radii = tuple(float(r * self.s * self.rng.uniform(0.9, 1.1)) for r in np.broadcast_to(radius, len(points)))
        return Tube(pts, radii)

    def add(self, name: str, *parts: Part, subtract: tuple[Primitive, ...] = (), wall: bool = False) -> None:
        """The next organ in painting order: checked class ``name`` from its parts."""
        self.organs.append(OrganModel(checked(name), tuple(parts), subtract, wall))


def _lungs(d: _Draw) -> None:
    """The lung lobes: those of one side share one hemithorax, drawn from the same parameters."""
    for side, sx in (("right", 1), ("left", -1)):
        c = d.at(74 * sx, -5, 80, jitter=3)
        r = d.size(64, 88, 128, "lung")
        dome = (8 if side == "right" else -2) * d.s + d.rng.normal(0, 5)
        oblique, horiz = 55 * d.s + d.rng.normal(0, 6), 70 * d.s + d.rng.normal(0, 6)
        for which in ("upper", "middle", "lower") if side == "right" else ("upper", "lower"):
            d.add(lobe(side, which), Part(LungLobe(side, which, c, r, dome, oblique, horiz), -850))


def _viscera(d: _Draw) -> None:
    """The airway, heart and abdominal viscera, the oesophagus last (it grooves the heart and stomach)."""
    d.add("trachea", Part(d.tube([(0, 8, 310), (0, 5, 270), (0, 0, 200), (0, -5, 130)], 9, jitter=1.5), -950))
    d.add(
        "heart",
        Part(Superquadric(d.at(-22, 25, 35, 6), d.size(62, 50, 58, "heart"), yaw_deg=d.rng.uniform(-30, -10)), 110),
    )
    d.add(
        "liver",
        Part(
            Superquadric(
                d.at(65, 10, -55, 6), d.size(95, 85, 75, "liver"), p=2.2, q=2.4, yaw_deg=d.rng.uniform(-10, 10)
            ),
            d.alt.liver_hu if d.alt.liver_hu is not None else 60,
        ),
    )
    d.add("gallbladder", Part(Superquadric(d.at(55, 55, -105, 5), d.size(16, 18, 36, "gallbladder")), 10))
    d.add(
        "spleen",
        Part(Superquadric(d.at(-85, -35, -45, 5), d.size(34, 46, 55, "spleen"), yaw_deg=d.rng.uniform(20, 40)), 55),
    )
    d.add("stomach", Part(Superquadric(d.at(-45, 30, -45, 6), d.size(45, 40, 55, "stomach"), p=2.3), 35))
    for side, sx, dz in (("right", 1, -12), ("left", -1, 0)):
        d.add(
            f"kidney_{side}",
            Part(
                Superquadric(
                    d.at(62 * sx, -52, -135 + dz, 5), d.size(30, 26, 55, "kidney"), yaw_deg=sx * d.rng.uniform(20, 35)
                ),
                150,
            ),
        )
        d.add(
            f"adrenal_gland_{side}",
            Part(Superquadric(d.at(42 * sx, -38, -72 + dz, 3), d.size(6, 14, 18, "adrenal")), 40),
        )
    d.add("pancreas", Part(d.tube([(35, 5, -100), (5, 10, -95), (-40, -5, -82), (-70, -20, -78)], (15, 12, 10, 9)), 45))
    d.add(
        "duodenum", Part(d.tube([(40, 20, -80), (55, 10, -110), (45, 5, -135), (10, 0, -135), (-15, 5, -120)], 10), 35)
    )
    d.add("small_bowel", Part(Superquadric(d.at(-5, 35, -215, 8), d.size(85, 45, 70, "small_bowel"), p=2.5), 40))
    d.add(
        "colon",
        Part(
            d.tube(
                [
                    (75, 25, -290),
                    (80, 5, -180),
                    (70, 25, -110),
                    (0, 65, -135),
                    (-75, 5, -90),
                    (-80, -5, -200),
                    (-45, 25, -300),
                    (0, -45, -350),
                ],
                20,
            ),
            15,
        ),
    )
    d.add("urinary_bladder", Part(Superquadric(d.at(0, 35, -390, 5), d.size(42, 36, 34, "bladder")), 8))
    # after the heart and stomach (it grooves them rather than being cut by an enlarged heart); right of
    # the descending aorta, then across to the gastro-oesophageal junction, falling all the way
    d.add(
        "esophagus",
        Part(
            d.tube([(0, -22, 310), (0, -25, 260), (2, -30, 120), (6, -32, 40), (-10, -20, -10), (-30, 5, -45)], 8), 40
        ),
    )


def _vessels(d: _Draw) -> None:
    """The enhanced vessels: the aorta (with its sac where an aneurysm is drawn), the IVC, the portal vein."""
    # the arch passes anterior and to the left of the trachea, never through it
    aorta_pts = [
        (15, 25, 60),
        (10, 28, 120),
        (-5, 26, 140),
        (-30, 5, 138),
        (-26, -28, 118),
        (-22, -38, 60),
        (-15, -40, -20),
        (-10, -32, -120),
        (-6, -25, -170),
        (-5, -20, -235),
    ]
    aorta = d.tube(aorta_pts, (14, 14, 13, 12, 12, 12, 11, 10, 10, 9), jitter=1.5)
    aorta_parts = [Part(aorta, 220)]
    if d.alt.aneurysm_radius:
        # a fusiform infrarenal aneurysm: thrombus-lined sac around the normal lumen
        c = np.mean(np.asarray(aorta.points[7:9]), axis=0)
        r = d.alt.aneurysm_radius
        sac = Superquadric(_xyz(c), (r, r, 2.2 * r))
        aorta_parts = [Part(sac, 45, displaces=False), Part(aorta, 220)]
    d.add("aorta", *aorta_parts)
    d.add("inferior_vena_cava", Part(d.tube([(22, -25, -235), (25, -28, -120), (28, -10, -30), (15, 10, 15)], 11), 140))
    # splenic vein behind the pancreas, then the portal vein up to the hilum: rising monotonically from
    # the spleen to the liver, so a cut through the field of view leaves one piece, as in real scans
    d.add(
        "portal_vein_and_splenic_vein",
        Part(d.tube([(-70, -30, -93), (-38, -18, -92), (10, -6, -90), (48, 8, -68)], 7), 180),
    )


def _muscles(d: _Draw) -> None:
    """The paraspinal and iliopsoas muscles, before the bones that take their share."""
    for side, sx in (("left", -1), ("right", 1)):
        d.add(
            f"autochthon_{side}",
            Part(d.tube([(30 * sx, -92, 200), (33 * sx, -95, -60), (35 * sx, -90, -300)], (18, 24, 20)), 50),
            wall=True,
        )
        d.add(
            f"iliopsoas_{side}",
            Part(
                d.tube(
                    [(32 * sx, -45, -130), (45 * sx, -15, -280), (60 * sx, 45, -370), (70 * sx, 55, -420)],
                    (12, 19, 15, 14),
                ),
                50,
            ),
        )


def _spine(d: _Draw, levels: dict[str, tuple[float, float]]) -> None:
    """The vertebrae (body, pedicles and arch around the canal, one piece each), the sacrum and the cord."""
    # A vertebra is one piece: the body, the pedicles joining it to the arch,
    # and the arch (laminae, spinous and transverse processes) around the canal.
    canal_y = -78.0
    canal = d.tube([(0, canal_y, 300), (0, canal_y, -300)], 9, jitter=0)
    for lvl, (top, bottom) in levels.items():
        h = (top - bottom) - 5  # minus the disc
        zc = bottom + h / 2
        width = 18 + 7 * (LUMBAR.index(lvl) + 3) / 7 if lvl in LUMBAR else 15 + THORACIC.index(lvl) / 4
        name = vertebra(lvl)
        frac = d.alt.fracture_height if name == d.alt.fractured else 1.0
        body = Superquadric(
            d.at(0, -48, zc - h / 2 * (1 - frac)), (width * d.s, width * 0.8 * d.s, h / 2 * d.s * frac), q=6
        )
        # pedicles and laminae: a ring around the canal from inside the body to behind the canal, as tall
        # as the body, so body and arch are joined in every slice that shows them
        pedicles = Superquadric(d.at(0, -72, zc), (12 * d.s, 24 * d.s, h / 2 * d.s), p=4, q=10)
        arch = Superquadric(d.at(0, -84, zc), (22 * d.s, 20 * d.s, h * 0.45 * d.s), p=3, q=4)
        d.add(
            name,
            Part(body, 260, cortex_hu=750 if frac == 1 else 500),
            Part(pedicles, 300, cortex_hu=800),
            Part(arch, 300, cortex_hu=800),
            subtract=(canal,),
            wall=True,
        )
    d.add(
        "sacrum",
        Part(
            Superquadric(d.at(0, -75, _SACRUM_TOP - 50, 3), d.size(48, 26, 55, "sacrum", 0.05), p=2.5),
            300,
            cortex_hu=800,
        ),
        wall=True,
    )
    d.add("spinal_cord", Part(d.tube([(0, canal_y, 290), (0, canal_y, levels["L1"][1])], 5, jitter=0), 35), wall=True)


def _pelvis(d: _Draw) -> None:
    """The hip bones (wing, ilium and acetabular roof in one piece) and the femoral heads and shafts."""
    for side, sx in (("left", -1), ("right", 1)):
        # the hip bone as one piece: iliac wing, the body of the ilium, and the acetabular roof
        wing = Superquadric(d.at(85 * sx, -35, -305, 3), d.size(42, 14, 58, "hip", 0.05), yaw_deg=-sx * 35)
        acetabulum = Superquadric(d.at(88 * sx, 8, -380, 3), d.size(28, 26, 26, "hip", 0.05))
        wc, ac = np.asarray(wing.center), np.asarray(acetabulum.center)
        ilium = Tube(
            (_xyz(wc + np.array([0, 5, -25]) * d.s), _xyz(ac + np.array([0, -13, 12]) * d.s)), (18 * d.s, 18 * d.s)
        )
        d.add(
            f"hip_{side}",
            Part(wing, 300, cortex_hu=850),
            Part(ilium, 300, cortex_hu=850),
            Part(acetabulum, 300, cortex_hu=850),
            wall=True,
        )
        d.add(
            f"femur_{side}",
            Part(Superquadric(d.at(92 * sx, 10, -392, 2), d.size(24, 24, 24, "femur", 0.05)), 350, cortex_hu=900),
            Part(
                d.tube([(92 * sx, 10, -392), (115 * sx, 5, -425), (120 * sx, 5, -520)], (16, 14, 14), jitter=0),
                350,
                cortex_hu=950,
            ),
            wall=True,
        )


def _ribs(d: _Draw, levels: dict[str, tuple[float, float]]) -> None:
    """The ribs: arcs inside the subcutaneous fat at their own height, falling anteriorly."""
    # arcs around the chest wall from beside the spine, falling anteriorly. They follow the
    # inside of the subcutaneous fat at their own height, so a rib is never clipped into pieces.
    for n in RIB_NUMBERS:
        top, bottom = levels[THORACIC[n - 1]]
        z0 = (top + bottom) / 2 * d.s
        bx, by = (float(v[0]) for v in body_half_axes(np.array([z0]), d.patient))
        ix, iy = bx - d.patient.fat_mm - 4 - 6 * d.s, by - d.patient.fat_mm - 4 - 6 * d.s  # centreline inside the wall
        theta = np.deg2rad(np.linspace(-62, 75 - 10 * max(0, n - 7), 9))  # upper ribs reach the sternum
        drop = (24 + 0.6 * n) * d.s
        for side, sx in (("left", -1), ("right", 1)):
            j = d.rng.normal(0.0, 1.0, 3)
            pts = tuple(
                (float(sx * ix * np.cos(t) + j[0]), float(iy * np.sin(t) + j[1]), float(z0 - drop * u + j[2]))
                for t, u in zip(theta, np.linspace(0, 1, len(theta)))
            )
            radius = float(5 * d.s * d.rng.uniform(0.9, 1.1))
            d.add(
                checked(f"rib_{side}_{n}"),
                Part(Tube(pts, (radius,) * len(pts)), 300, cortex_hu=900, cortex=0.5),
                wall=True,
            )


def _sternum(d: _Draw) -> None:
    """The sternum, just inside the anterior chest wall."""
    # the sternum sits just inside the anterior chest wall (its depth follows the body, not the scale)
    zs = np.linspace(10, 160, 16) * d.s
    front = float(np.min(body_half_axes(zs, d.patient)[1])) - d.patient.fat_mm - 4
    st = d.size(18, 8, 75, "sternum", 0.05)
    d.add(
        "sternum",
        Part(
            Superquadric((float(d.rng.normal(0, 2)), front - st[1], float(85 * d.s + d.rng.normal(0, 3))), st, q=2.5),
            300,
            cortex_hu=850,
        ),
        wall=True,
    )


def index_of(name: str) -> int:
    return int(vocab.index_v2(name))


def paint(organs: list[OrganModel], grid: Grid, patient: Patient) -> tuple[np.ndarray, np.ndarray]:
    """(label map uint8 in `total` indices, HU float32) of the torso on ``grid``, without noise."""
    shape = grid.shape
    hu = np.full(shape, -1000.0, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    # skin outline slice by slice: fat, a muscle wall, then visceral fat where no organ is drawn
    ax, ay = body_half_axes(grid.zs, patient)
    fat_wall = patient.fat_mm
    inner = (np.maximum(ax - fat_wall, 10), np.maximum(ay - fat_wall, 10))  # inside the subcutaneous fat
    cavity = (np.maximum(ax - fat_wall - 12, 8), np.maximum(ay - fat_wall - 12, 8))  # inside the muscle wall
    xx, yy = grid.xs[:, None], grid.ys[None, :]
    for k in range(shape[2]):
        sl = hu[:, :, k]
        sl[(xx / ax[k]) ** 2 + (yy / ay[k]) ** 2 <= 1] = -100
        sl[(xx / inner[0][k]) ** 2 + (yy / inner[1][k]) ** 2 <= 1] = 45
        sl[(xx / cavity[0][k]) ** 2 + (yy / cavity[1][k]) ** 2 <= 1] = -80
    for org in organs:
        value = index_of(org.name)
        hx, hy = inner if org.wall else cavity
        for part in org.parts:
            hit = rasterize(part.prim, grid)
            if hit is None:
                continue
            win, rad = hit
            x, y, _ = grid.coords(win)
            inside = (rad <= 1.0) & ((x / hx[win[2]][None, None, :]) ** 2 + (y / hy[win[2]][None, None, :]) ** 2 <= 1)
            for sub in org.subtract:
                cut = rasterize(sub, grid)
                if cut is not None:
                    inside &= ~_window_mask(cut, win)
            if not part.displaces:
                inside &= label[win] == 0
            label[win][inside] = value
            if part.cortex_hu is None:
                hu[win][inside] = part.hu
            else:
                hu[win][inside] = np.where(rad[inside] > part.cortex, part.cortex_hu, part.hu)
    return label, hu


def _window_mask(hit: tuple[tuple[slice, slice, slice], np.ndarray], win: tuple[slice, slice, slice]) -> np.ndarray:
    """The inside of ``hit`` re-expressed in window ``win`` (False outside hit's own window)."""
    sub_win, rad = hit
    out = np.zeros(tuple(s.stop - s.start for s in win), dtype=bool)
    lo = [max(a.start, b.start) for a, b in zip(win, sub_win)]
    hi = [min(a.stop, b.stop) for a, b in zip(win, sub_win)]
    if any(b <= a for a, b in zip(lo, hi)):
        return out
    dst = tuple(slice(a - w.start, b - w.start) for a, b, w in zip(lo, hi, win))
    src = tuple(slice(a - w.start, b - w.start) for a, b, w in zip(lo, hi, sub_win))
    out[dst] = rad[src] <= 1.0
    return out


def drawn_organs() -> tuple[str, ...]:
    """Every class name the generator draws, in painting order (checked against the vocabulary)."""
    names = [o.name for o in build_anatomy(Patient(1.0, 20.0, 1.0, 0))]
    return tuple(dict.fromkeys(names))
