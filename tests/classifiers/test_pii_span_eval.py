"""scripts/pii_span_eval.py: presidio-research SpanEvaluator semantics on hand-made sentences (no models)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import spacy

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from pii_span_eval import Sample, Token, evaluate, io_tags, prf

_TOKENIZER = spacy.blank("en").tokenizer


def _tokenize(text: str) -> list[Token]:
    return [Token(t.text, t.idx) for t in _TOKENIZER(text)]


def _span(text: str, value: str, entity: str, nth: int = 0) -> tuple[int, int, str]:
    start = -1
    for _ in range(nth + 1):
        start = text.index(value, start + 1)
    return start, start + len(value), entity


def _score(samples: list[Sample], iou: float = 0.9, adjacency: str = "reference", entities=None):  # type: ignore[no-untyped-def]
    return evaluate(samples, _tokenize, iou, model_entities=entities, adjacency=adjacency)


TEXT = "Patient is John Smith and he lives in Berlin."

# (gold, predicted, expected (tp, predicted, annotated) for ANY PII, expected per-type PERSON tp)
CASES = [
    pytest.param([("John Smith", "PERSON")], [("John Smith", "PERSON")], (1, 1, 1), 1, id="exact"),
    pytest.param([("John Smith", "PERSON")], [("John", "PERSON")], (0, 1, 1), 0, id="partial-below-iou"),
    pytest.param([("John Smith", "PERSON")], [("John Smith", "LOCATION")], (1, 1, 1), 0, id="wrong-type-any-pii-ok"),
    pytest.param([("John Smith", "PERSON")], [], (0, 0, 1), 0, id="missed"),
    pytest.param([], [("Berlin", "LOCATION")], (0, 1, 0), 0, id="spurious"),
    # skip words are not part of the normalised span: "is John Smith" covers "John Smith" exactly
    pytest.param([("John Smith", "PERSON")], [("Patient is John Smith", "PERSON")], (0, 1, 1), 0, id="extra-word"),
    pytest.param([("John Smith", "PERSON")], [("is John Smith", "PERSON")], (1, 1, 1), 1, id="skip-word-ignored"),
    # two predictions together cover the annotation (combined IoU)
    pytest.param([("John Smith", "PERSON")], [("John", "PERSON"), ("Smith", "PERSON")], (1, 1, 1), 1,
                 id="split-prediction"),
]


@pytest.mark.parametrize(("gold", "pred", "expected_pii", "expected_person_tp"), CASES)
def test_single_sentence(gold, pred, expected_pii, expected_person_tp) -> None:  # type: ignore[no-untyped-def]
    sample = Sample(TEXT, [_span(TEXT, v, t) for v, t in gold], [_span(TEXT, v, t) for v, t in pred])
    scores = _score([sample])
    assert (scores.pii.true_positives, scores.pii.predicted, scores.pii.annotated) == expected_pii
    assert scores.per_type["PERSON"].true_positives == expected_person_tp


def test_dataset_names_are_mapped_and_unknown_ones_dropped() -> None:
    text = "Call Dr. Ann Lee at Acme on Monday."
    gold = [_span(text, "Dr.", "PREFIX"), _span(text, "Ann Lee", "PER"), _span(text, "Acme", "SOMETHING_ELSE")]
    scores = _score([Sample(text, gold, [])])
    assert set(scores.per_type) == {"TITLE", "PERSON"}  # PREFIX -> TITLE, PER -> PERSON, unknown dropped


def test_types_we_do_not_detect_are_still_scored() -> None:
    text = "Ann Lee works at Acme."
    gold = [_span(text, "Ann Lee", "PERSON"), _span(text, "Acme", "ORGANIZATION")]
    pred = [_span(text, "Ann Lee", "PERSON")]
    scores = _score([Sample(text, gold, pred)], entities=["PERSON"])
    assert scores.per_type["ORGANIZATION"].annotated == 1
    assert scores.per_type["ORGANIZATION"].true_positives == 0


def test_predictions_outside_model_entities_are_ignored() -> None:
    text = "Ann Lee works at Acme."
    pred = [_span(text, "Ann Lee", "PERSON"), _span(text, "Acme", "ORGANIZATION")]
    scores = _score([Sample(text, [_span(text, "Ann Lee", "PERSON")], pred)], entities=["PERSON"])
    assert (scores.pii.true_positives, scores.pii.predicted) == (1, 1)


def test_reference_adjacency_merges_a_later_sentences_spans() -> None:
    # In the reference, every sentence after the first merges all its same-type spans (see module docstring).
    first = "Nothing here."
    text = "Ann Lee met Bob Stone yesterday."
    gold = [_span(text, "Ann Lee", "PERSON"), _span(text, "Bob Stone", "PERSON")]
    pred = [_span(text, "Ann Lee", "PERSON")]
    samples = [Sample(first, [], []), Sample(text, gold, pred)]
    reference = _score(samples)
    fixed = _score(samples, adjacency="fixed")
    assert reference.per_type["PERSON"].annotated == 1 and reference.per_type["PERSON"].true_positives == 0
    assert fixed.per_type["PERSON"].annotated == 2 and fixed.per_type["PERSON"].true_positives == 1


def test_io_tags_first_span_wins_and_inner_spans_tag_their_token() -> None:
    text = "mail ann@example.com now"
    tokens = _tokenize(text)
    assert io_tags(tokens, [_span(text, "ann@example.com", "EMAIL_ADDRESS")]) == ["O", "EMAIL_ADDRESS", "O"]
    assert io_tags(tokens, [_span(text, "example.com", "URL")]) == ["O", "URL", "O"]  # span inside a token


@pytest.mark.parametrize(
    ("tp", "predicted", "annotated", "expected"),
    [
        (5, 10, 10, (0.5, 0.5, 0.5)),
        (0, 0, 3, (None, 0.0, None)),
        (0, 3, 0, (0.0, None, None)),
        (0, 3, 3, (0.0, 0.0, None)),
    ],
)
def test_prf(tp: int, predicted: int, annotated: int, expected: tuple) -> None:  # type: ignore[type-arg]
    got = prf(tp, predicted, annotated)
    assert got == pytest.approx(expected) if None not in expected else got == expected
