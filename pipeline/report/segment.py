"""Sections, organ headers and sentences of a cleaned report, as character spans.

Headers are "NAME:" at the start of a line or after a sentence end, or a known section name alone on
a line. A header is a section (data/sections.yaml), an organ header ("LIVER:", "Lungs and pleura:"),
or a region sub-header ("ABDOMEN:"); anything else is ordinary text. An organ header holds until the
next header or a blank line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from pipeline.report.datafiles import load
from pipeline.report.lexicon import header_organs

BODY = "body"  # section of text before any header


class Sentence(NamedTuple):  # a tuple: built ~20 times per report, cheaper than a frozen dataclass
    start: int  # character offsets into the cleaned text
    end: int
    section: str
    header: str | None  # organ header text, if the sentence sits under one
    header_organs: tuple[str, ...]


@dataclass(frozen=True)
class _Header:
    start: int  # where the header text starts
    end: int  # just after its colon (or line end)
    kind: str  # "section" | "organ" | "region"
    name: str  # section name, or header text
    organs: tuple[str, ...] = ()


# "NAME:" at a line start or right after a sentence end: a colon, then the label before it
_COLON = re.compile(r":(?![0-9/])")
_LABEL = re.compile(r"(?:^|(?<=[\n.!?;]))[ \t]*([A-Za-z][A-Za-z /&,()\-+]{0,48}?)[ \t]*$")
_WORD_END = re.compile(r"([A-Za-z][A-Za-z.]*)$")
_NEXT_CHAR = re.compile(r"\s*(\S?)")
# a run of sentence marks before a space, quote or bracket, or at the end; or a line end
_BOUNDARY = re.compile(r"""[.!?]+(?=[\s"')\]]|$)|\n""")
_LIST_INLINE = re.compile(r"[:;]\s+(?=\(?\d{1,2}[.)]\s+[A-Za-z])")  # "...: 1. Liver", "; 2) ...": a cut at its end
# items of an impression run together on one line: ' " Hiatal hernia " Emphysema', ' • Atelectasis • ...': a run
# of marks after a space (checked outside the pattern)
_ITEM_MARKS = '"\u201c\u201d\u2022\u00b7'
_ITEM_INLINE = re.compile(f"[{_ITEM_MARKS}]+" + r"(?=\s*[A-Za-z])")
_LAST_WORD = re.compile(r"([A-Za-z]+)[ \t]*$")
_LINE_HEADER = re.compile(r"(?m)^[ \t]*([A-Za-z][A-Za-z /&\-]{1,40}?)[ \t]*:?[ \t]*$")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_LETTER = re.compile(r"[A-Za-z]")
_LIST_MARK = re.compile(r"\s*(?:\(?\d{1,2}[.)](?=\s|[A-Za-z])|[-*\u2022\u00b7>]+(?=\s))\s*")
_ABBREV = frozenset(
    "dr mr mrs ms vs approx apprx e.g i.e eg ie cf al fig figs incl st prox dist resp pt pts est ca max min no nos sr "
    "jr".split()
)
_UNITS = frozenset("cm mm ml cc hu min sec cm2 mm2 kg mg".split())
_CONTINUE = frozenset("and or of the a an with to in for by at from as is are was were but than".split())
# sections that state one thing: written inline ("Comparison: CT of 25.12.2019. Trachea ..."), only their first
# sentence is theirs, and the report goes on header-less
_ONE_SENTENCE = frozenset({"comparison"})


@lru_cache(maxsize=1)
def _sections() -> dict:
    return load("sections.yaml")


def _norm(label: str) -> str:
    return re.sub(r"\s+", " ", label.strip().lower().replace("_", " "))


@lru_cache(maxsize=8192)
def classify(label: str) -> tuple[str, str, tuple[str, ...]] | None:
    """("section", name, ()) | ("organ", label, organs) | ("region", label, ()) | None for ordinary text."""
    key = _norm(label)
    if not key or len(key.split()) > 6:
        return None
    sec = _sections()
    for table in ("findings", "skip"):
        for k in (key, key.rstrip("s")):
            if k in sec[table]:
                return ("section", sec[table][k], ())
    organs = header_organs(key)
    if organs:
        return ("organ", label.strip(), organs)
    if key in sec["regions"] or key.rstrip("s") in sec["regions"]:
        return ("region", label.strip(), ())
    return None


def _headers(text: str) -> list[_Header]:
    found: dict[int, _Header] = {}
    for colon in _COLON.finditer(text):
        m = _LABEL.search(text, max(0, colon.start() - 52), colon.start())
        if m is None:
            continue
        c = classify(m.group(1))
        if c:
            found[m.start(1)] = _Header(m.start(1), colon.end(), *c)
    for m in _LINE_HEADER.finditer(text):
        if m.start(1) in found:
            continue
        c = classify(m.group(1))
        # without a colon only section names, or organ/region headers written in capitals
        if c and (c[0] == "section" or m.group(1).isupper()):
            found[m.start(1)] = _Header(m.start(1), m.end(), *c)
    return [found[k] for k in sorted(found)]


def _split_points(text: str, start: int, end: int) -> list[int]:
    """Sentence boundaries (character offsets) inside text[start:end]."""
    cuts = [start]
    for m in _BOUNDARY.finditer(text, start, end):
        (at, pos), mark = m.span(), m.group()
        if mark == "\n":
            if _newline_splits(text, at, start, end):
                cuts.append(pos)
            continue
        if "?" in mark:
            before = text[cuts[-1] : at]
            if before.count("(") > before.count(")"):
                continue  # a question inside parentheses: "(small airway disease? small vessel disease?)"
        if mark == ".":  # a period after an abbreviation, a unit or an initial may not end the sentence
            w = _word_before(text, start, at)
            if w in _ABBREV or w in _UNITS or len(w) == 1:
                following = _NEXT_CHAR.match(text, pos, end)
                assert following is not None  # \s*(\S?) matches at any position
                nxt = following.group(1)
                if w in _ABBREV and not (w == "no" and not nxt.isdigit()):
                    continue
                if nxt.islower() and w in _UNITS:
                    continue  # "1.8 cm. nodule" in a lower-case report
                if len(w) == 1 and text[m.start() - 1].isupper():
                    continue  # an initial ("J. Smith")
        cuts.append(pos)
    # inline numbered lists: "... normal. 2. Kidneys ..." is cut above; "...: 1. Liver" and "; 2) ..." here
    for m in _LIST_INLINE.finditer(text, max(0, start - 1), end):  # the colon may end the header before start
        cuts.append(m.end())
    for m in _ITEM_INLINE.finditer(text, start, end):
        if m.start() > 0 and text[m.start() - 1].isspace():  # a run of marks after a space
            cuts += (m.start(), m.end())  # the marks alone have no letters and are dropped
    cuts.append(end)
    return sorted(set(cuts))


def _word_before(text: str, start: int, at: int) -> str:
    """The lower-case word (letters and inner periods, within 12 characters) that ends at `at`, or ""."""
    found = _WORD_END.search(text, max(start, at - 12), at)
    return found.group(1).lower().rstrip(".") if found else ""


def _newline_splits(text: str, pos: int, start: int, end: int) -> bool:
    j = pos - 1
    while j >= start and text[j] in " \t":
        j -= 1
    k = pos + 1
    while k < end and text[k] in " \t":
        k += 1
    if j < start or k >= end or text[j] == "\n" or text[k] == "\n":
        return True  # blank line or segment edge
    if _LIST_MARK.match(text, k, end):
        return True
    if text[k].islower() or text[j] in ",-(/":
        return False
    last = _LAST_WORD.search(text, max(start, j - 20), j + 1)
    return not (last and last.group(1).lower() in _CONTINUE)


def _inline(text: str, start: int, end: int) -> bool:
    """Whether the section's text starts on its header's line."""
    line_end = text.find("\n", start, end)
    return _LETTER.search(text, start, end if line_end < 0 else line_end) is not None


def sentences(text: str) -> list[Sentence]:
    """Sentences of the findings-bearing and skipped sections alike, each tagged with its section."""
    headers = _headers(text)
    out: list[Sentence] = []
    section = BODY
    organ_header: _Header | None = None
    bounds = [h.start for h in headers] + [len(text)]
    spans = [(0, bounds[0], None)] + [(h.end, bounds[i + 1], h) for i, h in enumerate(headers)]
    for seg_start, seg_end, h in spans:
        if h is not None:
            if h.kind == "section":
                section, organ_header = h.name, None
            elif h.kind == "organ":
                organ_header = h
            else:
                organ_header = None
        cuts = _split_points(text, seg_start, seg_end)
        inline = h is not None and h.kind == "section" and h.name in _ONE_SENTENCE and _inline(text, seg_start, seg_end)
        for a, b in zip(cuts, cuts[1:]):
            raw = text[a:b]
            if organ_header is not None and _BLANK_LINE.search(raw) and out and out[-1].header:
                organ_header = None  # a blank line ends an organ header
            mark = _LIST_MARK.match(raw)
            if mark:
                a += mark.end()
                raw = text[a:b]
            body = raw.lstrip()
            a += len(raw) - len(body)
            b = a + len(body.rstrip())
            if b <= a or not _LETTER.search(text, a, b):
                continue
            oh = organ_header
            out.append(Sentence(a, b, section, oh.name if oh else None, oh.organs if oh else ()))
            if inline:
                section, inline = BODY, False
    return out
