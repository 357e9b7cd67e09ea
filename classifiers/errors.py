"""Errors of the classifier package. Each has a stable machine-readable `code`.

ClassifierError
 ├── UnknownLabelError      label name/number not in public|internal|confidential|restricted
 ├── InvalidLabelMapError   entity->label map malformed
 └── ModelUnavailableError  the NER model could not be loaded from an installed package
"""

from __future__ import annotations


class ClassifierError(Exception):
    code = "classifier_error"


class UnknownLabelError(ClassifierError):
    code = "unknown_label"

    def __init__(self, value: str) -> None:
        super().__init__(f"unknown label {value!r}; expected one of public, internal, confidential, restricted")
        self.value = value


class InvalidLabelMapError(ClassifierError):
    code = "invalid_label_map"


class ModelUnavailableError(ClassifierError):
    code = "classifier_model_unavailable"
