"""The one organ vocabulary, taken from TotalSegmentator's own class maps.

``total`` (v2, 117 classes) is the index space of every label map in this project; ``total_v1``
(104 classes, what CT-GLIP used) is mapped onto it. Groups are derived from the class names
(lung lobes -> lung, vertebrae -> spine, ribs, heart chambers -> heart, left/right pairs),
never from a hand-copied list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from totalsegmentator.map_to_binary import class_map as _TS_CLASS_MAP

V2_TASK = "total"
V1_TASK = "total_v1"

# What a report says of an organ, mildest first: where it says several things of one organ the most
# severe stands (pairs, report findings, the synthetic gold and the evaluation rows all aggregate so).
NORMAL, UNCERTAIN, ABNORMAL = "normal", "uncertain", "abnormal"
STATUS_ORDER = (NORMAL, UNCERTAIN, ABNORMAL)
STATUS_RANK = {s: i for i, s in enumerate(STATUS_ORDER)}

# CT-RATE's 18 report-level abnormality labels, in its column order (multi_abnormality_labels/*.csv):
# the release's columns (pipeline/ctrate.py) and our labeller's output (pipeline/report/labels.py).
CTRATE_LABELS = (
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema", "Atelectasis",
    "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion", "Mosaic attenuation pattern",
    "Peribronchial thickening", "Consolidation", "Bronchiectasis", "Interlobular septal thickening",
)  # fmt: skip


@dataclass(frozen=True)
class Organ:
    name: str  # TotalSegmentator class name, e.g. "kidney_left"
    index_v2: int | None  # label value in the `total` task (None for v1-only classes)
    index_v1: int | None  # label value in `total_v1` (None for v2-only classes)
    group: str  # e.g. "kidney", "lung", "spine", "ribs", "heart", "liver"
    side: str | None  # "left", "right" or None


def class_map(task: str = V2_TASK) -> dict[int, str]:
    """Index -> class name, straight from TotalSegmentator."""
    return dict(_TS_CLASS_MAP[task])


_GROUP_RULES: tuple[tuple[str, str], ...] = (
    (r"^lung_", "lung"),
    (r"^(vertebrae_|sacrum$)", "spine"),
    (r"^rib_", "ribs"),
    (r"^(heart|atrial_appendage)", "heart"),
    (r"^kidney_cyst_", "kidney"),
)


def _side(name: str) -> str | None:
    m = re.search(r"(?:^|_)(left|right)(?:_|$)", name)
    return m.group(1) if m else None


def _group(name: str) -> str:
    for pattern, group in _GROUP_RULES:
        if re.search(pattern, name):
            return group
    side = _side(name)
    if side is None:
        return name
    # paired organs share the name without their side: kidney_left -> kidney
    return re.sub(rf"_?{side}(_|$)", r"\1", name).strip("_")


@lru_cache(maxsize=1)
def organs() -> dict[str, Organ]:
    """Every class of `total` and `total_v1`, keyed by name, in v2 index order then v1-only ones."""
    v2 = {n: i for i, n in class_map(V2_TASK).items()}
    v1 = {n: i for i, n in class_map(V1_TASK).items()}
    names = list(v2) + [n for n in v1 if n not in v2]
    return {n: Organ(n, v2.get(n), v1.get(n), _group(n), _side(n)) for n in names}


def organ(name: str) -> Organ:
    try:
        return organs()[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a TotalSegmentator class of {V2_TASK!r} or {V1_TASK!r}") from None


def index_v2(name: str) -> int:
    """The `total` v2 label value of a class (``KeyError`` for a v1-only class)."""
    index = organ(name).index_v2
    if index is None:
        raise KeyError(f"{name!r} is not a `total` v2 class")
    return index


def v2_names() -> list[str]:
    return [n for n, o in organs().items() if o.index_v2 is not None]


def groups() -> dict[str, list[str]]:
    """Group -> v2 class names in index order."""
    out: dict[str, list[str]] = {}
    for o in organs().values():
        if o.index_v2 is not None:
            out.setdefault(o.group, []).append(o.name)
    return out


def v1_to_v2(name: str) -> str | None:
    """The v2 class a v1 class falls in: the same name, or the v2 class of its group (heart chambers -> heart)."""
    o = organ(name)
    if o.index_v2 is not None:
        return name
    members = groups().get(o.group, [])
    if o.group in members:
        return o.group
    return members[0] if len(members) == 1 else None


def counted(name: str) -> bool:
    """Ribs and vertebrae: told apart by counting from a landmark (the first rib, the sacrum), not by
    their own look, so a crop that misses the landmark cannot name them."""
    return re.match(r"^(rib_|vertebrae_)", name) is not None


def readable(name: str) -> str:
    """'kidney_left' -> 'left kidney', 'lung_lower_lobe_right' -> 'right lung lower lobe'."""
    o = organ(name)
    words = name.replace(f"_{o.side}", "").replace(f"{o.side}_", "").split("_") if o.side else name.split("_")
    return " ".join(([o.side] if o.side else []) + words)
