"""Small pictures for asset metadata (matplotlib Agg, no global backend change)."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from pipeline.volume import Volume


def montage_png(volumes: Sequence[Volume], titles: Sequence[str]) -> bytes:
    """Mid axial and coronal slices of a few canonical volumes, soft-tissue window."""
    fig = Figure(figsize=(2.4 * max(1, len(volumes)), 4.6), dpi=80)
    for n, (vol, title) in enumerate(zip(volumes, titles)):
        a = np.asarray(vol.array, dtype=np.float32)
        # RAS arrays: i runs toward the patient's right; radiological view puts it on the image left
        axial = a[::-1, :, a.shape[2] // 2].T[::-1]
        coronal = a[::-1, a.shape[1] // 2, :].T[::-1]
        for row, img in enumerate((axial, coronal)):
            ax = fig.add_subplot(2, max(1, len(volumes)), row * len(volumes) + n + 1)
            ax.imshow(img, cmap="gray", vmin=-160, vmax=240, aspect="equal")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title[:12], fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()
