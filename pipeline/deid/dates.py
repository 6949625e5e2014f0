"""Dates found in report text: read into a calendar date (with its precision) and shifted per patient.

A shift keeps the intervals between one patient's dates (the prior study was 14 months before this one)
while the dates themselves are no longer true. The offset is a keyed hash of the patient pseudonym with the
pseudonym key (``pipeline.ids``), so it is stable across runs and unknown without the key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re

from pipeline.ids import pseudonym_key

_MONTHS = {
    m: i
    for i, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for m in names
}
_NUM = re.compile(r"^(\d{1,4})[./-](\d{1,2})[./-](\d{2,4})$")
_COMPACT = re.compile(r"^((?:19|20)\d{2})(\d{2})(\d{2})$")
_MONTH_YEAR_NUM = re.compile(r"^(\d{1,2})/(\d{4})$")
_WORDS = re.compile(r"[A-Za-z]+|\d+")


def _year(y: int) -> int:
    return y if y >= 100 else (2000 + y if y < 50 else 1900 + y)


def _date(y: int, m: int, d: int) -> dt.date | None:
    try:
        return dt.date(_year(y), m, d)
    except ValueError:
        return None


def parse(text: str, day_first: bool = False) -> tuple[dt.date, str] | None:
    """(date, precision ``day`` or ``month``) of a date as written, or None where it has no year (``3/14``,
    ``25 May``) or cannot be read. Dotted numeric dates are day first (European), slashed and dashed ones
    month first unless ``day_first`` or the first number cannot be a month."""
    s = text.strip().rstrip(".,")
    if m := _COMPACT.match(s):
        d = _date(int(m[1]), int(m[2]), int(m[3]))
        return (d, "day") if d else None
    if m := _NUM.match(s):
        a, b, c = (int(x) for x in m.groups())
        if len(m[1]) == 4:  # year first
            d = _date(a, b, c)
        elif "." in s or day_first or a > 12:
            d = _date(c, b, a)
        else:
            d = _date(c, a, b)
        return (d, "day") if d else None
    if m := _MONTH_YEAR_NUM.match(s):
        d = _date(int(m[2]), int(m[1]), 15)
        return (d, "month") if d else None
    words = _WORDS.findall(s)
    months = [_MONTHS[w.lower()] for w in words if w.lower() in _MONTHS]
    numbers = [int(w) for w in words if w.isdigit()]
    years = [n for n in numbers if 1900 <= n <= 2099]
    if len(months) != 1 or len(years) != 1:
        return None
    days = [n for n in numbers if 1 <= n <= 31 and n not in years]
    d = _date(years[0], months[0], days[0] if days else 15)
    return (d, "day" if days else "month") if d else None


def shift_days(patient_id: str, max_days: int, key: bytes | None = None) -> int:
    """A patient's offset in days: in [-max_days, max_days], never 0, the same in every run with one key."""
    if max_days < 1:
        raise ValueError("max_days must be >= 1")
    digest = hmac.new(key or pseudonym_key(), f"date-shift:{patient_id}".encode(), hashlib.sha256).digest()
    n = int.from_bytes(digest[:8], "big") % (2 * max_days)
    return n - max_days if n < max_days else n - max_days + 1


def shifted(text: str, days: int, day_first: bool = False) -> str | None:
    """The date in ``text`` moved by ``days``, written ISO (``2020-11-02``, or ``2020-11`` for a month), or
    None where it cannot be read whole (no year): such a date is replaced by its placeholder instead."""
    parsed = parse(text, day_first)
    if parsed is None:
        return None
    date, precision = parsed
    moved = date + dt.timedelta(days=days)
    return moved.isoformat() if precision == "day" else moved.strftime("%Y-%m")
