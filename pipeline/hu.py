"""HU sanity check for every volume, whatever its source (DICOM or NIfTI).

A CT in Hounsfield units has air at about -1000 HU. Two common export faults move it:
- rescale missing (raw stored values): air near 0..+24 and soft tissue near +1000..+1100;
- rescale applied twice: air near -2048 (and soft tissue near -1000, so the air band alone
  cannot tell; a noisy mass around -2048 can).
Either is reported as a rejection reason instead of being silently accepted. Padding outside the
reconstruction circle (-2000/-3024 HU and below) is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HuCheck:
    ok: bool
    reason: str  # "" when ok, else "missing_rescale" / "double_rescale" / "implausible_hu"
    detail: str
    hu_min: float
    hu_max: float
    air_fraction: float  # voxels in [-1150, -850]


def check_hu(array: np.ndarray, max_samples: int = 500_000) -> HuCheck:
    """Judge whether ``array`` holds plausible CT HU values (strided sample for speed)."""
    a = np.asarray(array)
    stride = max(1, int(np.ceil((a.size / max_samples) ** (1 / 3)))) if a.ndim == 3 else 1
    s = (a[::stride, ::stride, ::stride] if a.ndim == 3 else a).ravel()
    s = np.rint(np.clip(s, -1e6, 1e6)).astype(np.int32) if s.dtype.kind == "f" else s.astype(np.int32)
    hu_min, hu_max = float(a.min()), float(a.max())
    if s.size == 0:
        return HuCheck(False, "implausible_hu", "empty volume", 0.0, 0.0, 0.0)
    body = s[s > -2500]  # drop padding (-3024, -2000 stored, ...); double-rescaled air (-2048) stays
    # one histogram of 1-HU bins over -2500..4095, then every band fraction is a sum of bins
    counts = np.bincount((np.clip(body, -2500, 4095) + 2500).astype(np.int64), minlength=6596)
    n = max(int(body.size), 1)

    def _frac(lo: int, hi: int) -> float:
        return float(counts[lo + 2500 : hi + 2501].sum()) / n

    air = _frac(-1150, -850)
    double_air = _frac(-2200, -1850)
    raw_air = _frac(-50, 80)
    raw_tissue = _frac(850, 1200)
    p1, p50 = (np.percentile(body, 1), np.median(body)) if body.size else (0, 0)
    stats = f"min {hu_min:.0f}, max {hu_max:.0f}, 1st/50th percentile {p1:.0f}/{p50:.0f}"
    band = body[(body >= -2200) & (body <= -1850)]
    # a constant value there is padding outside the scan circle (e.g. -2048), not noisy air
    padding_like = band.size > 0 and np.count_nonzero(band == np.median(band)) > 0.95 * band.size
    if double_air >= 0.005 and (not padding_like or air < 0.005):
        return HuCheck(
            False,
            "double_rescale",
            f"air sits near -2048 HU ({double_air:.1%} of voxels in -2200..-1850): rescale applied twice; {stats}",
            hu_min,
            hu_max,
            air,
        )
    if air >= 0.005:
        return HuCheck(True, "", stats, hu_min, hu_max, air)
    if body.size and float(body.min()) >= -100 and raw_tissue >= 0.05:
        return HuCheck(
            False,
            "missing_rescale",
            f"no air near -1000 HU; values look like raw stored pixels (air near 0..24: {raw_air:.1%}, "
            f"tissue near 1000: {raw_tissue:.1%}); {stats}",
            hu_min,
            hu_max,
            air,
        )
    if hu_max - hu_min < 50:
        return HuCheck(False, "implausible_hu", f"almost constant volume; {stats}", hu_min, hu_max, air)
    return HuCheck(True, "", f"no air visible (tight field of view?); {stats}", hu_min, hu_max, air)
