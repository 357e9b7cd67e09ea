"""Value types of the classifier package: findings, labels, results.

`classifiers` is a leaf: text in, findings and a label out. No database, no settings object.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Label(enum.IntEnum):
    """Sensitivity label, ordered: a caller's clearance must be >= a chunk's label."""

    PUBLIC = 0
    INTERNAL = 1
    CONFIDENTIAL = 2
    RESTRICTED = 3

    @classmethod
    def parse(cls, value: str | int | Label) -> Label:
        """Parse 'confidential' / 'CONFIDENTIAL' / 2 into a Label; raises UnknownLabelError."""
        from classifiers.errors import UnknownLabelError

        if isinstance(value, Label):
            return value
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError as exc:
                raise UnknownLabelError(str(value)) from exc
        try:
            return cls[value.strip().upper()]
        except KeyError as exc:
            raise UnknownLabelError(value) from exc

    @property
    def slug(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Finding:
    """One sensitive span found in a text: [start, end) character offsets into that text."""

    entity_type: str
    start: int
    end: int
    score: float
    recognizer: str


@dataclass(frozen=True, slots=True)
class Classification:
    """Findings for one text plus the label they imply (before the source floor is applied)."""

    findings: tuple[Finding, ...]
    label: Label
    label_map_version: str
    classifier_version: str
    entity_types: tuple[str, ...] = field(default=())

    @property
    def has_personal_data(self) -> bool:
        return bool(self.findings)
