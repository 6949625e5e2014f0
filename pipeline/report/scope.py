"""Status stage (ConText): is a finding affirmed, negated, hedged or historical?

A forward trigger ("no", "possible", "history of") reaches the findings after it, a backward one ("is not seen",
"cannot be excluded") those before it, each within its window and its clause; clauses end at terminators ("but",
"however", ";", ...) and at the sentence end. The nearest trigger before a finding wins, else the nearest after it. A
historical finding counts as current when its clause also says it persists ("previously seen nodule is stable").
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from types import MappingProxyType

from pipeline.report.nlp import ABN, HIST, NEG, NORM, PERSIST, UNC, Match
from pipeline.report.words import Words

_RELATIVE = frozenset({"which", "who"})
# a participle right after a finding starts a reduced relative clause ("the nodule seen on the prior study ...")
_PARTICIPLES = frozenset(
    """observed seen described noted detected identified mentioned reported visualized visualised
    selected shown demonstrated found defined specified""".split()
)
_RELATIVE_REACH = 30  # tokens: the longest reduced relative clause a trigger reaches over


class Clauses(list):
    """Clause boundaries (sorted token offsets; clause k holds the tokens between boundary k-1 and k), and the
    clauses an earlier one resumes in after a relative clause set off by commas ("the nodule, which was seen
    before, was not detected": "was not detected" continues the clause of "the nodule")."""

    resumed_in: Mapping[int, tuple[int, int]] = MappingProxyType({})  # clause -> (the clause it resumes in, tokens
    # skipped); a dict of its own only where a sentence has such a clause

    def of(self, token: int) -> int:
        """The clause a token sits in."""
        return bisect_right(self, token)

    def span(self, clause: int, t0: int, t1: int) -> tuple[int, int]:
        """First and past-last token of a clause of the sentence t0..t1."""
        return (self[clause - 1] if clause else t0), (self[clause] if clause < len(self) else t1)


def clauses(terms: list[int], words: Words, t0: int, t1: int, question: bool) -> Clauses:
    """Clause boundaries of the sentence t0..t1: terminators (`terms`: the starts of TERM matches), and both ends of
    a parenthesised question ("mosaic attenuation (small airway disease?)": the question hedges only what it holds);
    a relative clause between commas ends at its closing comma, and what follows resumes the clause before it."""
    if not terms and not question:
        return Clauses(terms)
    relative = []
    for start in terms:
        if start > t0 and words[start - 1 : start] == [","] and words[start : start + 1][0] in _RELATIVE:
            end = min((t for t in terms if t > start), default=t1)
            inside = words[start:end]
            if "," in inside:
                close = start + inside.index(",") + 1  # the first token after the closing comma
                if close < end:
                    relative.append((start, close))
    terms += [close for _, close in relative]
    tokens = words[t0:t1] if question else ()
    if "?" in tokens and "(" in tokens:
        open_at = None
        for i, w in enumerate(tokens):
            if w == "(":
                open_at = i
            elif w == ")" and open_at is not None:
                if "?" in tokens[open_at:i]:
                    terms += [t0 + open_at, t0 + i]
                open_at = None
    out = Clauses(sorted(set(terms)))
    if relative:
        resumed: dict[int, tuple[int, int]] = {}
        for start, close in relative:
            resumed.setdefault(out.of(start - 1), (out.of(close), close - start))
        out.resumed_in = resumed
    return out


def reach(words: Words, ms: list[Match], triggers: list[Match], terms: Clauses) -> dict[int, int]:
    """Backward negations after a finding's reduced relative clause ("the ground glass areas observed in the upper
    lobe in the previous examination were not observed"): trigger start -> the relative clause's start (right
    after the finding), from where the trigger's window is counted, as for a relative clause set off by commas."""
    out = {}
    for t in triggers:
        if t.kind != NEG or t.payload[0] == "forward":  # a negation of the main verb ("... has resolved")
            continue
        last = None
        for m in ms:
            if m.end > t.start:
                break
            if m.kind in (ABN, NORM):
                last = m
        if (
            last is not None
            and last.kind == ABN
            and last.end < t.start <= last.end + _RELATIVE_REACH
            and words[last.end : last.end + 1][0] in _PARTICIPLES
            and terms.of(last.start) == terms.of(t.start)
        ):
            out[t.start] = last.end
    return out


def status(
    m: Match, triggers: list[Match], ms: list[Match], terms: Clauses, reaches: dict[int, int]
) -> tuple[int | None, bool]:
    """(NEG, UNC, HIST, or None for affirmed; whether the deciding trigger is an interpretive hedge) of finding m.
    `triggers` are the sentence's NEG, UNC and HIST matches, `reaches` from `reach`."""
    if not triggers:
        return None, False
    clause = terms.of(m.start)
    # "the nodule, which was seen before, was not detected": a trigger after the relative clause counts, its tokens
    # left out of the distance
    resumed, skipped = terms.resumed_in.get(clause, (None, 0))
    pre = post = past = None
    for t in triggers:
        at = terms.of(t.start)
        if at != clause and at != resumed:
            continue
        direction, window, _ = t.payload
        if t.end <= m.start and direction != "backward" and m.start - t.end <= window:
            pre = t  # the last one before m is the nearest
        elif (
            t.start >= m.end
            and direction != "forward"
            and reaches.get(t.start, t.start) - m.end - (skipped if at == resumed else 0) <= window
        ):
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
    if hit.kind == HIST and any(p.kind == PERSIST and terms.of(p.start) == clause for p in ms):
        return None, False
    return hit.kind, hit.payload[2]


def _negates(hedge: Match, triggers: list[Match], clause: int, terms: Clauses, gap: int = 3) -> bool:
    """Whether a forward negation stands at most `gap` tokens before the hedge, in its clause."""
    return any(
        t.kind == NEG
        and t.payload[0] != "backward"
        and t.end <= hedge.start <= t.end + gap
        and terms.of(t.start) == clause
        for t in triggers
    )
