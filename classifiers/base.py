"""The Classifier protocol every implementation (Presidio, test doubles) satisfies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from classifiers.types import Classification


class Classifier(Protocol):
    """Finds sensitive spans in texts and labels each text with the entity->label map it holds."""

    @property
    def version(self) -> str:
        """Identifies the classifier build (recognizers, thresholds, NER model) for provenance."""
        ...

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        """One Classification per input text, in order. Findings are non-overlapping and sorted."""
        ...
