"""A picture of a QA set (``implant.write_qa_set``): real slices with the painted lesions outlined, as PNG bytes.

One row per shown study: the axial slice through its largest lesion, before painting (where the original scan is given),
after painting, and after painting with every lesion of that slice outlined and the largest one's truth in the title.
Lung lesions are shown in a lung window, the rest in the soft-tissue window; radiological view (patient's right on the
left), a 160 mm field around the lesion.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pipeline.segment.pictures import WINDOW, _figure, _png, _ras
from pipeline.volume import Volume, load_nifti

LUNG_WINDOW = (-1000.0, 300.0)
FIELD_MM = 160.0
COLOURS = ("#ff3b30", "#ffcc00", "#34c759", "#0a84ff", "#ff9500", "#bf5af2")


def _field(shape: tuple[int, int], centre: tuple[int, int], spacing: tuple[float, float]) -> tuple[slice, slice]:
    half = [int(round(FIELD_MM / 2 / s)) for s in spacing]
    rows, cols = (slice(max(0, c - h), min(n, c + h)) for c, h, n in zip(centre, half, shape))
    return rows, cols


def _panel(ax, ct: np.ndarray, aspect: float, window: tuple[float, float], title: str) -> None:
    ax.imshow(
        ct.T[:, ::-1],
        cmap="gray",
        vmin=window[0],
        vmax=window[1],
        origin="lower",
        aspect=aspect,
        interpolation="nearest",
    )
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def qa_montage_png(qa, originals: Mapping[str, Volume] | None = None, max_studies: int = 6) -> bytes:
    """PNG of up to ``max_studies`` studies of ``qa`` (an ``implant.QASet``) that hold a lesion; ``originals`` maps a
    source name to its unpainted CT, shown beside."""
    lesions = qa.lesions.copy()
    if lesions.empty:
        raise ValueError("the QA set holds no painted lesion to show")
    lesions["row"] = lesions.groupby("study_uid").cumcount() + 1  # its number in lesion_labels
    studies = qa.studies.set_index("study_key")
    shown = list(lesions["study_uid"].drop_duplicates())[:max_studies]
    originals = dict(originals or {})
    cols = 3 if originals else 2
    fig = _figure(3.2 * cols, 3.4 * len(shown))
    axes = fig.subplots(len(shown), cols, squeeze=False)
    for row, key in zip(axes, shown):
        ct_vol = load_nifti(qa.out_dir / "scans" / f"{key}.nii.gz")
        ct, (sx, sy, _) = _ras(ct_vol)
        labels, _ = _ras(load_nifti(qa.out_dir / "lesion_labels" / f"{key}.nii.gz"))
        mine = lesions[lesions["study_uid"] == key]
        big = mine.loc[mine["voxels"].idxmax()]
        where = np.argwhere(labels == big["row"])
        ci, cj, ck = where.mean(axis=0).round().astype(int)
        fi, fj = _field(ct.shape[:2], (ci, cj), (sx, sy))
        window = LUNG_WINDOW if str(big["organ"]).startswith("lung_") else WINDOW
        aspect = sy / sx
        panels = row
        source = studies.at[key, "source"]
        if originals:
            if source in originals:
                before, _ = _ras(originals[source])
                _panel(panels[0], before[fi, fj, ck], aspect, window, f"{source}, before")
            else:
                panels[0].axis("off")
            panels = panels[1:]
        after = ct[fi, fj, ck]
        _panel(panels[0], after, aspect, window, f"{key}, painted")
        title = (
            f"{big['kind']} in {big['organ']}: {big['extent_mm']:.0f} mm, {big['mean_contrast_hu']:+.0f} HU, "
            f"{big['pattern']}, {big['shape']}"
        )
        _panel(panels[1], after, aspect, window, title)
        in_slice = labels[fi, fj, ck]
        for n, number in enumerate(sorted(set(np.unique(in_slice)) - {0})):
            outline = (in_slice == number).astype(float).T[:, ::-1]
            panels[1].contour(outline, levels=[0.5], colors=[COLOURS[n % len(COLOURS)]], linewidths=0.9)
    fig.tight_layout()
    return _png(fig)
