"""Span-level PII scoring, reimplementing presidio-research's SpanEvaluator as used for the published figures.

Reference: presidio-evaluator 0.2.5 (the first release with SpanEvaluator; the notebooks' stored outputs at
commit 88ad8f2e, 2025-08-07, match it: its per-entity annotation counts on synth_dataset_v2 -- ORGANIZATION 226,
LOCATION 576, PERSON 675 ... -- are exactly the ones in notebook 4's chart). Functions mirrored:

- span_to_tag.span_to_tag (IO) + _handle_overlaps: each token takes the type of the first (sorted) span its
  start offset falls in, or of a span lying inside the token.
- SpanEvaluator._create_spans: runs of equal IO tags; skip words (skipwords.get_skip_words: punctuation,
  whitespace, spaCy stop words, "street", "apt", "mr." ...) are dropped to get normalised character bounds;
  a run made only of skip words is no span.
- SpanEvaluator._merge_adjacent_spans / _are_spans_adjacent: consecutive same-type spans are merged when only
  skip words lie between them. QUIRK reproduced (adjacency="reference"): the reference slices the tokens in
  between with pandas `.loc` using sentence-local token positions against the dataset-wide row index, so for
  every sentence but the first of a run the slice is empty and ALL same-type spans of a sentence merge into one
  (and, in the global pass where every type is "PII", all PII spans of a sentence merge into one hull).
  adjacency="fixed" uses the intended local slice instead.
- SpanEvaluator._match_predictions_with_annotations, _compare_single_overlaps, _compare_multiple_overlaps,
  _calculate_combined_iou (including its off-by-one for the 2nd+ span): per-type pass on the typed tags,
  global ("any PII") pass on tags renamed to "PII" (create_global_entities_df). A prediction overlapping
  several annotations is counted for each; untouched predictions are false positives.
- BaseEvaluator.precision / recall / f_beta: P = TP / num_predicted, R = TP / num_annotated, F-beta with
  beta = 2; undefined (no predictions / no annotations) is reported as NaN there and as None here.
"""

from __future__ import annotations

import math
import string
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from spacy.lang.en.stop_words import STOP_WORDS

# presidio_evaluator.models.PresidioAnalyzerWrapper.presidio_entities_map (0.2.5), verbatim keys and values:
# dataset entity name -> Presidio entity name. Dataset types that are not keys are dropped (align_entity_types
# with allow_missing_mappings=True), the way the published notebooks call it.
DATASET_ENTITY_MAP: dict[str, str] = {
    "PER": "PERSON", "PERSON": "PERSON", "FIRST_NAME": "PERSON", "LAST_NAME": "PERSON", "NAME": "PERSON",
    "PATIENT": "PERSON", "STAFF": "PERSON", "HCW": "PERSON",
    "LOC": "LOCATION", "LOCATION": "LOCATION", "GPE": "LOCATION", "FACILITY": "LOCATION", "CITY": "LOCATION",
    "ADDRESS": "LOCATION", "STREET_ADDRESS": "LOCATION", "ZIP": "ZIP_CODE", "ZIP_CODE": "ZIP_CODE",
    "ORG": "ORGANIZATION", "ORGANIZATION": "ORGANIZATION", "VENDOR": "ORGANIZATION", "NORP": "NRP", "NRP": "NRP",
    "NATIONALITY": "NRP", "HOSP": "ORGANIZATION", "PATORG": "ORGANIZATION", "HOSPITAL": "ORGANIZATION",
    "AGE": "AGE", "ID": "ID", "TITLE": "TITLE", "PREFIX": "TITLE",
    "CREDIT_CARD": "CREDIT_CARD", "CREDIT_CARD_NUMBER": "CREDIT_CARD", "IBAN_CODE": "IBAN_CODE", "IBAN": "IBAN_CODE",
    "DATE": "DATE_TIME", "TIME": "DATE_TIME", "DATE_TIME": "DATE_TIME", "BIRTHDAY": "DATE_TIME",
    "DATE_OF_BIRTH": "DATE_TIME", "DOB": "DATE_TIME",
    "PHONE": "PHONE_NUMBER", "PHONE_NUMBER": "PHONE_NUMBER",
    "DOMAIN_NAME": "URL", "URL": "URL", "DOMAIN": "URL",
    "EMAIL": "EMAIL_ADDRESS", "EMAIL_ADDRESS": "EMAIL_ADDRESS", "IP_ADDRESS": "IP_ADDRESS",
    "SSN": "US_SSN", "US_SSN": "US_SSN", "US_DRIVER_LICENSE": "US_DRIVER_LICENSE",
}
# Our entity names -> Presidio's (the model-side mapping a custom wrapper would apply): our street-address
# type is a LOCATION there.
PREDICTION_ENTITY_MAP: dict[str, str] = {"STREET_ADDRESS": "LOCATION"}

