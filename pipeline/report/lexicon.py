"""Organ lexicon: report phrases -> vocab classes, built from pipeline.vocab and data/organs.yaml.

Class names give "left kidney", "L1 vertebra", "right 5th rib"; the data file adds synonyms,
adjectives, plurals and groups ("hepatic", "adrenals", "lung bases", "osseous structures"). A group
expands to all of its member classes (docs/ARCHITECTURE.md). data/radlex_synonyms.yaml, written at
build time by `python -m pipeline.report.radlex` where the RadLex file is present, adds synonyms.
"""

from __future__ import annotations

import re
from functools import lru_cache

from pipeline import vocab
from pipeline.report.datafiles import load
from pipeline.report.finding import REGIONS

SIDES = ("left", "right")
REGION = "region:"  # prefix of a target that is a region without an organ mask ("region:lymph_node")
# body parts we keep no findings for (breast, subcutaneous fat, chest wall, ...): naming one keeps a
# finding from falling back to its default organs ("nodules in both breasts" are no lung nodules)
ELSEWHERE = REGION + "elsewhere"
_ORDINALS = "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth".split()
_CARDINALS = "one two three four five six seven eight nine ten eleven twelve".split()
_SPINE_SECTIONS = {"cervical": ("C", 7), "thoracic": ("T", 12), "dorsal": ("T", 12), "lumbar": ("L", 5)}


def _data(name: str) -> dict:
    return load(name, {}) or {}


@lru_cache(maxsize=1)
def _config() -> dict:
    return _data("organs.yaml")


@lru_cache(maxsize=1)
def _groups() -> dict[str, tuple[str, ...]]:
    skip = set(_config().get("not_organs", []))
    return {g: tuple(m for m in members if m not in skip) for g, members in vocab.groups().items()}


def expand_targets(targets) -> tuple[str, ...]:
    """Vocab classes named by a list of class names, vocab groups or organs.yaml `sets` (in order, unique).
    A name that is both a class and a group ("heart") means the class."""
    if isinstance(targets, str):
        targets = [targets]
    sets = _config().get("sets", {})
    organs = vocab.organs()
    out: list[str] = []
    for t in targets:
        if t.startswith(REGION):
            if t[len(REGION) :] not in REGIONS and t != ELSEWHERE:
                raise KeyError(f"organ lexicon target {t!r} names no region of {REGIONS}")
            out.append(t)
        elif t in organs:
            out.append(t)
        elif t in _groups():
            out.extend(_groups()[t])
        elif t in sets:
            out.extend(expand_targets(sets[t]))
        else:
            raise KeyError(f"organ lexicon target {t!r} is neither a vocab class, a vocab group nor a set")
    return tuple(dict.fromkeys(out))


def side_of(organ: str) -> str | None:
    return None if organ.startswith(REGION) else vocab.organ(organ).side


def region_of(target: str) -> str | None:
    """The region a lexicon target names ("region:pleura" -> "pleura"), None for a vocab class."""
    return target[len(REGION) :] if target.startswith(REGION) else None


def narrow(organs: tuple[str, ...], side: str | None) -> tuple[str, ...]:
    """Keep the classes of one side; unsided classes are kept; an empty result falls back to all."""
    if side not in SIDES:
        return organs
    kept = tuple(o for o in organs if side_of(o) in (side, None))
    return kept or organs


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _class_terms(name: str) -> tuple[list[str], list[str]]:
    """(case-insensitive phrases, case-sensitive phrases) generated from one vocab class name."""
    lower: list[str] = []
    exact: list[str] = []
    m = re.fullmatch(r"vertebrae_([CTLS])(\d+)", name)
    if m:
        code = f"{m.group(1)}{m.group(2)}"
        exact.append(code)
        for c in {code, code.lower()}:
            lower += [
                f"{c} vertebra",
                f"{c} vertebral body",
                f"{c} vertebral",
                f"{c} vertebrae",
                f"{c} level",
                f"vertebral body of {c}",
                f"{c} body",
            ]
        return lower, exact
    m = re.fullmatch(r"rib_(left|right)_(\d+)", name)
    if m:
        side, n = m.group(1), int(m.group(2))
        for num in (_ordinal(n), _ORDINALS[n - 1]):
            lower += [
                f"{side} {num} rib",
                f"{num} {side} rib",
                f"{side} {num} ribs",
                f"{side} {num}",
                f"{num} rib on the {side}",
            ]
        lower += [f"{side} rib {n}"]
        return lower, exact
    side = side_of(name)
    base = name.replace("_", " ")
    if side:
        base = re.sub(rf"\b{side}\b", "", base).strip()
        base = re.sub(r"\s+", " ", base)
        lower += [f"{side} {base}", f"{base} {side}", f"{base}, {side}"]
    else:
        lower.append(base)
    return lower, exact


