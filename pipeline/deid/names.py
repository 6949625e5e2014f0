"""Word lists the name rules read: given names (to find an untitled "Jane Doeberg"), given names and surnames
together (to accept a name written in lower case or capitals after a weak cue: "patient hannah weiss"), report
vocabulary (words that are never a name in a report, to stop a name where the sentence goes on; scanner makers
and models are report language too) and common English words (a place named without a facility word must hold a
word that is none: "performed at Mount Sinai", not "performed at End of Treatment").

Given names and surnames come from Faker's person providers (kept lists from national statistics, many
locales), common English words from its en_US lorem provider (about a thousand), read as data; nothing is
generated. Report vocabulary comes from the report rules' own dictionaries (pipeline/report/data) plus spaCy's
English stop words and the words of report headers and roles.
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache

import yaml
from spacy.lang.en.stop_words import STOP_WORDS

# locales whose given names are in Latin script (a report in English spells names so); zh_CN and ja_JP for their
# romanised lists only
LOCALES = (
    "en_US",
    "en_GB",
    "en_IE",
    "ga_IE",
    "en_IN",
    "en_PK",
    "en_NG",
    "en_KE",
    "en_NZ",
    "en_TH",
    "de_DE",
    "de_AT",
    "de_CH",
    "fr_FR",
    "fr_BE",
    "fr_CA",
    "es_ES",
    "es_MX",
    "es_CO",
    "es_CL",
    "it_IT",
    "pt_BR",
    "pt_PT",
    "nl_NL",
    "nl_BE",
    "pl_PL",
    "cs_CZ",
    "sk_SK",
    "sl_SI",
    "hr_HR",
    "sv_SE",
    "da_DK",
    "no_NO",
    "fi_FI",
    "is_IS",
    "et_EE",
    "lt_LT",
    "lv_LV",
    "ro_RO",
    "hu_HU",
    "tr_TR",
    "az_AZ",
    "uz_UZ",
    "id_ID",
    "vi_VN",
    "sw",
    "yo_NG",
    "ig_NG",
    "ha_NG",
    "tw_GH",
    "zu_ZA",
    "zh_CN",
    "ja_JP",
)
_GIVEN = ("first_names", "first_names_male", "first_names_female", "first_names_nonbinary", "first_romanized_names")
_SURNAMES = ("last_names", "last_names_male", "last_names_female", "last_romanized_names")
_MONTHS = {
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
}
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
priv doz univ med rer nat habil dott ssa dra sra srta mme mlle herr frau dhr mevr
pacs ris his ct mri pet icu er ed or ap pa us kvp mas mgy dlp ctdi hu iv po
signed dictated transcribed read reviewed interpreted verified approved reported performed discussed communicated
conveyed relayed called paged notified informed faxed sent copied referred ordered requested seen examined consulted
reached given contact correspondence location address home usg hrct cta mra fdg suv dwi adc spect xr kub
today yesterday tomorrow tonight morning afternoon evening night hours hrs pm regarding telephone letter meeting
cardiology oncology urology neurology neurosurgery gastroenterology hepatology pulmonology respiratory haematology
hematology nephrology endocrinology rheumatology dermatology gynaecology gynecology obstetrics orthopaedics
orthopedics ent ophthalmology paediatrics pediatrics psychiatry anaesthesia anesthesia anaesthetics itu registrar
consultant sho intern officer mdt board endoscopy ultrasound histology microbiology trauma emergency medicine
geriatrics palliative interventional colorectal plastics maxillofacial clinic theatre nursing staff physiotherapy
colleague colleagues family relatives parents multidisciplinary oncologist urologist cardiologist injection error
siemens healthineers philips toshiba canon hitachi fujifilm agfa carestream hologic esaote samsung mindray neusoft
shimadzu ge bracco bayer guerbet medtronic somatom revolution aquilion ingenuity vitrea syngo
associates partners services network group inc ltd llc corp company
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


_LATIN = re.compile(r"[A-Za-zÀ-ÖØ-öø-ɏḀ-ỿ'-]+")  # Latin letters with their accents (Latin-1, Extended-A/B, Additional)


def _faker_names(attrs: tuple[str, ...]) -> set[str]:
    """Lower-case Latin-script names of ``LOCALES`` in the given Faker provider lists (a dict's keys)."""
    names: set[str] = set()
    for locale in LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attr in attrs:
            value = getattr(provider, attr, None)
            if isinstance(value, (list, tuple, dict)):  # some locales keep a name -> weight dict; a few a property
                names |= {n.lower() for n in value if isinstance(n, str) and _LATIN.fullmatch(n)}
    return names


@lru_cache(maxsize=1)
def given_names() -> frozenset[str]:
    """Lower-case given names of ``LOCALES`` that are not report vocabulary ("Iris", "May" and "Grace"-like
    words that are also anatomy, months or report words are left out: the name rules then need a title, a
    credential or a role word for them)."""
    names = {n for n in _faker_names(_GIVEN) if "-" not in n and "'" not in n}
    vocabulary = report_vocabulary()
    return frozenset(n for n in names if len(n) > 1 and n not in vocabulary)


@lru_cache(maxsize=1)
def name_words() -> frozenset[str]:
    """Lower-case given names and surnames of ``LOCALES`` ("weiss", "o'brien", "dubois") that are not report
    vocabulary: the words a name in lower case or capitals must start with where its cue is weak."""
    names = set(given_names()) | _faker_names(_SURNAMES)
    vocabulary = report_vocabulary()
    return frozenset(n for n in names if len(n) > 1 and n not in vocabulary)


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """Lower-case common English words (Faker's en_US lorem list) and report vocabulary: words a place name may
    hold ("Hospital of the Good Shepherd") but not consist of."""
    from faker.providers.lorem.en_US import Provider

    return frozenset({w.lower() for w in Provider.word_list} | report_vocabulary())
