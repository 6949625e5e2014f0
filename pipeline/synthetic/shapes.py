"""Geometric primitives in world mm, rasterized on an axis-aligned grid inside their bounding box.

Every primitive returns a *normalised radius* field: <= 1 inside, growing outward. Parts use it to
paint a cortex (the outer shell of a bone) without a second pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Box = tuple[np.ndarray, np.ndarray]  # (lo xyz, hi xyz) in mm


@dataclass(frozen=True)
class Superquadric:
    """``(|u/a|^p + |v/b|^p)^(q/p) + |w/c|^q <= 1``; p = q = 2 is an ellipsoid, large q a cylinder."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    p: float = 2.0
    q: float = 2.0
    yaw_deg: float = 0.0  # rotation about z, so kidneys and the pancreas can lie obliquely

    def bbox(self) -> Box:
        c = np.asarray(self.center)
        r = np.asarray(self.radii) if self.yaw_deg == 0.0 else max(self.radii)  # turned: the largest radius
        return c - r, c + r

    def field(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        cx, cy, cz = self.center
        a, b, c = self.radii
        dx, dy = x - cx, y - cy
        if self.yaw_deg:
            t = np.deg2rad(self.yaw_deg)
            dx, dy = np.cos(t) * dx + np.sin(t) * dy, -np.sin(t) * dx + np.cos(t) * dy
        xy = (np.abs(dx / a) ** self.p + np.abs(dy / b) ** self.p) ** (self.q / self.p)
        return (xy + np.abs((z - cz) / c) ** self.q) ** (1.0 / self.q)


@dataclass(frozen=True)
class Tube:
    """A polyline with a radius per point (vessels, bowel, ribs, the spinal cord)."""

    points: tuple[tuple[float, float, float], ...]
    radii: tuple[float, ...]

    def bbox(self) -> Box:
        p, r = np.asarray(self.points), max(self.radii)
        return p.min(axis=0) - r, p.max(axis=0) + r

    def segments(self) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
        p = np.asarray(self.points, dtype=float)
        return [(p[n], p[n + 1], self.radii[n], self.radii[n + 1]) for n in range(len(p) - 1)]


@dataclass(frozen=True)
class LungLobe:
    """One lobe: a superquadric hemithorax above the diaphragm, split by the fissures."""

    side: str  # "left" / "right"
    lobe: str  # "upper" / "middle" / "lower"
    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    dome_z: float  # height of the diaphragm dome at the hemithorax centre
    oblique_z: float  # height of the oblique fissure at y = 0 (it falls 1 mm per mm anteriorly)
    horizontal_z: float  # right horizontal fissure height

    def bbox(self) -> Box:
        c, r = np.asarray(self.center), np.asarray(self.radii)
        return c - r, c + r

    def field(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        cx, cy, cz = self.center
        a, b, c = self.radii
        r = np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 + np.abs((z - cz) / c) ** 2.5)
        # the diaphragm is a dome, lowest in the posterior recesses (y < 0)
        floor = self.dome_z + 0.004 * (x - cx) ** 2 + 0.35 * np.minimum(y, 0) - 0.1 * np.maximum(y, 0)
        inside = (z > floor) & ((x * (1 if self.side == "right" else -1)) > 12)
        below_oblique = z < self.oblique_z - y
        if self.lobe == "lower":
            inside &= below_oblique
        elif self.side == "left":
            inside &= ~below_oblique
        elif self.lobe == "upper":
            inside &= ~below_oblique & (z > self.horizontal_z)
        else:
            inside &= ~below_oblique & (z <= self.horizontal_z)
        return np.where(inside, r, 9.0)


Primitive = Superquadric | Tube | LungLobe


@dataclass(frozen=True)
class Grid:
    """Axis-aligned voxel centres: world x of index i is ``xs[i]``, and so on (any sign of step)."""

    xs: np.ndarray
    ys: np.ndarray
    zs: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.xs), len(self.ys), len(self.zs)

    def window(self, box: Box) -> tuple[slice, slice, slice] | None:
        """Index slices covering ``box``, or None when it misses the grid."""
        out = []
        for axis, lo, hi in zip((self.xs, self.ys, self.zs), box[0], box[1]):
            idx = np.nonzero((axis >= lo) & (axis <= hi))[0]
            if idx.size == 0:
                return None
            out.append(slice(int(idx[0]), int(idx[-1]) + 1))
        si, sj, sk = out
        return si, sj, sk

    def coords(self, win: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Open (broadcastable) world coordinate arrays of a window."""
        return (
            self.xs[win[0]][:, None, None],
            self.ys[win[1]][None, :, None],
            self.zs[win[2]][None, None, :],
        )


def rasterize(prim: Primitive, grid: Grid) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """(window, normalised radius field in the window) of a primitive, or None off the grid."""
    if isinstance(prim, Tube):
        return _rasterize_tube(prim, grid)
    win = grid.window(prim.bbox())
    if win is None:
        return None
    return win, np.broadcast_to(prim.field(*grid.coords(win)), tuple(s.stop - s.start for s in win))


def _rasterize_tube(tube: Tube, grid: Grid) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    win = grid.window(tube.bbox())
    if win is None:
        return None
    shape = tuple(s.stop - s.start for s in win)
    out = np.full(shape, 9.0, dtype=np.float32)
    for p0, p1, r0, r1 in tube.segments():
        r = max(r0, r1)
        sub = grid.window((np.minimum(p0, p1) - r, np.maximum(p0, p1) + r))
        if sub is None:
            continue
        x, y, z = grid.coords(sub)
        d = p1 - p0
        t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / max(float(d @ d), 1e-9)
        t = np.clip(t, 0.0, 1.0)
        dist = np.sqrt((x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2)
        rel = tuple(slice(s.start - w.start, s.stop - w.start) for s, w in zip(sub, win))
        np.minimum(out[rel], dist / (r0 + t * (r1 - r0)), out=out[rel])
    return win, out
