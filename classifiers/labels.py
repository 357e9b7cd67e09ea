"""The versioned entity-type -> label map. A chunk's label is max(source floor, map(entities))."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from classifiers.errors import InvalidLabelMapError, UnknownLabelError
from classifiers.types import Label

DEFAULT_ENTITY_LABELS: dict[str, Label] = {
    "PERSON": Label.CONFIDENTIAL,
    "EMAIL_ADDRESS": Label.CONFIDENTIAL,
    "PHONE_NUMBER": Label.CONFIDENTIAL,
    "LOCATION": Label.INTERNAL,
    "DATE_TIME": Label.INTERNAL,
    "NRP": Label.INTERNAL,
    "IP_ADDRESS": Label.CONFIDENTIAL,
    "URL": Label.INTERNAL,
    "ORGANIZATION": Label.INTERNAL,
    "STREET_ADDRESS": Label.CONFIDENTIAL,
    "MEDICAL_LICENSE": Label.RESTRICTED,
    "CREDIT_CARD": Label.RESTRICTED,
    "IBAN_CODE": Label.RESTRICTED,
    "US_SSN": Label.RESTRICTED,
    "US_PASSPORT": Label.RESTRICTED,
    "US_DRIVER_LICENSE": Label.RESTRICTED,
    "US_BANK_NUMBER": Label.RESTRICTED,
    "US_ITIN": Label.RESTRICTED,
    "UK_NHS": Label.RESTRICTED,
    "CRYPTO": Label.RESTRICTED,
    "AGE": Label.INTERNAL,
}

# Entity types that count as personal data for jurisdiction rules (allow_masked / deny_personal).
# LOCATION (a country or city name), DATE_TIME, AGE and NRP (a nationality, religion or party: "American",
# "Catholic") alone do not identify anyone: they raise the label but do not make a chunk "personal", or every
# policy mentioning "the United States" or "our German office" would be masked. Said of a named person, the
# PERSON finding makes the chunk personal and confidential.
DEFAULT_PERSONAL_TYPES: frozenset[str] = frozenset(
    {
        "PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS", "STREET_ADDRESS",
        "CREDIT_CARD", "IBAN_CODE", "US_SSN", "US_PASSPORT", "US_DRIVER_LICENSE", "US_BANK_NUMBER",
        "US_ITIN", "UK_NHS", "MEDICAL_LICENSE", "CRYPTO",
    }
)


@dataclass(frozen=True)
class LabelMap:
    """entity type -> minimum label. Entities not in the map imply `unmapped` (default internal)."""

    mapping: Mapping[str, Label] = field(default_factory=lambda: dict(DEFAULT_ENTITY_LABELS))
    unmapped: Label = Label.INTERNAL
    personal_types: frozenset[str] = DEFAULT_PERSONAL_TYPES

    @property
    def version(self) -> str:
        """Content hash of the map: two maps with the same rules have the same version."""
        body = json.dumps(self.to_json(), sort_keys=True).encode()
        return "lm-" + hashlib.sha256(body).hexdigest()[:12]

    def label_for(self, entity_types: Iterable[str]) -> Label:
        label = Label.PUBLIC
        for entity in entity_types:
            label = max(label, self.mapping.get(entity, self.unmapped))
        return label

    def is_personal(self, entity_types: Iterable[str]) -> bool:
        return any(e in self.personal_types for e in entity_types)

    def to_json(self) -> dict[str, object]:
        return {
            "mapping": {k: v.slug for k, v in sorted(self.mapping.items())},
            "unmapped": self.unmapped.slug,
            "personal_types": sorted(self.personal_types),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> LabelMap:
        if not isinstance(data, Mapping):
            raise InvalidLabelMapError("a label map is a JSON object with a 'mapping'")
        try:
            raw = data["mapping"]
            if not isinstance(raw, Mapping):
                raise InvalidLabelMapError("'mapping' must be an object of entity type -> label")
            mapping = {_entity_type(k): Label.parse(str(v)) for k, v in raw.items()}
            unmapped = Label.parse(str(data.get("unmapped", "internal")))
            personal_raw = data.get("personal_types", sorted(DEFAULT_PERSONAL_TYPES))
            if not isinstance(personal_raw, list):
                raise InvalidLabelMapError("'personal_types' must be a list of entity types")
            personal = frozenset(_entity_type(p) for p in personal_raw)
        except KeyError as exc:
            raise InvalidLabelMapError(f"missing field {exc}") from exc
        except UnknownLabelError as exc:
            raise InvalidLabelMapError(str(exc)) from exc
        return cls(mapping=mapping, unmapped=unmapped, personal_types=personal)


_ENTITY_TYPE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def _entity_type(name: object) -> str:
    """An entity type name as Presidio's recognizers spell them (PERSON, IBAN_CODE, a custom MY_ID): upper case
    letters, digits and underscores, starting with a letter, at most 64 characters."""
    text = str(name).upper()
    if not _ENTITY_TYPE.fullmatch(text):
        raise InvalidLabelMapError(f"{str(name)[:64]!r} is not an entity type name (A-Z, 0-9, _; a letter first)")
    return text
