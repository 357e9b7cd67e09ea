"""Explain: every rule check for (principal [acting for user], chunk, as_of); auditors only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from memory import explain
from memory.models import Chunk
from memory.stores.base import PayloadPatch, Selector

PERSONAL = "# Contacts\n\nPlease call Mr John Smith about the invoice.\n"


def _chunk(api, sid: str = "s1", content: str = PERSONAL) -> tuple[str, dict]:
    api.source(sid, read_groups=["g"], jurisdiction="EU")
    doc = api.upload(sid, "c.md", content).json()
    with api.container.sessions() as s:
        cid = s.execute(select(Chunk.id).where(Chunk.document_id == doc["document_id"])).scalars().first()
    return cid, doc


def _explain(api, headers, **body):
    return api.client.post("/v1/explain", headers=headers, json=body)


@pytest.mark.parametrize("caller,visible,masked,failed,withheld", [
    ({"clearance": "internal", "jurisdiction": "EU"}, False, False, {"clearance"}, "clearance"),
    ({"clearance": "confidential", "jurisdiction": "IN"}, False, False, {"jurisdiction"}, "jurisdiction"),
    ({"clearance": "confidential", "jurisdiction": "US"}, True, True, set(), None),
    ({"clearance": "confidential", "jurisdiction": "EU"}, True, False, set(), None),
    ({"clearance": "restricted", "jurisdiction": "EU", "groups": ["other"]}, False, False, {"group_grant"}, None),
])
def test_explain_reports_every_rule_check(api, caller, visible, masked, failed, withheld):
    auditor = api.principal("aud", roles=["auditor"])
    api.principal("p", groups=caller.pop("groups", ["g"]), **caller)
    cid, _ = _chunk(api)
    r = _explain(api, auditor, principal_id="p", chunk_id=cid)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["visible"], body["masked"], body["withheld_reason"]) == (visible, masked, withheld)
    assert {c["rule"] for c in body["checks"] if not c["passed"]} == failed
    assert {c["rule"] for c in body["checks"]} == {"committed", "group_grant", "clearance", "jurisdiction",
                                                   "consent", "version", "retraction"}
    assert body["payload_disagreements"] == []
    assert body["vector_payload"]["version_id"] == body["payload"]["version_id"]


def test_explain_as_of_before_ingest_fails_the_version_check(api):
    auditor = api.principal("aud", roles=["auditor"])
    api.principal("p", groups=["g"], clearance="restricted")
    cid, _ = _chunk(api)
    body = _explain(api, auditor, principal_id="p", chunk_id=cid,
                    as_of=datetime(2020, 1, 1, tzinfo=UTC).isoformat()).json()
    assert body["visible"] is False
    assert [c["rule"] for c in body["checks"] if not c["passed"]] == ["version"]


def test_explain_acting_for_intersects_and_reports_delegation(api):
    auditor = api.principal("aud", roles=["auditor"])
    api.principal("u", groups=["g"], clearance="confidential")
    api.principal("bot", kind="agent", groups=["g"], clearance="internal", may_act_for=["u"])
    api.principal("stranger", groups=["g"], clearance="restricted")
    cid, _ = _chunk(api)
    body = _explain(api, auditor, principal_id="bot", acting_for="u", chunk_id=cid).json()
    assert body["effective_principal"]["clearance"] == "internal" and body["withheld_reason"] == "clearance"
    body = _explain(api, auditor, principal_id="bot", acting_for="stranger", chunk_id=cid).json()
    assert body["visible"] is False and [c["rule"] for c in body["checks"]] == ["delegation"]
    assert body["withheld_reason"] is None


def test_explain_states_when_the_vector_payload_disagrees_with_sql(api):
    auditor = api.principal("aud", roles=["auditor"])
    api.principal("p", groups=["g"], clearance="restricted")
    cid, doc = _chunk(api)
    api.container.store.patch(Selector(version_ids=(doc["version_id"],)), PayloadPatch(retracted=True))
    body = _explain(api, auditor, principal_id="p", chunk_id=cid).json()
    assert body["visible"] is True  # SQL is the truth ...
    assert body["payload_disagreements"] == ["retracted"]  # ... and the drift is stated
    assert any("disagrees" in n for n in body["notes"])


def test_explain_roles_and_errors(api):
    auditor = api.principal("aud", roles=["auditor"])
    reader = api.principal("p", groups=["g"])
    cid, _ = _chunk(api)
    r = _explain(api, reader, principal_id="p", chunk_id=cid)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "missing_role")
    r = _explain(api, auditor, principal_id="p", chunk_id="nope")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "chunk_not_found")
    r = _explain(api, auditor, principal_id="ghost", chunk_id=cid)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "principal_not_found")


def test_explain_service_rebuilds_the_payload_from_sql(container, api):
    api.principal("p", groups=["g"], clearance="restricted")
    cid, doc = _chunk(api)
    with container.sessions() as s:
        result = explain.explain_access(s, container.store, principal_id="p", chunk_id=cid)
    assert result.decision.visible and result.payload["version_id"] == doc["version_id"]
    assert result.payload["personal"] == 1 and result.transfer_mode == "allow"


def test_explain_reports_the_consent_check_for_a_purpose(api):
    auditor = api.principal("aud", roles=["auditor"])
    api.principal("p", groups=["g"], clearance="confidential")
    cid, _ = _chunk(api)
    r = api.client.patch("/v1/sources/s1", headers=api.admin, json={
        "personal_data_requires_consent": True, "consent_purposes": ["support"]})
    assert r.status_code == 200, r.text
    for purpose, visible, withheld in ((None, False, "consent"), ("marketing", False, "consent"),
                                       ("Support", True, None)):
        body = _explain(api, auditor, principal_id="p", chunk_id=cid, purpose=purpose).json()
        assert (body["visible"], body["withheld_reason"]) == (visible, withheld), purpose
        assert body["purpose"] == (purpose.lower() if purpose else None)
        assert [c["rule"] for c in body["checks"] if not c["passed"]] == ([] if visible else ["consent"])
    r = _explain(api, auditor, principal_id="p", chunk_id=cid, purpose="not a slug")
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_purpose")
