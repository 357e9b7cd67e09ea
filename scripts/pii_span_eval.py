"""Span-level PII scoring the way presidio-research's SpanEvaluator does it (presidio_evaluator/evaluation).

Steps, as there: tokenize with spaCy; tag each token with the span (gold or predicted) its start falls in
(IO scheme); rebuild spans from runs of equal tags; drop skip words (punctuation, stop words, "street",
"apt", "mr." ...) to get normalised character bounds; merge same-type spans separated only by skip words;
for each gold span, greedily add overlapping predictions while the combined character IoU grows; a gold
span is a true positive when that IoU reaches the threshold. Global ("any PII") metrics ignore types;
per-entity metrics only combine predictions of the gold span's type. F-beta with beta = 2.
"""

from __future__ import annotations

import string
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from spacy.lang.en.stop_words import STOP_WORDS

# Dataset entity names -> our entity names (after PresidioAnalyzerWrapper.presidio_entities_map, widened
# with the names of other presidio-research datasets). Our STREET_ADDRESS is scored as LOCATION there.
DATASET_ENTITY_MAP: dict[str, str] = {
    "PER": "PERSON", "PERSON": "PERSON", "NAME": "PERSON", "FIRST_NAME": "PERSON", "LAST_NAME": "PERSON",
    "FULL_NAME": "PERSON", "PATIENT": "PERSON", "STAFF": "PERSON", "HCW": "PERSON", "DOCTOR": "PERSON",
    "LOC": "LOCATION", "LOCATION": "LOCATION", "GPE": "LOCATION", "FACILITY": "LOCATION", "FAC": "LOCATION",
    "CITY": "LOCATION", "COUNTRY": "LOCATION", "STATE": "LOCATION", "ADDRESS": "LOCATION",
    "STREET_ADDRESS": "LOCATION", "STREET": "LOCATION", "NATIONALITY": "LOCATION",
    "ZIP": "ZIP_CODE", "ZIP_CODE": "ZIP_CODE", "ZIPCODE": "ZIP_CODE", "POSTCODE": "ZIP_CODE",
    "ORG": "ORGANIZATION", "ORGANIZATION": "ORGANIZATION", "ORGANISATION": "ORGANIZATION", "COMPANY": "ORGANIZATION",
    "VENDOR": "ORGANIZATION", "HOSP": "ORGANIZATION", "HOSPITAL": "ORGANIZATION", "PATORG": "ORGANIZATION",
    "NORP": "NRP", "NRP": "NRP",
    "AGE": "AGE", "ID": "ID", "TITLE": "TITLE", "PREFIX": "TITLE",
    "CREDIT_CARD": "CREDIT_CARD", "CREDIT_CARD_NUMBER": "CREDIT_CARD", "IBAN": "IBAN_CODE", "IBAN_CODE": "IBAN_CODE",
    "DATE": "DATE_TIME", "TIME": "DATE_TIME", "DATE_TIME": "DATE_TIME", "BIRTHDAY": "DATE_TIME",
    "DATE_OF_BIRTH": "DATE_TIME", "DOB": "DATE_TIME",
    "PHONE": "PHONE_NUMBER", "PHONE_NUMBER": "PHONE_NUMBER", "PHONENUMBER": "PHONE_NUMBER",
    "DOMAIN_NAME": "URL", "DOMAIN": "URL", "URL": "URL",
    "EMAIL": "EMAIL_ADDRESS", "EMAIL_ADDRESS": "EMAIL_ADDRESS", "IP_ADDRESS": "IP_ADDRESS", "IP": "IP_ADDRESS",
    "SSN": "US_SSN", "US_SSN": "US_SSN",
    "US_DRIVER_LICENSE": "US_DRIVER_LICENSE", "DRIVER_LICENSE": "US_DRIVER_LICENSE",
}
# Our entity names -> the evaluation's names (same as Presidio's except the street address type).
PREDICTION_ENTITY_MAP: dict[str, str] = {"STREET_ADDRESS": "LOCATION"}

_EXTRA_SKIP = (
    " ", "", "\n", "\n\n", "\n\n\n", "\n\n\n\n", "\t", "\t\t", "\t\t\t", "\t\t\t\t", ">>", ">>>", ">>>>", ">>>>>",
    ">>>>>>", "'s", "street", "st.", "st", "de", "rue", "via", "and", "a", "the", "or", "do", "as", "of", "day",
    "address", "country", "state", "city", "zip", "po", "apt", "unit", "corner", "p.o.", "box", "suite", "mr.",
    "mrs.", "miss", "year", "years", "y/o", "month", "months", "old", "morning", "noon", "afternoon", "night",
    "evening", "this", "first", "last", "week", "weeks", "weekend", "days", "age", "ago", "inc", "inc.", "ltd",
)
SKIP_WORDS: frozenset[str] = frozenset([*string.punctuation, *_EXTRA_SKIP, *STOP_WORDS])


@dataclass(frozen=True)
class Token:
    text: str
    idx: int


@dataclass
class EvalSpan:
    entity_type: str
    start: int  # normalised (skip words removed) character bounds, end exclusive
    end: int
    token_start: int
    token_end: int  # index of the first token after the span