def plurals(phrase: str) -> list[str]:
    """Plural forms of a phrase's last word ("stone" -> "stones", "opacity" -> "opacities")."""
    head, _, last = phrase.rpartition(" ")
    if len(last) < 3 or not last.isalpha() or last.endswith(("s", "ed", "ic", "al", "ous", "ar")):
        return []
    if last.endswith("ing"):  # nouns in -ing: "thickenings", "findings"; verbs never take -s here
        return [f"{head} {last}s".strip()]
    if last.endswith("y") and last[-2] not in "aeiou":
        forms = [last[:-1] + "ies"]
    elif last.endswith(("x", "ch", "sh")):
        forms = [last + "es"]
    else:
        forms = [last + "s"]
    return [f"{head} {f}".strip() for f in forms]


def _sided(phrase: str, targets) -> dict[str, tuple[str, ...]]:
    members = expand_targets(targets)
    out = {phrase: members}
    for side in SIDES:
        for form in (f"{side} {phrase}", f"{side}-sided {phrase}", f"{side} sided {phrase}", f"{phrase} on the {side}"):
            out[form] = narrow(members, side)
    for form in (
        f"bilateral {phrase}",
        f"both {phrase}",
        f"right and left {phrase}",
        f"left and right {phrase}",
        f"{phrase} bilaterally",
    ):
        out[form] = members
    return out


@lru_cache(maxsize=1)
def organ_phrases() -> dict[str, tuple[str, ...]]:
    """Lower-case phrase -> vocab classes (case-insensitive matching)."""
    cfg = _config()
    out: dict[str, tuple[str, ...]] = {}
    for name, o in vocab.organs().items():
        target = (
            name if o.index_v2 is not None else vocab.v1_to_v2(name) or (name if name == "pulmonary_artery" else None)
        )
        if target is None or name in cfg.get("not_organs", []):
            continue
        for phrase in _class_terms(name)[0]:
            out.setdefault(phrase.lower(), expand_targets(target))
    for n in range(1, 13):  # "5th rib" without a side: both sides
        for num in (_ordinal(n), _ORDINALS[n - 1]):
            out[f"{num} rib"] = out[f"{num} ribs"] = expand_targets([f"rib_left_{n}", f"rib_right_{n}"])
    out.update(_spine_counts())
    radlex = _data("radlex_synonyms.yaml")
    for phrase, target in radlex.items():
        out.setdefault(phrase.lower(), expand_targets(target))
    sided = {p.lower(): t for p, t in (cfg.get("sided") or {}).items()}
    for phrase in list(sided):
        # plurals of paired sites ("humeral heads", "pubic bones"), unless listed otherwise; not of a site
        # found on one side only (the plural in "apicoposterior segments of both lungs" is loose wording)
        if {side_of(o) for o in expand_targets(sided[phrase])} >= set(SIDES):
            for form in plurals(phrase):
                sided.setdefault(form, sided[phrase])
    for phrase, target in sided.items():
        for form, members in _sided(phrase, target).items():
            out[form] = members
    for phrase, target in (cfg.get("terms") or {}).items():
        out[phrase.lower()] = expand_targets(target)
    for phrase in cfg.get("elsewhere") or []:
        out.setdefault(phrase.lower(), (ELSEWHERE,))
    for phrase, target in (cfg.get("beside") or {}).items():
        out[phrase.lower()] = expand_targets(target)
    return {k: v for k, v in out.items() if v}


