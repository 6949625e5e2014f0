"""Study-to-study appearance (``CohortSpec.appearance="varied"``): what keeps an organ's mean HU from
telling a lesion from normal tissue.

With the default (``"uniform"``) every organ is one constant HU for every patient plus white noise of
one level, so a logistic regression on three ``organ_stats`` columns rivals a trained model. Here each
study draws, and records as ground truth (``Appearance.record()``, columns of truth/studies.parquet):
- a contrast phase (non-contrast / arterial / portal venous) and each organ's enhancement in it;
- a per-patient HU offset of every organ (normal parenchyma differs between people);
- low-frequency parenchymal texture (smoothed noise, a few HU);
- partial-volume blur along the slice axis, wider for thicker slices;
- its own noise level.
A lesion lies inside its organ's label, so offsets and enhancement move it with its organ: the
lesion-to-organ contrast stays what ``findings`` drew, the organ's absolute HU no longer says much.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from pipeline import vocab

PHASES = ("non_contrast", "arterial", "portal_venous")
# Enhancement (HU added to the unenhanced value) per phase: non-contrast, arterial, portal venous.
# Typical adult values, rounded; a class name matches the first prefix that starts it.
_ENHANCEMENT: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("aorta", (0.0, 250.0, 130.0)),
    ("heart", (0.0, 200.0, 120.0)),
    ("pulmonary", (0.0, 220.0, 120.0)),
    ("portal_vein", (0.0, 40.0, 150.0)),
    ("inferior_vena_cava", (0.0, 20.0, 110.0)),
    ("iliac_artery", (0.0, 230.0, 120.0)),
    ("iliac_vena", (0.0, 15.0, 100.0)),
    ("kidney", (0.0, 120.0, 100.0)),
    ("spleen", (0.0, 70.0, 60.0)),
    ("pancreas", (0.0, 60.0, 45.0)),
    ("liver", (0.0, 15.0, 55.0)),
    ("adrenal", (0.0, 30.0, 25.0)),
    ("stomach", (0.0, 20.0, 30.0)),
    ("small_bowel", (0.0, 20.0, 30.0)),
    ("duodenum", (0.0, 20.0, 30.0)),
    ("colon", (0.0, 15.0, 25.0)),
    ("urinary_bladder", (0.0, 0.0, 5.0)),
    ("gallbladder", (0.0, 0.0, 0.0)),
)


def enhancement(organ: str, phase: str) -> float:
    """HU an organ gains in ``phase`` (0 for organs without a listed value: bone, fat, lung, muscle)."""
    p = PHASES.index(phase)
    return next((e[p] for prefix, e in _ENHANCEMENT if organ.startswith(prefix)), 0.0)


@dataclass(frozen=True)
class Appearance:
    phase: str
    noise_hu: float  # SD of the white noise added after everything else
    texture_hu: float  # SD of the low-frequency parenchymal texture
    texture_mm: float  # its correlation length (Gaussian sigma)
    blur_sigma_slices: float  # partial-volume blur along k, in slices
    organ_offset_hu: dict[str, float] = field(default_factory=dict)  # per-patient offset of each organ present

    def record(self) -> dict[str, object]:
        """Ground truth for truth/studies.parquet (the offsets as JSON: the organs differ per study)."""
        return {
            "phase": self.phase,
            "noise_hu": self.noise_hu,
            "texture_hu": self.texture_hu,
            "texture_mm": self.texture_mm,
            "blur_sigma_slices": self.blur_sigma_slices,
            "organ_offset_hu": json.dumps(self.organ_offset_hu, sort_keys=True),
        }


def draw_appearance(rng: np.random.Generator, organs: list[str], slice_mm: float) -> Appearance:
    """One study's appearance; ``organs`` are the class names in its label map."""
    return Appearance(
        phase=PHASES[int(rng.choice(3, p=[0.2, 0.2, 0.6]))],
        noise_hu=float(rng.uniform(8.0, 25.0)),
        texture_hu=float(rng.uniform(2.0, 8.0)),
        texture_mm=float(rng.uniform(6.0, 15.0)),
        # a slice profile about as wide as the slice: thicker slices mix more of their neighbours
        blur_sigma_slices=float(rng.uniform(0.3, 0.5) * min(slice_mm, 5.0) / 3.0),
        organ_offset_hu={o: round(float(rng.normal(0.0, 12.0)), 2) for o in sorted(organs)},
    )


def apply_appearance(
    hu: np.ndarray,
    labels: np.ndarray,
    look: Appearance,
    spacing_mm: tuple[float, float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """``hu`` (float32, without noise) with the organs' offsets, enhancement, texture and slice blur."""
    out = hu.astype(np.float32, copy=True)
    names = vocab.class_map(vocab.V2_TASK)
    shift = np.zeros(256, np.float32)
    for organ, offset in look.organ_offset_hu.items():
        index = next(i for i, n in names.items() if n == organ)
        shift[index] = offset + enhancement(organ, look.phase)
    out += shift[labels]
    if look.texture_hu > 0:
        sigma = [look.texture_mm / s for s in spacing_mm]
        field_ = gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32), sigma)
        field_ *= look.texture_hu / max(float(field_.std()), 1e-6)
        out += np.where(labels > 0, field_, np.float32(0))
    if look.blur_sigma_slices > 0:
        out = gaussian_filter1d(out, look.blur_sigma_slices, axis=2)
    return out
