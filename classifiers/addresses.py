"""Street addresses: street-line patterns, postal blocks that follow them, lower-case addresses.

Generic postal conventions (USPS suffixes, UK/Commonwealth forms, unit designators), never tuned to
individual samples. Part of the recognizer set of recognizers.py (its revision covers these patterns too).
"""

from __future__ import annotations

import re

from presidio_analyzer import Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from classifiers.lexicon import Lexicon

# Case matters for the capitalised-word parts of these patterns, so no IGNORECASE by default.
PATTERN_FLAGS = re.MULTILINE

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
    # 6750 Koskikatu 25 / 0605 πεντέλης 210 / 6076 Piroska u. 97: a number, a name, a number (generated and
    # many European addresses put the house number after the street name)
    Pattern(
        "number_name_number",
        r"\b\d{1,6}[ \t]+(?:[^\W\d_a-z][\w'’.-]*|[^\W\d_A-Za-z][\w'’.-]*)"
        r"(?:[ \t]+(?:[^\W\d_a-z][\w'’.-]*|[a-z]{1,4}\.|d[aeiou]s?|del|la|le|van|von|al))"
        r"{0,4}?"
        r"[ \t]+(?!\d0s\b)\d{1,5}[A-Za-z]?\b(?![.,]?\d)",  # not a decade ("Musicians Of The 70s")
        0.45,
    ),
    # Λ. Αλεξάνδρας 14 / Via Franscini 71 / Aasa 43: a capitalised name and a house number, near address words
    Pattern(
        "name_number",
        r"(?<![\w.-])(?:[^\W\d_a-z][\w'’-]*\.?[ \t]+){0,3}[^\W\d_a-z][\w'’-]{2,}[ \t]+\d{1,5}[A-Za-z]?\b(?![.,:/-]?\d)",
        0.2,
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
    # the corner of Main St. and Oak Avenue / the corner of Beiteveien 2 and Sieda Radial: two streets named
    # by "corner of ... and ..." (the second ends at the first lower-case word or punctuation)
    Pattern(
        "street_corner",
        r"(?<=\b(?i:corner of|intersection of)[ \t]+(?:the[ \t]+)?)[^\n,;!?]{2,60}?[ \t]+(?:and|&)[ \t]+"
        r"(?:[A-Z0-9À-Þ][\w'’.-]*|[a-z]{1,3}\.)(?:[ \t]+(?:[A-Z0-9À-Þ][\w'’.-]*|[a-z]{1,3}\.)){0,4}",
        0.6,
    ),
]
# Patterns trusted on text written all in lower case (after capitalising its words): the ones anchored on a
# street type, a street-name ending, a PO box or a corner, not the bare number-name-number shapes.
_LOWER_CASE_MIN_SCORE = 0.5
STREET_ADDRESS_CONTEXT = [
    "address", "addr", "street", "live", "lives", "living", "located", "residence", "reside", "resides",
    "mail", "mailing", "ship", "shipping", "deliver", "delivery", "billing", "home", "office", "moved", "house",
    "send", "sent", "return", "meet", "arrived", "stop", "corner", "station", "restaurant", "offices",
]

# What may continue a street line within its postal block: units, PO boxes, postcodes, place names, country.
_BLOCK_SEP = re.compile(r"[ \t]*[,;]?[ \t]*(?:\.?[ \t]*\n[ \t>]*){0,2}[ \t]*,?[ \t]*")
_BLOCK_PIECE = re.compile(
    r"(?:(?i:apt\.?|apartment|suite|ste\.|unit|flat|room|floor|fl\.)\s*#?\s*\d{1,5}[A-Za-z]?\b"
    r"|(?i:p\.?\s?o\.?\s?box|box)\s+\d{1,6}\b"
    r"|[A-Z]{1,2}\d[A-Z\d]?[ \t]\d[A-Z]{2}\b"  # UK postcode
    r"|\d{2,6}(?:-\d{3,4}|[ ]\d{2,3}(?![\d.,]))?(?![\w/])"  # postcode: 10115, 53-320, 394 13
    r"|nan\b"  # an empty field of exported data
    r"|\([^\W\d_][\w ]{0,20}\)"  # "Cyprus (Greek)"
    r"|[^\W\d_a-z][\w'’∆-]*"  # a word that does not start in lower case
    r")"
)
# Capitalised words that start a new sentence or clause rather than continue an address.
_BLOCK_STOP_WORDS = frozenset({
    "I", "The", "A", "An", "My", "We", "It", "He", "She", "They", "You", "And", "But", "Please", "Thanks",
    "Thank", "Is", "Are", "Was", "Can", "Could", "Would", "What", "When", "Where", "How", "If", "So", "Then",
})


