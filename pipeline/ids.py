"""Pseudonymous identifiers from a keyed hash.

Every table, file name and log line carries these ids instead of patient names, patient ids,
birth dates or accession numbers. The key comes from ``CTGLIP_PSEUDONYM_KEY``; the demo default
is labelled as such so nobody mistakes it for a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os

KEY_ENV = "CTGLIP_PSEUDONYM_KEY"
DEMO_KEY = "ct-glip-DEMO-KEY-not-secret-set-CTGLIP_PSEUDONYM_KEY"

_PREFIX = {"patient": "pat", "study": "stu", "series": "ser", "report": "rep"}


def pseudonym_key() -> bytes:
    """The key for pseudonyms, read when called (never at import) so tests and runs can set it."""
    return os.environ.get(KEY_ENV, DEMO_KEY).encode()


def using_demo_key() -> bool:
    return KEY_ENV not in os.environ


def pseudonym(kind: str, value: str, key: bytes | None = None) -> str:
    """A stable pseudonymous id such as ``stu-3f9a0c1d2e4b5a67`` for ``kind`` in patient/study/series/report."""
    if kind not in _PREFIX:
        raise ValueError(f"unknown id kind {kind!r}; expected one of {sorted(_PREFIX)}")
    value = str(value).strip()
    if not value:
        raise ValueError(f"cannot pseudonymize an empty {kind} identifier")
    digest = hmac.new(key or pseudonym_key(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    return f"{_PREFIX[kind]}-{digest[:16]}"