_EXTRA_SKIP = (
    " ", "", "\n", "\n\n", "\n\n\n", "\n\n\n\n", "\t", "\t\t", "\t\t\t", "\t\t\t\t", ">>", ">>>", ">>>>", ">>>>>",
    ">>>>>>", "'s", "street", "st.", "st", "de", "rue", "via", "and", "a", "the", "or", "do", "as", "of", "day",
    "address", "country", "state", "city", "zip", "po", "apt", "unit", "corner", "p.o.", "box", "suite", "mr.",
    "mrs.", "miss", "year", "years", "y/o", "month", "months", "old", "morning", "noon", "afternoon", "night",
    "evening", "this", "first", "last", "week", "weeks", "weekend", "days", "age", "ago", "inc", "inc.", "ltd",
)
SKIP_WORDS: frozenset[str] = frozenset([*string.punctuation, *string.whitespace, *_EXTRA_SKIP, *STOP_WORDS])

PII = "PII"


@dataclass(frozen=True)
class Token:
    text: str
    idx: int


@dataclass
class EvalSpan:
    entity_type: str
    start: int  # raw character bounds of the token run (start of first token, end of last)
    end: int
    norm_start: int  # normalised bounds: skip words removed
    norm_end: int
    token_start: int
    token_end: int


@dataclass
class Counts:
    annotated: int = 0
    predicted: int = 0
    true_positives: int = 0


@dataclass
class Scores:
    pii: Counts = field(default_factory=Counts)
    per_type: dict[str, Counts] = field(default_factory=lambda: defaultdict(Counts))


def _handle_overlaps(spans: Sequence[tuple[int, int, str, float]]) -> list[tuple[int, int, str, float]]:
    """span_to_tag._handle_overlaps: trim (or split) overlapping spans in favour of the higher score."""
    items = sorted(spans, key=lambda s: s[0])
    start = [s[0] for s in items]
    end = [s[1] for s in items]
    tag = [s[2] for s in items]
    score = [s[3] for s in items]
    n = len(start)
    i = 0
    while i < n - 1:
        for j in range(i + 1, n):
            if start[i] <= start[j] <= end[i]:
                if score[i] > score[j]:
                    if start[i] <= end[j] <= end[i]:
                        score[j] = 0
                    else:
                        start[j] = end[i] + 1
                elif end[j] < end[i]:
                    start.append(end[j] + 1)
                    end.append(end[i])
                    score.append(score[i])
                    tag.append(tag[i])
                    n += 1
                    end[i] = start[j] - 1
                else:
                    end[i] = start[j] - 1
        i += 1
    return sorted(zip(start, end, tag, score, strict=True), key=lambda s: s[0])


def io_tags(tokens: Sequence[Token], spans: Iterable[tuple[int, int, str]],
            scores: Sequence[float] | None = None) -> list[str]:
    """span_to_tag(scheme="IO"): one tag per token."""
    spans = list(spans)
    weights = list(scores) if scores else [0.5] * len(spans)
    resolved = _handle_overlaps([(s, e, t, w) for (s, e, t), w in zip(spans, weights, strict=True)])
    tags = []
    for tok in tokens:
        tok_end = tok.idx + len(tok.text)
        found = "O"
        for s, e, t, _ in resolved:
            if s <= tok.idx < e or (tok.idx <= s <= tok_end and tok.idx <= e <= tok_end):
                found = t
                break
        tags.append(found)
    return tags