@dataclass
class Counts:
    annotated: int = 0
    predicted: int = 0
    true_positives: int = 0


@dataclass
class Scores:
    pii: Counts = field(default_factory=Counts)
    per_type: dict[str, Counts] = field(default_factory=lambda: defaultdict(Counts))


def io_tags(tokens: Sequence[Token], spans: Iterable[tuple[int, int, str]]) -> list[str]:
    """Tag each token with the type of the first span its start offset falls in (span_to_tag, IO)."""
    ordered = sorted(spans)
    return [next((t for s, e, t in ordered if s <= tok.idx < e), "O") for tok in tokens]


def build_spans(tokens: Sequence[Token], tags: Sequence[str]) -> list[EvalSpan]:
    """Runs of equal non-O tags, normalised without skip words, then merged across skip-word gaps."""
    spans: list[EvalSpan] = []
    i = 0
    while i < len(tokens):
        if tags[i] == "O":
            i += 1
            continue
        j = i
        while j < len(tokens) and tags[j] == tags[i]:
            j += 1
        kept = [t for t in tokens[i:j] if t.text.lower() not in SKIP_WORDS]
        if kept:
            spans.append(EvalSpan(tags[i], min(t.idx for t in kept), max(t.idx + len(t.text) for t in kept), i, j))
        i = j
    merged: list[EvalSpan] = []
    for span in spans:
        prev = merged[-1] if merged else None
        gap = tokens[prev.token_end : span.token_start] if prev else []
        if prev and prev.entity_type == span.entity_type and all(t.text.lower().strip() in SKIP_WORDS for t in gap):
            prev.start, prev.end, prev.token_end = min(prev.start, span.start), max(prev.end, span.end), span.token_end
        else:
            merged.append(span)
    return merged


def _combined_iou(gold: EvalSpan, preds: Sequence[EvalSpan]) -> float:
    gold_chars = set(range(gold.start, gold.end + 1))
    pred_chars: set[int] = set()
    for k, p in enumerate(preds):
        # Why the off-by-one for later spans: it reproduces SpanEvaluator._calculate_combined_iou.
        pred_chars.update(range(p.start, p.end + 1) if k == 0 else range(p.start - 1, p.end))
    union = len(gold_chars | pred_chars)
    return len(gold_chars & pred_chars) / union if union else 0.0


def _greedy(gold: EvalSpan, candidates: Sequence[EvalSpan]) -> tuple[list[EvalSpan], float]:
    chosen: list[EvalSpan] = []
    best = 0.0
    for pred in sorted(candidates, key=lambda p: p.start):
        iou = _combined_iou(gold, [*chosen, pred])
        if iou > best:
            chosen.append(pred)
            best = iou
    return chosen, best


def score_sentence(gold: list[EvalSpan], preds: list[EvalSpan], scores: Scores, iou_threshold: float) -> None:
    """Match one sentence's spans and add its counts to `scores`."""
    scores.pii.annotated += len(gold)
    for g in gold:
        scores.per_type[g.entity_type].annotated += 1
    for p in preds:
        scores.per_type[p.entity_type].predicted += 1
    used_global: set[int] = set()
    used_typed: set[int] = set()
    for g in gold:
        overlapping = [k for k, p in enumerate(preds) if k not in used_global and p.start < g.end and g.start < p.end]
        chosen, iou = _greedy(g, [preds[k] for k in overlapping])
        if chosen and iou >= iou_threshold:
            scores.pii.true_positives += 1
            scores.pii.predicted += 1  # the predictions that cover one gold span count as one
            used_global.update(k for k in overlapping if preds[k] in chosen)
        typed = [k for k in overlapping if preds[k].entity_type == g.entity_type and k not in used_typed]
        chosen_t, iou_t = _greedy(g, [preds[k] for k in typed])
        if chosen_t and iou_t >= iou_threshold:
            scores.per_type[g.entity_type].true_positives += 1
            used_typed.update(k for k in typed if preds[k] in chosen_t)
    scores.pii.predicted += sum(1 for k in range(len(preds)) if k not in used_global)


def prf(tp: int, predicted: int, annotated: int, beta: float = 2.0) -> tuple[float, float, float]:
    precision = tp / predicted if predicted else 0.0
    recall = tp / annotated if annotated else 0.0
    b2 = beta * beta
    f = (1 + b2) * precision * recall / (b2 * precision + recall) if precision + recall else 0.0
    return precision, recall, f


def evaluate(
    samples: Sequence[tuple[str, list[tuple[int, int, str]], list[tuple[int, int, str]]]],
    tokenize: Callable[[str], list[Token]],
    iou_threshold: float,
) -> Scores:
    """samples: (text, gold spans, predicted spans) with (start, end, type) already in evaluation names."""
    scores = Scores()
    for text, gold, pred in samples:
        tokens = tokenize(text)
        score_sentence(build_spans(tokens, io_tags(tokens, gold)), build_spans(tokens, io_tags(tokens, pred)),
                       scores, iou_threshold)
    return scores
