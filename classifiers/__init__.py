"""Sensitive-data classification: text in, findings and a label out.

`import classifiers` stays cheap: Presidio and spaCy load only when PresidioClassifier or
build_presidio_classifier is first used (module-level __getattr__).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from classifiers.base import Classifier
from classifiers.errors import ClassifierError, InvalidLabelMapError, ModelUnavailableError, UnknownLabelError
from classifiers.labels import DEFAULT_ENTITY_LABELS, DEFAULT_PERSONAL_TYPES, LabelMap
from classifiers.types import Classification, Finding, Label

if TYPE_CHECKING:
    from classifiers.presidio import PresidioClassifier, build_presidio_classifier

__all__ = [
    "DEFAULT_ENTITY_LABELS",
    "DEFAULT_PERSONAL_TYPES",
    "Classification",
    "Classifier",
    "ClassifierError",
    "Finding",
    "InvalidLabelMapError",
    "Label",
    "LabelMap",
    "ModelUnavailableError",
    "PresidioClassifier",
    "UnknownLabelError",
    "build_presidio_classifier",
]

_LAZY = {"PresidioClassifier", "build_presidio_classifier"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from classifiers import presidio

        return getattr(presidio, name)
    raise AttributeError(f"module 'classifiers' has no attribute {name!r}")
