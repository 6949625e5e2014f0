"""The spaCy pipeline: spacy.blank("en") tokenizer + one custom component, `ctglip_report`.

The component (context.ReportComponent) segments the report text (segment.py); sentences it has not read
before are tokenized together as one doc, two precompiled PhraseMatchers run over it (case-insensitive
terms on LOWER, abbreviations on ORTH), the longest non-overlapping matches are kept, and each sentence
goes to context.py. `extract_findings` calls the component's `read(text)`; in a spaCy pipeline the
results land in `doc._.ctglip_findings`.
"""

from __future__ import annotations

import gc
import re
from functools import cache, lru_cache
from operator import itemgetter
from typing import Any, NamedTuple, cast

import spacy
from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokenizer import Tokenizer
from spacy.tokens import Doc

from pipeline.report.datafiles import load
from pipeline.report.dictionary import abnormalities
from pipeline.report.lexicon import beside_phrases, exact_phrases, organ_phrases, vague_phrases

# match kinds, in the order that settles ties between equally long matches
PSEUDO, ABN, ORG, NEG, UNC, HIST, NORM, TERM, REL, PERSIST, SIDE = range(11)
MOD_KINDS = {"negated": NEG, "uncertain": UNC, "historical": HIST}


class Match(NamedTuple):  # a tuple: built ~100 times per report, cheaper than a dataclass
    start: int  # token offsets
    end: int
    kind: int
    # by kind: ORG (organs, vague, beside) | ABN (Abnormality, implied organs, weak, plain) | NEG, UNC, HIST
    # (direction, window, interpretive) | SIDE side | others None; Any, as a type checker cannot follow `kind`
    payload: Any


def _modifiers() -> dict:
    """data/modifiers.yaml, with negspacy's curated clinical termset (Chapman's NegEx lists, "en_clinical")
    merged in: its preceding and following negations, pseudo-negations and terminations join ours, each term
    once, and where a term is already ours in any category ours wins ("cannot be excluded" stays uncertain)."""
    mods = load("modifiers.yaml")
    try:
        from negspacy.termsets import termset
    except ImportError:  # the rules still run, with our lists only
        return mods
    curated = termset("en_clinical").get_patterns()
    ours = {
        t.lower()
        for cat in ("negated", "uncertain", "historical")
        for d in ("forward", "backward")
        for t in mods[cat][d]["terms"]
    }
    ours |= {t.lower() for cat in ("pseudo", "terminate", "relation", "persist", "normal") for t in mods[cat]["terms"]}
    ours |= {t.lower() for t in mods.get("curated_skip") or []}
    into = {
        "preceding_negations": mods["negated"]["forward"]["terms"],
        "following_negations": mods["negated"]["backward"]["terms"],
        "pseudo_negations": mods["pseudo"]["terms"],
        "termination": mods["terminate"]["terms"],
    }
    for key, terms in into.items():
        for t in curated.get(key, []):
            t = " ".join(t.lower().split())
            if t and t not in ours:
                terms.append(t)
                ours.add(t)
    return mods


class _Strings(dict):
    """Hash -> text of a StringStore, kept: StringStore decodes and builds a new str on every lookup, and a
    doc's LOWER column is looked up word by word."""

    def __init__(self, store):
        super().__init__()
        self.store = store

    def __missing__(self, key: int) -> str:
        text = self[key] = self.store[key]
        return text


