"""Per-caller rendering of a chunk: clear text, or PII spans masked with presidio-anonymizer."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

from memory.models import PiiSpan


@lru_cache(maxsize=1)
def _engine() -> AnonymizerEngine:
    return AnonymizerEngine()


def mask(text: str, spans: Sequence[PiiSpan]) -> str:
    """Replace every stored span with `<ENTITY_TYPE>` (the entity type is kept, the value is not)."""
    if not spans:
        return text
    results = [RecognizerResult(s.entity_type, s.start, s.end, s.score) for s in spans]
    operators = {"DEFAULT": OperatorConfig("replace")}
    return _engine().anonymize(text=text, analyzer_results=results, operators=operators).text  # type: ignore[arg-type]
