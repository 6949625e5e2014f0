"""Pictures of the segmentation stage as PNG bytes (matplotlib Agg, no display needed).

``overlay_png``: per study an axial and a coronal slice through the labelled region, organ colours
over a soft-tissue window, radiological view (patient's right on the left), a legend of organ names.
``coverage_png``: how many studies contain each organ.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib
import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from pipeline import vocab
from pipeline.volume import Volume

WINDOW = (-160.0, 240.0)  # abdominal soft-tissue window, HU
MAX_LEGEND = 24


def organ_colours() -> np.ndarray:
    """(118, 4) RGBA per v2 label, stable across pictures; label 0 transparent."""
    n = max(vocab.class_map(vocab.V2_TASK)) + 1
    base = np.concatenate([matplotlib.colormaps[c](np.arange(20)) for c in ("tab20", "tab20b", "tab20c")])
    colours = base[np.arange(n) % len(base)]
    colours[0] = (0, 0, 0, 0)
    return colours


def _ras(vol: Volume) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Array reoriented to RAS (so axes are x, y, z) and its spacing."""
    ornt = nib.orientations.io_orientation(vol.affine)
    arr = nib.orientations.apply_orientation(np.asarray(vol.array), ornt)
    spacing = np.asarray(vol.spacing)[ornt[:, 0].astype(int)]
    sx, sy, sz = (float(s) for s in spacing)
    return arr, (sx, sy, sz)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))  # no pyplot: no global state, no display backend
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _show(ax, ct: np.ndarray, lab: np.ndarray, aspect: float, title: str, cmap) -> None:
    # rows = second axis (A or S) upward, columns = x reversed (radiological view)
    ax.imshow(ct.T[:, ::-1], cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], origin="lower", aspect=aspect)
    ax.imshow(
        np.ma.masked_equal(lab.T[:, ::-1], 0),
        cmap=cmap,
        vmin=0,
        vmax=cmap.N - 1,
        origin="lower",
        aspect=aspect,
        alpha=0.55,
        interpolation="nearest",
    )
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def overlay_png(studies: Sequence[tuple[str, Volume, Volume]]) -> bytes:
    """PNG of (study_id, ct, labels) triples: axial and coronal slices through each label map's centre."""
    if not studies:
        raise ValueError("overlay_png needs at least one (study_id, ct, labels) triple")
    colours = organ_colours()
    cmap = ListedColormap(colours)
    names = vocab.class_map(vocab.V2_TASK)
    fig = _figure(9, 4.2 * len(studies))
    axes = fig.subplots(len(studies), 2, squeeze=False)
    shown: dict[int, int] = {}
    for row, (study_id, ct, labels) in zip(axes, studies):
        if ct.shape != labels.shape:
            raise ValueError(f"{study_id}: CT {ct.shape} and labels {labels.shape} are not on one grid")
        c, (sx, sy, sz) = _ras(ct)
        lab, _ = _ras(labels)
        fg = np.argwhere(lab > 0)
        ci, cj, ck = fg.mean(axis=0).round().astype(int) if len(fg) else np.array(lab.shape) // 2
        _show(row[0], c[:, :, ck], lab[:, :, ck], sy / sx, f"{study_id} axial z={ck}", cmap)
        _show(row[1], c[:, cj, :], lab[:, cj, :], sz / sx, f"{study_id} coronal y={cj}", cmap)
        for sl in (lab[:, :, ck], lab[:, cj, :]):
            idx, cnt = np.unique(sl[sl > 0], return_counts=True)
            for i, n in zip(idx.tolist(), cnt.tolist()):
                shown[i] = shown.get(i, 0) + n
    top = sorted(sorted(shown, key=lambda i: shown[i], reverse=True)[:MAX_LEGEND])
    handles = [Patch(color=colours[i], label=names.get(i, str(i))) for i in top]
    if handles:
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    return _png(fig)


def coverage_png(stats: pd.DataFrame) -> bytes:
    """Bar chart of how many studies contain each organ, from an ``organ_stats`` table."""
    n_studies = stats["study_id"].nunique() if len(stats) else 0
    counts = stats.groupby("organ")["study_id"].nunique() if len(stats) else pd.Series(dtype=int)
    order = [n for n in vocab.v2_names() if n in counts.index]
    values = [int(counts[n]) for n in order]
    fig = _figure(7, max(2.0, 0.16 * len(order) + 1.0))
    ax = fig.subplots()
    ax.barh(range(len(order)), values, color="#4c72b0")
    ax.set_yticks(range(len(order)), order, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("studies containing the organ")
    ax.set_xlim(0, max(1, n_studies))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Organ coverage over {n_studies} studies", fontsize=9)
    fig.tight_layout()
    return _png(fig)
