"""Extra Presidio recognizers: street addresses, international phone shapes, ages, titled names, context words.

Generic patterns (postal conventions, phone number shapes, common phrasing), never tuned to individual samples.
Each recognizer keeps a stable name: findings carry it, and the classifier version hashes the set.
"""

from __future__ import annotations

import re

from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

# Bump when any pattern, score or context list here changes: it feeds the classifier version.
RECOGNIZERS_REVISION = "2026.11.4"

# Case matters for the capitalised-word parts of these patterns, so no IGNORECASE by default.
_FLAGS = re.MULTILINE

# USPS street suffixes (Publication 28, common subset) plus UK/Commonwealth forms.
_STREET_SUFFIXES = (
    "Street|St|Avenue|Ave|Av|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|"
    "Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Crescent|Cres|Close|Row|Alley|Plaza|Loop|Path|"
    "Pike|Point|Pt|Ridge|Heights|Hts|Hill|Hills|Gardens|Gdns|Grove|Park|Mews|Walk|Crossing|Junction|Jct|"
    "Station|Port|Mill|Mills|Spring|Springs|Spur|Vista|Estates|Falls|Fork|Forks|Glen|Green|Harbor|Harbour|"
    "Haven|Island|Isle|Knoll|Lake|Lakes|Landing|Lodge|Manor|Meadow|Meadows|Mount|Mountain|Orchard|Oval|Pass|"
    "Pines|Plains|Prairie|Ranch|Rapids|River|Shore|Shores|Summit|Trace|Track|Turnpike|Valley|Viaduct|View|"
    "Views|Village|Ville|Wells|Expressway|Expy|Freeway|Fwy|Causeway|Cove|Creek|Dale|Dam|Divide|Field|Fields|"
    "Flat|Flats|Ford|Forest|Gateway|Hollow|Inlet|Keys|Motorway|Neck|Parade|Passage|Quay|Rise|Bypass|Wharf"
)
# Street-name endings of European languages, written as one word with the name (Hauptstrasse, Puruntie).
_STREET_ENDINGS = (
    "strasse|straße|str\\.|gasse|weg|allee|platz|ring|damm|ufer|tie|katu|kuja|polku|raitti|vej|gade|"
    "väg|vägen|gatan|gata|veien|vegen|gate|laan|straat|plein|gracht|kade|singel|utca|út|útja|ulica|"
    "cesta|iela|gatvė|gatve|tänav|tee|sokak|sokağı|caddesi|odos|leoforos"
)
# Street-type words that come before the name in Romance/Slavic/Greek usage (Rua do Arenque 1634).
_STREET_PREFIXES = (
    "Rua|Avenida|Av\\.|Calle|Carrer|Carretera|Camino|Paseo|Plaza|Praça|Praca|Travessa|Largo|Estrada|Via|"
    "Viale|Vicolo|Corso|Piazza|Piazzale|Strada|Rue|Chemin|Allée|Impasse|Quai|Route|Ulica|ul\\.|Aleja|"
    "Bulevar|Bulevardul|Strada|Cesta|Odos|Leoforos"
)
_CAP_WORD = r"(?:[A-ZÀ-ÞŁŚŹŻČŠŽŘĎŤŇ][\w'’.-]*)"
_UNIT = r"(?:,?\s*(?i:apt\.?|apartment|suite|ste\.?|unit|flat|room|fl\.?|floor)\s*#?\s*\d+[A-Za-z]?)"
_HOUSE_NO = r"\d{1,6}[A-Za-z]?(?:[-/]\d{1,4}[A-Za-z]?)?"

STREET_ADDRESS_PATTERNS = [
    # 123 Main Street / 77 North Oak Rd., Suite 5
    Pattern(
        "street_number_first",
        rf"\b(?:\d{{1,6}}\s+)?{_HOUSE_NO}\s+(?:{_CAP_WORD}\s+){{0,4}}(?:{_STREET_SUFFIXES})\b\.?{_UNIT}?",
        0.6,
    ),
    # Hauptstrasse 12 / Koskikatu 25 B / Nørregade 4, 2. th
    Pattern(
        "street_name_first",
        rf"\b(?:\d{{1,6}}\s+)?(?:{_CAP_WORD}\s+){{0,3}}[A-ZÀ-Þ][\w'’-]*(?i:{_STREET_ENDINGS})\s+{_HOUSE_NO}\b{_UNIT}?",
        0.6,
    ),
    # Rua do Arenque 1634 / Via Roma 10 / Calle de Alcalá, 45
    Pattern(
        "street_type_first",
        rf"\b(?:\d{{1,6}}\s+)?(?:{_STREET_PREFIXES})\s+(?:[\w'’.-]+\s+){{0,5}}?[\w'’.-]+,?\s+{_HOUSE_NO}\b{_UNIT}?",
        0.6,
    ),
    # Oak Street 12 (number after an English street type)
    Pattern(
        "street_suffix_number",
        rf"\b(?:{_CAP_WORD}\s+){{1,3}}(?:{_STREET_SUFFIXES})\.?\s+{_HOUSE_NO}\b{_UNIT}?",
        0.5,
    ),
    # PO Box 123 / PSC 0413, Box 8144 / APO AA 42323
    Pattern("po_box", r"\b(?i:p\.?\s?o\.?\s?box|post\s+office\s+box)\s+\d{1,6}\b", 0.6),
    Pattern(
        "military_box", r"\b(?:PSC|CMR|Unit)\s+\d{1,5},?\s+Box\s+\d{1,5}(?:\s+(?:APO|FPO|DPO)\s+A[AEP]\s+\d{5})?", 0.6
    ),
    Pattern("military_post", r"\b(?:APO|FPO|DPO)\s+A[AEP]\s+\d{5}\b", 0.5),
    # Apt. 595 / Suite 501 on their own
    Pattern("secondary_unit", r"\b(?i:apt\.?|apartment|suite|ste\.)\s*#?\s*\d{1,5}[A-Za-z]?\b", 0.45),
]
STREET_ADDRESS_CONTEXT = [
    "address", "addr", "street", "live", "lives", "living", "located", "residence", "reside", "resides",
    "mail", "mailing", "ship", "shipping", "deliver", "delivery", "billing", "home", "office", "moved", "house",
]

