"""Label-index bookkeeping around the vocabulary: v1 -> v2 relabelling and organ-name matching.

Every table here is derived from :mod:`pipeline.vocab` (TotalSegmentator's own class maps); no class
list is copied by hand.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from pipeline import vocab

N_LABELS = 256  # uint8 label maps: a look-up table covers every possible value


@lru_cache(maxsize=1)
def v1_to_v2_lut() -> np.ndarray:
    """uint8 table ``lut[v1_index] = v2_index`` (0 where a v1 class has no v2 counterpart)."""
    lut = np.zeros(N_LABELS, dtype=np.uint8)
    v2 = {name: i for i, name in vocab.class_map(vocab.V2_TASK).items()}
    for i, name in vocab.class_map(vocab.V1_TASK).items():
        target = vocab.v1_to_v2(name)
        lut[i] = v2[target] if target is not None else 0
    lut.setflags(write=False)
    return lut


def relabel_v1_to_v2(array: np.ndarray) -> np.ndarray:
    """A ``total_v1`` label map in ``total`` (v2) indices; heart chambers fold into ``heart``."""
    array = np.asarray(array)
    if array.size and (array.min() < 0 or array.max() >= N_LABELS):
        raise ValueError(f"v1 label values must lie in 0..{N_LABELS - 1}, got {array.min()}..{array.max()}")
    return v1_to_v2_lut()[array.astype(np.intp, copy=False)]


@lru_cache(maxsize=1)
def v2_index() -> dict[str, int]:
    """v2 class name -> label value."""
    return {name: i for i, name in vocab.class_map(vocab.V2_TASK).items()}


def _normalize(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.strip().lower()).strip("_")


@lru_cache(maxsize=1)
def _aliases() -> dict[str, str]:
    """Normalized spelling -> v2 name: the class names, v1 names, and side-first forms ("left kidney")."""
    out: dict[str, str] = {}
    for name, o in vocab.organs().items():
        target = name if o.index_v2 is not None else vocab.v1_to_v2(name)
        if target is None:
            continue
        spellings = {name}
        if o.side is not None:
            base = re.sub(rf"_?{o.side}(_|$)", r"\1", name).strip("_")
            spellings |= {f"{o.side}_{base}", f"{base}_{o.side}"}
        for s in spellings:
            out.setdefault(_normalize(s), target)
    return out


def match_organ(label: str) -> str | None:
    """The v2 class a free-text segment label names ("Liver", "Left Kidney", "kidney_left"), else None."""
    key = _normalize(label)
    aliases = _aliases()
    if key in aliases:
        return aliases[key]
    singular = re.sub(r"s$", "", key)  # "Lungs"-style plurals of single classes
    return aliases.get(singular)


def organ_index(name: str) -> int:
    """v2 label value of a class name (v1-only names map through :func:`pipeline.vocab.v1_to_v2`)."""
    target = match_organ(name)
    if target is None:
        raise KeyError(f"{name!r} is not a TotalSegmentator class (or alias) with a v2 index")
    return v2_index()[target]
