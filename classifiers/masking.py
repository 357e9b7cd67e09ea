"""Masking: a text with its personal-data spans replaced by `<ENTITY_TYPE>` (presidio-anonymizer).

One function for the two places that must agree to the character: the memory renders a hit masked with it
(memory.rendering), and the ingest pipeline embeds the same masked text for the chunk's "masked twin" vector,
so that a caller served the masked text is also ranked on it (docs/operations.md, masked twins). Spans are
sorted before masking: the stored spans come back from SQL in any order, and the result must not depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from presidio_anonymizer import AnonymizerEngine


class Span(Protocol):
    """What masking reads of a finding or a stored span: [start, end) offsets, the type, the score (which
    presidio-anonymizer uses to settle overlapping spans)."""

    @property
    def entity_type(self) -> str: ...

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...

    @property
    def score(self) -> float: ...


@lru_cache(maxsize=1)
def _engine() -> AnonymizerEngine:
    from presidio_anonymizer import AnonymizerEngine

    return AnonymizerEngine()


def mask(text: str, spans: Sequence[Span]) -> str:
    """Replace every span with `<ENTITY_TYPE>` (the entity type is kept, the value is not)."""
    if not spans:
        return text
    from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

    ordered = sorted(spans, key=lambda s: (s.start, s.end, s.entity_type, s.score))
    results = [RecognizerResult(s.entity_type, s.start, s.end, s.score) for s in ordered]
    operators = {"DEFAULT": OperatorConfig("replace")}
    return _engine().anonymize(text=text, analyzer_results=results, operators=operators).text  # type: ignore[arg-type]
