"""The one exception type of DICOM/NIfTI ingest: a stage, a short machine-readable reason, a human detail.

``detail`` must never carry identifying values (names, ids, accession numbers, file paths that may
contain them): it ends up in the ``rejected_studies`` table and in log lines.
"""

from __future__ import annotations


class IngestError(Exception):
    """A study (or series) that cannot be turned into a trustworthy volume."""

    def __init__(self, stage: str, reason: str, detail: str = "") -> None:
        super().__init__(f"[{stage}] {reason}: {detail}" if detail else f"[{stage}] {reason}")
        self.stage = stage
        self.reason = reason
        self.detail = detail
