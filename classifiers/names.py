"""Person names: given-name and surname lists (US Census, via the `names` package) and the recognizers built on them.

Why lists next to NER: the small spaCy model misses many names (especially non-English ones), cuts others short
and calls some of them organisations. A known given name followed by capitalised words is strong evidence.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from presidio_analyzer import AnalysisExplanation, EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from spacy.lang.en.stop_words import STOP_WORDS

from classifiers.lexicon import EMPTY_LEXICON, ORG_DESIGNATORS, Lexicon, census_names

# Given-name words that are far more often something else in business text (months, verbs, common nouns).
_NAME_CLASHES = frozenset({
    "will", "may", "june", "april", "august", "mark", "bill", "grant", "hope", "faith", "grace", "joy", "art",
    "guy", "van", "rich", "sun", "king", "summer", "winter", "autumn", "rose", "iris", "jack", "case", "dean",
    "chance", "major", "sterling", "page", "lane", "bay", "cliff", "dale", "glen", "hill", "park", "ray", "sky",
    "an", "ever", "else", "so", "ok", "in", "see", "job", "ask", "call", "god", "christ", "jesus", "love",
    "suite", "apt", "unit", "street", "city", "max", "law", "money", "young", "long", "ali", "al", "le", "la",
    "de", "da", "del", "di", "du", "von", "ben", "bin", "ter", "ten", "str", "avenue", "road", "nan",
    "director", "manager", "doctor", "nurse", "engineer", "pink", "red", "white", "black", "brown", "green",
})
# Lower-case words that join a given name to a surname (Willemine ten Pas, Maria da Silva).
_NAME_PARTICLES = frozenset({
    "van", "von", "der", "den", "de", "da", "das", "do", "dos", "di", "del", "della", "la", "le", "ten", "ter",
    "bin", "ibn", "al", "el", "y", "zu", "af",
})
# Capitalised words that end a name rather than continue it (address, company and title words).
_NAME_STOP = frozenset({
    "Apt", "Suite", "Unit", "Street", "St", "Road", "Avenue", "Inc", "Ltd", "LLC", "Group", "Company", "Corp",
    "Bank", "University", "Hospital", "The", "And", "Of", "To", "In", "At", "On", "For", "From", "By", "With",
    "I", "Mr", "Mrs", "Ms", "Dr", "Prof",
})


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """Lower-cased given names (~5k) from the US Census 1990 lists shipped in the `names` package (MIT).

    Loaded once, lazily, from the installed package; nothing is downloaded. (A larger international list,
    gender-guesser's, scored better but is GPL-3.0, which this Apache-2.0 project cannot ship.) Without the
    package the name-list recognizer finds nothing and the rest of the pipeline is unchanged.
    """
    return frozenset(n for n in census_names("first") if len(n) > 1 and n not in _NAME_CLASHES)


_INITIAL = re.compile(r"[A-ZÀ-Þ]\.?")
_LOWER_INITIAL = re.compile(r"[a-zß-ÿ]\.?")
# A name made of a known given name and more words is strong evidence: it outranks the small model's ORG or
# GPE guess for the same words (0.85), which is often wrong for names it has not seen ("Sophie Lang" ORG).
FULL_NAME_SCORE = 0.9
INITIAL_NAME_SCORE = 0.6
GIVEN_NAME_SCORE = 0.5


class NameListRecognizer(EntityRecognizer):
    """A known given name tagged as a proper noun, with the surname words that follow it.

    Why: the small spaCy model misses many names (especially non-English ones) and cuts others short. Also:
    - a capitalised word that is not a dictionary word, an initial and a capitalised word ("Ravil G Yefimov")
      is a name whether or not the given name is listed;
    - in all-lower-case text, a listed given name followed by words no dictionary has ("patricia desrosiers");
    - later mentions of a found surname in the same text are names too ("... directed by Maciej Borkowski and
      starring Borkowski").
    """

    def __init__(self, names: frozenset[str] | None = None, lexicon: Lexicon | None = None) -> None:
        super().__init__(supported_entities=["PERSON"], name="NameListRecognizer", supported_language="en")
        self._names = names
        self._lexicon = lexicon or EMPTY_LEXICON

    def load(self) -> None:
        pass

    @property
    def names(self) -> frozenset[str]:
        return first_names() if self._names is None else self._names

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list[
            RecognizerResult]:
        if nlp_artifacts is None or nlp_artifacts.tokens is None or not self.names:
            return []
        tokens = list(nlp_artifacts.tokens)
        lower_text = not any(ch.isupper() for ch in text)
        results: list[RecognizerResult] = []
        found_surnames: set[str] = set()
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            given = self._is_given_name(tokens, i, lower_text)
            if not given and not self._starts_initial_name(tokens, i, lower_text):
                i += 1
                continue
            j = self._name_end(tokens, i, lower_text)
            start, end = tok.idx, tokens[j - 1].idx + len(tokens[j - 1].text)
            if j - i > 1:
                score = FULL_NAME_SCORE if given else INITIAL_NAME_SCORE
                found_surnames.update(t.text for t in tokens[i + 1 : j]
                                      if len(t.text) > 2 and (lower_text or t.text[0].isupper()))
            else:
                score = GIVEN_NAME_SCORE
            results.append(self._result(start, end, score, tok.text))
            i = j
        if found_surnames:
            covered = {(r.start, r.end) for r in results}
            for tok in tokens:
                if tok.text in found_surnames and not any(s <= tok.idx < e for s, e in covered):
                    results.append(self._result(tok.idx, tok.idx + len(tok.text), GIVEN_NAME_SCORE, tok.text))
        return results

    def _name_end(self, tokens: list[Any], i: int, lower_text: bool) -> int:
        """Index after the last token of the name starting at token i."""
        j = i + 1
        while j < len(tokens) and j - i <= 4:
            nxt = tokens[j].text
            if "\n" in tokens[j - 1].whitespace_ or tokens[j].is_space:
                break
            if lower_text:
                # lower-case text: an optional initial, then up to two words no dictionary or stop list has
                if _LOWER_INITIAL.fullmatch(nxt) and j + 1 < len(tokens) and self._is_surname_like(tokens[j + 1]):
                    j += 2
                elif j - i <= 2 and self._is_surname_like(tokens[j]):
                    j += 1
                else:
                    break
            elif self._is_name_word(nxt) and nxt.lower() not in _NAME_STOP_LOWER:
                j += 1
            elif nxt.lower() in _NAME_PARTICLES and j + 1 < len(tokens) and self._is_name_word(tokens[j + 1].text):
                j += 2
            else:
                break
        return j

    def _is_given_name(self, tokens: list[Any], i: int, lower_text: bool) -> bool:
        tok = tokens[i]
        word = tok.text
        if len(word) < 2 or word.lower() not in self.names or word.lower() in STOP_WORDS:
            return False
        if lower_text:
            return len(word) > 2 and (tok.pos_ == "PROPN" or self._name_end(tokens, i, lower_text) > i + 1)
        return word[0].isupper() and not word.isupper() and tok.pos_ in ("PROPN", "NOUN", "X", "ADJ")

    def _starts_initial_name(self, tokens: list[Any], i: int, lower_text: bool) -> bool:
        """A capitalised non-dictionary word, an initial and a capitalised word: "Ravil G Yefimov"."""
        if lower_text or i + 2 >= len(tokens) or not self._lexicon.common_words:
            return False
        tok, initial, last = tokens[i], tokens[i + 1].text, tokens[i + 2].text
        return (
            len(tok.text) > 1 and tok.text.istitle() and tok.text.isalpha() and tok.text.lower() not in STOP_WORDS
            and not self._lexicon.is_everyday(tok.text, tok.lemma_) and bool(_INITIAL.fullmatch(initial))
            and self._is_name_word(last) and "\n" not in tok.whitespace_ + tokens[i + 1].whitespace_
        )

    def _is_surname_like(self, tok: Any) -> bool:
        word = tok.text
        return (len(word) > 1 and word.isalpha() and word.lower() not in STOP_WORDS and bool(self._lexicon.common_words)
                and not self._lexicon.is_everyday(word, tok.lemma_) and word.lower() not in _NAME_STOP_LOWER)

    @staticmethod
    def _is_name_word(word: str) -> bool:
        if _INITIAL.fullmatch(word):
            return True
        return (len(word) > 1 and word[0].isupper() and any(ch.islower() for ch in word[1:]) and word.isalpha()) or (
            "-" in word and all(p[:1].isupper() for p in word.split("-") if p))

    def _result(self, start: int, end: int, score: float, word: str) -> RecognizerResult:
        return _person_result(self, start, end, score, f"name list / name shape at {word!r}")


_NAME_STOP_LOWER = frozenset(w.lower() for w in _NAME_STOP) | ORG_DESIGNATORS | {"apt", "nan"}


def _person_result(recognizer: EntityRecognizer, start: int, end: int, score: float, why: str) -> RecognizerResult:
    result = RecognizerResult(
        "PERSON", start, end, score, AnalysisExplanation(type(recognizer).__name__, score, textual_explanation=why)
    )
    result.recognition_metadata = {
        RecognizerResult.RECOGNIZER_NAME_KEY: type(recognizer).__name__,
        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: recognizer.id,
    }
    return result


# "Anna: hello" at a line start, on at least two lines: the speakers of a chat log or transcript.
_SPEAKER = re.compile(r"^[ \t>]*([A-ZÀ-Þ][\w'’-]+(?:[ \t][A-ZÀ-Þ][\w'’-]+)?)[ \t]*:[ \t]+\S", re.MULTILINE)
# Field labels of forms and mail headers that a dictionary may not list.
_FIELD_LABELS = frozenset({
    "tel", "fax", "mob", "ph", "dob", "ssn", "ref", "attn", "cc", "bcc", "re", "fwd", "ext", "id", "url", "pin",
    "iban", "swift", "bic", "vat", "eta", "etd", "faq", "tl;dr", "nb", "ps", "sms", "whatsapp", "e-mail", "email",
})
SPEAKER_SCORE = 0.6


class SpeakerRecognizer(EntityRecognizer):
    """Speaker labels of a transcript or chat ("Ubul: What a wife." / "Nicole: ..."), when they are not words.

    Why: NER sees a line-initial word before a colon without context and often misses it. A label counts only
    when it is not a dictionary word ("Note:", "Address:") and the text has two or more such lines.
    """

    def __init__(self, lexicon: Lexicon | None = None) -> None:
        super().__init__(supported_entities=["PERSON"], name="SpeakerRecognizer", supported_language="en")
        self._lexicon = lexicon or EMPTY_LEXICON

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list[
            RecognizerResult]:
        if ":" not in text or not self._lexicon.common_words:
            return []
        speakers = [m for m in _SPEAKER.finditer(text) if self._is_speaker(m.group(1))]
        if len(speakers) < 2:
            return []
        return [_person_result(self, m.start(1), m.end(1), SPEAKER_SCORE, "speaker label") for m in speakers]

    def _is_speaker(self, label: str) -> bool:
        words = label.split()
        return not any(
            w.lower() in STOP_WORDS or w.lower() in _FIELD_LABELS or w.isupper() or self._lexicon.is_everyday(w)
            for w in words
        )
