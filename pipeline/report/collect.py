"""Findings stage: what one sentence says of each organ or region, collected, then written out as finding rows."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline import vocab
from pipeline.report.finding import ABNORMAL, NORMAL, REGIONS, UNCERTAIN
from pipeline.report.lexicon import ELSEWHERE, REGION, region_of
from pipeline.report.segment import Sentence

REGION_KEYS = frozenset([REGION + r for r in REGIONS] + [ELSEWHERE])
NEGATED = "negated"  # a status of `Collected.add`: the finding is said to be absent here
_GROUP = {name: o.group for name, o in vocab.organs().items()}


@dataclass(slots=True)
class _Place:
    abnormal: dict = field(default_factory=dict)  # canonical -> (size, weak, generic)
    uncertain: dict = field(default_factory=dict)  # canonical -> (size, interpretive, generic)
    negated: list = field(default_factory=list)  # canonicals negated here
    normal: bool = False  # an explicit normal statement
    described: bool = False  # the structure described, not said to be diseased ("millimetric lymph nodes")
    from_header: bool = False  # placed by the sentence's organ header


class Collected:
    """The findings of one sentence, per place: an organ, or a region with the side it was named with."""

    def __init__(self):
        self.places: dict[str, _Place] = {}

    def at(self, target: str, side: str | None = None, from_header: bool = False) -> _Place:
        """The entry of an organ, or of a region with its side ("region:pleura|left")."""
        key = f"{target}|{side or ''}" if target in REGION_KEYS else target
        if key not in self.places:
            self.places[key] = _Place(from_header=from_header)
        return self.places[key]

    def add(
        self,
        place: _Place,
        canon: str,
        status: str,
        size: float | None,
        *,
        weak: bool = False,
        generic: bool = False,
        interpretive: bool = False,
    ) -> None:
        """A finding at a place: status ABNORMAL, UNCERTAIN or NEGATED."""
        if status == NEGATED:
            place.negated.append(canon)
        elif status == UNCERTAIN:
            place.uncertain.setdefault(canon, (size, interpretive, generic))
        else:
            old = place.abnormal.get(canon)
            if old is None or (old[1] and not weak):  # a weak synonym yields to a plain one
                place.abnormal[canon] = (size if old is None or size is not None else old[0], weak, generic)

    def rows(self, sent: Sentence, sentence_text: str, vague: set[str]) -> tuple[tuple, ...]:
        """The sentence's findings as rows: the fields of a Finding but its sentence_index, which the reader adds.
        Organs the sentence names only loosely (`vague`) get no normal finding."""
        out = []
        section = sent.section
        for key, st in self.places.items():
            group = _GROUP.get(key)
            if group is not None or not key.startswith(REGION):
                organ, region, side = key, None, None
            else:  # a region, with the side it was named with ("region:pleura|left")
                target, _, side = key.partition("|")
                if target == ELSEWHERE:
                    continue
                organ, region, side = None, region_of(target), side or None
            if st.uncertain or len(st.abnormal) > 1:
                _resolve(st)
            negated = tuple(sorted(set(st.negated))) if st.negated else ()
            header = sent.header if st.from_header else None
            for canon, (size, _, _) in st.abnormal.items():
                out.append((organ, group, ABNORMAL, canon, sentence_text, section, negated, size, header, region, side))
            for canon, (size, _, _) in st.uncertain.items():
                if canon not in st.abnormal:
                    out.append(
                        (organ, group, UNCERTAIN, canon, sentence_text, section, negated, size, header, region, side)
                    )
            if not st.abnormal and not st.uncertain and (st.normal or negated) and key not in vague:
                out.append((organ, group, NORMAL, None, sentence_text, section, negated, None, header, region, side))
                if st.described and negated:  # "a few small nodes ..., no enlarged node": the nodes are there too
                    out.append((organ, group, NORMAL, None, sentence_text, section, (), None, header, region, side))
        return tuple(out)


def _resolve(st: _Place) -> None:
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
