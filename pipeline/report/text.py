"""Turning whatever a RIS export holds into clean report text, with a reason when it cannot be read."""

from __future__ import annotations

import html
import re
import unicodedata

_RTF_MARK = re.compile(r"^\s*\{\\rtf", re.I)
_RTF_DEST = re.compile(r"\{\\\*[^{}]*\}|\{\\(?:fonttbl|colortbl|stylesheet|info)(?:[^{}]|\{[^{}]*\})*\}")
_RTF_PAR = re.compile(r"\\(?:par|line|row|cell)\b ?")
_RTF_HEX = re.compile(r"\\'([0-9a-fA-F]{2})")
_RTF_UNI = re.compile(r"\\u(-?\d+)\??")
_RTF_WORD = re.compile(r"\\[a-zA-Z]+-?\d* ?|\\[^a-zA-Z]")
_HTML_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)\b[^>]*>")
_HTML_BLOCK = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table"})
_HTML_HINT = re.compile(
    r"<(?:br|p|div|span|b|i|u|li|font|html|body|table|tr|td)\b[^>]*>|&(?:nbsp|amp|lt|gt|quot|#\d+);", re.I
)
_WORDS = re.compile(r"[^\W\d_]+")
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
    text = _SURROGATE.sub("\ufffd", text)  # lone surrogates (the undecodable bytes of a "surrogateescape" decoding)
    text = _CONTROL.sub(" ", text)
    return text.replace("\t", " ").replace("\u00a0", " ")


def english_share(text: str) -> tuple[int, float, float]:
    """(words, share of common English report words, share of other languages' function words)."""
    words = _WORDS.findall(text[:20_000].lower())
    if not words:
        return 0, 0.0, 0.0
    english = sum(w in _ENGLISH for w in words)
    foreign = sum(w in _FOREIGN for w in words)
    return len(words), english / len(words), foreign / len(words)


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
