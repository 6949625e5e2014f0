"""De-identification of report text, before anything stores it (issue 29).

    from pipeline.deid import DeidConfig, deidentify
    deidentify("The liver of Jane Doeberg (DOB 03/14/1961) shows a mass.").text
    # 'The liver of [NAME] (DOB [DATE]) shows a mass.'

Names, dates, phone numbers, record/accession/trial/other ids, ages over 89, addresses, facility names, e-mail
addresses and URLs are replaced by typed placeholders (``[NAME]``, ``[DATE]``, ``[AGE]``, ...). With
``DeidConfig(dates="shift")`` a date that has a year becomes ``[DATE 2020-11-02]``: moved by the patient's own offset
(``dates.shift_days``), so intervals between one patient's studies survive; the brackets say it is a surrogate.
Detection is Presidio's pattern framework with report-specific patterns (``recognizers``); no model is loaded.
``find_phi`` is also what the privacy asset check runs over every text column of every table (``scan_frame``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import regex as re

from pipeline.deid.dates import shift_days, shifted

KINDS = ("NAME", "DATE", "PHONE", "ID", "AGE", "ADDRESS", "LOCATION", "EMAIL", "URL")
# where two findings of equal length and score cover the same text, the first kind here names it
_PRIORITY = {k: n for n, k in enumerate(("EMAIL", "URL", "DATE", "AGE", "ADDRESS", "LOCATION", "PHONE", "ID", "NAME"))}
PLACEHOLDER = re.compile(r"\[(?:NAME|DATE|PHONE|ID|AGE|ADDRESS|LOCATION|EMAIL|URL)(?: \d{4}-\d{2}(?:-\d{2})?)?\]")
_PSEUDONYM = re.compile(r"\b(?:stu|pat|ser|rep|pair)-[0-9a-f]{16}\b")  # our own ids: never PHI
_NAME_WORDS = re.compile(r"[\p{L}'’.-]+")
# a name followed by one of these is an eponym, not a person ("Sister Mary Joseph nodule", "Ivor Lewis
# esophagectomy", "Foley catheter"), and a place named after one is anatomy ("from the Circle of Willis"); one word
# followed by a colon is a header ("Patient Preparation: none")
_EPONYM_HEAD = re.compile(
    r"[ \t]+(?i:nodes?|nodules?|signs?|syndromes?|disease|fractures?|classification|criteria|score|lesions?|"
    r"tumou?rs?|hernias?|lines?|cysts?|diverticulum|fascia|pouch|triangle|space|ligament|canal|duct|"
    r"procedure|operation|manoeuvre|maneuver|phenomenon|index|scale|system|o?esophagectomy|gastrectomy|"
    r"resection|repair|anastomosis|fundoplication|shunt|catheter|filter|drain|tube|valve|stent|clip|coil|"
    r"ring|artery|lobe|network|hump|tear|injury|sarcoma|lymphoma|granulomatosis|dissection|circle|ampulla|sphincter|papilla|"
    r"foramen|fossa|recess|tubercle|bursa|loop|sinus|plexus|gland)\b"
)
_HEADER = re.compile(r"[ \t]*:")


@dataclass(frozen=True)
class DeidConfig:
    """How report text is de-identified. ``dates``: ``placeholder`` writes ``[DATE]``; ``shift`` writes the
    date moved by the patient's offset (at most ``max_shift_days``, never 0) as ``[DATE 2020-11-02]``, and
    ``[DATE]`` where there is no patient or no year. ``day_first`` reads 03/04/2020 as 3 April (dotted
    dates are always day first)."""

    dates: Literal["placeholder", "shift"] = "placeholder"
    max_shift_days: int = 365
    day_first: bool = False

    def __post_init__(self) -> None:
        if self.dates not in ("placeholder", "shift"):
            raise ValueError(f"dates must be 'placeholder' or 'shift', got {self.dates!r}")
        if self.max_shift_days < 1:
            raise ValueError("max_shift_days must be >= 1")


@dataclass(frozen=True)
class PhiSpan:
    start: int
    end: int
    kind: str


@dataclass(frozen=True)
class Deidentified:
    text: str
    spans: tuple[PhiSpan, ...]  # in the input's coordinates


def _trim_name(text: str, start: int, end: int) -> tuple[int, int] | None:
    """A name match without report words at its ends ("Selin ÖZTÜRKMEN Radiology Specialist" -> the name;
    "Patient Position" -> nothing); nothing where the name is an eponym's ("Sister Mary Joseph nodule") or one
    word is a header ("Patient Preparation:")."""
    from pipeline.deid.names import report_vocabulary

    vocabulary = report_vocabulary()
    words = [(m.start(), m.end()) for m in _NAME_WORDS.finditer(text, start, end)]
    # a word is report language when each of its hyphened parts is ("PET-CT", "Follow-up")
    is_name = [not all(part in vocabulary for part in text[s:e].strip(".'’-").lower().split("-")) for s, e in words]
    if not any(is_name):
        return None
    first, last = is_name.index(True), len(is_name) - 1 - is_name[::-1].index(True)
    end = words[last][1]
    if text.endswith("'s", 0, end):
        return words[first][0], end - 2  # "Keller's scan" keeps its "'s" (and "Dr. Lee's criteria" its name)
    if _EPONYM_HEAD.match(text, end) or (first == last and _HEADER.match(text, end)):
        return None
    return words[first][0], end


def find_phi(text: str) -> list[PhiSpan]:
    """The PHI in ``text``, overlapping findings merged (the longest one's kind); text inside a placeholder
    of ours is never PHI, so de-identifying twice changes nothing."""
    if not text:
        return []
    from pipeline.deid.recognizers import recognizers  # Presidio and spaCy load on first use, not with the package

    found: list[tuple[int, int, str, float]] = []  # start, end, kind, score
    for recognizer in recognizers():
        # Presidio's base class types nlp_artifacts as required; every recognizer here takes none (patterns only)
        for r in recognizer.analyze(text, recognizer.supported_entities):  # type: ignore[call-arg]
            span = _trim_name(text, r.start, r.end) if r.entity_type == "NAME" else (r.start, r.end)
            if span and r.entity_type == "PHONE" and text[span[0]] == "(" and ")" not in text[span[0] : span[1]]:
                span = (span[0] + 1, span[1])  # phonenumbers takes the "(" of "(555-123-4567)"
            if span is not None and span[1] > span[0]:
                found.append((*span, r.entity_type, r.score))
    kept = [(m.start(), m.end()) for m in PLACEHOLDER.finditer(text)]
    found = [f for f in found if not any(f[0] < e and s < f[1] for s, e in kept)]
    # of equal findings the surer one names the kind (a labelled id over a phone-shaped number), then _PRIORITY
    found.sort(key=lambda f: (f[0], -(f[1] - f[0]), -f[3], _PRIORITY[f[2]]))
    merged: list[list] = []
    for start, end, kind, _ in found:
        if merged and start < merged[-1][1]:
            last = merged[-1]
            if end - start > last[3]:  # the longest finding names the merged span
                last[2], last[3] = kind, end - start
            last[1] = max(last[1], end)
        else:
            merged.append([start, end, kind, end - start])
    return [PhiSpan(s, e, k) for s, e, k, _ in merged]


def deidentify(text: str, config: DeidConfig = DeidConfig(), patient_id: str | None = None) -> Deidentified:
    """``text`` with every PHI span replaced by its placeholder (dates shifted where configured)."""
    if not isinstance(text, str) or not text:
        return Deidentified(text, ())
    spans = find_phi(text)
    days = shift_days(patient_id, config.max_shift_days) if config.dates == "shift" and patient_id else None
    out = text
    for span in reversed(spans):
        new = f"[{span.kind}]"
        if (
            span.kind == "DATE"
            and days is not None
            and (moved := shifted(text[span.start : span.end], days, config.day_first))
        ):
            new = f"[DATE {moved}]"
        out = out[: span.start] + new + out[span.end :]
    return Deidentified(out, tuple(spans))


def deidentify_reports(
    reports: pd.DataFrame,
    config: DeidConfig = DeidConfig(),
    patients: dict[str, str] | None = None,
    text_column: str = "text",
    id_column: str = "report_id",
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The reports with de-identified text, and how many spans of each kind were replaced (never what)."""
    counts = dict.fromkeys(KINDS, 0)
    texts = []
    for rid, text in zip(reports[id_column].tolist(), reports[text_column].tolist()):
        result = deidentify(text, config, (patients or {}).get(rid))
        for span in result.spans:
            counts[span.kind] += 1
        texts.append(result.text)
    return reports.assign(**{text_column: texts}), counts


def _cell_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        parts = [v for v in value if isinstance(v, str)]
        return " | ".join(parts) if parts else None
    return None


def scan_frame(df: pd.DataFrame, table: str = "", context: int = 30) -> pd.DataFrame:
    """Every PHI finding in the text columns of ``df``: table, column, row (the first with that value), kind
    and a de-identified excerpt around it (the finding itself is never shown). Our pseudonyms are not PHI."""
    rows = []
    for column in df.columns:
        if df[column].dtype != object and not pd.api.types.is_string_dtype(df[column]):
            continue
        first: dict[str, int] = {}
        for i, value in enumerate(df[column].tolist()):
            text = _cell_text(value)
            if text and text not in first:
                first[text] = i
        for text, i in first.items():
            masked = _PSEUDONYM.sub(lambda m: "x" * len(m.group()), text)  # same length: spans hold for text
            spans = find_phi(masked)
            clean, shift = text, 0
            for span in spans:  # the whole value de-identified, so no excerpt shows part of another finding
                clean = clean[: span.start + shift] + f"[{span.kind}]" + clean[span.end + shift :]
                shift += len(span.kind) + 2 - (span.end - span.start)
            shift = 0
            for span in spans:
                at = span.start + shift
                excerpt = clean[max(0, at - context) : at + len(span.kind) + 2 + context]
                shift += len(span.kind) + 2 - (span.end - span.start)
                rows.append({"table": table, "column": str(column), "row": i, "kind": span.kind, "excerpt": excerpt})
    return pd.DataFrame(rows, columns=["table", "column", "row", "kind", "excerpt"])


def scan_tables(frames: Iterable[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """``scan_frame`` over many tables, one frame of findings."""
    found = [scan_frame(df, name) for name, df in frames]
    return pd.concat(found, ignore_index=True) if found else scan_frame(pd.DataFrame())
