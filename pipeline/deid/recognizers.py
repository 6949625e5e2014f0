"""The PHI recognizers: Presidio's pattern framework (presidio-analyzer) with no NLP model.

Presidio's own recognizers are used where they fit report text: its date patterns (the confident ones), its
e-mail pattern (without the tldextract check, which would fetch the public suffix list at run time), its IP
recognizer and its phone recognizer (python-phonenumbers). Report-specific patterns are added as
``PatternRecognizer``s: names after a title, a role word or before a credential, dates with month names (in any
case beside a year, or written together: 11JAN2023), ids after the word that names them (MRN, MR#, accession,
subject, trial, specimen, ...) in any format, phone numbers in any grouping after a phone word or where the shape
says phone, ages over 89 (in digits or words), and addresses. Two custom recognizers find names: untitled ones that
start with a known given name ("The liver of Jane Doeberg") and ones after a cue in any case ("seen by dr. hannah
weiss", "PT: GARCIA LOPEZ, MARIA", "Referring: SHARMA, ANIKET"). Two find places: facility names, a run of
capitalised words around a word naming a place of care in one of several languages ("Royal Infirmary of
Edinburgh", "Clínica Universidad de Navarra", "Universitätsklinikum Heidelberg"), and places named without such a
word after "performed at", "transferred from", ... ("Mount Sinai Beth Israel").

Regexes are compiled by Presidio with the ``regex`` module (variable-width look-behind, Unicode classes).
Look-behinds keep the cue words ("signed by", "Dr.", "MRN") in the text: only the identifier is replaced.
"""

from __future__ import annotations

import sys
from functools import lru_cache

import regex as re

from pipeline.deid import _EPONYM_HEAD  # the package is loaded before this module (recognizers are built on first use)
from pipeline.deid.names import common_words, given_names, name_words, report_vocabulary

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
# Jane, McAllister, Obi-Nwosu, O'Brien-Kelly
_WORD = rf"(?:{_UP}(?:['’]{_UP})?{_LO}+(?:{_UP}{_LO}+)?(?:[-'’]{_UP}?{_LO}+)*)"
_CAPS = rf"(?:(?:{_UP}['’])?{_UP}{{2,}}(?:[-'’]{_UP}+)*)"  # DOE, KILIÇARSLAN, O'BRIEN-KELLY
_INITIAL = rf"(?:{_UP}\.)"
_PARTICLE = r"(?:van|von|der|den|de|del|della|da|di|du|la|le|bin|ibn|al|el|ten|ter|dos|das)"
_TOKEN = rf"(?:{_WORD}|{_CAPS}|{_INITIAL})"
# up to five tokens: "Ana Sofia Carvalho da Silva"
_NAME = rf"{_TOKEN}(?:(?:[ \t]+|(?<=\.))(?:{_PARTICLE}[ \t]+)*{_TOKEN}){{0,4}}"
_LAST_FIRST = rf"{_TOKEN},\s*{_TOKEN}(?:\s+{_INITIAL})?"  # DOEBERG, JANE A.
_TITLE = (
    r"(?:Drs?|Mrs?|Ms|Mx|Miss|Prof|Professor|Doctor|Doç|Uzm|Op|Assoc|Assist|Asst|Sister|Nurse|GP|Priv\.-Doz|Univ\.-Prof|"
    r"Doz|Pr|Dott\.ssa|Dott|Dra|Sra?|Srta|Mme|Mlle|Herr|Frau|Dhr|Mevr)"
)
# academic degrees written after a title: "Prof. Dr. med. Klaus-Dieter Hoffmann", "Dr. rer. nat. Weber", "Dr. h.c."
_DEGREE = r"(?:med|dent|vet|phil|habil|univ|rer\.\s*(?:nat|medic|pol)|h\.\s*c)\."
_CREDENTIAL = r"(?:MD|M\.D\.|DO|D\.O\.|RN|NP|PA-C|PA|PhD|Ph\.D\.|MBBS|MBChB|FRCR|FRCPC|FRCS|DMRD|RT|ARRT|CNMT|RRA)"
_ROLE_VERB = (
    r"(?i:(?:electronically\s+)?(?:e-)?signed|dictated|transcribed|read|reviewed|interpreted|verified|approved|"
    r"reported|performed|discussed|communicated|conveyed|relayed|called|paged|notified|informed|faxed|sent|"
    r"copied|referred|ordered|requested|seen|examined|consulted|reached|given(?=\s+to)|"
    # verbs that name a person only with "by": "finalized by", "protocolled by", "co-signed by"
    r"(?:finali[sz]ed|authored|prepared|protocol(?:l)?ed|edited|amended|addended|attested|co-?signed|supervised|"
    r"over-?read|vetted|justified|acknowledged)(?=\s+by\b))"
)
_ROLE_NOUN = (
    r"(?i:patient(?:'s)?|pt|name|physician|clinician|provider|surgeon|doctor|radiologist|resident|fellow|nurse|"
    r"technologist|tech|consultant|attending|referrer|cc|attn|guardian|mother|father|husband|wife|son|daughter|"
    r"spouse|sister|brother|partner|relative|caregiver|next of kin|contact)"
)
_MONTH = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December|"
    r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)"
)
_FULL_MONTH_NOT_MAY = r"(?:January|February|March|April|June|July|August|September|October|November|December)"
_DAY = r"(?:0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?"
_ORDINAL_OF = (
    r"(?i:(?:twenty|thirty)[- ]?(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth)|first|second|third|"
    r"fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth|fourteenth|fifteenth|sixteenth|"
    r"seventeenth|eighteenth|nineteenth|twentieth|thirtieth)\s+of"
)  # "the third of March"
_YEAR = r"(?:19|20)\d{2}"
_STREET = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Close|Crescent|"
    r"Circle|Highway|Hwy|Parkway|Pkwy|Square|Sq|Trail|Row|Strasse|Straße|Caddesi|Sokak|Cd|Sk)"
)
_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|"
    "SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|DC"
)
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}"

