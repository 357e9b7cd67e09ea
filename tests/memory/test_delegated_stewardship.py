"""Stewardship under delegation (X-Acting-For): an agent may manage a source's documents for its steward, within
its own groups, and never change who reads the source or under what rules (its steward, read groups,
jurisdiction, floor, consent; access grants). Through the API on real SQL + Qdrant Edge + parsing (model doubles)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.memory.test_access_requests import PERSONAL

GOVERNANCE = [
    {"steward": "bot"},
    {"read_groups": ["g", "botgrp"]},
    {"jurisdiction": "US"},
    {"floor": "public"},
    {"personal_data_requires_consent": False},
    {"consent_purposes": ["marketing"]},
]


def _world(api: Any, *, bot_groups: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    owner = api.principal("st", roles=["steward", "reader"], groups=["g"])
    api.source("s1", read_groups=["g"], steward="st")
    assert api.upload("s1", "plan.md", "The reorganisation plan.", headers=owner).status_code == 201
    bot = api.principal("bot", kind="agent", roles=["steward", "reader"], groups=bot_groups, may_act_for=["st"])
    return owner, {**bot, "X-Acting-For": "st"}


@pytest.mark.parametrize("change", GOVERNANCE, ids=lambda c: next(iter(c)))
def test_an_agent_acting_for_the_steward_cannot_change_the_sources_governance(api: Any, change: dict[str, Any]):
    _, as_st = _world(api, bot_groups=["g"])
    before = api.client.get("/v1/sources/s1", headers=api.admin).json()
    r = api.client.patch("/v1/sources/s1", headers=as_st, json={"name": "Renamed", **change})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "delegated_change_refused"), r.text
    assert r.json()["error"]["details"]["fields"] == sorted(change)
    assert api.client.get("/v1/sources/s1", headers=api.admin).json() == before  # nothing of it applied


def test_an_agent_renames_and_manages_documents_for_the_steward_within_its_groups(api: Any):
    _, as_st = _world(api, bot_groups=["g"])
    r = api.client.patch("/v1/sources/s1", headers=as_st, json={"name": "Plans", "description": "HR plans"})
    assert r.status_code == 200 and r.json()["name"] == "Plans", r.text
    assert api.upload("s1", "memo.md", "A memo about the plan.", headers=as_st).status_code == 201
    listed = api.client.get("/v1/sources/s1/documents", headers=as_st).json()["documents"]
    assert sorted(d["external_key"] for d in listed) == ["memo.md", "plan.md"]


def test_an_agent_whose_own_groups_do_not_read_the_source_manages_and_learns_nothing_of_it(api: Any):
    """The review's takeover: an agent outside the source's groups, acting for its steward, handed the source to
    itself. Now, for it, the source is as an unknown one: nothing to change, list, upload to or read."""
    owner, as_st = _world(api, bot_groups=["botgrp"])
    doc = api.client.get("/v1/sources/s1/documents", headers=owner).json()["documents"][0]["document_id"]
    reader = api.principal("r1", groups=["g"])
    assert api.client.post("/v1/access-requests", headers=reader, json={
        "source_id": "s1", "reason": "clearance", "justification": "private reason text"}).status_code == 201

    def code(r: Any) -> tuple[int, str]:
        return r.status_code, r.json()["error"]["code"]

    unknown = (404, "source_not_found")
    assert code(api.client.patch("/v1/sources/s1", headers=as_st, json={"steward": "bot"})) == unknown
    assert code(api.client.patch("/v1/sources/s1", headers=as_st, json={"name": "Mine"})) == unknown
    assert code(api.client.get("/v1/sources/s1/documents", headers=as_st)) == unknown
    assert code(api.client.get("/v1/sources/s1", headers=as_st)) == unknown
    assert api.upload("s1", "x.md", "Injected.", headers=as_st).status_code == 404
    assert code(api.client.get(f"/v1/documents/{doc}/versions", headers=as_st)) == (404, "document_not_found")
    assert api.client.get("/v1/sources", headers=as_st).json() == []
    assert api.client.get("/v1/access-requests", headers=as_st).json() == []
    assert api.client.get("/v1/sources/s1", headers=api.admin).json()["steward"] == "st"
    assert api.client.get("/v1/sources/s1/documents", headers=owner).status_code == 200
    assert len(api.client.get("/v1/access-requests", headers=owner).json()) == 1


def test_an_agent_may_retract_for_the_steward_but_never_restore(api: Any):
    owner, as_st = _world(api, bot_groups=["g"])
    doc = api.client.get("/v1/sources/s1/documents", headers=owner).json()["documents"][0]["document_id"]
    r = api.client.post(f"/v1/documents/{doc}/retract", headers=as_st, json={"reason": "leaked salaries"})
    assert r.status_code == 200, r.text
    r = api.client.post(f"/v1/documents/{doc}/restore", headers=as_st, json={"reason": "oops", "version": 1})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "delegated_change_refused"), r.text
    reader = api.principal("r1", groups=["g"])
    assert api.search(reader, "reorganisation plan").json()["hits"] == []  # still retracted
    r = api.client.post(f"/v1/documents/{doc}/restore", headers=owner, json={"reason": "fine", "version": 1})
    assert r.status_code == 200, r.text


def test_an_agent_cannot_register_a_source_for_a_steward(api: Any):
    _, as_st = _world(api, bot_groups=["g"])
    for body in ({"id": "s2", "name": "s2", "jurisdiction": "EU", "read_groups": ["g"]},
                 {"id": "s3", "name": "s3", "steward": "bot", "jurisdiction": "EU", "read_groups": ["g", "all"]}):
        r = api.client.post("/v1/sources", headers=as_st, json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "delegated_change_refused"), r.text
    assert [s["id"] for s in api.client.get("/v1/sources", headers=api.admin).json()] == ["s1"]


def test_an_admins_agent_registers_a_source_stewarded_by_the_admin(api: Any):
    api.principal("boss", roles=["admin", "steward", "reader"], groups=["g"])
    bot = api.principal("bot", kind="agent", roles=["admin", "steward", "reader"], groups=["g"],
                        may_act_for=["boss"])
    r = api.client.post("/v1/sources", headers={**bot, "X-Acting-For": "boss"}, json={
        "id": "s9", "name": "s9", "jurisdiction": "EU", "read_groups": ["g"]})
    assert r.status_code == 201 and r.json()["steward"] == "boss", r.text  # the user's, never the agent's


def test_an_agent_may_refuse_or_escalate_an_access_request_but_never_grant_one(api: Any):
    owner = api.principal("st", roles=["steward", "reader"], groups=["g"])
    api.source("s1", read_groups=["g"], steward="st")
    assert api.upload("s1", "c.md", PERSONAL, headers=owner).status_code == 201
    bot = {**api.principal("bot", kind="agent", roles=["steward", "reader"], groups=["g"], may_act_for=["st"]),
           "X-Acting-For": "st"}
    ids = []
    for name in ("r1", "r2"):
        reader = api.principal(name, groups=["g"], clearance="internal")
        r = api.client.post("/v1/access-requests", headers=reader, json={
            "source_id": "s1", "reason": "clearance", "justification": "I handle this invoice"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])

    def decide(headers: dict[str, str], rid: str, **body: Any) -> Any:
        return api.client.post(f"/v1/access-requests/{rid}/decision", headers=headers, json=body)

    r = decide(bot, ids[0], decision="grant", add_groups=["g"])
    assert (r.status_code, r.json()["error"]["code"]) == (403, "delegated_change_refused"), r.text
    assert decide(bot, ids[0], decision="refuse", note="not needed").json()["status"] == "refused"
    assert decide(bot, ids[1], decision="escalate", note="an admin decides").json()["status"] == "escalated"