def build_spans(tokens: Sequence[Token], tags: Sequence[str], *, row_offset: int = 0,
                adjacency: str = "reference") -> list[EvalSpan]:
    """_create_spans + _merge_adjacent_spans for one sentence.

    row_offset: index of this sentence's first token among all tokens of the evaluated set (the reference's
    DataFrame row label); only used by adjacency="reference" to reproduce its slicing.
    """
    spans: list[EvalSpan] = []
    n = len(tokens)
    i = 0
    while i < n:
        if tags[i] == "O":
            i += 1
            continue
        j = i
        while j < n and tags[j] == tags[i]:
            j += 1
        kept = [t for t in tokens[i:j] if t.text.lower() not in SKIP_WORDS]
        if kept:
            # Why row_offset + n for the last run: the reference uses the global row label there.
            token_end = j if j < n else row_offset + n
            spans.append(EvalSpan(
                tags[i], tokens[i].idx, tokens[j - 1].idx + len(tokens[j - 1].text),
                min(t.idx for t in kept), max(t.idx + len(t.text.lower()) for t in kept), i, token_end,
            ))
        i = j
    spans.sort(key=lambda s: s.start)
    merged: list[EvalSpan] = []
    for span in spans:
        prev = merged[-1] if merged else None
        if prev and prev.entity_type == span.entity_type and _adjacent(tokens, prev, span, row_offset, adjacency):
            prev.end = span.end
            prev.norm_start = min(prev.norm_start, span.norm_start)
            prev.norm_end = max(prev.norm_end, span.norm_end)
            prev.token_end = span.token_end
        else:
            merged.append(span)
    return merged


def _adjacent(tokens: Sequence[Token], a: EvalSpan, b: EvalSpan, row_offset: int, adjacency: str) -> bool:
    if adjacency == "reference":
        # df.loc[a.token_end : b.token_start - 1] on rows labelled row_offset .. row_offset + n - 1
        lo, hi = max(a.token_end, row_offset), min(b.token_start - 1, row_offset + len(tokens) - 1)
        between = tokens[lo - row_offset : hi - row_offset + 1] if lo <= hi else []
    else:
        local_end = a.token_end - row_offset if a.token_end > len(tokens) else a.token_end
        between = tokens[local_end : b.token_start]
    return all(t.text.lower().strip() in SKIP_WORDS for t in between)


def _iou(a: EvalSpan, b: EvalSpan) -> float:
    """Span.iou on normalised bounds: touching spans do not intersect; the union is the hull."""
    if a.norm_end < b.norm_start or b.norm_end < a.norm_start:
        return 0.0
    inter = min(a.norm_end, b.norm_end) - max(a.norm_start, b.norm_start)
    if inter == 0:
        return 0.0
    union = max(a.norm_end, b.norm_end) - min(a.norm_start, b.norm_start)
    return inter / union if union else 0.0


def _combined_iou(gold: EvalSpan, preds: Sequence[EvalSpan]) -> float:
    gold_chars = set(range(gold.norm_start, gold.norm_end + 1))
    pred_chars: set[int] = set()
    for k, p in enumerate(preds):
        # Why the off-by-one for later spans: it is what _calculate_combined_iou does.
        pred_chars.update(range(p.norm_start, p.norm_end + 1) if k == 0 else range(p.norm_start - 1, p.norm_end))
    union = len(gold_chars | pred_chars)
    return len(gold_chars & pred_chars) / union if union else 0.0


