"""The report reader: a report's text through the stages, sentences -> candidates -> placement -> status -> findings.

- sentences (segment.py): sections, organ headers and sentence spans;
- candidates (nlp.py): the phrase matches of each sentence: organs, findings, triggers, side and relation words;
- placement (placement.py): the organs or regions each finding sits in;
- status (scope.py): whether it is affirmed, negated, hedged or historical;
- findings (collect.py, measures.py): per place, one finding per abnormality, or a normal one.
"""

from __future__ import annotations

from bisect import bisect_left
from functools import lru_cache

import spacy
from spacy.attrs import IDX, LOWER
from spacy.language import Language
from spacy.tokens import Doc

from pipeline.report import measures, placement, scope
from pipeline.report.collect import NEGATED, REGION_KEYS, Collected
from pipeline.report.finding import ABNORMAL, UNCERTAIN, Finding
from pipeline.report.lexicon import narrow
from pipeline.report.nlp import (
    ABN,
    HIST,
    NEG,
    NORM,
    ORG,
    REL,
    SIDE,
    TERM,
    UNC,
    KeepText,
    Lexicon,
    Match,
    RegexTokenizer,
)
from pipeline.report.segment import Sentence, sentences
from pipeline.report.words import Words

_STATUS = {None: ABNORMAL, UNC: UNCERTAIN, NEG: NEGATED}  # scope.status -> Collected.add
_TRIGGERS = frozenset({NEG, UNC, HIST})


class ReportComponent:
    """spaCy pipeline component: doc -> doc._.ctglip_findings (list[Finding]), read from the doc's text
    (`read`); `extract_findings` calls `read` on the text directly."""

    def __init__(self, nlp: Language, lexicon: Lexicon, skip_sections: frozenset[str], memo_size: int = 10_000):
        self.nlp = nlp  # its tokenizer reads the sentences not seen before
        self.lexicon = lexicon
        self.skip = skip_sections
        # Speed (bench/reports.py measures it): reports are written from templates, and about half the sentences of
        # the 755 CT-RATE development reports occur in another of them. A sentence's findings depend only on its
        # text, section and header (its tokens are those of its text, and no stage reads outside them), so they are
        # kept under that key and reused, with the sentence's index in its report set anew. Cleared when full
        # (10,000 sentences: about 25 MB, some 900 reports). Its rows are plain tuples: the garbage collector stops
        # tracking a plain tuple of untracked values, never a NamedTuple.
        self.memo: dict[tuple, tuple[tuple, ...]] = {}
        self.memo_size = memo_size

    def __call__(self, doc: Doc) -> Doc:
        doc._.ctglip_findings = self.read(doc.user_data.get("text") or doc.text)  # doc.text joins every token
        return doc

    def read(self, text: str) -> list[Finding]:
        """Findings of a cleaned report text."""
        sents = sentences(text)
        if self.skip:
            sents = [s for s in sents if s.section not in self.skip]
        keys = [(text[s.start : s.end], s.section, s.header, s.header_organs) for s in sents]
        rows = {k: self.memo.get(k) for k in keys}
        new = [k for k, r in rows.items() if r is None]
        if new:
            fresh = dict(zip(new, self._read_new(new)))
            rows.update(fresh)
            if len(self.memo) + len(new) > self.memo_size:
                self.memo.clear()
            self.memo.update(fresh)
        # the type: ignore is a mypy false positive: a positional between two starred arguments reads as too many
        return [Finding(*row[:9], i, *row[9:]) for i, key in enumerate(keys) for row in rows[key] or ()]  # type: ignore[call-arg]

    def _read_new(self, keys: list[tuple]) -> list[tuple[tuple, ...]]:
        """Rows of sentences not read before, by memo key (text, section, header, header organs). They are tokenized
        and matched together, as one doc of the sentences joined by spaces: sentence ends fall between tokens, so each
        sentence's tokens are those it has in the whole text."""
        joined = " ".join(key[0] for key in keys)
        doc = self.nlp.make_doc(joined)
        idx, lower_ids = doc.to_array([IDX, LOWER]).T.tolist()  # token offsets and lower-case forms, no Tokens built
        words = Words(self.lexicon.strings, lower_ids)
        cands = self.lexicon.candidates(doc, lower_ids)
        out = []
        a = t0 = c0 = 0  # where the sentence starts: character, token, first candidate
        for text, section, header, header_organs in keys:
            b = a + len(text)
            # the sentences tile the tokens: where one ends (at the joining space) the next starts
            t1 = bisect_left(idx, b, t0)
            c1 = bisect_left(cands, t1, c0, key=lambda c: c[2])
            ms = self.lexicon.matches(cands[c0:c1], lower_ids, doc, t0, t1)
            sent = Sentence(a, b, section, header, header_organs)
            out.append(read_sentence(words, joined, idx, sent, ms, t0, t1) if _may_find(ms, text) else ())
            a, t0, c0 = b + 1, t1, c1
        return out


