"""LabelMap: entity types -> label, versioning, JSON round trip and validation."""

from __future__ import annotations

import pytest

from classifiers import InvalidLabelMapError, Label, LabelMap, UnknownLabelError


@pytest.mark.parametrize(
    ("entity_types", "expected"),
    [
        ([], Label.PUBLIC),
        (["URL"], Label.INTERNAL),
        (["LOCATION", "DATE_TIME"], Label.INTERNAL),
        (["NRP"], Label.INTERNAL),  # "our German office" names no one
        (["PERSON"], Label.CONFIDENTIAL),
        (["EMAIL_ADDRESS", "URL"], Label.CONFIDENTIAL),
        (["PHONE_NUMBER"], Label.CONFIDENTIAL),
        (["STREET_ADDRESS"], Label.CONFIDENTIAL),
        (["PERSON", "CREDIT_CARD"], Label.RESTRICTED),
        (["IBAN_CODE"], Label.RESTRICTED),
        (["US_SSN"], Label.RESTRICTED),
        (["SOMETHING_NEW"], Label.INTERNAL),  # unmapped entities imply `unmapped`
    ],
)
def test_default_map_labels(entity_types: list[str], expected: Label) -> None:
    assert LabelMap().label_for(entity_types) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("public", Label.PUBLIC),
        ("CONFIDENTIAL", Label.CONFIDENTIAL),
        (" Restricted ", Label.RESTRICTED),
        (1, Label.INTERNAL),
    ],
)
def test_label_parse(value: str | int, expected: Label) -> None:
    assert Label.parse(value) == expected


@pytest.mark.parametrize("value", ["secret", "", 7, -1])
def test_label_parse_rejects_unknown(value: str | int) -> None:
    with pytest.raises(UnknownLabelError):
        Label.parse(value)


def test_version_is_a_content_hash() -> None:
    assert LabelMap().version == LabelMap().version
    assert LabelMap().version.startswith("lm-")
    custom = LabelMap(mapping={"PERSON": Label.RESTRICTED})
    assert custom.version != LabelMap().version


def test_json_round_trip_keeps_rules_and_version() -> None:
    original = LabelMap(mapping={"PERSON": Label.RESTRICTED, "URL": Label.PUBLIC}, unmapped=Label.CONFIDENTIAL)
    restored = LabelMap.from_json(original.to_json())
    assert restored.version == original.version
    assert restored.label_for(["PERSON"]) == Label.RESTRICTED
    assert restored.label_for(["NEW_TYPE"]) == Label.CONFIDENTIAL


def test_from_json_upper_cases_entity_types() -> None:
    assert LabelMap.from_json({"mapping": {"person": "restricted"}}).label_for(["PERSON"]) == Label.RESTRICTED


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"mapping": ["PERSON"]},
        {"mapping": {"PERSON": "top-secret"}},
        {"mapping": {"PERSON": "confidential"}, "unmapped": "nope"},
        {"mapping": {}, "personal_types": "PERSON"},
        {"mapping": {"": "public"}},  # not an entity type name
        {"mapping": {"PER\x00SON": "restricted"}},
        {"mapping": {"1PASSPORT": "restricted"}},
        {"mapping": {}, "personal_types": ["PERSON", "EMAIL ADDRESS"]},
        {"mapping": {"X" * 65: "public"}},
    ],
)
def test_invalid_map_raises(data: dict[str, object]) -> None:
    with pytest.raises(InvalidLabelMapError) as excinfo:
        LabelMap.from_json(data)
    assert excinfo.value.code == "invalid_label_map"


@pytest.mark.parametrize(
    ("entity_types", "personal"),
    [
        ([], False), (["URL"], False), (["PERSON"], True), (["URL", "EMAIL_ADDRESS"], True), (["AGE"], False),
        (["LOCATION"], False), (["DATE_TIME"], False), (["NRP"], False), (["NRP", "PERSON"], True),
    ],
)
def test_is_personal(entity_types: list[str], personal: bool) -> None:
    assert LabelMap().is_personal(entity_types) is personal


def test_custom_entity_types_are_accepted_and_upper_cased() -> None:
    lm = LabelMap.from_json({"mapping": {"employee_id": "confidential"}, "personal_types": ["employee_id"]})
    assert lm.mapping == {"EMPLOYEE_ID": Label.CONFIDENTIAL} and lm.personal_types == {"EMPLOYEE_ID"}