# A following line of a postal block: city / region / country / postcode, short, no sentence punctuation.
_BLOCK_LINE = re.compile(r"[ \t]*,?[ \t]*\n[ \t]*,?[ \t]*([^\n.!?;:]{1,60}?)[ \t]*(?=\n|$)")
_BLOCK_LINE_SHAPE = re.compile(r"^(?:[A-ZÀ-Þ0-9][\w'’.\- ]*)(?:,\s*[\w'’.\- ]+)*$")
# Same-line tail: ", Springfield, IL 62704" / ", 10115 Berlin"
_INLINE_TAIL = re.compile(
    r"(?:,\s*(?:[A-ZÀ-Þ][\w'’-]+\s+){0,3}[A-ZÀ-Þ][\w'’-]+)?,?\s+(?:[A-Z]{2}\s+)?\d{4,5}(?:-\d{3,4})?\b"
    r"|,\s*\d{4,5}\s+[A-ZÀ-Þ][\w'’-]+(?:\s+[A-ZÀ-Þ][\w'’-]+){0,2}"
)


class StreetAddressRecognizer(PatternRecognizer):
    """Street lines (house number + street, PO boxes, units), extended over the postal block that follows.

    Why the extension: an address written over several lines (street / city, region / country postcode)
    is one piece of personal data; masking only its first line would leave the rest readable.
    """

    def __init__(self) -> None:
        super().__init__(
            supported_entity="STREET_ADDRESS",
            name="StreetAddressRecognizer",
            patterns=STREET_ADDRESS_PATTERNS,
            context=STREET_ADDRESS_CONTEXT,
            supported_language="en",
            global_regex_flags=_FLAGS,
        )

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        results = super().analyze(text, entities, nlp_artifacts, regex_flags)
        pieces: list[RecognizerResult] = []
        for result in results:
            for start, end in address_components(text, result.start, result.end):
                piece = RecognizerResult(result.entity_type, start, end, result.score, result.analysis_explanation)
                piece.recognition_metadata = dict(result.recognition_metadata or {})
                pieces.append(piece)
        return EntityRecognizer.remove_duplicates(pieces)


_UNIT_SPLIT = re.compile(_UNIT.replace("(?i:", "(?:"), re.IGNORECASE)


def address_components(text: str, start: int, end: int, max_lines: int = 4) -> list[tuple[int, int]]:
    """Split a street match and the postal block after it into components (street, unit, each further line).

    Why components rather than one span: a postal block mixes parts that may be named on their own (a
    city, a postcode); separate findings mask the same characters and keep each part's extent.
    """
    pieces: list[tuple[int, int]] = []
    unit = _UNIT_SPLIT.search(text, start, end)
    if unit and unit.start() > start:
        unit_start = unit.start() + len(unit.group(0)) - len(unit.group(0).lstrip(" ,\t\n"))
        pieces += [(start, unit.start()), (unit_start, end)]
    else:
        pieces.append((start, end))
    tail = _INLINE_TAIL.match(text, end)
    if tail:
        pieces.append((tail.start() + len(tail.group(0)) - len(tail.group(0).lstrip(" ,")), tail.end()))
        end = tail.end()
    for _ in range(max_lines):
        line = _BLOCK_LINE.match(text, end)
        if not line or not _BLOCK_LINE_SHAPE.match(line.group(1).strip()):
            break
        pieces.append((line.start(1), line.end(1)))
        end = line.end(1)
    return [(s, e) for s, e in pieces if e > s]


