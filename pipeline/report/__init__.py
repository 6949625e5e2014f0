"""Report understanding: CT report text -> organ-level findings (rules on spacy.blank("en")).

    from pipeline.report import extract_findings, organ_status, organ_texts
    findings = extract_findings("FINDINGS: The liver is enlarged. No pleural effusion.")

Contracts: docs/ARCHITECTURE.md (vocab class names, group mentions expand to all members, status
aggregation). Data: data/organs.yaml, data/abnormalities.yaml, data/modifiers.yaml, data/sections.yaml.
"""

from pipeline.report.api import (
    extract_findings,
    extract_findings_checked,
    extract_table,
    extract_table_checked,
    organ_status,
    organ_texts,
)
from pipeline.report.dictionary import Abnormality, abnormalities, abnormalities_for_organ, abnormality
from pipeline.report.finding import Finding, ReportConfig

__all__ = [
    "Abnormality",
    "Finding",
    "ReportConfig",
    "abnormalities",
    "abnormalities_for_organ",
    "abnormality",
    "extract_findings",
    "extract_findings_checked",
    "extract_table",
    "extract_table_checked",
    "organ_status",
    "organ_texts",
]
