"""Per-caller rendering of a chunk: clear text, or PII spans masked with presidio-anonymizer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Any

from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

from memory.models import PiiSpan
from memory.provenance import Citation


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


def hide_names(value: str | None, names_pii: Sequence[Mapping[str, Any]] | None) -> str | None:
    """`value` (a file name, an attachment's name, a URI or key built from them) with every piece of personal
    data found in a shown name (`document_versions.names_pii`) replaced by `<ENTITY_TYPE>` wherever it occurs."""
    if not value or not names_pii:
        return value
    found = {(entry["name"][s["start"]:s["end"]], s["entity_type"]) for entry in names_pii for s in entry["spans"]}
    for piece, entity_type in sorted(found, key=lambda f: -len(f[0])):  # the longest first: no half-replaced piece
        if piece:
            value = value.replace(piece, f"<{entity_type}>")
    return value


def masked_citation(cited: Citation, names_pii: Sequence[Mapping[str, Any]] | None) -> Citation:
    """The citation of a masked hit: no measure of the clear text (`Citation.masked`), and the names shown
    beside the text masked as the text is."""
    return replace(cited.masked(), document_uri=hide_names(cited.document_uri, names_pii) or "",
                   attachment=hide_names(cited.attachment, names_pii))
