"""The PHI recognizers: Presidio's pattern framework (presidio-analyzer) with no NLP model.

Presidio's own recognizers are used where they fit report text: its date patterns (the confident ones), its
e-mail pattern (without the tldextract check, which would fetch the public suffix list at run time), its IP
recognizer and its phone recognizer (python-phonenumbers). Report-specific patterns are added as
``PatternRecognizer``s: names after a title, a role word or before a credential, dates with month names,
record and accession numbers, addresses and facility names. One custom recognizer finds untitled names
that start with a known given name ("The liver of Jane Doeberg").

Regexes are compiled by Presidio with the ``regex`` module (variable-width look-behind, Unicode classes).
Look-behinds keep the cue words ("signed by", "Dr.") in the text: only the identifier is replaced.
"""

from __future__ import annotations

import sys
from functools import lru_cache

import regex as re

from pipeline.deid.names import given_names, report_vocabulary

# Presidio's package imports its optional Hugging Face NLP engine, which imports transformers where it is
# installed (it is, for the text encoder): seconds per process for code never called here. A None entry in
# sys.modules makes that guarded import take its "not installed" path; it is removed again at once.
_HIDE = "transformers" not in sys.modules
if _HIDE:
    sys.modules["transformers"] = None  # type: ignore[assignment]
try:
    from presidio_analyzer import EntityRecognizer, LocalRecognizer, Pattern, PatternRecognizer, RecognizerResult
    from presidio_analyzer.predefined_recognizers import DateRecognizer, EmailRecognizer, IpRecognizer, PhoneRecognizer
finally:
    if _HIDE:
        del sys.modules["transformers"]

CASE = re.MULTILINE | re.DOTALL  # the name, address and month rules read capitals
NOCASE = CASE | re.IGNORECASE

# -- building blocks -------------------------------------------------------------------------------
_UP, _LO = r"\p{Lu}", r"\p{Ll}"
_WORD = rf"(?:{_UP}{_LO}+(?:{_UP}{_LO}+)?(?:[-']{_UP}?{_LO}+)*|{_UP}'{_UP}{_LO}+)"  # Jane, McAllister, Obi-Nwosu, O'Donnell
_CAPS = rf"(?:{_UP}{{2,}}(?:[-']{_UP}+)*)"  # DOE, KILIÇARSLAN
_INITIAL = rf"(?:{_UP}\.)"
_PARTICLE = r"(?:van|von|der|den|de|del|della|da|di|du|la|le|bin|ibn|al|el|ten|ter|dos|das)"
_TOKEN = rf"(?:{_WORD}|{_CAPS}|{_INITIAL})"
_NAME = rf"{_TOKEN}(?:(?:[ \t]+|(?<=\.))(?:{_PARTICLE}[ \t]+)*{_TOKEN}){{0,3}}"  # up to four tokens: "Henrik van der Berg"
_LAST_FIRST = rf"{_TOKEN},\s*{_TOKEN}(?:\s+{_INITIAL})?"  # DOEBERG, JANE A.
_TITLE = r"(?:Drs?|Mrs?|Ms|Mx|Miss|Prof|Professor|Doctor|Doç|Uzm|Op|Assoc|Assist|Asst|Sister|Nurse|GP)"
_CREDENTIAL = r"(?:MD|M\.D\.|DO|D\.O\.|RN|NP|PA-C|PA|PhD|Ph\.D\.|MBBS|MBChB|FRCR|FRCPC|FRCS|DMRD|RT|ARRT|CNMT|RRA)"
_ROLE_VERB = (r"(?i:(?:electronically\s+)?(?:e-)?signed|dictated|transcribed|read|reviewed|interpreted|verified|approved|"
              r"reported|performed|discussed|communicated|conveyed|relayed|called|paged|notified|informed|faxed|sent|"
              r"copied|referred|ordered|requested|seen|examined|consulted|reached|given(?=\s+to))")
