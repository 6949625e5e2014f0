"""Placement stage: which organs (vocab classes) or regions a finding of a sentence sits in.

First the sentence's organ mentions are joined into runs, one per place named ("the upper and lower lobes of the
right lung", "T11-L1", "the left 7th and 8th ribs"). Then a finding is placed, in this order:
1. a synonym that names its organ ("cholelithiasis", "hiatal hernia") sits there, narrowed by a side word;
2. else the run of its clause it applies to: the organ written right before it ("hepatic cyst") or after a
   preposition ("cyst in the liver"), else the nearest;
3. else, where its clause names no place of its own, the landmarks of its clause it fits: organs after a relation
   word or named as a finding's surroundings ("fluid next to the gallbladder neck", "a perisplenic mass");
4. else a run elsewhere in the sentence, else the organ header ("LIVER: 2 cm cyst"), else the finding's default
   organs narrowed by a side word ("left pleural effusion").
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import vocab
from pipeline.report.lexicon import ELSEWHERE, narrow, side_of
from pipeline.report.nlp import Match
from pipeline.report.scope import Clauses
from pipeline.report.segment import Sentence
from pipeline.report.words import Words

_CONNECT = frozenset(
    {",", "and", "or", "the", "both", "/", "&", "as", "well", "including", "of", "its", "+", "-", "\u2013"}
)
_PREP = frozenset(
    {
        "in",
        "within",
        "of",
        "the",
        "both",
        "involving",
        "at",
        "on",
        "throughout",
        "seen",
        "noted",
        "is",
        "are",
        "identified",
        "present",
        "from",
        "arising",
        "along",
        "to",
        "a",
        "an",
        "lower",
        "upper",
        "pole",
        "mid",
        "superior",
        "inferior",
        "posterior",
        "anterior",
        "lateral",
        "medial",
    }
)
# words between a part and its whole: "lower lobe superior segment of the right lung"
_PART = frozenset(
    """segment segments subsegment subsegments superior inferior anterior posterior lateral medial
    apicoposterior anteromedial posterobasal laterobasal mediobasal anterobasal basal part parts portion portions zone
    zones region regions area areas aspect aspects section sections peripheral central subpleural lobe lobes
    perifissural juxtafissural juxtapleural fissural""".split()
)
_RANGE = frozenset({"-", "\u2013", "through", "to", "thru"})
_SPINE = [n for n in vocab.groups()["spine"] if n.startswith("vertebrae_")][::-1]  # C1 .. S1
# words between a side word and the organ it narrows: "right upper pole renal", "left mid kidney"
_SIDE_GAP = frozenset(
    """upper lower mid middle pole anterior posterior medial lateral superior inferior interpolar anterolateral
    posterolateral anteromedial posteromedial""".split()
)
_GROUP = {name: o.group for name, o in vocab.organs().items()}
# words that end a noun phrase's modifiers ("mesenteric peripancreatic enhancing mass" is one phrase)
NOUN_PHRASE_ENDS = frozenset(
    {
        "in",
        "within",
        "of",
        "at",
        "on",
        "throughout",
        "seen",
        "noted",
        "is",
        "are",
        "was",
        "were",
        "identified",
        "present",
        "from",
        "arising",
        "along",
        "to",
        "with",
        "which",
        "that",
        "and",
        "or",
        ",",
        ";",
        "(",
        ")",
        ":",
    }
)


@dataclass(slots=True)
class Run:
    """Consecutive organ mentions of one clause that name one place."""

    start: int  # token offsets
    end: int
    organs: tuple[str, ...]
    clause: int
    landmark: bool  # after a relation word, or named as surroundings ("perirenal"): a finding is beside it, not in it
    last: tuple[
        str, ...
    ] = ()  # organs of the run's last mention ("the lingular segment" in "..., the lingular segment")
    scoped: bool = False  # a mention joined it after "of" ("the upper lobes of both lungs, ...")
    heading: bool = False  # in an introduction that ends with ";" and holds no finding ("In both lung parenchyma; ...")


def mark_headings(runs: list[Run], terms: Clauses, words: Words, finding_starts: list[int]) -> None:
    """Marks the runs of introductions: clauses that end with ";" and hold no finding ("When examined in the lung
    parenchyma window; ...")."""
    for r in runs:
        if r.clause < len(terms) and words[terms[r.clause] : terms[r.clause] + 1] == [";"]:
            lo = terms[r.clause - 1] if r.clause else -1
            r.heading = not any(lo <= s < terms[r.clause] for s in finding_starts)


def organ_runs(words: Words, orgs: list[Match], rels: list[Match], terms: Clauses, t0: int) -> list[Run]:
    """The sentence's organ mentions (ORG matches, in order; the sentence starts at token t0) joined into runs; `rels`
    are its relation words."""
    runs: list[Run] = []
    for m in orgs:
        clause = terms.of(m.start)
        organs, _, beside = m.payload
        landmark = beside or any(r.end <= m.start <= r.end + 2 and terms.of(r.start) == clause for r in rels)
        organs = narrow(organs, _side_before(words, m.start, t0))
        prev = runs[-1] if runs and runs[-1].clause == clause else None
        if prev is None or not _join(prev, m.start, m.end, organs, landmark, _gap(words, prev.end, m.start), words):
            runs.append(Run(m.start, m.end, organs, clause, landmark, organs))
    for r in runs:  # a side word right before a run holds for all of it ("left perisplenic perirenal mass")
        side = words.sides(r.start - 1, r.start) if r.start > t0 else set()
        if len(side) == 1 and side != {"both"}:
            r.organs = narrow(r.organs, next(iter(side)))
    _inherit_sides(words, runs)
    return runs


def _side_before(words: Words, start: int, t0: int) -> str | None:
    """A side word before a mention across part words ("right upper pole renal" is the right kidney)."""
    j = start - 1
    while j >= t0 and j >= start - 3 and words[j : j + 1][0] in _SIDE_GAP:
        j -= 1
    if j < t0 or j == start - 1:  # (a side word right before the mention is part of the lexicon's own phrases)
        return None
    side = words.sides(j, j + 1)
    return next(iter(side)) if len(side) == 1 and side != {"both"} else None


def _inherit_sides(words: Words, runs: list[Run]) -> None:
    """A paired organ named again without a side keeps the one side the sentence gave it ("left renal mass ... mid
    kidney"); the lung's lobes are named on their own ("the lung bases" after "the right upper lobe" are both)."""
    sided: dict[str, set[str]] = {}
    for r in runs:
        groups = {g for o in r.organs if (g := _GROUP.get(o)) is not None} - {"lung"}
        sides = {side_of(o) for o in r.organs}
        if len(groups) == 1 and sides == {"left", "right"} and not words.sides(r.start, r.end):
            earlier = sided.get(next(iter(groups)), set())
            if len(earlier) == 1:
                r.organs = r.last = narrow(r.organs, next(iter(earlier)))
        for o in r.organs:
            side, group = side_of(o), _GROUP.get(o)
            if side and group:
                sided.setdefault(group, set()).add(side)


def _join(
    prev: Run, start: int, end: int, organs: tuple[str, ...], landmark: bool, gap: list[str], words: Words
) -> bool:
    """Joins a mention (tokens start..end) to the run before it where they name one place; False where they do not."""
    if len(gap) == 1 and gap[0] in _RANGE and _is_vertebra(prev.organs) and _is_vertebra(organs):  # "T11-L1"
        a, b = _SPINE.index(prev.organs[-1]), _SPINE.index(organs[0])
        organs = tuple(_SPINE[min(a, b) : max(a, b) + 1])
        prev.organs = tuple(dict.fromkeys(prev.organs + organs))
        prev.end, prev.last = end, organs
        return True
    both = set(prev.last) & set(organs)
    if not gap and both:
        # one mention narrows the other: "T12 vertebral", "right lower lobe pulmonary", "right lung basal"
        last = tuple(o for o in organs if o in both)
        prev.organs = tuple(dict.fromkeys([o for o in prev.organs if o not in prev.last] + list(last)))
        prev.end, prev.last = end, last
        return True
    if gap and set(gap) <= {"(", ")"} and set(prev.last) & set(organs):
        # a name in brackets: "right lower lobe (RLL)", "right lower lobe lung (pulmonary)": the narrower holds
        last = tuple(
            o for o in (prev.last if len(prev.last) <= len(organs) else organs) if o in set(prev.last) & set(organs)
        )
        prev.organs = tuple(dict.fromkeys([o for o in prev.organs if o not in prev.last] + list(last)))
        prev.end, prev.last = end, last
        return True
    if gap and prev.landmark and all(g in _CONNECT for g in gap):
        landmark = True  # a list after a relation word shares it: "invading the pancreatic tail and the spleen"
    part = set(prev.organs) & set(organs)
    if (
        "of" in gap
        and part
        and len(part) < max(len(prev.organs), len(organs))
        and prev.landmark == landmark
        and all(g in _CONNECT or g in _PART for g in gap)
    ):
        # part of a whole: "the apex of the right lung", "the upper and lower lobes of the right lung"; once a list's
        # items carry their own "of", it holds for the last one only ("the upper lobes of both lungs, the lingular
        # segment of the left lung")
        whole = set(organs)
        prev.organs = tuple(o for o in prev.organs if o in whole or (prev.scoped and o not in prev.last))
        prev.last = tuple(o for o in prev.last if o in whole)
        prev.end, prev.scoped = end, True
        return True
    if gap == [","] and prev.last and set(prev.last) < set(organs):
        # the whole an item sits in, restated: "nodule, right lower lobe, lung, chest"
        prev.end = end
        return True
    if all(g in _CONNECT for g in gap) and prev.landmark == landmark:  # a list: "the liver and spleen"
        sides = {side_of(o) for o in prev.organs}
        if len(sides) == 1 and None not in sides and not words.sides(start, end):
            organs = narrow(organs, sides.pop())  # "left 7th and 8th ribs"
        prev.organs = tuple(dict.fromkeys(prev.organs + organs))
        prev.end, prev.last = end, organs
        prev.scoped = prev.scoped or "of" in gap
        return True
    return False


def _gap(words: Words, start: int, end: int) -> list[str]:
    """The words between two mentions, without the space tokens of runs of spaces."""
    return [w for w in words[start:end] if not w.isspace()]


def _is_vertebra(organs: tuple[str, ...]) -> bool:
    return len(organs) == 1 and organs[0] in _SPINE


def side_near(words: Words, m: Match, sides: list[Match], terms: Clauses) -> str | None:
    """The side of finding m: a side word inside it, else the nearest SIDE match (`sides`) within 3 tokens in its
    clause; None for both sides or none."""
    inside = words.sides(m.start, m.end)
    if len(inside) == 1:  # "fluid in the left pleural space"
        side = inside.pop()
        return None if side == "both" else side
    clause = terms.of(m.start)
    best = None
    for t in sides:
        if terms.of(t.start) == clause:
            d = m.start - t.end if t.end <= m.start else t.start - m.end
            if 0 <= d <= 3 and (best is None or d < best[0]):
                best = (d, t.payload)
    return None if best is None or best[1] == "both" else best[1]


def sentence_side(sides: list[Match]) -> str | None:
    """The one side the sentence's SIDE matches name, if they name one and not both."""
    named = {t.payload for t in sides}
    return named.pop() if len(named) == 1 and "both" not in named else None


def place(
    words: Words, m: Match, runs: list[Run], terms: Clauses, sent: Sentence, sides: list[Match]
) -> tuple[tuple[str, ...], bool]:
    """Organs the finding m describes, and whether they came from the organ header; `sides` are the sentence's
    SIDE matches."""
    abn, implied = m.payload[:2]
    side = side_near(words, m, sides, terms)
    if implied:
        return narrow(implied, side), False
    clause = terms.of(m.start)
    # its clause, and the one it resumes in after a relative clause ("sequelae, which ..., were seen in the apex")
    own = {clause, terms.resumed_in.get(clause, (clause, 0))[0]}
    fitting = [(r, fit) for r in runs for fit in (_fit(abn, r.organs),) if fit]
    live = [x for x in fitting if not x[0].landmark]
    same = [x for x in live if x[0].clause in own]
    beside = [x for x in fitting if x[0].landmark and x[0].clause in own]
    if same:
        organs, written_with = _in_clause(words, m, same, side)
        if organs != (ELSEWHERE,) or written_with or not beside:
            return organs, False
        # a place not ours named apart from the finding ("nodule medial to the spleen, abdomen"): what it lies beside
    elif any(not r.landmark and r.clause in own for r in runs):
        return (
            (),
            False,
        )  # its clause names where it is, and it cannot be there ("plaque in the pleura" is no aortic plaque)
    if beside:  # placed only by what it lies beside: "fluid next to the gallbladder neck", "a perisplenic mass"
        return _in_clause(words, m, beside, side)[0], False
    live = [x for x in live if not x[0].heading] or live  # a heading's organs are the context, not the place
    if live:
        return min(live, key=lambda x: abs(x[0].start - m.start))[1], False
    head = tuple(o for o in sent.header_organs if abn.applies_to(o))
    if head:
        return narrow(head, side or sentence_side(sides)), True
    if implied is not None:  # a placed_only synonym ("density increase") named without a place it fits
        return (), False
    return narrow(abn.default, side), False


def _fit(abn, organs: tuple[str, ...]) -> tuple[str, ...]:
    """The organs of a run a finding can describe: the whole run where it applies to all of them (or to any organ),
    else those it applies to."""
    if abn.any_organ or abn.organs.issuperset(organs):
        return organs
    return tuple(o for o in organs if abn.applies_to(o))


def _in_clause(
    words: Words, m: Match, same: list[tuple[Run, tuple[str, ...]]], side: str | None
) -> tuple[tuple[str, ...], bool]:
    """The organs of the run of m's clause that m describes (`same`: runs and the organs of each m applies to), and
    whether they are written with it (right before it, or after a preposition or a comma) rather than only nearest."""
    before = [x for x in same if x[0].end <= m.start]
    after = [x for x in same if x[0].start >= m.end]
    adjective = before[-1][1] if before and before[-1][0].end == m.start else None
    # a place of a noun phrase's other modifiers: "mesenteric peripancreatic enhancing mass" is mesenteric
    in_phrase = bool(before) and NOUN_PHRASE_ENDS.isdisjoint(words[before[-1][0].end : m.start])
    if after and 0 < after[0][0].start - m.end <= 6:
        gap = _gap(words, m.end, after[0][0].start)
        # "osseous lesion of the spine": the more specific of adjective and prepositional object
        if (
            gap[0] in _PREP
            and all(g in _PREP or g[0].isdigit() or g in ("cm", "mm", ".", "x") for g in gap)
            and (adjective is None or set(after[0][1]) <= set(adjective))
        ):
            return after[0][1], True
        if (
            gap[0] == ","
            and adjective
            and set(after[0][1]) < set(adjective)
            and all(g == "," or g in _PART for g in gap)
        ):
            # a list item's place after a comma, inside the organ written before it: "lung nodule, right lower lobe"
            return after[0][1], True
    if adjective:
        return _sided(adjective, side), True
    if in_phrase and before[-1][1] == (ELSEWHERE,):
        return before[-1][1], True
    ours = [x for x in same if x[1] != (ELSEWHERE,)] or same  # a place not ours wins only where written with it
    best = min(ours, key=lambda x: (m.start - x[0].end) if x[0].end <= m.start else (x[0].start - m.end) + 0.5)
    return _sided(best[1], side), False


def _sided(organs: tuple[str, ...], side: str | None) -> tuple[str, ...]:
    """Organs of both sides named with a side word beside the finding keep that side ("apical emphysema on the
    left")."""
    if side is None or len({side_of(o) for o in organs} - {None}) < 2:
        return organs
    return narrow(organs, side)
