"""Extra Presidio recognizers: phone shapes, ages, titles, postcodes, timestamps, places.

Generic patterns (postal conventions, phone number shapes, common phrasing), never tuned to individual samples.
Street addresses live in addresses.py, name rules in names.py, and nationality / religious / political
group words in groups.py.
Each recognizer keeps a stable name: findings carry it, and the classifier version hashes the set.
"""

from __future__ import annotations

import re

from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from classifiers.addresses import PATTERN_FLAGS, StreetAddressRecognizer
from classifiers.lexicon import COMMON_ACRONYMS, Lexicon
from classifiers.names import NameListRecognizer, SpeakerRecognizer

# Bump when any pattern, score or context list here or in addresses.py changes: it feeds the classifier version.
RECOGNIZERS_REVISION = "2026.11.6"

_FLAGS = PATTERN_FLAGS  # case matters for the capitalised-word parts: no IGNORECASE

PHONE_PATTERNS = [
    # +46 (0)8 928 571 38 / +1-984-182-0190 / 0490 75 40 81 / (37) 788-063 / 07700 063 966 / 60-56-85-91 /
    # 99 668472 (a short prefix and a six-digit subscriber number)
    Pattern(
        "intl_phone",
        r"(?<![\w+/.-])(?:\+\d{1,3}[ .-]?(?:\(0\)[ .-]?)?)?(?:\(\d{1,5}\)[ .-]?|\d{1,5}[ .-])"
        r"(?:\d{2,5}[ .-]){0,4}\d{2,6}(?![\w/-]|\.\d)",
        0.3,
    ),
    Pattern("plus_phone", r"(?<![\w+])\+\d{1,3}[ .-]?\d{2,4}(?:[ .-]?\d{2,5}){1,4}(?![\w-])", 0.5),
]
PHONE_CONTEXT = [
    "phone", "telephone", "tel", "mobile", "cell", "cellphone", "call", "calling", "called", "fax", "number",
    "contact", "reach", "dial", "text", "sms", "whatsapp", "landline", "extension", "ext", "hotline",
    "answer", "message", "voicemail", "ring",
]
# Why a second look: Presidio's context enhancer compares lemmas of non-stop words, and spaCy lists "call"
# as a stop word, so "call me on 9472 7916" never counted. This looks at the raw words just before a match.
_PHONE_CUE = re.compile(
    r"\b(?i:call(?:ed|ing|s)?|ring|dial(?:led|ing)?|text(?:ed|ing)?|phon(?:e|ed|ing)|answer(?:ed|ing|s)?|"
    r"messag(?:e|es|ed|ing)|reach(?:ed)?|fax(?:ed)?|tel|mobile|cell)\b[^\n.!?]{0,24}$"
)
PHONE_CUE_BOOST = 0.35


class IntlPhoneRecognizer(PatternRecognizer):
    """Phone numbers by shape (7-15 digits in 2-5 digit groups), for numbering plans phonenumbers is not asked about."""

    def __init__(self) -> None:
        super().__init__(
            supported_entity="PHONE_NUMBER",
            name="IntlPhoneRecognizer",
            patterns=PHONE_PATTERNS,
            context=PHONE_CONTEXT,
            supported_language="en",
            global_regex_flags=_FLAGS,
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        digits = sum(ch.isdigit() for ch in pattern_text)
        # Why: ISO dates (2004-05-06) and short numbers are not phones; E.164 caps at 15 digits.
        if digits < 7 or digits > 15 or re.fullmatch(r"\d{4}-\d{2}-\d{2}", pattern_text.strip()):
            return False
        return None

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        results = super().analyze(text, entities, nlp_artifacts, regex_flags)
        for result in results:
            if _PHONE_CUE.search(text, max(0, result.start - 48), result.start):
                result.score = min(1.0, result.score + PHONE_CUE_BOOST)
                # the lemma enhancer would add its boost again on top of ours
                result.recognition_metadata[RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY] = True
        return results


AGE_PATTERNS = [
    Pattern("age_years_old", r"\b\d{1,3}(?=[ -]?(?i:years?|yrs?)[ -](?i:old|of age)\b|[ -]?(?i:y/o|yo)\b)", 0.6),
    Pattern("age_aged", r"(?<=\b(?i:aged|age|age:|age of|ages)\s)\d{1,3}\b", 0.5),
    # "just turned 47", "I'll turn 23.": a bare number after turn, at the end of the clause
    Pattern(
        "age_turned",
        r"(?<=\b(?i:turned|turning|turns|turn)\s)\d{1,3}\b(?=\s*(?:[.!?,;]|$|(?i:this|next|last|today|tomorrow)\b))",
        0.5,
    ),
    Pattern("age_year_old", r"\b\d{1,3}(?=-year-old\b)", 0.6),
]
AGE_CONTEXT = ["age", "aged", "old", "years", "born", "birthday", "turned"]


def _pattern_recognizer(
    entity: str, name: str, patterns: list[Pattern], context: list[str] | None = None
) -> PatternRecognizer:
    """An English regex recognizer with this module's flags (the shape every pattern rule here shares)."""
    return PatternRecognizer(supported_entity=entity, name=name, patterns=patterns, context=context or [],
                             supported_language="en", global_regex_flags=_FLAGS)


def age_recognizer() -> PatternRecognizer:
    """A person's age in years when the phrasing says so ("42 years old", "aged 42")."""
    return _pattern_recognizer("AGE", "AgeRecognizer", AGE_PATTERNS, context=AGE_CONTEXT)


TITLED_NAME_PATTERNS = [
    # "Mr. John Smith", "Dr Anna Kowalska": an honorific names the person that follows it.
    Pattern(
        "honorific_name",
        r"(?<=\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Mme|Mlle|Herr|Frau|Sr|Sra|Srta)\.?\s)"
        r"[A-ZÀ-Þ][\w'’-]+(?:\s+[A-ZÀ-Þ]\.?)?(?:\s+[A-ZÀ-Þ][\w'’-]+){0,2}",
        0.6,
    ),
    # "my name is Rubija", "I am called X", "signed, X"
    Pattern(
        "name_is",
        r"(?<=\b(?i:my name is|name's|i am called|call me|named|name:)\s)"
        r"[A-ZÀ-Þ][\w'’-]+(?:\s+[A-ZÀ-Þ][\w'’-]+){0,2}",
        0.5,
    ),
]


def titled_name_recognizer() -> PatternRecognizer:
    """Names introduced by an honorific or by "my name is", which small NER models often miss."""
    return _pattern_recognizer("PERSON", "TitledNameRecognizer", TITLED_NAME_PATTERNS)


# An honorific written before a capitalised name ("Dr. Anna Kowalska"): the title itself, as its own entity.
TITLE_PATTERNS = [
    Pattern(
        "honorific",
        r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Rev|Sir|Dame|Madam|Mme|Mlle|Herr|Frau|Sr|Sra|Srta)\.?(?=\s+[A-ZÀ-Þ])",
        0.6,
    ),
]