_ROLE_NOUN = (r"(?i:patient(?:'s)?|pt|name|physician|clinician|provider|surgeon|doctor|radiologist|resident|fellow|nurse|"
              r"technologist|tech|consultant|attending|referrer|cc|attn|guardian|mother|father|husband|wife|son|daughter|"
              r"spouse|sister|brother|partner|relative|caregiver|next of kin|contact)")
_MONTH = (r"(?:January|February|March|April|May|June|July|August|September|October|November|December|"
          r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)")
_FULL_MONTH_NOT_MAY = r"(?:January|February|March|April|June|July|August|September|October|November|December)"
_DAY = r"(?:0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?"
_YEAR = r"(?:19|20)\d{2}"
_STREET = (r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Close|Crescent|"
           r"Circle|Highway|Hwy|Parkway|Pkwy|Square|Sq|Trail|Row|Strasse|Straße|Caddesi|Sokak|Cd|Sk)")
_STATES = ("AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|"
           "SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|DC")
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}"
_FACILITY = r"(?:Hospital|Medical\s+Cent(?:er|re)|Health\s+Cent(?:er|re)|Imaging\s+Cent(?:er|re)|Clinic|Infirmary|Hastanesi)"
_FACILITY_FIRST = r"(?:Hôpital|Hospital|Klinikum|Clinique|Ospedale|Hospital\s+de)"