# -- patterns (entity, name, regex, flags) ---------------------------------------------------------
NAME_PATTERNS = [
    ("title", rf"(?<=(?<!\p{{L}}){_TITLE}\.?\s*(?:(?:{_TITLE}\.?|{_DEGREE})\s*)*)(?:{_LAST_FIRST}|{_NAME})"),
    ("credential", rf"(?:{_LAST_FIRST}|{_NAME})(?=,?\s*{_CREDENTIAL}\b)"),
    (
        "role verb",
        rf"(?<=\b{_ROLE_VERB}(?:\s+(?i:by|to|with|from|for))?:?\s+(?:(?i:the)\s+)?(?:(?i:referring|ordering|attending|"
        rf"on-call|covering)\s+)?(?:{_ROLE_NOUN}\s*,?\s+)?)(?:{_LAST_FIRST}|{_NAME})",
    ),
    (
        "role noun",
        rf"(?<=\b{_ROLE_NOUN}(?:\s+(?i:name|physician|provider|radiologist|clinician))?\s*[:,-]?\s+)(?:{_LAST_FIRST}|{_NAME})",
    ),
]
_MONTH_ANY = rf"(?i:{_MONTH})"  # beside a year or a day a month name is a date in any case: "march 2021", "03-MAR-2021"
_MONTH_CAPS = _MONTH.upper()
_YEAR_OR_SHORT = rf"(?:{_YEAR}|['’]\d{{2}})"  # 2021, '21
DATE_PATTERNS = [
    (
        "day month year",
        rf"\b(?:{_DAY}(?:\s+(?i:of))?|{_ORDINAL_OF})[\s./-]*{_MONTH_ANY}\.?,?[\s./-]*(?:{_YEAR}\d?|['’]?\d{{2}})\b",
    ),
    ("month day year", rf"\b{_MONTH_ANY}\.?[\s-]+{_DAY},?[\s-]+{_YEAR_OR_SHORT}\b"),
    ("month year", rf"\b{_MONTH_ANY}\.?,?(?:\s+(?i:of))?[\s/-]+{_YEAR_OR_SHORT}\b"),
    ("month year together", rf"\b(?:{_MONTH}|{_MONTH_CAPS}){_YEAR}\b"),  # JAN2023, Jan2023
    ("month-yy", rf"\b(?:{_MONTH}|{_MONTH_CAPS})[-/]\d{{2}}\b(?![-/.]\d)"),  # Mar-21, MAR-21
    ("year month day", rf"\b{_YEAR}[\s./-]{_MONTH_ANY}\.?[\s./-]{_DAY}\b"),
    ("day month", rf"\b(?:{_DAY}(?:\s+of)?|{_ORDINAL_OF})\s+{_MONTH}\b"),
    ("month day", rf"\b{_MONTH}\.?\s+{_DAY}\b(?![.,]?\d)"),
    (
        "full month",
        rf"\b(?:{_FULL_MONTH_NOT_MAY}|{_FULL_MONTH_NOT_MAY.upper()})\b(?!\s+(?i:fractures?)\b)",
    ),  # a march fracture
    ("may in context", r"(?<=\b(?i:dated|in|on|since|from|until|till|during|early|late|mid|of)\s+)May\b"),
    (
        "numeric",
        rf"\b(?:{_DAY}[./-](?:0?[1-9]|1[0-2])|(?:0?[1-9]|1[0-2])[./-]{_DAY})[./-](?:{_YEAR}|\d{{2}})\b(?![./-]\d)",
    ),
    ("iso", rf"\b{_YEAR}[./-](?:0?[1-9]|1[0-2])[./-](?:0?[1-9]|[12]\d|3[01])(?!\d)"),  # also 2021-03-12T10:22
    ("compact", rf"\b{_YEAR}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b"),
    ("month/year", rf"\b(?:0?[1-9]|1[0-2])/{_YEAR}\b"),
    ("month.year", rf"(?<![\d.,])(?:0[1-9]|1[0-2])\.{_YEAR}\b(?![.,]\d)"),  # 03.2021
    # 3/14, and day first 15/1 (never the idiom 24/7)
    (
        "month/day or day/month after a date word",
        r"(?=\d{1,2}/\d)(?!24/7\b)(?<=\b(?i:on|of|dated|from|since|until|till|prior|"
        r"previous|study|exam|examination|scan|comparison|compared (?:to|with))\s+)"
        r"(?:(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])|(?:1[3-9]|2\d|3[01])/(?:0?[1-9]|1[0-2]))"
        r"\b(?![/.]?\d)",
    ),
]
# An id after the word that names it, in any format with three digits or more: "subject number 104-0332",
# "Participant ID: LUNG-07-0193", "trial no. ONC/2021/0044", "MRN (3349120)", "NHS number 943 476 5919".
# Strong labels take any such value; weak ones ("case", "study", "patient", ...) one after a qualifier ("case
# no.", "order #") or, bare, one that could not be a count or a measurement (letters with digits, or digits in
# groups, four digits or more: "case 2021-0557"). Never a bare year, never a value followed by a unit. (Each
# starts by looking for a digit ahead, which most places in a report fail at once, before its look-behind.)
_ID_STRONG = (
    r"mrn|mr\s*(?:no\b\.?|nr\b\.?|num(?:ber)?\b|#|n[º°])|med(?:ical)?\s+rec(?:ord)?|urn|accession|acc|subject|"
    r"participant|trial|enrol(?:l)?ment|enrolled\s+as|"
    r"registration|specimen|nhs|chi|ssn|social\s+security|requisition|barcode|randomi[sz]ation|identifier|id|uid"
)
_ID_WEAK = (
    r"case|study|sample|patient|pt|exam|examination|order|reference|ref|report|unit|visit|encounter|account|episode|"
    r"record|member|policy|insurance|lab|laboratory|pathology|histology|biopsy|kit|cohort|registry|research|hospital|"
    r"hosp|screening|referral|request|ticket|file|protocol|chart|folder|admission|claim|job|booking|appointment|appt|invoice|csn"
)
_ID_QUALIFIER = r"(?:(?:number|no|num|nr|id|identifier|code|uid|ref|reference)\b\.?|#|n[º°])"
_ID_SEP = r"(?:\s*[:#=(]|\s+(?i:is|was))?\s*"
_ID_END = (
    r"(?![A-Za-z0-9]|[-/.][A-Za-z0-9])(?![ \t]*(?i:mm|cm|m|ml|l|mg|g|kg|mcg|hu|kvp|mas|mgy|msv|mmhg|%|days?|weeks?|"
    r"months?|years?|hours?|hrs?|min|minutes?|seconds?|s)\b)"
)
_ID_VALUE = (
    r"(?!(?:19|20)\d{2}\b(?![-/.]\w))(?=(?:[A-Za-z/.-]*\d){3})"
    r"[A-Za-z0-9](?:[A-Za-z0-9]|[-/.](?=[A-Za-z0-9])|[ ](?=\d{3}))*" + _ID_END
)
_ID_VALUE_BARE = (
    # not a date: "exam 2/9/2023"
    r"(?!(?:\d{1,2}[./-]\d{1,2}[./-](?:19|20)?\d{2}|(?:19|20)\d{2}[./-]\d{1,2}[./-]\d{1,2})\b(?![-/.]\w))"
    r"(?=(?:[A-Za-z/.-]*\d){4})(?:[A-Za-z]*\d[A-Za-z0-9]*(?:[-/.][A-Za-z0-9]+)+|[A-Za-z]+\d[A-Za-z0-9]*)" + _ID_END
)
ID_PATTERNS = [
    (
        "labelled id",
        rf"\b(?=[A-Za-z]{{0,10}}[ ]?[A-Za-z0-9/.-]*\d)(?<=\b(?i:{_ID_STRONG})(?:\s*(?i:{_ID_QUALIFIER}))*{_ID_SEP})"
        rf"(?:[A-Za-z]{{2,10}}[ ](?=\d))?{_ID_VALUE}",
    ),  # EudraCT 2019-...
    (
        "labelled id, qualified",
        rf"\b(?=[A-Za-z0-9/.-]*\d)(?<=\b(?i:{_ID_WEAK})(?:\s*(?i:{_ID_QUALIFIER}))+{_ID_SEP}){_ID_VALUE}",
    ),
    ("labelled id, bare", rf"\b(?=[A-Za-z0-9/.-]*\d)(?<=\b(?i:{_ID_WEAK}){_ID_SEP}){_ID_VALUE_BARE}"),
    ("ssn", r"\b\d{3}-\d{2}-\d{4}\b"),
    ("long number", r"(?<![\d.,])\b\d{5,}\b(?![.,]\d)"),
    ("lettered number", r"\b[A-Z]{1,4}\d{0,4}[-/]?\d{4,}[A-Z0-9]*\b"),  # CT2301145, S21-00452
    ("grouped number", r"\b(?!\d{3}-\d{3}-\d{4}\b)\d{2,}(?:-[A-Z0-9]{1,6}){1,4}-\d{3,}\b"),  # not a phone's 3-3-4
    ("uid", r"\b\d+(?:\.\d+){4,}\b"),
]
# Phone numbers: short ones (extensions, pagers, bleeps) after their word; numbers of seven digits or more in any
# grouping (spaces, dots, dashes, an area code in parentheses, a country code) after a phone word within a few
# words ("by phone, 555-0190", "call the ward on 020 7946 0321"), and without one where the shape says phone
# (+44 ..., (0161) 496 0000, 617-555-0142). Presidio's phonenumbers recognizer adds the national formats.
_PHONE_WORD = (
    r"(?i:phone[ds]?|telephone[ds]?|tel|call(?:ed|ing)?|contact(?:ed|able)?|cell|mobile|mob|fax(?:ed)?|ring|rang|"
    r"dial(?:led)?|reach(?:ed|able)?|switchboard|whatsapp|sms)"
)
_PHONE_SHAPE = r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{2,12}(?:[ .-]\d{2,6}){0,5}(?!\d)"
PHONE_PATTERNS = [
    (
        "extension",
        r"(?<=\b(?i:ext|extn|extension|pager|beeper|bleep|bleeped|pgr)\b\.?(?:\s*(?i:no\b\.?|number|#|:|on|at))*\s*\(?\s*)\d{3,6}\b",
    ),
    (
        "extension after a number",
        r"(?<=\d{3}[-. ]\d{4}[ \t]*,?[ \t]*)(?i:x|ext\b\.?|extn\b\.?|extension)[ \t]*\d{2,6}\b",
    ),
    ("dotted number", r"\b\d{3}\.\d{3}\.\d{4}\b"),
]
PHONE_SHAPES = [  # at least seven digits (_PhoneShapes)
    ("after a phone word", rf"(?<=\b{_PHONE_WORD}\b[^\d\n]{{0,30}})(?<![\d+(]){_PHONE_SHAPE}"),
    ("international", r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(\d{1,5}\))?(?:[ .-]?\d{1,5}){2,6}(?!\d)"),
    ("area code in parentheses", r"(?<![\w)])\(\d{2,5}\)[ .-]?\d{2,5}(?:[ .-]\d{2,5}){1,3}(?!\d)"),
    ("grouped 3-3-4", r"\b\d{3}([-. ])\d{3}\1\d{4}\b"),
]
_CUED_RULES = {
    "labelled id",
    "labelled id, qualified",
    "labelled id, bare",
    "extension",
    "extension after a number",
    "after a phone word",
}
# Ages over 89 (HIPAA: an age of 90 or more is an identifier): "92-year-old", "aged 94", "Age: 91", "91F", "in her 90s",
# in words ("ninety-three-year-old", "aged one hundred and one"), beside a sex word ("93 female"), after "a woman of"
# and set off by commas after a name or a person word ("Mrs. Bernadette Leclerc-Fontaine, 93, was brought in"; not
# "heart rate, 92, regular").
_OLD = r"(?:9\d|1[01]\d)"
_UNITS = r"(?:one|two|three|four|five|six|seven|eight|nine)"
_OLD_WORDS = (
    rf"\b(?:[Nn]inety(?:[- ]{_UNITS})?|(?:[Oo]ne|[Aa])[- ]hundred(?:[- ](?:and[- ])?(?:{_UNITS}|ten|eleven|twelve|"
    rf"thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen))?)\b"
)
_YEARS_OLD = r"[ \t]*-?[ \t]*(?i:(?:years?|yrs?|yr|y)[ \t]*-?[ \t]*(?:old|of[ \t]+age)\b|y\.?[ \t]?o\b\.?|y/o\b|yo\b)"
_SEX_WORD = r"[ \t]*-?[ \t]*(?i:male|female|man|woman|lady|gentleman|boy|girl)\b"
_AGE_CUE = r"\b(?i:age[ds]?|age\s*/\s*sex|age\s*/\s*gender)[ \t]*[:=-]?[ \t]*"
_PERSON = r"\b(?i:man|woman|lady|gentleman|male|female|patient|widow|widower|mother|father|resident)"
_PERSON_OF = rf"{_PERSON}[ \t]+(?i:of)[ \t]+"
AGE_PATTERNS = [
    ("years old", rf"(?<![\d.,]){_OLD}(?={_YEARS_OLD})"),
    ("after age", rf"(?<={_AGE_CUE}){_OLD}\b(?![.,]\d|[ \t]*(?i:days?|weeks?|months?|d|w|m|mo)\b)"),
    ("with sex", rf"\b{_OLD}(?=/?[MF]\b)|(?<=\b[MF][ \t]*/[ \t]*){_OLD}\b"),
    ("with a sex word", rf"\b{_OLD}(?={_SEX_WORD})"),
    # a digit ahead first, before the look-behind: most places fail at once
    (
        "person of",
        rf"(?=[19])(?<={_PERSON_OF}){_OLD}\b"
        r"(?![.,]\d|[ \t]*(?i:kg|kilograms?|lbs?|pounds?|cm|mm|ml|%|percent|days?|weeks?|months?)\b)",
    ),
    ("between commas", rf"(?=[19])(?<=(?:\p{{Lu}}[\p{{L}}'’-]*|{_PERSON}),[ \t]*){_OLD}(?=[ \t]*(?:[,;)]|\.(?!\d)|$))"),
    ("in words", rf"{_OLD_WORDS}(?:(?={_YEARS_OLD}|{_SEX_WORD})|(?<=(?:{_AGE_CUE}|{_PERSON_OF}){_OLD_WORDS}))"),
    (
        "decade",
        r"(?<=\b(?i:in[ \t]+(?:his|her|their|the)[ \t]+(?:early[ \t]+|mid[ \t-]*|late[ \t]+)?))(?:9|1[01])0['’]?s\b",
    ),
]
ADDRESS_PATTERNS = [
    (
        "street",
        rf"\b\d{{1,6}}[A-Za-z]?\s+(?:{_UP}[\p{{L}}'.-]*\s+){{0,4}}{_STREET}\b\.?(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Floor|Fl)\.?\s*#?\s*\w+)?"
        rf"(?:,\s*{_UP}[\p{{L}}'-]+(?:\s{_UP}[\p{{L}}'-]+)*)?(?:,?\s+(?:{_STATES})\b)?(?:\s+\d{{5}}(?:-\d{{4}})?|\s+{_UK_POSTCODE}\b)?",
    ),
    ("city state zip", rf"\b{_UP}{_LO}+(?:\s{_UP}{_LO}+)?,\s+(?:{_STATES})\s+\d{{5}}(?:-\d{{4}})?\b"),
    (
        "po box",
        rf"\b(?i:p\.?\s?o\.?\s+box)\s+\d+(?:,\s*{_UP}[\p{{L}}'-]+(?:\s{_UP}[\p{{L}}'-]+)*)?(?:,?\s+(?:{_STATES})\b)?(?:\s+\d{{5}}(?:-\d{{4}})?)?",
    ),
    ("uk postcode", rf"\b{_UK_POSTCODE}\b"),
]
URL_PATTERNS = [
    ("url", r"(?i)\bhttps?://[^\s<>\"']+[^\s<>\"'.,;:)]"),
    ("www", r"(?i)\bwww\d{0,3}\.[a-z0-9-]+(?:\.[a-z0-9-]+)+(?:/[^\s<>\"']*[^\s<>\"'.,;:)])?"),
]