def extend_postal_block(text: str, end: int, max_pieces: int = 12, max_newlines: int = 5) -> int:
    """End of the postal block that continues a street match ending at `end`.

    Why: an address written on one line or over several (street / unit / city, region / country postcode)
    is one piece of personal data; masking only its first line would leave the rest readable. The block is
    extended piece by piece and stops at sentence punctuation, at a lower-case word, or after a few lines.
    """
    newlines = 0
    for _ in range(max_pieces):
        sep = _BLOCK_SEP.match(text, end)
        pos = sep.end() if sep else end
        if pos == end:  # pieces are separated by a space, comma or line break
            break
        newlines += text.count("\n", end, pos)
        if newlines > max_newlines:
            break
        piece = _BLOCK_PIECE.match(text, pos)
        if not piece:
            break
        word = piece.group(0)
        if word in _BLOCK_STOP_WORDS or (word[0].isalpha() and word[0].islower() and word != "nan"):
            break
        end = piece.end()
    return end


class StreetAddressRecognizer(PatternRecognizer):
    """Street lines (house number + street, PO boxes, units), extended over the postal block that follows."""

    def __init__(self, lexicon: Lexicon | None = None) -> None:
        super().__init__(
            supported_entity="STREET_ADDRESS",
            name="StreetAddressRecognizer",
            patterns=STREET_ADDRESS_PATTERNS,
            context=STREET_ADDRESS_CONTEXT,
            supported_language="en",
            global_regex_flags=PATTERN_FLAGS,
        )
        self._common_words = lexicon.common_words if lexicon else frozenset()

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        results = super().analyze(text, entities, nlp_artifacts, regex_flags)
        if not any(ch.isupper() for ch in text):
            # Why: chat is often typed all in lower case ("ship it to 12 main street, springfield"); the patterns
            # rely on capitals, so they run on a copy with capitalised words (same offsets) as well.
            cased = capitalise_words(text)
            if len(cased) == len(text):
                seen = {(r.start, r.end) for r in results}
                results += [r for r in super().analyze(cased, entities, nlp_artifacts, regex_flags)
                            if r.score >= _LOWER_CASE_MIN_SCORE and (r.start, r.end) not in seen]
                text = cased
        results = [r for r in results if not self._names_a_thing(text, r)]
        for result in results:
            result.end = extend_postal_block(text, result.end)
        # Why: a unit line matched on its own ("Suite 5") lies inside the block grown from its street line.
        return [r for r in results if not any(_inside(r, o) for o in results)]


    def _names_a_thing(self, text: str, result: RecognizerResult) -> bool:
        """A bare name + number made of dictionary words ("Office 365", "Room 12", "Chapter 3"): not a street."""
        explanation = result.analysis_explanation
        if explanation is None or explanation.pattern_name != "name_number" or not self._common_words:
            return False
        words = re.findall(r"[^\W\d_]+", text[result.start : result.end])
        return bool(words) and all(w.lower() in self._common_words for w in words)


_WORD_START = re.compile(r"(?<![\w'’])[^\W\d_]")


def capitalise_words(text: str) -> str:
    """`text` with the first letter of each word upper-cased (may change the length for letters like ß)."""
    return _WORD_START.sub(lambda m: m.group(0).upper(), text)


def _inside(inner: RecognizerResult, outer: RecognizerResult) -> bool:
    """True if `inner` lies within `outer`, is shorter and scores no higher."""
    return (outer.start <= inner.start and inner.end <= outer.end and outer.score >= inner.score
            and outer.end - outer.start > inner.end - inner.start)