# -- patterns (entity, name, regex, flags) ---------------------------------------------------------
NAME_PATTERNS = [
    ("title", rf"(?<=(?<!\p{{L}}){_TITLE}\.?\s*(?:{_TITLE}\.?\s*)*)(?:{_LAST_FIRST}|{_NAME})"),
    ("credential", rf"(?:{_LAST_FIRST}|{_NAME})(?=,?\s*{_CREDENTIAL}\b)"),
    ("role verb", rf"(?<=\b{_ROLE_VERB}(?:\s+(?i:by|to|with|from|for))?:?\s+(?:(?i:the)\s+)?(?:(?i:referring|ordering|attending|"
                  rf"on-call|covering)\s+)?(?:{_ROLE_NOUN}\s*,?\s+)?)(?:{_LAST_FIRST}|{_NAME})"),
    ("role noun", rf"(?<=\b{_ROLE_NOUN}(?:\s+(?i:name|physician|provider|radiologist|clinician))?\s*[:,-]?\s+)(?:{_LAST_FIRST}|{_NAME})"),
]
DATE_PATTERNS = [
    ("day month year", rf"\b{_DAY}(?:\s+of)?[\s.-]+{_MONTH}\.?,?[\s.-]+(?:{_YEAR}\d?|\d{{2}})\b"),
    ("month day year", rf"\b{_MONTH}\.?\s+{_DAY},?\s+{_YEAR}\b"),
    ("month year", rf"\b{_MONTH}\.?,?[\s-]+{_YEAR}\b"),
    ("day month", rf"\b{_DAY}(?:\s+of)?\s+{_MONTH}\b"),
    ("month day", rf"\b{_MONTH}\.?\s+{_DAY}\b(?![.,]?\d)"),
    ("full month", rf"\b{_FULL_MONTH_NOT_MAY}\b"),
    ("may in context", r"(?<=\b(?i:dated|in|on|since|from|until|till|during|early|late|mid|of)\s+)May\b"),
    ("numeric", rf"\b(?:{_DAY}[./-](?:0?[1-9]|1[0-2])|(?:0?[1-9]|1[0-2])[./-]{_DAY})[./-](?:{_YEAR}|\d{{2}})\b(?![./-]\d)"),
    ("iso", rf"\b{_YEAR}[./-](?:0?[1-9]|1[0-2])[./-](?:0?[1-9]|[12]\d|3[01])\b"),
    ("compact", rf"\b{_YEAR}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b"),
    ("month/year", rf"\b(?:0?[1-9]|1[0-2])/{_YEAR}\b"),
    ("month/day after a date word", r"(?<=\b(?i:on|of|dated|from|since|until|till|prior|previous|study|exam|examination|scan|"
                                    r"comparison|compared (?:to|with))\s+)(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])\b(?![/.]?\d)"),
]
ID_PATTERNS = [
    ("labelled number", r"(?<=\b(?i:mrn|medical\s+record(?:\s+(?:number|no\.?|#))?|record\s+(?:number|no\.?|#)|accession(?:\s+(?:number|no\.?|#))?|"
                        r"acc\.?|acc#|patient\s+(?:id|identifier|number)|id|identifier|case\s+(?:number|no\.?|#)|exam\s+(?:number|no\.?|#)|"
                        r"study\s+(?:number|no\.?|#|id|uid)|order\s*(?:number|no\.?|#)?|encounter|visit\s+(?:number|no\.?)|account\s+(?:number|no\.?)|"
                        r"ssn|social\s+security\s+(?:number|no\.?)|insurance\s+(?:number|no\.?|id)|member\s+id|policy\s+(?:number|no\.?)|"
                        r"nhs\s+(?:number|no\.?)|specimen\s+(?:number|no\.?)|requisition\s+(?:number|no\.?))\s*[:#]?\s*)"
                        r"(?=[A-Z0-9 -]*\d[A-Z0-9 -]*\d[A-Z0-9 -]*\d)[A-Z0-9](?:[A-Z0-9-]|\s(?=\d))*[A-Z0-9]"),
    ("ssn", r"\b\d{3}-\d{2}-\d{4}\b"),
    ("long number", r"(?<![\d.,])\b\d{5,}\b(?![.,]\d)"),
    ("lettered number", r"\b[A-Z]{1,4}-?\d{4,}[A-Z0-9]*\b"),
    ("grouped number", r"\b\d{2,}(?:-[A-Z0-9]{1,6}){1,4}-\d{3,}\b"),
    ("uid", r"\b\d+(?:\.\d+){4,}\b"),
]
PHONE_PATTERNS = [
    ("extension", r"(?<=\b(?i:ext\.?|extension|pager|beeper|bleep|pgr)\s*#?\s*)\d{3,6}\b"),
    ("local number", r"(?<=\b(?i:phone|tel\.?|telephone|cell|mobile|call|fax|reached at)\s*:?\s*)\d{3}[-.]\d{4}\b"),
    ("dotted number", r"\b\d{3}\.\d{3}\.\d{4}\b"),
]
ADDRESS_PATTERNS = [
    ("street", rf"\b\d{{1,6}}[A-Za-z]?\s+(?:{_UP}[\p{{L}}'.-]*\s+){{0,4}}{_STREET}\b\.?(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Floor|Fl)\.?\s*#?\s*\w+)?"
               rf"(?:,\s*{_UP}[\p{{L}}'-]+(?:\s{_UP}[\p{{L}}'-]+)*)?(?:,?\s+(?:{_STATES})\b)?(?:\s+\d{{5}}(?:-\d{{4}})?|\s+{_UK_POSTCODE}\b)?"),
    ("city state zip", rf"\b{_UP}{_LO}+(?:\s{_UP}{_LO}+)?,\s+(?:{_STATES})\s+\d{{5}}(?:-\d{{4}})?\b"),
    ("po box", rf"\b(?i:p\.?\s?o\.?\s+box)\s+\d+(?:,\s*{_UP}[\p{{L}}'-]+(?:\s{_UP}[\p{{L}}'-]+)*)?(?:,?\s+(?:{_STATES})\b)?(?:\s+\d{{5}}(?:-\d{{4}})?)?"),
    ("uk postcode", rf"\b{_UK_POSTCODE}\b"),
]
LOCATION_PATTERNS = [
    ("facility", rf"\b(?:St\.?\s+)?{_UP}[\p{{L}}'.-]+(?:\s+{_UP}[\p{{L}}'.-]+){{0,4}}\s+{_FACILITY}\b"),
    ("facility first", rf"\b{_FACILITY_FIRST}\s+{_UP}[\p{{L}}'-]+(?:\s+{_UP}[\p{{L}}'-]+){{0,3}}"),
]
URL_PATTERNS = [
    ("url", r"(?i)\bhttps?://[^\s<>\"']+[^\s<>\"'.,;:)]"),
    ("www", r"(?i)\bwww\d{0,3}\.[a-z0-9-]+(?:\.[a-z0-9-]+)+(?:/[^\s<>\"']*[^\s<>\"'.,;:)])?"),
]