class _Email(EmailRecognizer):
    """Presidio's e-mail pattern; its result check calls tldextract, which fetches the public suffix list
    from the network at first use: not here (the pattern already demands a dotted domain)."""

    def validate_result(self, pattern_text: str):
        return None


_NAME_GAP = re.compile(rf" (?:{_PARTICLE} )*")


class GivenNameRecognizer(LocalRecognizer):
    """An untitled name that starts with a known given name, followed by one to three name words that are
    not report vocabulary: "Jane Doeberg", "Ana Sofia Carvalho", "Rukiye KILIÇARSLAN"; also "Doeberg, Jane"."""

    name: str  # Presidio's EntityRecognizer sets it; declared here, as mypy cannot infer it there

    _WORDS = re.compile(rf"{_WORD}|{_CAPS}|{_INITIAL}")

    def __init__(self) -> None:
        super().__init__(supported_entities=["NAME"], name="GivenNameRecognizer")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities, nlp_artifacts=None) -> list[RecognizerResult]:
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
            if (
                n
                and text[words[n - 1][1] : start] == ", "
                and words[n - 1][2].lower() not in vocabulary
                and words[n - 1][2][0].isupper()
            ):
                out.append(self._result(words[n - 1][0], end))
        return out

    def _result(self, start: int, end: int) -> RecognizerResult:
        return RecognizerResult(
            "NAME",
            start,
            end,
            0.6,
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )


