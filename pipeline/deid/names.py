"""Word lists the name rules read: given names (to find an untitled "Jane Doeberg") and report vocabulary
(words that are never a name in a report, to stop a name where the sentence goes on).

Given names come from Faker's person providers (kept lists from national statistics, many locales), read
as data; nothing is generated. Report vocabulary comes from the report rules' own dictionaries
(pipeline/report/data) plus spaCy's English stop words and the words of report headers and roles.
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache

import yaml
from spacy.lang.en.stop_words import STOP_WORDS

# locales whose given names are in Latin script (a report in English spells names so)
LOCALES = ("en_US", "en_GB", "en_IN", "en_NG", "de_DE", "fr_FR", "es_ES", "it_IT", "pt_BR", "nl_NL", "pl_PL", "cs_CZ",
           "sv_SE", "da_DK", "no_NO", "fi_FI", "ro_RO", "hu_HU", "tr_TR", "id_ID", "vi_VN", "sw", "yo_NG", "zu_ZA")
_MONTHS = {"january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"}
# capitalised words of report headers, roles and scanning that the dictionaries below do not hold
_REPORT_WORDS = """
findings finding impression impressions conclusion conclusions history clinical indication indications technique
comparison comparisons contrast report reports addendum preliminary final exam examination examinations study studies
series image images axial coronal sagittal oblique scan scans scanner protocol dose ct mri mr pet spect us xr cta
radiology radiologist radiologists specialist specialists department physician physicians resident residents
fellow fellows attending technologist nurse surgeon surgeons clinician clinicians provider team ward unit icu er ed
patient patients name position sex age male female date time page signed dictated transcribed verified approved
reviewed electronically result results note notes recommendation recommendations left right bilateral both normal
abnormal mild moderate severe small large multiple single stable unchanged new prior previous follow followup up
thorax chest abdomen pelvis head neck spine whole body abdominal thoracic pelvic cervical lumbar lower upper
society guidelines guideline category grade type stage score class level levels segment segments station stations
units unit hounsfield sign syndrome disease tumor tumour lesion lesions nodule nodules phenomenon maneuver
id mrn dob ssn acc accession phone fax tel email pager ext mr mrs ms mx miss dr drs prof professor doctor sister gp
pacs ris his ct mri pet icu er ed or ap pa us kvp mas mgy dlp ctdi hu iv po
signed dictated transcribed read reviewed interpreted verified approved reported performed discussed communicated
conveyed relayed called paged notified informed faxed sent copied referred ordered requested seen examined consulted
reached given contact correspondence location address home usg hrct cta mra fdg suv dwi adc spect xr kub
""".split()


def _words(node) -> set[str]:
    """Every word of every string in a parsed YAML tree."""
    if isinstance(node, dict):
        return set().union(*(_words(k) | _words(v) for k, v in node.items())) if node else set()
    if isinstance(node, list):
        return set().union(*(_words(v) for v in node)) if node else set()
    return {w.lower() for w in re.findall(r"[A-Za-z]+", str(node))}


@lru_cache(maxsize=1)
def report_vocabulary() -> frozenset[str]:
    """Lower-case words that are report language, never a name: the report rules' dictionaries, spaCy's
    English stop words, month names and the header/role words above."""
    from importlib import resources

    words: set[str] = set(STOP_WORDS) | _MONTHS | set(_REPORT_WORDS)
    data = resources.files("pipeline.report").joinpath("data")
    for name in ("organs.yaml", "abnormalities.yaml", "modifiers.yaml", "sections.yaml", "radlex_synonyms.yaml"):
        path = data.joinpath(name)
        if path.is_file():
            words |= _words(yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader))
    return frozenset(w for w in words if len(w) > 1)


@lru_cache(maxsize=1)
def given_names() -> frozenset[str]:
    """Lower-case given names of ``LOCALES`` that are not report vocabulary ("Iris", "May" and "Grace"-like
    words that are also anatomy, months or report words are left out: the name rules then need a title, a
    credential or a role word for them)."""
    names: set[str] = set()
    for locale in LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attr in ("first_names", "first_names_male", "first_names_female", "first_names_nonbinary"):
            names |= {n.lower() for n in (getattr(provider, attr, None) or ()) if n.isalpha()}
    vocabulary = report_vocabulary()
    return frozenset(n for n in names if len(n) > 1 and n not in vocabulary)