class _Email(EmailRecognizer):
    """Presidio's e-mail pattern; its result check calls tldextract, which fetches the public suffix list
    from the network at first use: not here (the pattern already demands a dotted domain)."""

    def validate_result(self, pattern_text: str):  # noqa: D102
        return None


_NAME_GAP = re.compile(rf" (?:{_PARTICLE} )*")


class GivenNameRecognizer(LocalRecognizer):
    """An untitled name that starts with a known given name, followed by one to three name words that are
    not report vocabulary: "Jane Doeberg", "Ana Sofia Carvalho", "Rukiye KILIÇARSLAN"; also "Doeberg, Jane"."""

    _WORDS = re.compile(rf"{_WORD}|{_CAPS}|{_INITIAL}")

    def __init__(self) -> None:
        super().__init__(supported_entities=["NAME"], name="GivenNameRecognizer")

    def load(self) -> None:  # noqa: D102
        pass

    def analyze(self, text: str, entities, nlp_artifacts=None) -> list[RecognizerResult]:  # noqa: D102
        given, vocabulary = given_names(), report_vocabulary()
        words = [(m.start(), m.end(), m.group()) for m in self._WORDS.finditer(text)]
        out = []
        for n, (start, end, word) in enumerate(words):
            if not (word[0].isupper() and word[1:2].islower()) or word.lower() not in given:
                continue
            last = end
            for s, e, w in words[n + 1 : n + 4]:  # up to three more name words, a space (or a particle) apart
                if not _NAME_GAP.fullmatch(text, last, s) or w.rstrip(".").lower() in vocabulary:
                    break
                last = e
            if last > end:
                out.append(self._result(start, last))
                continue
            # "Doeberg, Jane": a name word, a comma, the given name
            if n and text[words[n - 1][1]:start] == ", " and words[n - 1][2].lower() not in vocabulary and words[n - 1][2][0].isupper():
                out.append(self._result(words[n - 1][0], end))
        return out

    def _result(self, start: int, end: int) -> RecognizerResult:
        return RecognizerResult("NAME", start, end, 0.6, recognition_metadata={
            RecognizerResult.RECOGNIZER_NAME_KEY: self.name, RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})


def _patterns(entity: str, rules: list[tuple[str, str]], flags: int) -> PatternRecognizer:
    return PatternRecognizer(supported_entity=entity, name=f"{entity.lower()}_patterns", global_regex_flags=flags,
                             patterns=[Pattern(name, regex, 0.6) for name, regex in rules])


@lru_cache(maxsize=1)
def recognizers() -> tuple[EntityRecognizer, ...]:
    """Every recognizer, built once per process. Entities: NAME, DATE, PHONE, ID, ADDRESS, LOCATION, EMAIL, URL."""
    presidio_dates = [p for p in DateRecognizer.PATTERNS if p.score >= 0.5]  # not its bare m/yy, which reads "3/10" as a date
    return (
        _patterns("NAME", NAME_PATTERNS, CASE),
        GivenNameRecognizer(),
        DateRecognizer(patterns=presidio_dates, supported_entity="DATE"),
        _patterns("DATE", DATE_PATTERNS, CASE),
        _patterns("ID", ID_PATTERNS, CASE),
        PhoneRecognizer(supported_entity="PHONE", supported_regions=("US", "GB", "DE", "FR", "TR", "IN", "NL", "IT")),
        _patterns("PHONE", PHONE_PATTERNS, CASE),
        _patterns("ADDRESS", ADDRESS_PATTERNS, CASE),
        _patterns("LOCATION", LOCATION_PATTERNS, CASE),
        _Email(supported_entity="EMAIL"),
        IpRecognizer(supported_entity="URL"),
        _patterns("URL", URL_PATTERNS, CASE),
    )