# -- names after a cue, in any case ------------------------------------------------------------------
# A title is a strong cue: the word after it is a name unless it is report vocabulary ("dr. hannah weiss", "DR.
# O'BRIEN"); so is a label with a colon ("Name:", "Patient:", "Radiologist:", "Signed:") and "/s/". A role verb
# ("seen by", "dictated by", "discussed with"), a role word ("patient", "pt", "wife") and a bare capitals MR/MS
# (magnetic resonance, multiple sclerosis) are weak: after them a name in lower case or capitals needs two words,
# the first a known given name or surname ("patient hannah weiss", "MR JAMES MCALLISTER"; not "dictated by voice
# recognition", "patient mark on the skin"). Capitalised names keep the rules of the patterns above.
_TITLE_ANY = (
    r"(?:(?:Drs?|DRS?|drs?|Prof|PROF|prof|Professor|PROFESSOR|professor|Doctor|DOCTOR|doctor|Mrs|MRS|mrs|Mr|Ms|Mx|"
    r"Miss|MISS|Sister|SISTER|Doç|Uzm|Priv\.-Doz|Univ\.-Prof|Dott\.ssa|Dott|Dra|Sra|Srta|Mme|Mlle|Herr|HERR|Frau|FRAU)"
    r"(?:\.|(?=[ \t]))|(?:mr|ms|mx|MR|MS|MX)\.)"
)
# a label with a colon that may name the person after it (a weak cue: "Referring: SHARMA, ANIKET", not "Primary care:
# routine follow-up")
_LABEL = (
    r"(?i:referring|ordering|requesting|attending|reporting|reading|treating|admitting|consulting|author|reader|"
    r"requester|requestor|signer|dictator|interpreter|sender|recipient|primary\s+care|pcp|gp|copy\s+to|copies\s+to)"
)
_CUE_VERB = rf"(?:{_ROLE_VERB}|(?i:spoke|spoken|talked|typed|authori[sz]ed|countersigned|cc'?d))"
_CUE_TAIL = (
    r"(?:\s+(?i:the|his|her|their))?(?:\s+(?i:patient'?s|referring|ordering|attending|on-call|covering|duty|reporting|"
    r"treating))?(?:\s+" + _ROLE_NOUN + r")?[ \t]*[,:-]?\s+"
)
# each cue its own regex: one alternation of them all is ten times slower (no literal prefix to scan for)
_CUES_STRONG = tuple(
    re.compile(cue, CASE)
    for cue in (
        rf"(?<![\p{{L}}\p{{N}}]){_TITLE_ANY}[ \t]*(?:{_DEGREE}[ \t]*)*",
        rf"\b(?:{_ROLE_NOUN}|{_CUE_VERB}|(?i:signature))"
        r"(?:\s+(?i:by|name|physician|provider|radiologist|clinician))?[ \t]*:[ \t]*",
        r"/s/[ \t]*",
        r"\b(?i:name\s+(?:is|was))[ \t]+",
    )
)
_CUES_WEAK = tuple(
    re.compile(cue, CASE)
    for cue in (
        rf"\b{_CUE_VERB}(?:\s+(?i:by|to|with|from|for))?{_CUE_TAIL}",
        rf"\b{_ROLE_NOUN}(?:\s+(?i:name|physician|provider|radiologist|clinician))?[ \t]*[,-]?[ \t]+",
        r"(?<![\p{L}\p{N}])(?:MR|MS)[ \t]+",
        rf"\b{_LABEL}[ \t]*:[ \t]*",
    )
)
_ANY_TOKEN = re.compile(
    r"(?:\p{L}\.){1,3}(?!\p{L})|\p{L}(?:\p{L}|['’](?=\p{L}))+(?:-\p{L}+(?:['’]\p{L}+)*)*"
)  # O'BRIEN, jean-luc
_TOKEN_GAP = re.compile(r"[ \t]+|(?<=\.)(?=\p{L})")
_CREDENTIAL_AT = re.compile(rf"{_CREDENTIAL}$")
_AFTER_COMMA = re.compile(r",[ \t]*(\p{L}(?:\p{L}|['’](?=\p{L}))+)(?:[ \t]+\p{L}\.)?")
_FIELD_END = re.compile(
    r"(?=[ \t]{2}|[ \t]*(?:$|[\n,;:()\[\]/|.]|\d)|[ \t]+(?i:dob|d\.o\.b|mrn|acc|age|sex|id|md|m\.d)\b)", re.MULTILINE
)
_AND = re.compile(r"[ \t]*(?:,|,?[ \t]+and|[ \t]+&)[ \t]+")
_PARTICLES = frozenset("van von der den de del della da di du la le bin ibn al el ten ter dos das".split())


