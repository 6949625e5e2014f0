"""Sizes stated in a sentence: the size of a finding, and vessels whose stated diameter is above their limit."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable

from pipeline.report.dictionary import abnormality
from pipeline.report.lexicon import diameter_limits
from pipeline.report.nlp import Match
from pipeline.report.placement import Run
from pipeline.report.scope import Clauses
from pipeline.report.words import Words

_SIZE = re.compile(
    r"(\d+(?:\.\d+)?)(?:\s*(?:x|\u00d7|by)\s*(\d+(?:\.\d+)?))?(?:\s*(?:x|\u00d7|by)\s*(\d+(?:\.\d+)?))?\s*"
    r"(mm|cm|millimet(?:er|re)s?|centimet(?:er|re)s?)\b",
    re.I,
)
_MEASURE = frozenset(
    {"diameter", "diameters", "caliber", "calibre", "calibration", "measured", "measures", "measuring", "width"}
)
_DILATATION = abnormality("dilatation")

_DIGIT = re.compile(r"\d")
Size = tuple[int, float]  # character offset of the measurement, largest dimension in mm


def has_digit(text: str) -> bool:
    return _DIGIT.search(text) is not None


def sizes(text: str, offset: int) -> list[Size]:
    """Measurements in the text (offsets shifted by `offset`), each as its largest dimension in mm."""
    out = []
    for m in _SIZE.finditer(text):
        dims = [float(g) for g in m.groups()[:3] if g]
        scale = 10.0 if m.group(4).lower().startswith("c") else 1.0
        out.append((offset + m.start(), max(dims) * scale))
    return out


_BOUND = re.compile(
    r"(?:less|smaller|shorter|lower|narrower) than\s*$"
    r"|(?:below|under|<|not exceeding|does not exceed|do not exceed)\s*$"
)
_LONG = re.compile(r"\s*(?:mm|cm)?\s*(?:in (?:the )?)?(?:long axis|long diameter|length|in length|craniocaudal)", re.I)


def short_axes(text: str, offset: int) -> list[Size]:
    """Measurements read as a short axis, in mm: the smaller of two or three dimensions, else the single one; bounds
    ("less than 1 cm", "not exceeding 6 mm") and long axes ("15 mm in the long axis") are left out."""
    out = []
    for m in _SIZE.finditer(text):
        if _BOUND.search(text[max(0, m.start() - 20) : m.start()].lower()) or _LONG.match(text, m.end()):
            continue
        dims = [float(g) for g in m.groups()[:3] if g]
        scale = 10.0 if m.group(4).lower().startswith("c") else 1.0
        out.append((offset + m.start(), min(dims) * scale))
    return out


def nearest_size(m: Match, found: list[Size], idx: list[int], terms: Clauses) -> float | None:
    """The size nearest to finding m in its clause (`idx`: the doc's token character offsets); the sentence's only
    size where its clause has none."""
    if not found:
        return None
    pos = idx[m.start]
    clause = terms.of(m.start)
    same = [(abs(p - pos), v) for p, v in found if terms.of(bisect_right(idx, p) - 1) == clause]
    pool = same or ([(abs(p - pos), v) for p, v in found] if len(found) == 1 else [])
    return min(pool)[1] if pool else None


def dilated_vessels(
    words: Words,
    idx: list[int],
    runs: list[Run],
    terms: Clauses,
    found: list[Size],
    t0: int,
    t1: int,
    dilated: Callable[[str, str, float], None],
) -> None:
    """Size statements: a vessel whose diameter is given above its normal limit is dilated ("ascending aorta
    diameter is 45 mm"; limits from data/organs.yaml `diameter_limits_mm`): calls dilated(organ, canonical, mm)."""
    limits = diameter_limits()
    for r in runs:
        if r.landmark:
            continue
        for organ in r.organs:
            limit = limits.get(organ)
            if limit is None:
                continue
            lo, hi = terms.span(r.clause, t0, t1)
            if not _MEASURE.intersection(words[lo:hi]):
                continue
            given = [v for p, v in found if r.end <= bisect_right(idx, p) - 1 < hi]
            if given and given[0] > limit:
                dilated(organ, _DILATATION.canonical_for(organ), given[0])
