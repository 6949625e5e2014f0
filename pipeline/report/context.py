"""ConText-style reading of one sentence: which organs, which findings, negated/uncertain/historical.

Scopes: a forward trigger ("no", "possible", "history of") reaches the findings after it, a backward
one ("is not seen", "cannot be excluded") those before it, each within its window and its clause;
clauses end at terminators ("but", "however", "although", ";", ...) and at the sentence end. The
nearest trigger before a finding wins, else the nearest after it. A historical finding counts as
current when its clause also says it persists ("previously seen nodule is stable").

Binding a finding to organs: a synonym that names its organ ("cholelithiasis") binds there; else the
nearest applicable organ run in the clause (an adjective right before it, "hepatic cyst", or a run
right after a preposition, "cyst in the liver and kidneys"), else elsewhere in the sentence, else
the organ header, else the finding's default organs (narrowed by a side word: "left pleural effusion").
Organs after a relation word ("adjacent to the liver") are landmarks and get nothing.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import compress
from operator import itemgetter
from types import MappingProxyType

from spacy.attrs import IDX, LOWER
from spacy.language import Language
from spacy.tokens import Doc

from pipeline import vocab
from pipeline.report.finding import ABNORMAL, NORMAL, REGIONS, UNCERTAIN, Finding
from pipeline.report.dictionary import abnormality
from pipeline.report.lexicon import ELSEWHERE, REGION, diameter_limits, narrow, region_of, side_of
from pipeline.report.nlp import ABN, HIST, NEG, NORM, ORG, PERSIST, REL, SIDE, TERM, UNC, Lexicon, Match
from pipeline.report.segment import Sentence, sentences

_CONNECT = frozenset({",", "and", "or", "the", "both", "/", "&", "as", "well", "including", "of", "its", "+", "-", "\u2013"})
_PREP = frozenset({"in", "within", "of", "the", "both", "involving", "at", "on", "throughout", "seen", "noted", "is",
                   "are", "identified", "present", "from", "arising", "along", "to", "a", "an", "lower", "upper",
                   "pole", "mid", "superior", "inferior", "posterior", "anterior", "lateral", "medial"})
# words between a part and its whole: "lower lobe superior segment of the right lung"
_PART = frozenset("""segment segments subsegment subsegments superior inferior anterior posterior lateral medial
    apicoposterior anteromedial posterobasal laterobasal mediobasal anterobasal basal part parts portion portions zone
    zones region regions area areas aspect aspects section sections peripheral central subpleural lobe lobes""".split())
_RANGE = frozenset({"-", "\u2013", "through", "to", "thru"})
# (\d\d* rather than \d+: a pattern that starts with a character class lets re skip ahead to the next digit)
_SIZE = re.compile(
    r"(\d\d*(?:\.\d+)?)(?:\s*(?:x|\u00d7|by)\s*(\d+(?:\.\d+)?))?(?:\s*(?:x|\u00d7|by)\s*(\d+(?:\.\d+)?))?\s*"
    r"(mm|cm|millimet(?:er|re)s?|centimet(?:er|re)s?)\b",
    re.I,
)
_DIGIT = re.compile(r"\d")
_NOT_DIGIT = bytes(c for c in range(128) if not chr(c).isdigit())  # ASCII bytes that are no digit
_FINDS = frozenset({ABN, NORM})  # match kinds that make findings
_TRIGGERS = frozenset({NEG, UNC, HIST})
_KIND = itemgetter(2)  # of a Match
_START = itemgetter(2)  # of a candidate (Lexicon.candidates)
_MEASURE = frozenset({"diameter", "diameters", "caliber", "calibre", "calibration", "measured", "measures", "measuring", "width"})
_DILATATION = abnormality("dilatation")
_REGION_KEYS = frozenset([REGION + r for r in REGIONS] + [ELSEWHERE])
_GROUP = {name: o.group for name, o in vocab.organs().items()}
_NEW = tuple.__new__  # builds a NamedTuple (Finding, Sentence) without its Python-level __new__: ~2x faster
_SPINE = [n for n in vocab.groups()["spine"] if n.startswith("vertebrae_")][::-1]  # C1 .. S1


@dataclass(slots=True)
class _Run:
    start: int
    end: int
    organs: tuple[str, ...]
    clause: int
    landmark: bool
    last: tuple[str, ...] = ()  # organs of the run's last mention ("the lingular segment" in "..., the lingular segment")
    scoped: bool = False  # a mention joined it after "of" ("the upper lobes of both lungs, ...")


@dataclass(slots=True)
class _Organ:
    abnormal: dict  # canonical -> size
    uncertain: dict
    negated: list
    normal: bool = False
    size: float | None = None
    from_header: bool = False


def _has_digit(text: str) -> bool:
    """Whether the text holds a decimal digit; for ASCII text a deletion in C (10x faster than a regex search,
    which tests a class at every position)."""
    if text.isascii():
        return bool(text.encode().translate(None, _NOT_DIGIT))
    return _DIGIT.search(text) is not None


def _sizes(text: str, offset: int) -> list[tuple[int, float]]:
    out = []
    if not _has_digit(text):  # most sentences: one test is cheaper than an empty finditer
        return out
    for m in _SIZE.finditer(text):
        dims = [float(g) for g in m.groups()[:3] if g]
        scale = 10.0 if m.group(4).lower().startswith("c") else 1.0
        out.append((offset + m.start(), max(dims) * scale))
    return out


_SIDE_WORDS = {"left": "left", "right": "right", "bilateral": "both", "both": "both", "bilaterally": "both"}


class _Lower:
    """Lower-case token texts of a doc, looked up once (one C-level map over the LOWER column)."""

    __slots__ = ("words", "_sides")

    def __init__(self, strings, hashes: list[int]):
        self.words = list(map(strings.__getitem__, hashes))
        self._sides: tuple[list[int], list[str]] | None = None  # the doc's side words: positions, sides

    def __getitem__(self, window: slice) -> list[str]:
        return self.words[window]

    def sides(self, start: int, end: int) -> set[str]:
        """Sides named by side words among tokens start..end (found once per doc)."""
        if self._sides is None:
            at = list(compress(range(len(self.words)), map(_SIDE_WORDS.__contains__, self.words)))  # a loop in C
            self._sides = (at, [_SIDE_WORDS[self.words[i]] for i in at])
        at, named = self._sides
        lo = bisect_left(at, start)
        hi = bisect_left(at, end, lo)
        return set(named[lo:hi]) if hi > lo else set()


class ReportComponent:
    """spaCy pipeline component: doc -> doc._.ctglip_findings (list[Finding]), read from the doc's text
    (`read`); `extract_findings` calls `read` on the text directly."""

    def __init__(self, nlp: Language, lexicon: Lexicon, skip_sections: frozenset[str], memo_size: int = 10_000):
        self.nlp = nlp  # its tokenizer reads the sentences not seen before
        self.lexicon = lexicon
        self.skip = skip_sections
        # Reports are written from templates: about half the sentences of the 755 CT-RATE development reports
        # occur in another of them. A sentence's findings depend only on its text, section and header (its
        # tokens are those of its text, and matching and _sentence read nothing outside them), so they are kept
        # under that key and reused before any tokenizing, with the sentence's index in its report set anew.
        # Cleared when full (10,000 sentences: about 25 MB, some 900 reports). It holds rows (_emit), plain
        # tuples, not Findings: the garbage collector stops tracking a plain tuple of untracked values but never a
        # NamedTuple, and every full collection walks all objects still tracked (Findings kept ~14,000 tracked
        # per pass over the 755 reports).
        self.memo: dict[tuple, tuple[tuple, ...]] = {}
        self.memo_size = memo_size

    def __call__(self, doc: Doc) -> Doc:
        doc._.ctglip_findings = self.read(doc.user_data.get("text") or doc.text)  # doc.text joins every token
        return doc

    def read(self, text: str) -> list[Finding]:
        """Findings of a cleaned report text: the sentences not in the memo are tokenized and matched together,
        as one doc of those sentences joined by spaces (sentence ends fall between tokens, so each sentence's
        tokens are those it has in the whole text)."""
        sents = sentences(text)
        if self.skip:
            sents = [s for s in sents if s.section not in self.skip]
        memo = self.memo
        found: list[tuple[tuple, ...] | None] = []  # rows of each sentence
        new: dict[tuple, list[int]] = {}  # key -> indices of the sentences not in the memo
        for i, (start, end, section, header, header_organs) in enumerate(sents):  # (unpacked: faster than fields)
            key = (text[start:end], section, header, header_organs)
            rows = memo.get(key)
            if rows is None:
                new.setdefault(key, []).append(i)
            found.append(rows)
        if new:
            for key, rows in zip(new, self._read_new(list(new))):
                if len(memo) >= self.memo_size:
                    memo.clear()
                memo[key] = rows
                for i in new[key]:
                    found[i] = rows
        return [_NEW(Finding, (organ, group, status, abnormality, sentence, section, negated, size, header, i, region, side))
                for i, rows in enumerate(found)
                for organ, group, status, abnormality, sentence, section, negated, size, header, region, side in rows]

    def _read_new(self, keys: list[tuple]) -> list[tuple[tuple, ...]]:
        """Rows (_emit) of sentences, by memo key (text, section, header, header organs)."""
        joined = " ".join(key[0] for key in keys)
        doc = self.nlp.make_doc(joined)
        # token offsets and lower-case forms: no Tokens built
        idx, lower_ids = doc.to_array([IDX, LOWER]).T.tolist()
        lower = _Lower(self.lexicon.strings, lower_ids)
        cands = self.lexicon.candidates(doc, lower_ids)
        out = []
        a = t0 = c0 = 0  # where the sentence starts: character, token, first candidate
        for key in keys:
            b = a + len(key[0])
            s = _NEW(Sentence, (a, b, *key[1:]))
            # the sentences tile the tokens: where one ends (at the joining space) the next starts
            t1 = bisect_left(idx, b, t0)
            c1 = bisect_left(cands, t1, c0, key=_START)
            ms = self.lexicon.matches(cands[c0:c1], lower_ids, doc, t0, t1)
            out.append(_sentence(lower, joined, idx, s, ms, t0, t1) if _may_find(ms, key[0]) else ())
            a, t0, c0 = b + 1, t1, c1
        return out


def _may_find(ms: list[Match], sentence_text: str) -> bool:
    """Whether _sentence can find anything: only findings, normal statements and sizes (a vessel's diameter)
    make findings; the header's organs count only through a normal statement."""
    if not _FINDS.isdisjoint(map(_KIND, ms)):
        return True
    return _has_digit(sentence_text) and any(m.kind == ORG for m in ms)


class _Clauses(list):
    """Clause boundaries (sorted token offsets; clause k holds the tokens between boundary k-1 and k), and the
    clauses an earlier one resumes in after a relative clause set off by commas ("the nodule, which was seen
    before, was not detected": "was not detected" continues the clause of "the nodule")."""

    resumed_in: Mapping[int, tuple[int, int]] = MappingProxyType({})  # clause -> (the clause it resumes in, tokens
    # skipped); a dict of its own only where a sentence has such a clause (most have none: no __init__ to run)


_RELATIVE = frozenset({"which", "who"})
# a participle right after a finding starts a reduced relative clause ("the nodule seen on the prior study ...")
_PARTICIPLES = frozenset("""observed seen described noted detected identified mentioned reported visualized visualised
    selected shown demonstrated found defined specified""".split())
_RELATIVE_REACH = 30  # tokens: the longest reduced relative clause a trigger reaches over


def _clauses(terms: list[int], lower: "_Lower", t0: int, t1: int, question: bool) -> _Clauses:
    """Clause boundaries (token offsets): terminators (`terms`: the starts of TERM matches), and both ends of a
    parenthesised question ("mosaic attenuation (small airway disease?)": the question hedges only what it holds); a
    relative clause between commas ends at its closing comma, and what follows resumes the clause before it."""
    if not terms and not question:
        return _Clauses(terms)
    relative = []
    for start in terms:
        if start > t0 and lower[start - 1:start] == [","] and lower[start:start + 1][0] in _RELATIVE:
            end = min((t for t in terms if t > start), default=t1)
            words = lower[start:end]
            if "," in words:
                close = start + words.index(",") + 1  # the first token after the closing comma
                if close < end:
                    relative.append((start, close))
    terms += [close for _, close in relative]
    words = lower[t0:t1] if question else ()
    if "?" in words and "(" in words:
        open_at = None
        for i, w in enumerate(words):
            if w == "(":
                open_at = i
            elif w == ")" and open_at is not None:
                if "?" in words[open_at:i]:
                    terms += [t0 + open_at, t0 + i]
                open_at = None
    out = _Clauses(sorted(set(terms)))
    if relative:
        out.resumed_in = {}
    for start, close in relative:
        out.resumed_in.setdefault(bisect_right(out, start - 1), (bisect_right(out, close), close - start))
    return out


def _runs(lower: _Lower, orgs: list[Match], rels: list[Match], terms: list[int]) -> list[_Run]:
    runs: list[_Run] = []
    for m in orgs:
        clause = bisect_right(terms, m.start)
        landmark = bool(rels) and any(r.end <= m.start <= r.end + 2 and bisect_right(terms, r.start) == clause for r in rels)
        organs = m.payload[0]
        if runs and runs[-1].clause == clause:
            prev = runs[-1]
            gap = lower[prev.end:m.start]
            if len(gap) == 1 and gap[0] in _RANGE and _is_vertebra(prev.organs) and _is_vertebra(organs):
                a, b = _SPINE.index(prev.organs[-1]), _SPINE.index(organs[0])
                organs = tuple(_SPINE[min(a, b):max(a, b) + 1])
                prev.organs = tuple(dict.fromkeys(prev.organs + organs))
                prev.end, prev.last = m.end, organs
                continue
            both = set(prev.last) & set(organs)
            if not gap and both:
                # one mention narrows the other: "T12 vertebral", "right lower lobe pulmonary", "right lung basal"
                last = tuple(o for o in organs if o in both)
                prev.organs = tuple(dict.fromkeys([o for o in prev.organs if o not in prev.last] + list(last)))
                prev.end, prev.last = m.end, last
                continue
            part = set(prev.organs) & set(organs)
            if ("of" in gap and part and len(part) < max(len(prev.organs), len(organs)) and prev.landmark == landmark
                    and all(g in _CONNECT or g in _PART for g in gap)):
                # part of a whole: "the apex of the right lung", "the upper and lower lobes of the right lung";
                # once a list's items carry their own "of", it holds for the last one only ("the upper lobes of
                # both lungs, the lingular segment of the left lung")
                whole = set(organs)
                prev.organs = tuple(o for o in prev.organs if o in whole or (prev.scoped and o not in prev.last))
                prev.last = tuple(o for o in prev.last if o in whole)
                prev.end, prev.scoped = m.end, True
                continue
            if all(g in _CONNECT for g in gap) and prev.landmark == landmark:
                sides = {side_of(o) for o in prev.organs}
                if len(sides) == 1 and None not in sides and not lower.sides(m.start, m.end):
                    organs = narrow(organs, sides.pop())  # "left 7th and 8th ribs"
                prev.organs = tuple(dict.fromkeys(prev.organs + organs))
                prev.end, prev.last = m.end, organs
                prev.scoped = prev.scoped or "of" in gap
                continue
        runs.append(_Run(m.start, m.end, organs, clause, landmark, organs))
    return runs


def _is_vertebra(organs: tuple[str, ...]) -> bool:
    return len(organs) == 1 and organs[0] in _SPINE


def _reach(lower: _Lower, ms: list[Match], triggers: list[Match], terms: list[int]) -> dict[int, int]:
    """Backward negations after a finding's reduced relative clause ("the ground glass areas observed in the upper
    lobe in the previous examination were not observed"): trigger start -> the clause's start (right after the
    finding), from where the trigger's window is counted, as for a relative clause set off by commas."""
    out = {}
    for t in triggers:
        if t.kind != NEG or t.payload[0] == "forward":  # a negation of the main verb ("... has resolved")
            continue
        last = None
        for m in ms:
            if m.end > t.start:
                break
            if m.kind == ABN or m.kind == NORM:
                last = m
        if (last is not None and last.kind == ABN and last.end < t.start <= last.end + _RELATIVE_REACH
                and lower[last.end:last.end + 1][0] in _PARTICIPLES and bisect_right(terms, last.start) == bisect_right(terms, t.start)):
            out[t.start] = last.end
    return out


def _status(m: Match, triggers: list[Match], ms: list[Match], terms: _Clauses, reach: dict[int, int]) -> tuple[int | None, bool]:
    """(NEG, UNC, HIST or None for affirmed; whether the trigger is an interpretive hedge) for finding m;
    `triggers` are the sentence's NEG, UNC and HIST matches, `reach` from _reach."""
    if not triggers:
        return None, False
    clause = bisect_right(terms, m.start)
    # "the nodule, which was seen before, was not detected": a trigger after the relative clause counts, its
    # tokens left out of the distance
    resumed, skipped = terms.resumed_in.get(clause, (None, 0))
    pre = post = past = None
    for t in triggers:
        at = bisect_right(terms, t.start)
        if at != clause and at != resumed:
            continue
        direction, window, _ = t.payload
        if t.end <= m.start and direction != "backward" and m.start - t.end <= window:
            pre = t  # the last one before m is the nearest
        elif t.start >= m.end and direction != "forward" and reach.get(t.start, t.start) - m.end - (skipped if at == resumed else 0) <= window:
            # a past mention yields to what is said of now: "X described in the previous examination could not be
            # selected" is negated
            if t.kind == HIST:
                past = past or t
            else:
                post = post or t
    post = post or past
    hit = post if pre is None or (pre.kind == HIST and post is not None) else pre  # "previously seen X has resolved"
    if pre is not None and hit is pre and pre.kind == UNC and _negates(pre, triggers, clause, terms):
        return NEG, False  # a negated hedge: "no finding in favor of pneumonia", "not suggestive of malignancy"
    if hit is None:
        return None, False
    if hit.kind == HIST and any(p.kind == PERSIST and bisect_right(terms, p.start) == clause for p in ms):
        return None, False
    return hit.kind, hit.payload[2]


def _negates(hedge: Match, triggers: list[Match], clause: int, terms: list[int], gap: int = 3) -> bool:
    """Whether a forward negation stands at most `gap` tokens before the hedge, in its clause."""
    return any(t.kind == NEG and t.payload[0] != "backward" and t.end <= hedge.start <= t.end + gap
               and bisect_right(terms, t.start) == clause for t in triggers)


def _side_near(lower: _Lower, m: Match, sides: list[Match], terms: list[int]) -> str | None:
    """The side of finding m: a side word inside it, else the nearest SIDE match (`sides`) within 3 tokens in its
    clause; None for both sides or none."""
    inside = lower.sides(m.start, m.end)
    if len(inside) == 1:  # "fluid in the left pleural space"
        side = inside.pop()
        return None if side == "both" else side
    if not sides:
        return None
    clause = bisect_right(terms, m.start)
    best = None
    for t in sides:
        if bisect_right(terms, t.start) == clause:
            d = m.start - t.end if t.end <= m.start else t.start - m.end
            if 0 <= d <= 3 and (best is None or d < best[0]):
                best = (d, t.payload)
    if best is None:
        return None
    return None if best[1] == "both" else best[1]


def _bind(lower: _Lower, m: Match, runs: list[_Run], terms: list[int], sent: Sentence, sides: list[Match]) -> tuple[tuple[str, ...], bool]:
    """Organs the finding m describes, and whether they came from the organ header; `sides` are the sentence's
    SIDE matches."""
    abn, implied, _ = m.payload
    side = _side_near(lower, m, sides, terms)
    if implied:
        return narrow(implied, side), False
    clause = bisect_right(terms, m.start)
    if abn.any_organ:  # applies to every organ: each run fits whole
        live = [(r, r.organs) for r in runs if not r.landmark and r.organs]
    else:  # a run fits whole where the finding applies to all its organs, else in the organs it applies to
        applies, whole = abn.applies_to, abn.organs.issuperset
        live = [(r, fit) for r in runs if not r.landmark
                for fit in (r.organs if whole(r.organs) else tuple(o for o in r.organs if applies(o)),) if fit]
    same = [x for x in live if x[0].clause == clause]
    if same:
        before = [x for x in same if x[0].end <= m.start]
        after = [x for x in same if x[0].start >= m.end]
        adjective = before[-1][1] if before and before[-1][0].end == m.start else None
        if after and 0 < after[0][0].start - m.end <= 6:
            gap = lower[m.end:after[0][0].start]
            if gap[0] in _PREP and all(g in _PREP or g[0].isdigit() or g in ("cm", "mm", ".", "x") for g in gap):
                # "osseous lesion of the spine": the more specific of adjective and prepositional object
                if adjective is None or set(after[0][1]) <= set(adjective):
                    return after[0][1], False
        if adjective:
            return _sided(adjective, side), False
        best = min(same, key=lambda x: (m.start - x[0].end) if x[0].end <= m.start else (x[0].start - m.end) + 0.5)
        return _sided(best[1], side), False
    if any(not r.landmark and r.clause == clause for r in runs):
        return (), False  # its clause names where it is, and it cannot be there ("plaque in the pleura" is no aortic plaque)
    if live:
        best = min(live, key=lambda x: abs(x[0].start - m.start))
        return best[1], False
    head = tuple(o for o in sent.header_organs if abn.applies_to(o))
    if head:
        return narrow(head, side or _sentence_side(sides)), True
    if implied is not None:  # a placed_only synonym ("density increase") named without a place it fits
        return (), False
    return narrow(abn.default, side), False


def _sided(organs: tuple[str, ...], side: str | None) -> tuple[str, ...]:
    """Organs of both sides named with a side word beside the finding keep that side ("apical emphysema on the left")."""
    if side is None or len({side_of(o) for o in organs} - {None}) < 2:
        return organs
    return narrow(organs, side)


def _sentence_side(sides: list[Match]) -> str | None:
    """The one side the sentence's SIDE matches name, if they name one and not both."""
    named = {t.payload for t in sides}
    return named.pop() if len(named) == 1 and "both" not in named else None


def _sentence(lower: _Lower, text: str, idx: list[int], sent: Sentence, ms: list[Match], t0: int, t1: int) -> tuple[tuple, ...]:
    sentence_text = text[sent.start:sent.end]
    orgs, rels, sides, triggers, term_starts = [], [], [], [], []
    for m in ms:  # one pass, not one comprehension per kind
        kind = m[2]
        if kind == ORG:
            orgs.append(m)
        elif kind in _TRIGGERS:
            triggers.append(m)
        elif kind == SIDE:
            sides.append(m)
        elif kind == REL:
            rels.append(m)
        elif kind == TERM:
            term_starts.append(m[0])
    terms = _clauses(term_starts, lower, t0, t1, "?" in sentence_text and "(" in sentence_text)
    reach = _reach(lower, ms, triggers, terms) if triggers else {}
    runs = _runs(lower, orgs, rels, terms)
    state: dict[str, _Organ] = {}
    sizes = _sizes(sentence_text, sent.start)

    def slot(organ: str, header: bool = False) -> _Organ:
        if organ not in state:
            state[organ] = _Organ({}, {}, [], from_header=header)
        return state[organ]

    def nearest_size(m: Match) -> float | None:
        if not sizes:
            return None
        pos = idx[m.start]
        clause = bisect_right(terms, m.start)
        same = [(abs(p - pos), v) for p, v in sizes if bisect_right(terms, bisect_right(idx, p) - 1) == clause]
        pool = same or ([(abs(p - pos), v) for p, v in sizes] if len(sizes) == 1 else [])
        return min(pool)[1] if pool else None

    for m in ms:
        kind = m[2]
        if kind == ABN:
            if m.payload[0].requires and not _near(lower, m, m.payload[0].requires, terms, t0, t1):
                continue
            status, interpretive = _status(m, triggers, ms, terms, reach)
            if status == HIST:
                continue
            organs, from_header = _bind(lower, m, runs, terms, sent, sides)
            if not organs:
                continue
            size = nearest_size(m) if status != NEG else None
            abn, _, weak = m.payload
            region_side = None
            if not _REGION_KEYS.isdisjoint(organs):
                region_side = _side_near(lower, m, sides, terms) or _sentence_side(sides)
            for o in organs:
                st = slot(_place(o, region_side), from_header)
                canon = abn.canonical_for(o)
                if status == NEG:
                    st.negated.append(canon)
                elif status == UNC:
                    st.uncertain.setdefault(canon, (size, interpretive, abn.generic))
                else:
                    old = st.abnormal.get(canon)
                    if old is None or (old[1] and not weak):
                        st.abnormal[canon] = (size if old is None or size is not None else old[0], weak, abn.generic)
        elif kind == NORM:
            prev = [t for t in ms if t.end <= m.start and m.start - t.end <= 1]
            if prev and prev[-1].kind == NEG:
                continue
            clause = bisect_right(terms, m.start)
            targets = [r for r in runs if r.clause == clause and not r.landmark] or [r for r in runs if not r.landmark]
            if targets:
                for r in targets:
                    for o in r.organs:
                        slot(_place(o, None)).normal = True
            elif sent.header_organs:
                for o in narrow(sent.header_organs, _sentence_side(sides)):
                    slot(_place(o, None), True).normal = True
    if sizes:
        _diameters(lower, idx, runs, terms, sizes, t0, t1, slot)
    vague = {o for m in orgs if m.payload[1] for o in m.payload[0]}
    if vague:
        vague -= {o for m in orgs if not m.payload[1] for o in m.payload[0]}
    return _emit(state, sent, sentence_text, vague)


def _diameters(lower: _Lower, idx: list[int], runs: list[_Run], terms: list[int], sizes: list[tuple[int, float]],
               t0: int, t1: int, slot) -> None:
    """Size statements: a vessel whose diameter is given above its normal limit is dilated ("ascending aorta
    diameter is 45 mm"); limits from data/organs.yaml `diameter_limits_mm`."""
    limits = diameter_limits()
    for r in runs:
        if r.landmark:
            continue
        for organ in r.organs:
            limit = limits.get(organ)
            if limit is None:
                continue
            lo = terms[r.clause - 1] if r.clause else t0
            hi = terms[r.clause] if r.clause < len(terms) else t1
            if not _MEASURE.intersection(lower[lo:hi]):
                continue
            given = [v for p, v in sizes if r.end <= bisect_right(idx, p) - 1 < hi]
            if given and given[0] > limit:
                st = slot(organ)
                canon = _DILATATION.canonical_for(organ)
                if canon not in st.abnormal and canon not in st.negated:
                    st.abnormal[canon] = (given[0], False, False)


def _near(lower: _Lower, m: Match, words: frozenset[str], terms: list[int], t0: int, t1: int, window: int = 6) -> bool:
    """Whether one of the words stands within `window` tokens of m, in its clause ("heart size increased")
    of its sentence (tokens t0..t1)."""
    clause = bisect_right(terms, m.start)
    lo = terms[clause - 1] if clause else t0
    hi = terms[clause] if clause < len(terms) else t1
    return bool(words.intersection(lower[max(lo, m.start - window):min(hi, m.end + window)]))


def _place(organ: str, side: str | None) -> str:
    """The state key of an organ, or of a region with the side it was named with ("region:pleura|left")."""
    return f"{organ}|{side or ''}" if organ in _REGION_KEYS else organ


def _resolve(st: _Organ) -> None:
    """Weak synonyms and generic descriptors give way to a hedged specific finding of the same organ and
    sentence ("hypodensity in the liver, likely a cyst" -> uncertain cyst); after an observed descriptor an
    interpretive hedge names what was observed ("lesion concerning for malignancy" -> abnormal mass)."""
    for canon, (_, interpretive, _) in st.uncertain.items():
        if canon in st.abnormal and st.abnormal[canon][1] and not interpretive:
            del st.abnormal[canon]
    generic = [c for c, v in st.abnormal.items() if v[2]]
    specific_unc = [c for c, v in st.uncertain.items() if not v[2] and c not in st.abnormal]
    specific_abn = [c for c, v in st.abnormal.items() if not v[2]]
    if not generic or not (specific_unc or specific_abn):
        return
    size = next((st.abnormal[c][0] for c in generic if st.abnormal[c][0] is not None), None)
    for c in generic:
        del st.abnormal[c]
    for c in specific_unc:
        if st.uncertain[c][1]:
            s = st.uncertain.pop(c)[0]
            st.abnormal[c] = (size if size is not None else s, False, False)


def _emit(state: dict[str, _Organ], sent: Sentence, sentence_text: str, vague: set[str]) -> tuple[tuple, ...]:
    """Findings of one sentence as rows: the fields of a Finding but its sentence_index, which `read` adds.
    Organs the sentence names only loosely (`vague`) get no normal finding."""
    out = []
    section = sent.section
    for key, st in state.items():
        group = _GROUP.get(key)
        if group is not None or not key.startswith(REGION):
            organ, region, side = key, None, None
        else:  # a region, with the side it was named with ("region:pleura|left")
            place, _, side = key.partition("|")
            if place == ELSEWHERE:
                continue
            organ, region, side = None, region_of(place), side or None
        if st.uncertain or len(st.abnormal) > 1:
            _resolve(st)
        negated = tuple(sorted(set(st.negated))) if st.negated else ()
        header = sent.header if st.from_header else None
        for canon, (size, _, _) in st.abnormal.items():
            out.append((organ, group, ABNORMAL, canon, sentence_text, section, negated, size, header, region, side))
        for canon, (size, _, _) in st.uncertain.items():
            if canon not in st.abnormal:
                out.append((organ, group, UNCERTAIN, canon, sentence_text, section, negated, size, header, region, side))
        if not st.abnormal and not st.uncertain and (st.normal or negated) and key not in vague:
            out.append((organ, group, NORMAL, None, sentence_text, section, negated, None, header, region, side))
    return tuple(out)