class CuedNameRecognizer(LocalRecognizer):
    """A name after a title, a role verb or a role word, written in any case: "dr. hannah weiss", "Seen by DR.
    PETER O'BRIEN", "discussed with jean-luc dubois", "Patient: doeberg, jane a.". Up to five words; it stops
    at report vocabulary; particles ("van der", "bin") may stand between words."""

    name: str  # Presidio's EntityRecognizer sets it; declared here, as mypy cannot infer it there

    def __init__(self) -> None:
        super().__init__(supported_entities=["NAME"], name="CuedNameRecognizer")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities, nlp_artifacts=None) -> list[RecognizerResult]:
        out = []
        for cues, strong in ((_CUES_STRONG, True), (_CUES_WEAK, False)):
            for cue in (m for regex in cues for m in regex.finditer(text)):
                span = self._name_at(text, cue.end(), strong)
                while span:
                    out.append(
                        RecognizerResult(
                            "NAME",
                            *span,
                            0.6,
                            recognition_metadata={
                                RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                            },
                        )
                    )
                    # "Drs. Park and Ibrahim": a plural title names every name of the list
                    more = cue.group().lower().startswith("drs") and _AND.match(text, span[1])
                    span = self._name_at(text, more.end(), strong) if more else None
        return out

    @staticmethod
    def _name_at(text: str, at: int, strong: bool) -> tuple[int, int] | None:
        vocabulary, known, given = report_vocabulary(), name_words(), given_names()

        def parts(word: str) -> list[str]:
            return word.replace("’", "'").strip(".'").lower().split("-")

        def first_name_after(start: int, end: int) -> int | None:
            """Where "doeberg, jane a." ends: a comma, then a given name; after a strong cue or a known surname
            also any known name word or a word in the surname's capitals ("Referring: SHARMA, ANIKET"). An unknown
            surname in lower case or capitals takes a given name only where a field ends after it ("pt name
            mcdonnell, brian  dob ..."; not "patient cooperative, grace period")."""
            m = _AFTER_COMMA.match(text, end)
            after = m.group(1).replace("’", "'").lower() if m else ""
            if not m or after in vocabulary or _CREDENTIAL_AT.match(m.group(1)):
                return None
            surname = text[start:end]
            surname_known = any(part in known for word in surname.split() for part in parts(word))
            same_case = m.group(1).isupper() and surname.isupper()
            if (strong or surname_known) and (after in known or same_case):
                return m.end()
            if after in given and (strong or surname_known or surname[:1].istitle() or _FIELD_END.match(text, m.end())):
                return m.end()
            return None

        tokens: list[tuple[int, int, str]] = []  # (start, end, "word" | "initial" | "particle")
        words = 0
        first_given = first_uncased = False
        while len(tokens) < 7 and words < 5:
            m = _ANY_TOKEN.match(text, at)
            if not m:
                break
            word = m.group()
            if word.endswith("."):
                kind = "initial"
            elif word in _PARTICLES:
                kind = "particle"
            else:
                if all(part in vocabulary for part in parts(word)):
                    break
                capitalised = word[0].isupper() and any(c.islower() for c in word)
                if not capitalised:  # lower case or capitals
                    is_known = any(part in known for part in parts(word))
                    # "pt name mcdonnell, brian": an unknown surname stands where a given name follows its comma
                    if words == 0 and not (strong or is_known or first_name_after(m.start(), m.end())):
                        break
                    if words and not (is_known or (words == 1 and first_given)):
                        break
                if words == 0:
                    first_given = any(part in given for part in parts(word))
                    first_uncased = not capitalised
                words += 1
                kind = "word"
            tokens.append((m.start(), m.end(), kind))
            gap = _TOKEN_GAP.match(text, m.end())
            if not gap:
                break
            at = gap.end()
        while tokens and tokens[-1][2] == "particle":
            tokens.pop()
        if not words:
            return None
        start, end = tokens[0][0], tokens[-1][1]
        # "doeberg, jane a.", "GARCIA LOPEZ, MARIA": a comma, then a given name
        last_first = first_name_after(start, end) if words <= 2 else None
        if first_uncased and not strong and not last_first and sum(kind != "particle" for *_, kind in tokens) < 2:
            return None
        end = last_first or end
        return start, end