class Lexicon:
    """Every phrase of the organ lexicon, the abnormality dictionary and the modifiers, compiled."""

    def __init__(self, nlp: Language):
        self.kind: dict[int, int] = {}  # match key -> match kind
        self.payload: dict[int, object] = {}  # match key -> Match.payload
        self.lower = PhraseMatcher(nlp.vocab, attr="LOWER")
        self.exact = PhraseMatcher(nlp.vocab, attr="ORTH")
        lower: dict[str, dict[str, list[str]]] = {}

        def add(phrase: str, key: str, kind: int, payload: object, table=lower) -> None:
            k = nlp.vocab.strings.add(key)
            self.kind[k], self.payload[k] = kind, payload
            table.setdefault(key, {}).setdefault(phrase, [])

        vague, beside = vague_phrases(), beside_phrases()
        self.organ_terms: dict[str, tuple] = {}  # organ phrase -> payload, for coordinated modifiers
        for phrase, organs in organ_phrases().items():
            flags = (phrase in vague, phrase in beside)
            add(phrase, "ORG:" + ",".join(organs) + ":vague" * flags[0] + ":beside" * flags[1], ORG, (organs, *flags))
            self.organ_terms[" ".join(t.text for t in nlp.tokenizer(phrase))] = (organs, *flags)
        exact: dict[str, dict[str, list[str]]] = {}
        for phrase, organs in exact_phrases().items():
            add(phrase, "ORG:" + ",".join(organs), ORG, (organs, False, False), exact)
        self.findings: dict[str, tuple] = {}  # finding phrase -> payload, for hyphenated compounds
        for i, a in enumerate(abnormalities()):
            implied = dict(a.implies)
            for syn in a.synonyms:
                implied_organs = implied.get(syn)
                flags = (syn in a.weak, syn in a.needs_qualifier)
                add(syn, f"ABN:{i}:{implied_organs!r}:{flags}", ABN, (a, implied_organs, *flags))
                self.findings[" ".join(t.text for t in nlp.tokenizer(syn))] = (a, implied_organs, *flags)
        mods = _modifiers()
        for cat, kind in MOD_KINDS.items():
            fwd, bwd = mods[cat]["forward"], mods[cat]["backward"]
            interpretive = set(mods[cat].get("interpretive") or [])
            both = set(fwd["terms"]) & set(bwd["terms"])
            for direction, spec in (("forward", fwd), ("backward", bwd)):
                for t in spec["terms"]:
                    d = "both" if t in both else direction
                    flag = t in interpretive
                    add(t.lower(), f"MOD:{cat}:{d}:{spec['window']}:{flag}", kind, (d, int(spec["window"]), flag))
        for cat, kind in (
            ("pseudo", PSEUDO),
            ("terminate", TERM),
            ("relation", REL),
            ("persist", PERSIST),
            ("normal", NORM),
        ):
            for t in mods[cat]["terms"]:
                add(t.lower(), f"{cat.upper()}", kind, None)
        for side, terms in mods["side"].items():
            for t in terms:
                add(t.lower(), f"SIDE:{side}", SIDE, side)
        self._coordinators = frozenset(nlp.vocab.strings.add(w) for w in ("or", "and", "-", "/"))  # LOWER ids
        self._list_marks = self._coordinators | {nlp.vocab.strings.add(",")}
        self._hyphen = nlp.vocab.strings.add("-")
        self.strings = _Strings(nlp.vocab.strings)
        self._exact_first: set[int] = set()  # LOWER ids of the first words of case-sensitive phrases
        for table, matcher in ((lower, self.lower), (exact, self.exact)):
            for key, phrases in table.items():
                docs = list(cast(Tokenizer, nlp.tokenizer).pipe(phrases))  # Language types it as a callable
                matcher.add(key, docs)
                if matcher is self.exact:
                    self._exact_first.update(d[0].lower for d in docs if len(d))

    def candidates(self, doc: Doc, lower: list[int]) -> list[tuple[int, int, int, int, int]]:
        """Every phrase match of the doc, overlapping ones included, as (start - end, kind, start, end, key):
        tuples that sort in the order `matches` takes them (longest first, then by kind priority, then
        leftmost). The list is sorted by start. `lower` is the doc's LOWER column: the case-sensitive matcher
        runs only where a word could start one of its phrases (few reports use "IVC" or "L1")."""
        kind = self.kind
        found = self.lower(doc)
        if not self._exact_first.isdisjoint(lower):
            found += self.exact(doc)
        out = [(s - e, kind[k], s, e, k) for k, s, e in found]
        out.sort(key=itemgetter(2))
        return out

    def matches(
        self, cands: list[tuple[int, int, int, int, int]], lower: list[int], doc: Doc, t0: int, t1: int
    ) -> list[Match]:
        """Longest non-overlapping matches among `cands` (from `candidates`, those starting inside tokens t0..t1
        of the doc), sorted by position; `lower` is the doc's LOWER column (read once by the caller).
        Those that reach past t1 are left out, so a sentence's matches depend on its tokens alone."""
        payload = self.payload
        ranked = sorted(cands)
        taken = bytearray(t1 + 1)
        out = []
        for _, kind, s, e, k in ranked:
            if e - s == 1:
                if taken[s]:
                    continue
                taken[s] = 1
            elif e > t1 or taken.find(1, s, e) >= 0:
                continue
            else:
                taken[s:e] = b"\x01" * (e - s)
            out.append(Match(s, e, kind, payload[k]))
        out.sort()
        return self._compounds(out, lower, doc, t0, t1)

    def _compounds(self, out: list[Match], lower: list[int], doc: Doc, t0: int, t1: int) -> list[Match]:
        """Coordinated modifiers sharing one head noun. Hyphenated, after the finding: in "pleural
        effusion-thickening" the second word shares the head of the first finding ("pleural thickening").
        Before it: in "pleural or pericardial effusion" and "pleural-pericardial effusion" the first word
        shares the finding's head ("pleural effusion"). Where that phrase is a finding, it is matched on the
        extra word (replacing a shorter reading of it, such as the organ "pleural")."""
        extra = []
        strings = self.strings
        hyphen = self._hyphen
        coordinators = self._coordinators
        named = None  # tokens inside organ matches, read where a list may precede one
        for m in out:
            s, e, kind, _ = m
            if kind == ORG and e - s >= 2 and s - 2 >= t0 and lower[s - 1] in self._list_marks:
                if named is None:
                    named = {i for x in out if x.kind == ORG for i in range(x.start, x.end)}
                extra += self._organ_list(m, lower, strings, named, t0)
            if kind != ABN:
                continue
            if e + 1 < t1 and lower[e] == hyphen and not doc[e - 1].whitespace_ and not doc[e].whitespace_:
                hit = self.findings.get(" ".join([strings[h] for h in lower[s : e - 1]] + [strings[lower[e + 1]]]))
                if hit is not None:
                    extra.append(Match(e + 1, e + 2, ABN, hit))
            if e - s >= 2 and s - 2 >= t0 and lower[s - 1] in coordinators:
                hit = self.findings.get(" ".join([strings[lower[s - 2]]] + [strings[h] for h in lower[s + 1 : e]]))
                if hit is not None:
                    extra.append(Match(s - 2, s - 1, ABN, hit))
        if not extra:
            return out
        replaced = bytearray(t1 + 1)
        for x in extra:
            replaced[x.start : x.end] = b"\x01" * (x.end - x.start)
        kept = [m for m in out if replaced.find(1, m.start, m.end) < 0]
        return sorted(kept + extra)

    def _organ_list(self, m: Match, lower: list[int], strings, named: set[int], t0: int) -> list[Match]:
        """Words listed before an organ phrase that share its head: in "the upper, middle and lower lobes"
        "upper" and "middle" are the upper and middle lobes (the head is also tried singular: "middle lobe").
        A word that is already part of an organ mention keeps it ("the left 7th and 8th ribs")."""
        head = [strings[h] for h in lower[m.start + 1 : m.end]]
        singular = head[:-1] + [head[-1][:-1]] if head[-1].endswith("s") else None
        out = []
        j = m.start
        while j - 2 >= t0 and lower[j - 1] in self._list_marks and j - 2 not in named:
            word = strings[lower[j - 2]]
            hit = self.organ_terms.get(" ".join([word] + head))
            if hit is None and singular:
                hit = self.organ_terms.get(" ".join([word] + singular))
            if hit is None:
                break
            out.append(Match(j - 2, j - 1, ORG, hit))
            j -= 2
        return out