def title_recognizer() -> PatternRecognizer:
    """Honorifics before a capitalised word (they narrow down who a name refers to: gender, profession)."""
    return _pattern_recognizer("TITLE", "TitleRecognizer", TITLE_PATTERNS)


# A postcode named as such ("ZIP: 3520", "my postal code is 10115"); bare 3-5 digit numbers are too ambiguous.
# Shapes: US 94105(-1234), most of Europe 3-5 digits, PL 53-320, PT 3610-114, SE/CZ/GR 394 13, NL 7412 SL,
# UK SW1A 1AA, CA K1A 0B1, with an optional country prefix (D-10115).
_POSTCODE = (
    r"(?:(?:[A-Z]{1,2}-)?\d{2,5}(?:-\d{3,4}|[ ]\d{2}(?![\d.,])|[ ]?[A-Z]{2}(?![\w-]))?"
    r"|[A-Z]{1,2}\d[A-Z\d]?[ ]?\d[A-Z]{2}|[A-Z]\d[A-Z][ ]?\d[A-Z]\d)"
)
ZIP_PATTERNS = [
    Pattern(
        "labelled_zip",
        r"(?<=\b(?i:zip|zip[ -]?code|postcode|post[ -]?code|postal[ -]?code|plz|cap)\b"
        r"(?:[ \t]+(?i:is|was|number|no\.?))?[ \t]?[:#]?[ \t]?)"
        rf"{_POSTCODE}(?![\w-])",
        0.6,
    ),
]


# A date with its time of day is one timestamp ("2000-04-16 11:34:35", "16/04/2000 11:34"); NER cuts it after
# the date, leaving the time unmasked and the span short of the whole value.
_TIME = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d{1,6})?)?(?:[ ]?(?i:am|pm))?(?:[ ]?(?:Z|[+-]\d{2}:?\d{2}|UTC|GMT))?"
TIMESTAMP_PATTERNS = [
    Pattern("iso_timestamp", rf"\b\d{{4}}-\d{{2}}-\d{{2}}(?:[T ]|,[ ]?){_TIME}(?![\w:])", 0.6),
    Pattern("dmy_timestamp", rf"\b\d{{1,2}}[/.]\d{{1,2}}[/.]\d{{2,4}},?[ ]{_TIME}(?![\w:])", 0.6),
]


def timestamp_recognizer() -> PatternRecognizer:
    """Dates written with a time of day, as one DATE_TIME span."""
    return _pattern_recognizer("DATE_TIME", "TimestampRecognizer", TIMESTAMP_PATTERNS)


def zip_code_recognizer() -> PatternRecognizer:
    """Postcodes introduced by a label; postcodes inside a postal block are part of STREET_ADDRESS."""
    return _pattern_recognizer("ZIP_CODE", "ZipCodeRecognizer", ZIP_PATTERNS)