# -- facility names ------------------------------------------------------------------------------------
# A facility is a run of capitalised words (title case or capitals, a space apart or joined by "of", "the", "de",
# "we", "&", ...) that holds a word naming a place of care, in English or a language reports are written in or
# translated from, and a word that is neither report vocabulary nor such a word (its name: "Riverside", "Royal",
# "Heidelberg"): "Mercy General Hospital", "Royal Infirmary of Edinburgh", "Clínica Universidad de Navarra",
# "Wojewódzki Szpital Specjalistyczny we Wrocławiu", "ANKARA ŞEHİR HASTANESİ", "Cleveland Clinic Abu Dhabi",
# "Lakeview Diagnostic Imaging", "Riverside hospital". A compound that ends in a facility word names itself
# ("Universitätsklinikum", "Kantonsspital", "Rigshospitalet"). The words alone are no facility ("the Medical Center
# protocol", "the OUTSIDE HOSPITAL", "Outpatient Clinic"), nor is a named instrument ("the Hospital Anxiety and
# Depression Scale", "Mayo Clinic score").
_FACILITY_WORDS = frozenset(
    """
hospital hospitals infirmary clinic clinics polyclinic policlinic hospice sanatorium sanitarium healthcare
center centre centro centrum zentrum institute institut instituto istituto diagnostics
hôpital hopital hospitalier hospitalario hospitalar clinique clínica clinica klinik klinikum kliniken klinika
krankenhaus spital ospedale ospedaliero policlinico poliklinik poliklinika praxis ambulatorium szpital nemocnice
nemocnica bolnica bolnišnica ziekenhuis sjukhus sjukhuset sykehus sygehus sairaala kórház spitalul hastanesi hastane
""".split()
)
_FACILITY_LOWER = _FACILITY_WORDS - {
    "center",
    "centre",
    "centro",
    "centrum",
    "zentrum",
    "institute",
    "institut",
    "instituto",
    "istituto",
    "diagnostics",
    "healthcare",
    "praxis",
}  # also in lower case
# a facility word only after one of its first words: "Diagnostic Imaging", "Family Practice", "NHS Trust"
_FACILITY_PAIRS = {
    "imaging": {"diagnostic", "medical", "advanced", "regional"},
    "practice": {"family", "group", "medical", "general"},
    "associates": {"radiology", "imaging", "medical", "health"},
    "partners": {"radiology", "imaging", "medical", "health"},
    "group": {"radiology", "imaging", "medical", "health"},
    "network": {"radiology", "imaging", "health"},
    "college": {"medical"},
    "school": {"medical"},
    "system": {"health"},
    "trust": {"nhs", "foundation", "health"},
    "board": {"health"},
    "home": {"nursing", "care", "residential"},
    "fakültesi": {"tıp"},
}
# words that describe a facility or a service without naming it ("the outside hospital", "a tertiary centre", "the
# General Hospital", "Outpatient Clinic", "Pain Clinic"), and specialty words by their endings ("Orthopaedic Clinic",
# "Anticoagulation Clinic", "Neurological Institute")
_FACILITY_GENERIC = frozenset(
    set().union(*_FACILITY_PAIRS.values())
    | set(_FACILITY_PAIRS)
    | set(
        """
outside outlying external referring local other another previous prior same different tertiary secondary primary
peripheral private public receiving sending our this that your their his her
general university royal memorial community regional district county city state national central teaching specialist
children's women's men's veterans maternity outpatient inpatient day walk-in urgent ambulatory satellite main rapid
access one-stop pain memory sleep eye dental intensive care unit ward theatre department room suite bay floor wing
block casualty recovery reception meeting team baseline screening
""".split()
    )
)
_SPECIALTY = re.compile(
    r"\p{L}*(?:olog(?:y|ic|ical|ics)|iatrics?|p(?:a|ae)?edics?|ations?|ectomy|oscopy|graphy|therapy|ical|ics)"
)
_COMPOUND_ENDS = (
    "klinik",
    "klinikum",
    "kliniken",
    "krankenhaus",
    "spital",
    "ziekenhuis",
    "sjukhus",
    "sjukhuset",
    "sykehus",
    "sykehuset",
    "sygehus",
    "sygehuset",
    "hospitalet",
    "sairaala",
)
_FACILITY_COMPOUND = re.compile(rf"\p{{L}}{{3,}}(?:{'|'.join(_COMPOUND_ENDS)})", re.IGNORECASE)
# where to look, in the lower-case text: every facility word, pair word and compound end holds one of these (str.find
# over a report is many times faster than one regex of the words)
_FACILITY_STEMS = tuple(sorted({w[:5] for w in _FACILITY_WORDS | set(_FACILITY_PAIRS) | set(_COMPOUND_ENDS)}))
_FACILITY_ANCHOR = re.compile(rf"(?i:{'|'.join(_FACILITY_STEMS)})")  # the same, where lower case moves characters
# a run is a named instrument, not a place, where it holds or is followed by one of these
_INSTRUMENT = frozenset(
    """scale scales score scores questionnaire index criteria classification inventory survey grading
staging protocol protocols guideline guidelines formula rule rules checklist sign syndrome disease procedure operation
manoeuvre maneuver technique method model approach""".split()
)
_CONNECTORS = frozenset(
    "of the for and & de del della delle dei degli di du des la le les y e i da do dos das van von "
    "der den am an im zu we w na upon".split()
)
_ABBREVIATIONS = frozenset({"St", "Ste", "Sta", "Sto", "Mt", "Ft", "ST", "MT"})  # "St. Mary's": the period joins
_PLACE_TOKEN = re.compile(r"[\p{L}\p{M}][\p{L}\p{M}'’-]*|&")
_PLACE_GAP = re.compile(r"[ \t]+")
_ABBREVIATION_GAP = re.compile(r"\.[ \t]*")