@lru_cache(maxsize=1)
def beside_phrases() -> frozenset[str]:
    """Phrases of organ_phrases() that place a finding beside their organs (data/organs.yaml `beside`)."""
    return frozenset(p.lower() for p in _config().get("beside") or {})


def _spine_counts() -> dict[str, tuple[str, ...]]:
    """Levels written as counts along a spine section: "the 7th thoracic vertebra" -> T7, "the first 5
    thoracic vertebrae" -> T1-T5, "the lower two lumbar vertebrae" -> L4-L5 (counted from the top). A vertebra
    counted without its section is a thoracic one, the section a chest CT shows whole and counts by its ribs: "a
    fracture of the transverse process of the 11th vertebra" is T11."""
    out: dict[str, tuple[str, ...]] = {}
    for n in range(1, 13):
        for num in (_ordinal(n), _ORDINALS[n - 1]):
            for body in ("vertebra", "vertebral body", "vertebral corpus", "vertebra body"):
                out[f"{num} {body}"] = expand_targets(f"vertebrae_T{n}")
    bodies = ("vertebrae", "vertebral bodies", "vertebra bodies")
    for section, (code, count) in _SPINE_SECTIONS.items():
        levels = [f"vertebrae_{code}{i}" for i in range(1, count + 1)]
        for n in range(1, count + 1):
            for num in (_ordinal(n), _ORDINALS[n - 1]):
                for body in ("vertebra", "vertebral body", "vertebral"):
                    out[f"{num} {section} {body}"] = expand_targets(levels[n - 1])
            if n == 1:
                continue
            for num in (str(n), _CARDINALS[n - 1]):
                for body in bodies:
                    out[f"first {num} {section} {body}"] = out[f"upper {num} {section} {body}"] = expand_targets(
                        levels[:n]
                    )
                    out[f"last {num} {section} {body}"] = out[f"lower {num} {section} {body}"] = expand_targets(
                        levels[-n:]
                    )
    return out


@lru_cache(maxsize=1)
def vague_phrases() -> frozenset[str]:
    """Phrases of organ_phrases() that carry findings but not normal statements (data/organs.yaml `vague`)."""
    out = frozenset(p.lower() for p in _config().get("vague") or [])
    missing = out - organ_phrases().keys()
    if missing:
        raise KeyError(f"organs.yaml `vague` names phrases that are no organ terms: {sorted(missing)}")
    return out


@lru_cache(maxsize=1)
def exact_phrases() -> dict[str, tuple[str, ...]]:
    """Case-sensitive phrase -> vocab classes (abbreviations: "GB", "IVC", "RLL", "L1")."""
    out: dict[str, tuple[str, ...]] = {}
    for name in vocab.v2_names():
        for phrase in _class_terms(name)[1]:
            out[phrase] = expand_targets(name)
    for phrase, target in (_config().get("exact_case") or {}).items():
        out[phrase] = expand_targets(target)
    return out


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9/&,+ -]", " ", text.lower())).strip(" -")


@lru_cache(maxsize=4096)
def header_organs(header: str) -> tuple[str, ...]:
    """Vocab classes an organ-style header names ("LUNGS AND PLEURA" -> the lobes); () if none."""
    key = _norm(header)
    special = _config().get("headers") or {}
    if key in special:
        return expand_targets(special[key])
    phrases = organ_phrases()
    if key in phrases:
        return phrases[key]
    out: list[str] = []
    for piece in re.split(r"\s*(?:,|/|&|\+|\band\b)\s*", key):
        piece = piece.strip()
        if not piece:
            continue
        hit = phrases.get(piece) or phrases.get(piece.rstrip("s"))
        if not hit and piece in special:
            hit = expand_targets(special[piece])
        if hit:
            out.extend(hit)
    return tuple(dict.fromkeys(out))


@lru_cache(maxsize=1)
def diameter_limits() -> dict[str, float]:
    """Vessel -> the largest normal diameter in mm (data/organs.yaml `diameter_limits_mm`)."""
    out: dict[str, float] = {}
    for target, mm in (_config().get("diameter_limits_mm") or {}).items():
        for organ in expand_targets(target):
            out[organ] = float(mm)
    return out
