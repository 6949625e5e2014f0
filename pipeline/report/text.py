"""Turning whatever a RIS export holds into clean report text, with a reason when it cannot be read."""

from __future__ import annotations

import html
import re
import unicodedata
from itertools import filterfalse, repeat

_RTF_MARK = re.compile(r"^\s*\{\\rtf", re.I)
_RTF_DEST = re.compile(r"\{\\\*[^{}]*\}|\{\\(?:fonttbl|colortbl|stylesheet|info)(?:[^{}]|\{[^{}]*\})*\}")
_RTF_PAR = re.compile(r"\\(?:par|line|row|cell)\b ?")
_RTF_HEX = re.compile(r"\\'([0-9a-fA-F]{2})")
_RTF_UNI = re.compile(r"\\u(-?\d+)\??")
_RTF_WORD = re.compile(r"\\[a-zA-Z]+-?\d* ?|\\[^a-zA-Z]")
_HTML_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)\b[^>]*>")
_HTML_BLOCK = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table"})
_HTML_HINT = re.compile(r"<(?:br|p|div|span|b|i|u|li|font|html|body|table|tr|td)\b[^>]*>|&(?:nbsp|amp|lt|gt|quot|#\d+);", re.I)
_WORDS = re.compile(r"[^\W\d_]+")
# for _WORDS in C: on UTF-8 bytes, ASCII letters and non-ASCII bytes kept, any other ASCII byte a space
_SPACE_ASCII_NON_LETTERS = bytes(c if 97 <= c <= 122 or c >= 128 else 32 for c in range(256))
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")

# Frequent English words of radiology reports; the share of them tells English from other languages.
_ENGLISH = frozenset(
    """the a an of and or in is are no not with without there to for on at by as be was were this that normal
    unremarkable noted seen identified evidence size mild small large left right both bilateral lung lungs liver
    kidney kidneys spleen heart findings impression history technique comparison contrast ct chest abdomen pelvis
    within limits lesion mass nodule cyst effusion which has have been from stable unchanged measuring measures
    cm mm appear appears appearance soft tissue likely possible may represent""".split()
)


# Function words of other languages reports arrive in (German, French, Spanish, Italian, Dutch, Portuguese).
_FOREIGN = frozenset(
    """der die das und ist sind nicht keine kein eine einer mit ohne im des den dem zu bei nach
    le la les et est sont pas une des du avec sans dans pour sur au aux
    el los las y es son una del con sin por para se lo al
    il della di che non sono gli con senza nel
    het een van en niet zijn met zonder geen
    os uma com sem não são""".split()
)


_ENGLISH_BYTES = frozenset(w.encode() for w in _ENGLISH)
_FOREIGN_BYTES = frozenset(w.encode() for w in _FOREIGN if w.isascii())
# ASCII word -> 1 if a common English one, plus _FOREIGN_ONE if another language's: one sum over a text's words
# counts both (divmod by _FOREIGN_ONE parts them)
_FOREIGN_ONE = 1 << 32
_LANG_BYTES = {w: (w in _ENGLISH_BYTES) + (w in _FOREIGN_BYTES) * _FOREIGN_ONE for w in _ENGLISH_BYTES | _FOREIGN_BYTES}
# every byte but the UTF-8 bytes of _CONTROL's characters: deleting them leaves those (multi-byte characters have
# no byte below 0x80), a test in C that is 6x faster than _CONTROL's scan, which tests a class at every position
_NOT_CONTROL = bytes(c for c in range(256) if not _CONTROL.match(chr(c)))


def decode(data: bytes) -> tuple[str, str | None]:
    """Bytes -> text: UTF-8 (with or without BOM), else UTF-16 with a BOM, else cp1252; the note says which."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace"), "decoded as UTF-16"
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "not UTF-8: decoded as cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "not UTF-8: decoded as latin-1"


def strip_rtf(text: str) -> str:
    text = _RTF_DEST.sub("", text)
    text = _RTF_PAR.sub("\n", text)
    text = _RTF_HEX.sub(lambda m: bytes([int(m.group(1), 16)]).decode("cp1252", errors="replace"), text)
    text = _RTF_UNI.sub(lambda m: chr(int(m.group(1)) % 65536), text)
    text = _RTF_WORD.sub("", text)
    return text.replace("{", "").replace("}", "")


def strip_html(text: str) -> str:
    text = _HTML_TAG.sub(lambda m: "\n" if m.group(2).lower() in _HTML_BLOCK else "", text)
    return html.unescape(text)


def clean(text: str) -> str:
    """Line endings, RTF and HTML residue, control characters, lone surrogates and odd spaces normalised;
    offsets change."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _RTF_MARK.match(text):
        text = strip_rtf(text)
    if ("<" in text or "&" in text) and _HTML_HINT.search(text):  # (the plain test is 30x faster)
        text = strip_html(text)
    text = unicodedata.normalize("NFKC", text)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (the undecodable bytes of a "surrogateescape" decoding): no text
        text = _SURROGATE.sub("\ufffd", text)
        data = text.encode("utf-8")
    if data.translate(None, _NOT_CONTROL):
        text = _CONTROL.sub(" ", text)
    return text.replace("\t", " ").replace("\u00a0", " ")


def english_share(text: str) -> tuple[int, float, float]:
    """(words, share of common English report words, share of other languages' function words)."""
    head = text[:20_000].lower()
    # The words of _WORDS.findall(head), found in C: split at ASCII non-letters, and only chunks with other
    # characters searched with the pattern (half the time; most reports are ASCII, or nearly)
    chunks = head.encode("utf-8").translate(_SPACE_ASCII_NON_LETTERS).split()
    if head.isascii():
        words, other = chunks, []
    else:
        words = list(filter(bytes.isascii, chunks))
        other = [x for w in filterfalse(bytes.isascii, chunks) for x in _WORDS.findall(w.decode("utf-8"))]
    n = len(words) + len(other)
    if not n:
        return 0, 0.0, 0.0
    # counted with map over dict and set lookups: no Python-level loop
    foreign, english = divmod(sum(map(_LANG_BYTES.get, words, repeat(0))), _FOREIGN_ONE)
    english += sum(map(_ENGLISH.__contains__, other))
    foreign += sum(map(_FOREIGN.__contains__, other))
    return n, english / n, foreign / n


def check(text: str, min_words: int) -> str | None:
    """A reason the text is not an English report, or None."""
    if not text.strip():
        return "empty report"
    n, share, foreign = english_share(text)
    if n == 0:
        return "no words in report"
    if n >= min_words and (share < 0.08 or foreign > share):
        return f"not English (only {share:.0%} of {n} words are common English report words)"
    return None