def _place_tokens(text: str, start: int, end: int) -> list[tuple[int, int, str, bool]]:
    """(start, end, word, joined to the one before) of the words of text[start:end]."""
    out: list[tuple[int, int, str, bool]] = []
    for m in _PLACE_TOKEN.finditer(text, start, end):
        joined = False
        if out:
            prev_end, prev = out[-1][1], out[-1][2]
            gap = _PLACE_GAP if prev not in _ABBREVIATIONS else _ABBREVIATION_GAP
            joined = gap.fullmatch(text, prev_end, m.start()) is not None
        out.append((m.start(), m.end(), m.group(), joined))
    return out


def _facility_word(tokens, k: int) -> bool:
    word = tokens[k][2].lower()
    if word in _FACILITY_WORDS:
        return True
    firsts = _FACILITY_PAIRS.get(word)
    return bool(firsts and k and tokens[k][3] and tokens[k - 1][2].lower() in firsts)


def _capitalised(word: str) -> bool:
    return word[0].isupper()


def _plain(word: str) -> str:
    return word.replace("’", "'").lower()


def _names_a_place(word: str, vocabulary: frozenset[str]) -> bool:
    """A capitalised word that names: not report vocabulary, not a facility word or a generic one."""
    plain = _plain(word)
    bare = plain[:-2] if plain.endswith("'s") else plain
    if bare not in _FACILITY_WORDS and _FACILITY_COMPOUND.fullmatch(bare):
        return True  # "Universitätsklinikum", "Kantonsspital"
    return (
        _capitalised(word)
        and plain not in _CONNECTORS
        and bare not in vocabulary
        and bare not in _FACILITY_WORDS
        and bare not in _FACILITY_GENERIC
        and not _SPECIALTY.fullmatch(bare)
    )


def _word_after(text: str, end: int) -> str:
    """The word after ``end`` where only spaces stand between, in lower case; else ''."""
    gap = _PLACE_GAP.match(text, end)
    m = _PLACE_TOKEN.match(text, gap.end()) if gap else None
    return m.group().lower() if m else ""


class FacilityRecognizer(LocalRecognizer):
    """Facility names: a run of capitalised words around a word naming a place of care, with a name among them."""

    name: str  # Presidio's EntityRecognizer sets it; declared here, as mypy cannot infer it there

    WINDOW = 200  # characters either side of a facility word read for its run

    def __init__(self) -> None:
        super().__init__(supported_entities=["LOCATION"], name="FacilityRecognizer")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities, nlp_artifacts=None) -> list[RecognizerResult]:
        vocabulary = report_vocabulary()
        out, done = [], -1
        for at in self._stems_at(text):
            if at < done:
                continue
            tokens = _place_tokens(text, max(0, at - self.WINDOW), min(len(text), at + self.WINDOW))
            k = next((n for n, t in enumerate(tokens) if t[0] <= at < t[1]), None)
            if k is None:
                continue
            word = tokens[k][2]
            compound = _FACILITY_COMPOUND.fullmatch(word.lower()) is not None
            if not (_facility_word(tokens, k) or compound):
                continue
            if not _capitalised(word) and word.lower() not in _FACILITY_LOWER:
                continue
            left = k
            while (
                left
                and tokens[left][3]
                and k - left < 6
                and (_capitalised(tokens[left - 1][2]) or tokens[left - 1][2].lower() in _CONNECTORS)
            ):
                left -= 1
            right = k
            of = False  # after "of", "for", "de", ... report words belong to the name ("Hospital for Special Surgery")
            while _capitalised(word) and right + 1 < len(tokens) and tokens[right + 1][3] and right - k < 6:
                nxt = tokens[right + 1][2]
                if nxt.lower() in _CONNECTORS:
                    of = of or nxt not in ("and", "&")
                elif not (
                    _capitalised(nxt) and (of or _plain(nxt) not in vocabulary or _facility_word(tokens, right + 1))
                ):
                    break
                right += 1
            while left < k and (
                tokens[left][2].lower() in _CONNECTORS
                or (_plain(tokens[left][2]) in vocabulary and not _facility_word(tokens, left))
            ):
                left += 1  # "the", "Prior", "Radiology": report words before the name
            while right > k and tokens[right][2].lower() in _CONNECTORS:
                right -= 1
            run = tokens[left : right + 1]
            done = run[-1][0]  # a facility word that ends the run starts the next one ("... and the Institute of X")
            if not any(_names_a_place(t[2], vocabulary) for t in run):
                continue
            if any(t[2].lower() in _INSTRUMENT for t in run) or _word_after(text, run[-1][1]) in _INSTRUMENT:
                continue
            out.append(
                RecognizerResult(
                    "LOCATION",
                    run[0][0],
                    run[-1][1],
                    0.6,
                    recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                    },
                )
            )
        return out

    @staticmethod
    def _stems_at(text: str) -> list[int]:
        """Where a facility word (or a pair's second word, or a compound) starts, in order."""
        low = text.lower()
        if len(low) != len(text):  # "İ" lowers to two characters
            hits = [m.start() for m in _FACILITY_ANCHOR.finditer(text)]
        else:
            hits = []
            for stem in _FACILITY_STEMS:
                at = low.find(stem)
                while at >= 0:
                    hits.append(at)
                    at = low.find(stem, at + 1)
        found = set()
        for at in hits:
            while at and (text[at - 1].isalpha() or text[at - 1] in "'’-"):
                at -= 1
            m = _PLACE_TOKEN.match(text, at)
            word = m.group().lower() if m else ""
            if word in _FACILITY_WORDS or word in _FACILITY_PAIRS or _FACILITY_COMPOUND.fullmatch(word):
                found.add(at)
        return sorted(found)


