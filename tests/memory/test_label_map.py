"""An admin's label-map change (PUT /v1/policy/labels) applies to the next ingest, in a running API: no restart."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from classifiers.labels import LabelMap
from classifiers.types import Label
from memory.models import Chunk, DocumentVersion


def _upload(api: Any, source: str, name: str, text: str) -> tuple[set[int], set[str]]:
    """Upload; the labels of the stored chunks and the label-map version the version was labelled with."""
    r = api.upload(source, name, text)
    assert r.status_code == 201, r.text
    with api.container.sessions() as s:
        labels = set(s.scalars(select(Chunk.label).where(Chunk.version_id == r.json()["version_id"])))
        maps = set(s.scalars(select(DocumentVersion.label_map_version).where(
            DocumentVersion.id == r.json()["version_id"])))
    return labels, maps


def _put(api: Any, body: dict[str, Any]) -> dict[str, Any]:
    r = api.client.put("/v1/policy/labels", headers=api.admin, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_label_map_change_applies_to_the_next_upload_without_a_restart(api):
    reader = api.principal("r1", groups=["g"], clearance="confidential")
    api.source("s1", read_groups=["g"])
    default = api.client.get("/v1/policy/labels", headers=api.admin).json()
    before = _upload(api, "s1", "before.md", "# Budget\n\nWrite to ann@example.com about the budget.\n")
    assert before == ({Label.CONFIDENTIAL}, {default["label_map_version"]})

    changed = _put(api, {"mapping": {**default["mapping"], "EMAIL_ADDRESS": "restricted"}})
    assert changed["version"] == default["version"] + 1 and changed["mapping"]["EMAIL_ADDRESS"] == "restricted"
    after = _upload(api, "s1", "after.md", "# Budget\n\nWrite to bob@example.com about the budget.\n")
    assert after == ({Label.RESTRICTED}, {changed["label_map_version"]})
    # Bytes stored before the change keep their labels (only new bytes are labelled again: docs/operations.md).
    body = api.search(reader, "write about the budget").json()
    assert {h["citation"]["document_uri"].rsplit("/", 1)[-1] for h in body["hits"]} == {"before.md"}
    assert [(w["source_id"], w["reason"], w["count"]) for w in body["policy"]["withheld"]] == [("s1", "clearance", 1)]

    # And back: the map in force again is the one the process started with.
    _put(api, {"mapping": default["mapping"], "unmapped": default["unmapped"],
               "personal_types": default["personal_types"]})
    again = _upload(api, "s1", "again.md", "# Budget\n\nWrite to cy@example.com about the budget.\n")
    assert again == ({Label.CONFIDENTIAL}, {default["label_map_version"]})
    assert api.container.ingest_pipeline() is api.container.pipeline


def test_the_real_classifier_relabels_without_loading_again(real_api, real_classifier):
    """Through the real stack (Presidio + spaCy): PERSON raised to restricted labels the next upload so; the
    process's classifier is relabelled, not rebuilt, and the shared one is left as it was."""
    default = real_api.client.get("/v1/policy/labels", headers=real_api.admin).json()
    real_api.source("hr", read_groups=["g"])
    _put(real_api, {"mapping": {**default["mapping"], "PERSON": "restricted"}})
    text = "# Review\n\nMaria Schneider led the migration project this year.\n"
    labels, _ = _upload(real_api, "hr", "review.md", text)
    assert labels == {Label.RESTRICTED}
    pipeline = real_api.container.ingest_pipeline()
    assert pipeline.classifier is not real_classifier and pipeline.classifier.version == real_classifier.version
    assert pipeline.classifier._analyzer is real_classifier._analyzer  # nothing loaded again
    assert real_classifier.label_map.version == LabelMap().version


def test_a_bad_label_map_is_refused_whole_and_only_admins_may_change_it(api):
    """403 for a steward; 422 with a stable code for an unknown label or a malformed entity type; the map in
    force stays the one before (nothing half written) and the next upload is labelled by it."""
    api.source("s1", read_groups=["g"])
    steward = api.principal("st", roles=["steward", "reader"], groups=["g"])
    before = api.client.get("/v1/policy/labels", headers=api.admin).json()
    denied = api.client.put("/v1/policy/labels", headers=steward, json={"mapping": {"EMAIL_ADDRESS": "public"}})
    assert denied.status_code == 403, denied.text
    unknown = api.client.put("/v1/policy/labels", headers=api.admin, json={"mapping": {"EMAIL_ADDRESS": "secret"}})
    assert unknown.status_code == 422 and unknown.json()["error"]["code"], unknown.text
    malformed = api.client.put("/v1/policy/labels", headers=api.admin,
                               json={"mapping": {"EMAIL_ADDRESS": "public"}, "personal_types": ["not an entity!"]})
    assert (malformed.status_code, malformed.json()["error"]["code"]) == (422, "invalid_label_map"), malformed.text
    assert api.client.get("/v1/policy/labels", headers=api.admin).json() == before
    stored = _upload(api, "s1", "note.md", "# Note\n\nWrite to ann@example.com today.\n")
    assert stored == ({Label.CONFIDENTIAL}, {before["label_map_version"]})
