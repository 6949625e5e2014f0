"""The abnormality dictionary (data/abnormalities.yaml): canonical names, synonyms, and their organs."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pipeline import vocab
from pipeline.report.datafiles import load
from pipeline.report.lexicon import ELSEWHERE, REGION, expand_targets, plurals

SPINE = REGION + "spine"
_VERTEBRAE = frozenset(n for n in vocab.groups()["spine"] if n.startswith("vertebrae_"))


@dataclass(frozen=True)
class Abnormality:
    name: str  # canonical name, e.g. "pleural effusion"
    synonyms: tuple[str, ...]  # lower-case phrases, the canonical name included
    organs: frozenset[str]  # vocab classes it applies to (all of them when `any_organ`)
    any_organ: bool  # "*" in the data file: applies to any organ
    default: tuple[str, ...]  # classes assumed when no applicable organ is named
    implies: tuple[tuple[str, tuple[str, ...]], ...]  # synonym -> classes it names by itself
    by_organ: tuple[tuple[str, str], ...]  # class -> canonical name to use for it
    generic: bool = False  # a descriptor ("lesion") that gives way to a specific finding
    weak: frozenset[str] = frozenset()  # synonyms that give way to a hedged mention of this name
    requires: frozenset[str] = frozenset()  # words one of which must stand near the mention ("size increased")
    state: bool = False  # a state a past event leaves (an operation): historical triggers do not end it
    needs_qualifier: frozenset[str] = frozenset()  # synonyms naming the structure, not its disease ("lymph node")
    qualifiers: frozenset[str] = frozenset()  # words that make such a synonym the finding ("enlarged")
    qualifying_size_mm: float | None = None  # or a short axis this large
    qualifies: frozenset[str] = frozenset()  # findings it is an adjective of where one follows in its noun phrase

    def applies_to(self, organ: str) -> bool:
        return self.any_organ or organ in self.organs or organ == ELSEWHERE

    def canonical_for(self, organ: str) -> str:
        for o, name in self.by_organ:
            if o == organ:
                return name
        return self.name


@lru_cache(maxsize=1)
def abnormalities() -> tuple[Abnormality, ...]:
    out = []
    for e in load("abnormalities.yaml"):
        targets = [t for t in e.get("organs") or [] if t != "*"]
        by_organ: list[tuple[str, str]] = []
        for target, canon in (e.get("by_organ") or {}).items():
            by_organ += [(o, canon) for o in expand_targets([target])]
        base = [e["name"].lower(), *(s.lower() for s in e["synonyms"])]
        syns = tuple(dict.fromkeys(base + [p for s in base for p in plurals(s)]))
        implies = {k.lower(): expand_targets(v) for k, v in (e.get("implies") or {}).items()}
        if e.get("implies_all"):  # every synonym names its place by itself ("stent" -> medical material)
            unplaced = {u.lower() for u in e.get("unplaced") or []}
            unplaced |= {p for u in unplaced for p in plurals(u)}
            placed = [x for x in syns if x not in unplaced]
            implies = {**dict.fromkeys(placed, expand_targets(e["implies_all"])), **implies}
        for syn in e.get("placed_only") or []:  # no default organs: only where the sentence names a place
            for form in (syn.lower(), *plurals(syn.lower())):
                implies.setdefault(form, ())
        organs = set(expand_targets(targets))
        if organs & _VERTEBRAE:
            organs.add(SPINE)  # what applies to a vertebra applies to the spine named without a level
        out.append(
            Abnormality(
                name=e["name"],
                synonyms=syns,
                organs=frozenset(organs),
                any_organ="*" in (e.get("organs") or []),
                default=expand_targets(e.get("default") or []),
                implies=tuple(implies.items()),
                by_organ=tuple(by_organ),
                generic=e.get("generic") == "true",
                weak=frozenset(w.lower() for w in e.get("weak") or []),
                requires=frozenset(w.lower() for w in e.get("requires") or []),
                state=e.get("state") == "true",
                needs_qualifier=frozenset(w.lower() for w in e.get("needs_qualifier") or []),
                qualifiers=frozenset(w.lower() for w in e.get("qualifiers") or []),
                qualifying_size_mm=float(e["qualifying_size_mm"]) if e.get("qualifying_size_mm") else None,
                qualifies=frozenset(e.get("qualifies") or []),
            )
        )
    return tuple(out)


def abnormality(name: str) -> Abnormality:
    for a in abnormalities():
        if a.name == name:
            return a
    raise KeyError(f"{name!r} is not a canonical abnormality of data/abnormalities.yaml")


def abnormalities_for_organ(organ: str) -> list[Abnormality]:
    """Abnormalities that can describe this vocab class, in dictionary order; the pairs stage draws
    dictionary negatives from them. Generic ones (organs "*": mass, cyst, lesion, ...) apply to every organ."""
    return [a for a in abnormalities() if a.any_organ or organ in a.organs or organ in a.default]
