"""Per-caller rendering of a chunk: clear text, or PII spans masked with presidio-anonymizer.

The masking itself lives in `classifiers.masking`: ingest embeds the very same masked text for a personal
chunk's masked twin (the vector a masked caller's search is scored on), so the two can never drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

from classifiers.masking import mask as _mask
from memory.models import PiiSpan


def mask(text: str, spans: Sequence[PiiSpan]) -> str:
    """Replace every stored span with `<ENTITY_TYPE>` (the entity type is kept, the value is not)."""
    return _mask(text, spans)
