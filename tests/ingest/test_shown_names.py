"""Personal data in the names citations show beside a text (ingest.shown_names): strict, because one false
positive in a file name would relabel every chunk of the file."""

from __future__ import annotations

from typing import Any

import pytest

from classifiers.lexicon import Lexicon
from classifiers.types import Finding
from ingest import shown_names

# Ordinary business file names: none may mark its chunks personal (a review found the real classifier reading
# people, driver's licences and dates in several of them).
BUSINESS_NAMES = [
    "security-policy-v3.pdf", "policy-v2.pdf", "Salesforce_export_2026-01.csv", "Jira_export_2025-12.csv",
    "Marketing Plan - Spring Campaign.docx", "okr-review-jan.md", "okr-review-march.md", "status-update-mark.md",
    "team-bob-notes.md", "Paris Office Move.docx", "Holly Jolly Party Plan.docx", "Q3-board-minutes.docx",
    "eu-customers.csv", "2026_budget_v2.xlsx", "invoice-4471.pdf", "meeting-notes-berlin.md",
    "london-office-lease.pdf", "payroll-summary-june.xlsx", "employee-directory.md", "data-sharing-policy.md",
    "retention-schedule.txt", "deployment-guide.html", "search-runbook.md", "partner-request.md",
    "Annual Report 2025.pdf", "Vendor Contacts.xlsx", "board.eml", "minutes.md",
]
PEOPLE: dict[str, set[str]] = {
    "Jonas_Weber_performance_review.md": {"Jonas_Weber"},
    "people/Maria Schmidt/notes.md": {"Maria Schmidt"},
    "contract-lena-fischer.pdf": set(),  # lower case: not read as a person (a known miss, kept strict)
    "from_alice.smith@example.com.txt": {"alice.smith@example.com"},
    "Lena_Fischer_contract_DE89370400440532013000.txt": {"Lena_Fischer", "DE89370400440532013000"},
}


def _vet(classifier: Any, name: str) -> tuple[Finding, ...]:
    as_is, spaced = classifier.classify(list(shown_names.readings(name)))
    return shown_names.vetted(name, (*as_is.findings, *spaced.findings), classifier.lexicon)


def test_real_classifier_leaves_business_file_names_alone(real_classifier: Any) -> None:
    flagged = {n: [(f.entity_type, n[f.start:f.end]) for f in _vet(real_classifier, n)] for n in BUSINESS_NAMES}
    assert {n: f for n, f in flagged.items() if f} == {}


@pytest.mark.parametrize(("name", "pieces"), PEOPLE.items())
def test_real_classifier_finds_people_and_identifiers_in_names(real_classifier: Any, name: str,
                                                              pieces: set[str]) -> None:
    assert {name[f.start:f.end] for f in _vet(real_classifier, name)} == pieces


def test_a_person_is_a_run_of_capitalised_name_words_trimmed_to_the_run() -> None:
    lexicon = Lexicon(frozenset({"review", "spring", "campaign", "office"}), frozenset({"jonas", "weber", "paris"}))
    name = "Jonas_Weber_review.md"
    [f] = shown_names.vetted(name, [Finding("PERSON", 0, 18, 0.85, "ner")], lexicon)
    assert name[f.start:f.end] == "Jonas_Weber"
    for text, span in (("Spring Campaign.docx", (0, 15)), ("Paris Office.md", (0, 12)), ("jonas weber.md", (0, 11)),
                       ("Weber.md", (0, 5))):
        assert shown_names.vetted(text, [Finding("PERSON", *span, 0.85, "ner")], lexicon) == (), text
    # Identifiers whose recognizers validate them pass; anything else (a licence, a date, a place) does not.
    keep = [Finding("EMAIL_ADDRESS", 0, 5, 1.0, "x"), Finding("IBAN_CODE", 6, 9, 1.0, "x")]
    drop = [Finding("US_DRIVER_LICENSE", 0, 2, 0.6, "x"), Finding("DATE_TIME", 0, 4, 0.9, "x"),
            Finding("LOCATION", 0, 4, 0.9, "x")]
    assert shown_names.vetted("a@b.c DE8 v3", [*keep, *drop], lexicon) == tuple(keep)


def test_a_names_personal_data_is_found_in_the_text_whatever_its_separators_and_case() -> None:
    name = "Maria_Garcia_review.md"
    person = Finding("PERSON", 0, 12, 0.85, "spacy")  # "Maria_Garcia"
    text = "maria garcia exceeded; Maria-Garcia too; MARIA_GARCIA; Marias Garcia and Maria Garcias are others."
    found = shown_names.in_text(name, [person], text)
    assert [text[f.start:f.end] for f in found] == ["maria garcia", "Maria-Garcia", "MARIA_GARCIA"]
    assert {(f.entity_type, f.recognizer) for f in found} == {("PERSON", "shown_name")}
    email = "from_alice.smith@example.com.txt"
    at = email.index("alice")
    found = shown_names.in_text(email, [Finding("EMAIL_ADDRESS", at, at + 23, 1.0, "email")],
                                "Write to Alice.Smith@example.com today.")
    assert [(f.start, f.end) for f in found] == [(9, 32)]
    assert shown_names.in_text(name, [], text) == ()
