"""The record a report sentence turns into, and the knobs of the rule pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from pipeline.vocab import ABNORMAL, NORMAL, UNCERTAIN  # noqa: F401 - the report modules take them from here

NOT_MENTIONED = "not_mentioned"
# places a finding can sit that have no organ mask (data/organs.yaml `regions`)
REGIONS = ("lymph_node", "pleura", "mediastinum", "medical_material", "spine", "chest_wall", "breast", "soft_tissue")

# Columns of the `report_findings` table (described in assets/columns.py and docs/DATA.md) followed by our extras.
COLUMNS = (
    "report_id",
    "organ",
    "region",
    "group",
    "status",
    "abnormality",
    "sentence",
    "section",
    "negated",
    "size_mm",
    "header",
    "sentence_index",
    "side",
)


class Finding(NamedTuple):  # immutable like a frozen dataclass; a tuple builds 4x faster (~25,000 per 755 reports)
    organ: str | None  # vocab class name (pipeline.vocab), e.g. "kidney_left"; None for a region finding
    group: str | None  # its vocab group, e.g. "kidney"; None for a region finding
    status: str  # "normal" | "abnormal" | "uncertain"
    abnormality: str | None  # canonical name from data/abnormalities.yaml; None for a normal finding
    sentence: str  # the sentence as written (without its organ header)
    section: str  # "findings", "impression", "addendum" or "body" (no header)
    negated: tuple[str, ...] = ()  # canonical abnormalities negated for this organ in this sentence
    size_mm: float | None = None  # largest dimension of the nearest measurement, in mm
    header: str | None = None  # organ header the sentence sits under ("LIVER"), if any
    sentence_index: int = 0  # position of the sentence in the report
    region: str | None = None  # where a finding without an organ mask sits: one of REGIONS; None for organs
    side: str | None = None  # "left" | "right" for a region finding named with a side ("right pleural effusion")


@dataclass(frozen=True)
class ReportConfig:
    """Options of the rule pipeline. The default reads FINDINGS, IMPRESSION and header-less text."""

    # section names (after data/sections.yaml normalisation) whose sentences never produce findings
    skip_sections: frozenset[str] = field(
        default_factory=lambda: frozenset(
            {"history", "indication", "clinical information", "technique", "comparison", "recommendation", "signature"}
        )
    )
    max_chars: int = 200_000  # longer reports are truncated (and the problem recorded)
    min_words_for_language_check: int = 12  # shorter texts are never called non-English
    fast_tokenizer: bool = True  # nlp.RegexTokenizer instead of spaCy's rule-based English tokenizer
    # opt-in: once the pipeline is built, every object alive in the process leaves the cyclic garbage collector's
    # reach for good (gc.freeze, nlp.freeze_heap): full collections stop walking spaCy's and torch's ~260,000 objects
    # (6% of reading time). It changes the whole process, so only the CLI (a process of its own) turns it on
    freeze_heap: bool = False