def _may_find(ms: list[Match], sentence_text: str) -> bool:
    """Whether read_sentence can find anything: only findings, normal statements and sizes (a vessel's diameter)
    make findings; the header's organs count only through a normal statement."""
    return any(m.kind in (ABN, NORM) for m in ms) or (
        any(m.kind == ORG for m in ms) and measures.has_digit(sentence_text)
    )


def read_sentence(
    words: Words, text: str, idx: list[int], sent: Sentence, ms: list[Match], t0: int, t1: int
) -> tuple[tuple, ...]:
    """The finding rows of one sentence (tokens t0..t1 of the doc, `ms` its matches) through the stages."""
    sentence_text = text[sent.start : sent.end]
    orgs = [m for m in ms if m.kind == ORG]
    sides = [m for m in ms if m.kind == SIDE]
    triggers = [m for m in ms if m.kind in _TRIGGERS]
    terms = scope.clauses(
        [m.start for m in ms if m.kind == TERM], words, t0, t1, "?" in sentence_text and "(" in sentence_text
    )
    reaches = scope.reach(words, ms, triggers, terms) if triggers else {}
    runs = placement.organ_runs(words, orgs, [m for m in ms if m.kind == REL], terms, t0)
    placement.mark_headings(runs, terms, words, [m.start for m in ms if m.kind in (ABN, NORM)])
    found = measures.sizes(sentence_text, sent.start)
    collected = Collected()
    for m in ms:
        if m.kind == ABN:
            abn, _, weak, plain = m.payload
            if abn.requires and not _near(words, m, abn.requires, terms, t0, t1):
                continue
            if abn.qualifies and _adjective_of(words, m, ms, abn.qualifies):
                continue
            status, interpretive = scope.status(m, triggers, ms, terms, reaches)
            if status == HIST:
                if not abn.state:
                    continue
                status = None  # "status post cholecystectomy": the operation is past, its result is now
            organs, from_header = placement.place(words, m, runs, terms, sent, sides)
            if not organs:
                continue
            side = None
            if not REGION_KEYS.isdisjoint(organs):
                side = placement.side_near(words, m, sides, terms) or placement.sentence_side(sides)
            if plain and status != NEG and not _qualified(words, text, m, ms, terms, idx, t0, t1):
                if status is None:  # "millimetric lymph nodes are observed": the nodes are normal
                    for o in organs:
                        place = collected.at(o, side, from_header)
                        place.normal = place.described = True
                continue
            size = measures.nearest_size(m, found, idx, terms) if status != NEG else None
            for o in organs:
                collected.add(
                    collected.at(o, side, from_header),
                    abn.canonical_for(o),
                    _STATUS[status],
                    size,
                    weak=weak,
                    generic=abn.generic,
                    interpretive=interpretive,
                )
        elif m.kind == NORM:
            _normal_statement(collected, m, ms, runs, terms, sent, sides)
    if found:
        measures.dilated_vessels(
            words, idx, runs, terms, found, t0, t1, lambda organ, canon, mm: _dilated(collected, organ, canon, mm)
        )
    vague = {o for m in orgs if m.payload[1] for o in m.payload[0]}
    if vague:
        vague -= {o for m in orgs if not m.payload[1] for o in m.payload[0]}
    return collected.rows(sent, sentence_text, vague)


def _normal_statement(
    collected: Collected,
    m: Match,
    ms: list[Match],
    runs: list[placement.Run],
    terms: scope.Clauses,
    sent: Sentence,
    sides: list[Match],
) -> None:
    """A normal statement ("unremarkable") makes the organs of its clause normal, else those of the sentence, else the
    organ header's; a negated one ("not normal") says nothing."""
    prev = [t for t in ms if t.end <= m.start and m.start - t.end <= 1]
    if prev and prev[-1].kind == NEG:
        return
    clause = terms.of(m.start)
    targets = [r for r in runs if r.clause == clause and not r.landmark] or [r for r in runs if not r.landmark]
    if targets:
        for r in targets:
            for o in r.organs:
                collected.at(o).normal = True
    elif sent.header_organs:
        for o in narrow(sent.header_organs, placement.sentence_side(sides)):
            collected.at(o, from_header=True).normal = True


