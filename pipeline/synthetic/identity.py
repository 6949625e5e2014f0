"""Identifying header values that look real, so the pipeline's privacy handling has something to strip."""

from __future__ import annotations

import datetime as dt

import numpy as np

_FIRST = (
    "JAMES",
    "MARY",
    "ROBERT",
    "PATRICIA",
    "JOHN",
    "JENNIFER",
    "MICHAEL",
    "LINDA",
    "DAVID",
    "ELIZABETH",
    "WILLIAM",
    "BARBARA",
    "RICHARD",
    "SUSAN",
    "JOSEPH",
    "JESSICA",
    "THOMAS",
    "SARAH",
    "CARLOS",
    "MARIA",
    "WEI",
    "MEI",
    "AHMED",
    "FATIMA",
    "IVAN",
    "OLGA",
    "KENJI",
    "YUKI",
    "PIERRE",
    "CLAIRE",
)
_LAST = (
    "SMITH",
    "JOHNSON",
    "WILLIAMS",
    "BROWN",
    "JONES",
    "GARCIA",
    "MILLER",
    "DAVIS",
    "RODRIGUEZ",
    "MARTINEZ",
    "HERNANDEZ",
    "LOPEZ",
    "WILSON",
    "ANDERSON",
    "THOMAS",
    "TAYLOR",
    "MOORE",
    "JACKSON",
    "MARTIN",
    "LEE",
    "NGUYEN",
    "CHEN",
    "KOWALSKI",
    "MUELLER",
    "ROSSI",
    "TANAKA",
    "OKAFOR",
    "HASSAN",
    "PETROV",
    "DUBOIS",
)
INSTITUTIONS = ("SAINT ELSEWHERE GENERAL HOSPITAL", "RIVERSIDE MEDICAL CENTER", "NORTHGATE UNIVERSITY CLINIC")
SCANNERS = (
    ("GE MEDICAL SYSTEMS", "Revolution CT"),
    ("SIEMENS", "SOMATOM Force"),
    ("Philips", "IQon Spectral CT"),
    ("TOSHIBA", "Aquilion ONE"),
)
RADIOLOGISTS = ("Dr. Helen Park, MD", "Dr. Samuel Okoye, MD", "Dr. Anna Lindqvist, MD", "Dr. Rajesh Iyer, MD")


def person(rng: np.random.Generator) -> tuple[str, str, str, str]:
    """(PatientName as DICOM PN, PatientID (MRN), birth date YYYYMMDD, sex)."""
    sex = "F" if rng.random() < 0.5 else "M"
    first = _FIRST[int(rng.integers(len(_FIRST)))]
    last = _LAST[int(rng.integers(len(_LAST)))]
    middle = chr(ord("A") + int(rng.integers(26)))
    birth = dt.date(1935, 1, 1) + dt.timedelta(days=int(rng.integers(0, 65 * 365)))
    mrn = f"{int(rng.integers(10**6, 10**7))}" if rng.random() < 0.5 else f"MRN{int(rng.integers(10**7, 10**8))}"
    return f"{last}^{first}^{middle}", mrn, birth.strftime("%Y%m%d"), sex


def study_date(rng: np.random.Generator, after: str | None = None) -> str:
    if after is None:
        day = dt.date(2018, 1, 1) + dt.timedelta(days=int(rng.integers(0, 6 * 365)))
    else:
        day = dt.datetime.strptime(after, "%Y%m%d").date() + dt.timedelta(days=int(rng.integers(90, 540)))
    return day.strftime("%Y%m%d")


def accession(rng: np.random.Generator, date: str, index: int) -> str:
    """Accession numbers embed the year as many RIS do; the index keeps them unique in a cohort."""
    return f"{'A' if index % 3 else 'CT'}{date[:4]}{index:05d}{int(rng.integers(10, 100))}"