@lru_cache(maxsize=1)
def blank() -> Language:
    return spacy.blank("en")


if not Doc.has_extension("ctglip_findings"):
    Doc.set_extension("ctglip_findings", default=None)


class KeepText:
    """The blank English tokenizer, also keeping the input string in doc.user_data["text"] (doc.text
    would rebuild it from every token)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text: str) -> Doc:
        doc = self.tokenizer(text)
        doc.user_data["text"] = text
        return doc

    def pipe(self, texts, batch_size: int = 1000):
        for text in texts:
            yield self(text)


# numbers (with decimals), words (letters, then digits: "L1", "T12"), words with an apostrophe, any
# other non-space character alone ("-", "/", ".", ";")
_TOKEN = re.compile(r"\d+(?:\.\d+)?|[^\W\d_]+\d*(?:['\u2019][^\W\d_]+)?|\S")


class RegexTokenizer:
    """The tokenizer of report text: the tokens of one regular expression, whitespace kept exactly as
    spaCy does (a single trailing space is the token's `whitespace_`, anything else becomes a space token),
    so character offsets and doc.text match the input. It is spaCy's own Tokenizer with no prefix, suffix
    or special-case rules and `_TOKEN` as its infix finder: spaCy splits on whitespace and caches each
    chunk's tokens (reports repeat their words), and every match after a chunk's first starts a token,
    which is exactly the regex's tokenization since its matches tile any chunk without whitespace (0.13 ms
    per CT-RATE report, against 0.40 ms for a Python loop over the same regex's matches). Patterns are
    tokenized with it too, so matching is consistent. Kept for what it reads, not for speed (bench/reports.py runs
    put its gain over spaCy's English tokenizer at a few percent): punctuation glued to words in real reports is cut
    where spaCy's rules keep one token ("(small airway disease?small vessel disease?)", "-Budding tree",
    "Post-op.heterogeneous"), which on the 755 CT-RATE reports keeps findings spaCy's tokenizer loses."""

    def __init__(self, vocab):
        self.vocab = vocab
        self.tokenizer = Tokenizer(vocab, infix_finditer=_TOKEN.finditer)

    def __call__(self, text: str) -> Doc:
        doc = self.tokenizer(text)
        doc.user_data["text"] = text
        return doc

    def pipe(self, texts, batch_size: int = 1000):
        for text in texts:
            yield self(text)


@cache
def freeze_heap() -> None:
    """Moves every object alive now out of the cyclic garbage collector's reach for good (gc.freeze), once per
    process, after a collection so that no garbage is kept. The pipeline lives as long as the process, and so do
    the libraries loaded for it (spaCy loads torch through thinc): some 260,000 objects that every full collection
    walked again, 0.2 s each, every 2,000-3,000 reports; reading the 755 CT-RATE reports over and over, full
    collections took 6% of the time, 2% once frozen. What is frozen is never collected as cyclic garbage later, in
    the whole process: only ReportConfig(freeze_heap=True) calls it (the CLI does; a library caller need not)."""
    gc.collect()
    gc.freeze()