PHONE_PATTERNS = [
    # +46 (0)8 928 571 38 / +1-984-182-0190 / 0490 75 40 81 / (37) 788-063 / 07700 063 966 / 60-56-85-91
    Pattern(
        "intl_phone",
        r"(?<![\w+/.-])(?:\+\d{1,3}[ .-]?(?:\(0\)[ .-]?)?)?(?:\(\d{1,5}\)[ .-]?|\d{1,5}[ .-])"
        r"(?:\d{2,5}[ .-]){0,4}\d{2,5}(?![\w/-]|\.\d)",
        0.3,
    ),
    Pattern("plus_phone", r"(?<![\w+])\+\d{1,3}[ .-]?\d{2,4}(?:[ .-]?\d{2,5}){1,4}(?![\w-])", 0.5),
]
PHONE_CONTEXT = [
    "phone", "telephone", "tel", "mobile", "cell", "cellphone", "call", "calling", "called", "fax", "number",
    "contact", "reach", "dial", "text", "sms", "whatsapp", "landline", "extension", "ext", "hotline",
]


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


AGE_PATTERNS = [
    Pattern("age_years_old", r"\b\d{1,3}(?=[ -]?(?i:years?|yrs?)[ -](?i:old|of age)\b|[ -]?(?i:y/o|yo)\b)", 0.6),
    Pattern("age_aged", r"(?<=\b(?i:aged|age|age:|age of|ages)\s)\d{1,3}\b", 0.5),
    Pattern("age_turned", r"(?<=\b(?i:turned|turning|turns)\s)\d{1,3}\b(?!\s*(?i:percent|%|degrees|times))", 0.35),
    Pattern("age_year_old", r"\b\d{1,3}(?=-year-old\b)", 0.6),
]
AGE_CONTEXT = ["age", "aged", "old", "years", "born", "birthday", "turned"]


def age_recognizer() -> PatternRecognizer:
    """A person's age in years when the phrasing says so ("42 years old", "aged 42")."""
    return PatternRecognizer(
        supported_entity="AGE",
        name="AgeRecognizer",
        patterns=AGE_PATTERNS,
        context=AGE_CONTEXT,
        supported_language="en",
        global_regex_flags=_FLAGS,
    )


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
    return PatternRecognizer(
        supported_entity="PERSON",
        name="TitledNameRecognizer",
        patterns=TITLED_NAME_PATTERNS,
        supported_language="en",
        global_regex_flags=_FLAGS,
    )


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
    return PatternRecognizer(
        supported_entity="TITLE",
        name="TitleRecognizer",
        patterns=TITLE_PATTERNS,
        supported_language="en",
        global_regex_flags=_FLAGS,
    )


# A postcode named as such ("ZIP: 3520", "postal code 10115"); bare 4-5 digit numbers are too ambiguous.
ZIP_PATTERNS = [
    Pattern(
        "labelled_zip",
        r"(?<=\b(?i:zip|zip code|zipcode|postcode|post code|postal code|plz|cap)\b[ \t]?[:#]?[ \t]?)"
        r"(?:[A-Z]{1,2}-)?\d{3,5}(?:-\d{3,4})?\b",
        0.6,
    ),
]


def zip_code_recognizer() -> PatternRecognizer:
    """Postcodes introduced by a label; postcodes inside a postal block are part of STREET_ADDRESS."""
    return PatternRecognizer(
        supported_entity="ZIP_CODE",
        name="ZipCodeRecognizer",
        patterns=ZIP_PATTERNS,
        supported_language="en",
        global_regex_flags=_FLAGS,
    )


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


def unchecked_card_recognizer() -> PatternRecognizer:
    """12-19 digit runs (optionally grouped by 4) near card words, without the checksum."""
    return PatternRecognizer(
        supported_entity="CREDIT_CARD",
        name="UncheckedCardRecognizer",
        patterns=[Pattern("card_digits", r"(?<![\d-])(?:\d{4}[ -]?){2,3}\d{4,7}(?![\d-])", 0.1)],
        context=CARD_CONTEXT,
        supported_language="en",
        global_regex_flags=_FLAGS,
    )


# Extra context words for predefined recognizers, keyed by entity (they raise scores near these words).
EXTRA_CONTEXT: dict[str, list[str]] = {
    "CREDIT_CARD": ["card", "credit", "debit", "visa", "mastercard", "amex", "cc", "payment", "pay", "charge"],
    "IBAN_CODE": ["iban", "bank", "account", "transfer", "wire", "sepa", "payment"],
    "US_SSN": ["ssn", "social", "security", "ss#", "ssid"],
    "US_DRIVER_LICENSE": ["driver", "drivers", "driving", "license", "licence", "permit", "dl", "lic"],
    "IP_ADDRESS": ["ip", "address", "server", "host", "connected", "from"],
}


def extra_recognizers() -> list[EntityRecognizer]:
    """The recognizers this module adds to Presidio's predefined set."""
    return [
        StreetAddressRecognizer(), IntlPhoneRecognizer(), age_recognizer(), titled_name_recognizer(),
        title_recognizer(), zip_code_recognizer(), CountryRecognizer(), unchecked_card_recognizer(),
    ]