# A place written in capitals after a preposition ("I am in TROMSØ", "flew to LEPPEN"): postal and travel
# data often shout place names, and NER without case cues misses them. Five letters at least (or two words),
# so that acronyms ("in NATO", "to HR") stay out; dictionary words ("in STOCK") are dropped in validation.
CAPS_PLACE_PATTERNS = [
    Pattern(
        "caps_place",
        r"(?<=\b(?:in|to|from|at|near|via)[ \t]+)(?:\p{Lu}[\p{Lu}'’-]+[ \t]+){0,2}\p{Lu}[\p{Lu}'’-]+(?![\w'’-])",
        0.5,
    ),
]


class CapsPlaceRecognizer(PatternRecognizer):
    """Place names in capitals after a preposition (see CAPS_PLACE_PATTERNS)."""

    def __init__(self, lexicon: Lexicon | None = None) -> None:
        super().__init__(
            supported_entity="LOCATION",
            name="CapsPlaceRecognizer",
            patterns=CAPS_PLACE_PATTERNS,
            supported_language="en",
            global_regex_flags=_FLAGS,
        )
        self._lexicon = lexicon

    def invalidate_result(self, pattern_text: str) -> bool | None:
        words = pattern_text.split()
        if len(words) == 1 and sum(ch.isalpha() for ch in pattern_text) < 5:
            return True
        common = self._lexicon.common_words if self._lexicon else frozenset()
        return any(w.lower() in common or w in COMMON_ACRONYMS for w in words)


def country_names() -> list[str]:
    """English names of the regions phonenumbers knows (ITU numbering plans): ~240 countries and territories.

    Why phonenumbers: it is already a Presidio dependency, so no extra name list has to be shipped.
    Names that are also common first names (Chad, Jordan, Georgia) are left to NER, which sees context.
    """
    from phonenumbers import SUPPORTED_REGIONS
    from phonenumbers.geocoder import _region_display_name

    names = {_region_display_name(code, "en") for code in SUPPORTED_REGIONS}
    return sorted(n for n in names if n and n not in _COUNTRY_NAME_CLASHES)


_COUNTRY_NAME_CLASHES = frozenset({"Chad", "Jordan", "Georgia", "Jersey", "Guinea", "Niger", "Turkey", "Mali"})


class CountryRecognizer(PatternRecognizer):
    """Country and territory names, in title case or capitals (postal blocks often write COUNTRY)."""

    def __init__(self) -> None:
        names = country_names()
        alternatives = "|".join(re.escape(n) for n in sorted({*names, *(n.upper() for n in names)}, key=len,
                                                              reverse=True))
        super().__init__(
            supported_entity="LOCATION",
            name="CountryRecognizer",
            patterns=[Pattern("country_name", rf"(?<![\w-])(?:{alternatives})(?![\w-])", 0.6)],
            supported_language="en",
            global_regex_flags=_FLAGS,
        )


# Card-length digit runs that fail the Luhn check (typos, test or truncated data) are still card numbers when
# the text says so: a low base score that only context words ("card", "cc", "visa" ...) lift over the threshold.
CARD_CONTEXT = ["card", "credit", "debit", "visa", "mastercard", "amex", "cc", "payment", "charge", "billed"]


CARD_PATTERNS = [Pattern("card_digits", r"(?<![\d-])(?:\d{4}[ -]?){2,3}\d{4,7}(?![\d-])", 0.1)]


def unchecked_card_recognizer() -> PatternRecognizer:
    """12-19 digit runs (optionally grouped by 4) near card words, without the checksum."""
    return _pattern_recognizer("CREDIT_CARD", "UncheckedCardRecognizer", CARD_PATTERNS, context=CARD_CONTEXT)


# Extra context words for predefined recognizers, keyed by entity (they raise scores near these words).
EXTRA_CONTEXT: dict[str, list[str]] = {
    "CREDIT_CARD": ["card", "credit", "debit", "visa", "mastercard", "amex", "cc", "payment", "pay", "charge"],
    "IBAN_CODE": ["iban", "bank", "account", "transfer", "wire", "sepa", "payment"],
    "US_SSN": ["ssn", "social", "security", "ss#", "ssid"],
    "US_DRIVER_LICENSE": ["driver", "drivers", "driving", "license", "licence", "permit", "dl", "lic"],
    "IP_ADDRESS": ["ip", "address", "server", "host", "connected", "from"],
}


def extra_recognizers(lexicon: Lexicon | None = None) -> list[EntityRecognizer]:
    """The recognizers this module adds to Presidio's predefined set (name rules use `lexicon` when given)."""
    from classifiers.groups import GroupRecognizer  # why here: groups.py imports country_names from this module

    return [
        StreetAddressRecognizer(lexicon), IntlPhoneRecognizer(), age_recognizer(), titled_name_recognizer(),
        title_recognizer(), zip_code_recognizer(), CountryRecognizer(), unchecked_card_recognizer(),
        NameListRecognizer(lexicon=lexicon), SpeakerRecognizer(lexicon), GroupRecognizer(), timestamp_recognizer(),
        CapsPlaceRecognizer(lexicon),
    ]