# A place named without a facility word, after the words that bring one in: a verb or noun of care or imaging, then
# "at", "from" or "to" within two words ("performed at Mount Sinai Beth Israel", "transferred from Groote Schuur",
# "outside images obtained at ..."): two capitalised words or more, the first not report vocabulary, one of them a
# name (neither a common English word nor a generic word: not "performed at End of Treatment", "transferred to the
# Intensive Care Unit"), no possessive among them and no eponym head before or after any ("images from the Circle
# of Willis", "from Morison's pouch"). Less sure than a name: where a person is named after "from", the name rule
# names the span.
_PLACE_CUE = re.compile(
    r"\b(?i:performed|done|obtained|acquired|imaged|scanned|treated|admitted|transferred|referred|"
    r"discharged|seen|operated|biopsied|hospitali[sz]ed|followed|images?|films?|stud(?:y|ies)|scans?|"
    r"exams?|examinations?|cds?|discs?|records?|reports?)(?:[ \t]+[\p{L}\p{N}/.-]+){0,2}?[ \t]+"
    r"(?i:at|from|to)[ \t]+(?:(?i:the)[ \t]+)?(?=\p{Lu})"
)


class CuedPlaceRecognizer(LocalRecognizer):
    """A place named after "at", "from", "transferred to", ...: two capitalised words or more, one a name."""

    name: str  # Presidio's EntityRecognizer sets it; declared here, as mypy cannot infer it there

    def __init__(self) -> None:
        super().__init__(supported_entities=["LOCATION"], name="CuedPlaceRecognizer")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities, nlp_artifacts=None) -> list[RecognizerResult]:
        vocabulary, common = report_vocabulary(), common_words()
        out = []
        for cue in _PLACE_CUE.finditer(text):
            tokens = _place_tokens(text, cue.end(), min(len(text), cue.end() + 120))
            run = tokens[:1]
            for t in tokens[1:7]:
                if not t[3] or not (
                    t[2].lower() in _CONNECTORS or (_capitalised(t[2]) and _plain(t[2]) not in vocabulary)
                ):
                    break
                run.append(t)
            while run and (run[-1][2].lower() in _CONNECTORS):
                run.pop()
            words = [t for t in run if t[2].lower() not in _CONNECTORS]
            if (
                len(words) < 2
                or _plain(run[0][2]) in vocabulary
                or not any(_names_a_place(t[2], common) for t in words)
                or any(_plain(t[2]).endswith("'s") or t[2].lower() in _INSTRUMENT for t in words)
                or any(_EPONYM_HEAD.match(text, t[0] - 1) or _EPONYM_HEAD.match(text, t[1]) for t in run)
            ):
                continue
            out.append(
                RecognizerResult(
                    "LOCATION",
                    run[0][0],
                    run[-1][1],
                    0.4,
                    recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                    },
                )
            )
        return out


class _PhoneShapes(PatternRecognizer):
    """Phone-shaped numbers: at least seven digits, whatever the grouping."""

    def invalidate_result(self, pattern_text: str) -> bool:
        return sum(c.isdigit() for c in pattern_text) < 7


# the score of a rule that read the word naming the identifier ("MRN", "pager"): surer of its kind than a shape
CUED = 0.85


def _patterns(
    entity: str, rules: list[tuple[str, str]], flags: int, cls: type = PatternRecognizer
) -> PatternRecognizer:
    return cls(
        supported_entity=entity,
        name=f"{entity.lower()}_{'shapes' if cls is _PhoneShapes else 'patterns'}",
        global_regex_flags=flags,
        patterns=[Pattern(name, regex, CUED if name in _CUED_RULES else 0.6) for name, regex in rules],
    )


@lru_cache(maxsize=1)
def recognizers() -> tuple[EntityRecognizer, ...]:
    """Every recognizer, built once per process. Entities: NAME, DATE, PHONE, ID, AGE, ADDRESS, LOCATION, EMAIL, URL."""
    presidio_dates = [
        p for p in DateRecognizer.PATTERNS if p.score >= 0.5
    ]  # not its bare m/yy, which reads "3/10" as a date
    return (
        _patterns("NAME", NAME_PATTERNS, CASE),
        GivenNameRecognizer(),
        CuedNameRecognizer(),
        DateRecognizer(patterns=presidio_dates, supported_entity="DATE"),
        _patterns("DATE", DATE_PATTERNS, CASE),
        _patterns("ID", ID_PATTERNS, CASE),
        PhoneRecognizer(supported_entity="PHONE", supported_regions=("US", "GB", "DE", "FR", "TR", "IN", "NL", "IT")),
        _patterns("PHONE", PHONE_PATTERNS, CASE),
        _patterns("PHONE", PHONE_SHAPES, CASE, _PhoneShapes),
        _patterns("AGE", AGE_PATTERNS, CASE),
        _patterns("ADDRESS", ADDRESS_PATTERNS, CASE),
        FacilityRecognizer(),
        CuedPlaceRecognizer(),
        _Email(supported_entity="EMAIL"),
        IpRecognizer(supported_entity="URL"),
        _patterns("URL", URL_PATTERNS, CASE),
    )