def _dilated(collected: Collected, organ: str, canon: str, mm: float) -> None:
    place = collected.at(organ)
    if canon not in place.abnormal and canon not in place.negated:
        place.abnormal[canon] = (mm, False, False)


def _adjective_of(
    words: Words, m: Match, ms: list[Match], names: frozenset[str], reach: int = 4, back: int = 12
) -> bool:
    """Whether finding m describes a finding of one of `names`: the next finding, in its noun phrase ("calcified lymph
    nodes"), or the last one, at most `back` tokens before ("lymph nodes ... showing increased size")."""
    found = [n for n in ms if n.kind == ABN]
    i = found.index(m)
    after = found[i + 1] if i + 1 < len(found) else None
    if (
        after is not None
        and after.payload[0].name in names
        and after.start - m.end <= reach
        and placement.NOUN_PHRASE_ENDS.isdisjoint(words[m.end : after.start])
    ):
        return True
    before = found[i - 1] if i else None
    return before is not None and before.payload[0].name in names and m.start - before.end <= back


_CANCEL = frozenset({"not", "no", "non", "without", "below", "under", "less", "smaller", "neither", "nor"})


def _qualified(
    words: Words,
    text: str,
    m: Match,
    ms: list[Match],
    terms: scope.Clauses,
    idx: list[int],
    t0: int,
    t1: int,
    window: int = 10,
    size_reach: int = 16,
) -> bool:
    """Whether a mention of the structure (a `needs_qualifier` synonym: "lymph nodes") is the finding: a qualifier
    within `window` tokens in its clause ("enlarged", "pathological"), and not past another mention of the finding,
    that no "not / below / less" just before takes back ("did not reach pathological dimensions"), or a short axis
    of at least `abn.qualifying_size_mm` stated within `size_reach` tokens after it ("lymph nodes with a short
    diameter of 10 mm")."""
    abn = m.payload[0]
    lo, hi = terms.span(terms.of(m.start), t0, t1)
    for n in ms:  # "a few small nodes ..., no node of pathological size": the word is the other mention's
        if n.kind == ABN and n.payload[0] is abn and n is not m:
            lo, hi = (max(lo, n.end), hi) if n.end <= m.start else (lo, min(hi, n.start))
    a = max(lo, m.start - window)
    near = words[a : min(hi, m.end + window)]
    for i, w in enumerate(near):
        if w in abn.qualifiers and _CANCEL.isdisjoint(words[max(lo, a + i - 3) : a + i]):
            return True
    if abn.qualifying_size_mm is None:
        return False
    end_token = min(t1, m.end + size_reach)
    start, end = idx[m.start], (idx[end_token] if end_token < len(idx) else len(text))
    return any(v >= abn.qualifying_size_mm for _, v in measures.short_axes(text[start:end], start))


def _near(
    words: Words, m: Match, needed: frozenset[str], terms: scope.Clauses, t0: int, t1: int, window: int = 6
) -> bool:
    """Whether one of the words stands within `window` tokens of m, in its clause ("heart size increased")."""
    lo, hi = terms.span(terms.of(m.start), t0, t1)
    return bool(needed.intersection(words[max(lo, m.start - window) : min(hi, m.end + window)]))


@Language.factory("ctglip_report", default_config={"skip_sections": []})
def make_report_component(nlp: Language, name: str, skip_sections: list[str]):
    return ReportComponent(nlp, Lexicon(nlp), frozenset(skip_sections))


@lru_cache(maxsize=8)
def build_nlp(skip_sections: frozenset[str], fast_tokenizer: bool = True) -> Language:
    """spacy.blank("en") + `ctglip_report`; built once per configuration and process. With
    fast_tokenizer (default) the rule-based English tokenizer is replaced by RegexTokenizer."""
    nlp = spacy.blank("en")
    nlp.tokenizer = RegexTokenizer(nlp.vocab) if fast_tokenizer else KeepText(nlp.tokenizer)
    nlp.add_pipe("ctglip_report", config={"skip_sections": sorted(skip_sections)})
    return nlp
