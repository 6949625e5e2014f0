"""Which study, patient and report each source row claims; conflicting claims are refused, never merged.

A NIfTI manifest row or a DICOM study claims a ``study_id`` (and with it a patient and a report). Two
claimants of one study (a duplicate ``study_key``, one StudyInstanceUID in the archive and the manifest), one
scan file listed under two studies, or one report claimed by two patients would silently give two rows
of one study, or one patient's image paired with another's text. Each claimant is refused with a
``rejected_studies`` row that names every claimant (manifest lines, or "the DICOM archive"), never an
identifier; the other studies go on.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    study_id: str
    patient_id: str
    report_id: str  # "" when the source names no report
    origin: str  # where the claim comes from, free of identifiers: "scans.csv line 3", "the DICOM archive"
    source_format: str  # dicom / nifti
    scan: str = ""  # the scan file a manifest row points at ("" for DICOM)


def _names(claims: list[Claim]) -> str:
    return " and ".join(dict.fromkeys(c.origin for c in claims))


def conflicts(claims: list[Claim]) -> dict[int, dict]:
    """Index of each refused claim -> its rejection row (study_id, stage, reason, detail, source_format).

    Checked in order, the first that applies names the claim's refusal: one study claimed twice
    (``duplicate_study_key``, saying whether the patients differ), one scan file claimed by two studies
    (``duplicate_scan``), one report claimed under two patients (``report_of_two_patients``).
    """
    refused: dict[int, dict] = {}

    def refuse(group: list[int], reason: str, detail: str) -> None:
        for i in group:
            if i not in refused:
                c = claims[i]
                refused[i] = {
                    "study_id": c.study_id,
                    "stage": "scan",
                    "reason": reason,
                    "detail": detail,
                    "source_format": c.source_format,
                }

    by_study: dict[str, list[int]] = defaultdict(list)
    by_scan: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(claims):
        by_study[c.study_id].append(i)
        if c.scan:
            by_scan[c.scan].append(i)
    for group in by_study.values():
        if len(group) > 1:
            rows = [claims[i] for i in group]
            patients = len({c.patient_id for c in rows})
            who = f"under {patients} different patients" if patients > 1 else "under the same patient"
            refuse(
                group,
                "duplicate_study_key",
                f"{_names(rows)} name the same study ({who}); none is ingested, nothing is merged",
            )
    for group in by_scan.values():
        if len({claims[i].study_id for i in group}) > 1:
            refuse(
                group,
                "duplicate_scan",
                f"{_names([claims[i] for i in group])} list the same scan file as different studies; none is ingested",
            )
    by_report: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(claims):
        if c.report_id and i not in refused:
            by_report[c.report_id].append(i)
    for group in by_report.values():
        if len({claims[i].patient_id for i in group}) > 1:
            refuse(
                group,
                "report_of_two_patients",
                f"{_names([claims[i] for i in group])} give one report key to different patients; none is ingested",
            )
    return refused
