"""Post-NER refinements that need the NLP engine's tokens: findings in, fewer or corrected findings out.

- drop_everyday_names: the small spaCy model tags capitalised everyday words as people or organisations
  ("Guilty Pleasures", "the Devil", "Discipline"); a span made only of dictionary words, none of them a name,
  is dropped (organisations keep a designator: "Climate Corporation").
- trim_leading_words: a person span that starts with dictionary words ("Producer Jane Roe", "ex-Zombie Kastner")
  loses them: the name is what follows.
- coordinated_names: in a list of single capitalised words ("Efimiya, Mary, Ariana and Jodi") where most items
  are people, the other items that are not dictionary words are people too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from classifiers.lexicon import ORG_DESIGNATORS, Lexicon
from classifiers.types import Finding

NER_RECOGNIZER = "SpacyRecognizer"
COORDINATION_RULE = "CoordinatedNameRule"
COORDINATED_NAME_SCORE = 0.6
_LIST_SEPARATORS = frozenset({",", "and", "&", "or"})


def _span(doc: Any, f: Finding) -> Any:
    return doc.char_span(f.start, f.end, alignment_mode="expand")


def _all_everyday(span: Any, lexicon: Lexicon) -> bool:
    words = [t for t in span if t.is_alpha]
    return bool(words) and all(lexicon.is_everyday(t.text, t.lemma_) for t in words)


def drop_everyday_names(doc: Any, findings: Sequence[Finding], lexicon: Lexicon) -> list[Finding]:
    """Drop NER PERSON / ORGANIZATION findings made only of everyday words (see the module doc)."""
    if not lexicon.common_words:
        return list(findings)
    out = []
    for f in findings:
        if f.recognizer == NER_RECOGNIZER and f.entity_type in ("PERSON", "ORGANIZATION"):
            span = _span(doc, f)
            if span is not None and _all_everyday(span, lexicon):
                if f.entity_type == "PERSON" or (
                        len(span) > 1 and not {t.text.lower() for t in span} & ORG_DESIGNATORS):
                    continue
        out.append(f)
    return out


def trim_leading_words(doc: Any, findings: Sequence[Finding], lexicon: Lexicon) -> list[Finding]:
    """Person spans lose leading dictionary words and punctuation when a non-dictionary word follows."""
    if not lexicon.common_words:
        return list(findings)
    out = []
    for f in findings:
        span = _span(doc, f) if f.entity_type == "PERSON" else None
        if span is not None and len(span) > 1:
            k = 0
            while k < len(span) - 1 and (not span[k].is_alpha or lexicon.is_everyday(span[k].text, span[k].lemma_)):
                k += 1
            # Why not down to one word after "Tosh Olsen": a rare given name may be a dictionary word too; a
            # single remaining word is only trusted after punctuation ("ex-Zombie Kastner").
            rest_ok = len(span) - k >= 2 or any(not t.is_alpha for t in span[:k])
            if k and rest_ok and span[k].is_alpha and span[k].text[:1].isupper():
                f = Finding(f.entity_type, span[k].idx, f.end, f.score, f.recognizer)
        out.append(f)
    return out


def coordinated_names(doc: Any, findings: Sequence[Finding], lexicon: Lexicon) -> list[Finding]:
    """Items of a list of single capitalised words become PERSON when most other items are (module doc)."""
    if not lexicon.common_words:
        return list(findings)
    out = list(findings)
    for items in _word_lists(doc):
        person = [it for it in items if any(f.entity_type == "PERSON" and f.start <= it.idx < f.end for f in out)]
        if len(person) < 2 or 2 * len(person) < len(items):
            continue
        for it in items:
            if it in person or lexicon.is_everyday(it.text, it.lemma_):
                continue
            start, end = it.idx, it.idx + len(it.text)
            out = [f for f in out if f.end <= start or end <= f.start]
            out.append(Finding("PERSON", start, end, COORDINATED_NAME_SCORE, COORDINATION_RULE))
    return sorted(out, key=lambda f: (f.start, f.end))


def _word_lists(doc: Any) -> list[list[Any]]:
    """Runs of three or more single capitalised words joined by commas, "and", "&" or "or"."""
    lists: list[list[Any]] = []
    current: list[Any] = []
    expect_item = True
    for tok in doc:
        if expect_item and tok.is_alpha and tok.text.istitle() and len(tok.text) > 1:
            current.append(tok)
            expect_item = False
        elif not expect_item and tok.lower_ in _LIST_SEPARATORS:
            expect_item = True
        elif expect_item and current and tok.lower_ in _LIST_SEPARATORS:  # ", and"
            continue
        else:
            if len(current) >= 3:
                lists.append(current)
            current = [tok] if tok.is_alpha and tok.text.istitle() and len(tok.text) > 1 else []
            expect_item = not current
    if len(current) >= 3:
        lists.append(current)
    return lists