def match_sentence(gold: list[EvalSpan], preds: list[EvalSpan], iou_threshold: float,
                   counts: Callable[[str], Counts]) -> None:
    """One sentence of _match_predictions_with_annotations; counts(type) returns the counter to update."""
    processed: set[int] = set()
    for g in gold:
        counts(g.entity_type).annotated += 1
        overlapping = sorted(((k, _iou(g, p)) for k, p in enumerate(preds)), key=lambda kv: preds[kv[0]].start)
        overlapping = [(k, v) for k, v in overlapping if v > 0]
        processed.update(k for k, _ in overlapping)
        if len(overlapping) == 1:
            k, iou = overlapping[0]
            p = preds[k]
            counts(p.entity_type).predicted += 1
            if iou >= iou_threshold and p.entity_type == g.entity_type:
                counts(g.entity_type).true_positives += 1
        elif overlapping:
            by_type: dict[str, list[EvalSpan]] = {}
            for k, _ in overlapping:
                by_type.setdefault(preds[k].entity_type, []).append(preds[k])
            for entity_type, group in by_type.items():
                counts(entity_type).predicted += 1  # a same-type group counts as one prediction
                if entity_type == g.entity_type and _combined_iou(g, group) >= iou_threshold:
                    counts(g.entity_type).true_positives += 1
    for k, p in enumerate(preds):
        if k not in processed:
            counts(p.entity_type).predicted += 1


def prf(tp: int, predicted: int, annotated: int, beta: float = 2.0) -> tuple[float | None, float | None, float | None]:
    """BaseEvaluator.precision / recall / f_beta; None where the reference gives NaN."""
    precision = tp / predicted if predicted else None
    recall = tp / annotated if annotated else None
    if precision is None or recall is None or (precision == 0 and recall == 0):
        return precision, recall, None
    b2 = beta * beta
    return precision, recall, (1 + b2) * precision * recall / (b2 * precision + recall)


@dataclass
class Sample:
    """One text: gold spans in the dataset's names, predicted spans already in evaluation names."""

    text: str
    gold: list[tuple[int, int, str]]
    pred: list[tuple[int, int, str]]
    pred_scores: list[float] | None = None


def evaluate(
    samples: Sequence[Sample],
    tokenize: Callable[[str], list[Token]],
    iou_threshold: float,
    *,
    gold_map: Mapping[str, str] | None = None,
    model_entities: Iterable[str] | None = None,
    adjacency: str = "reference",
) -> Scores:
    """Score samples the way SpanEvaluator.evaluate_all + calculate_score(entities=None) do.

    Gold tags are computed from the dataset's spans, then renamed with gold_map (types without an entry become
    "O": align_entity_types); every remaining gold type is scored. Predicted tags of types outside
    model_entities become "O" (BaseModel.filter_tags_in_supported_entities).
    """
    gold_map = dict(DATASET_ENTITY_MAP if gold_map is None else gold_map)
    keep = None if model_entities is None else set(model_entities)
    scores = Scores()
    offset = 0
    for sample in samples:
        tokens = tokenize(sample.text)
        gold_tags = [gold_map.get(t, "O") if t != "O" else t for t in io_tags(tokens, sample.gold)]
        gold_tags = [t if t not in ("", None) else "O" for t in gold_tags]
        pred_tags = io_tags(tokens, sample.pred, sample.pred_scores)
        if keep is not None:
            pred_tags = [t if t in keep else "O" for t in pred_tags]
        match_sentence(build_spans(tokens, gold_tags, row_offset=offset, adjacency=adjacency),
                       build_spans(tokens, pred_tags, row_offset=offset, adjacency=adjacency),
                       iou_threshold, lambda t: scores.per_type[t])
        gold_pii = [PII if t != "O" else t for t in gold_tags]
        pred_pii = [PII if t != "O" else t for t in pred_tags]
        match_sentence(build_spans(tokens, gold_pii, row_offset=offset, adjacency=adjacency),
                       build_spans(tokens, pred_pii, row_offset=offset, adjacency=adjacency),
                       iou_threshold, lambda _t: scores.pii)
        offset += len(tokens)
    return scores


def fmt(value: float | None) -> str:
    return "   n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
