"""Recourse: file a request after a withheld hit, the steward lists and decides; everything audited."""

from __future__ import annotations

PERSONAL = "# Contacts\n\nPlease call Mr John Smith about the invoice.\n"


def _setup(api):
    steward = api.principal("st", roles=["steward"], groups=["g"])
    reader = api.principal("r1", groups=["g"], clearance="internal")
    api.source("s1", read_groups=["g"], steward="st")
    assert api.upload("s1", "c.md", PERSONAL, headers=steward).status_code == 201
    return steward, reader


def _file(api, headers, **body):
    return api.client.post("/v1/access-requests", headers=headers, json={
        "source_id": "s1", "reason": "clearance", "justification": "I handle this invoice", **body})


def test_withheld_hit_leads_to_a_request_the_steward_grants(api):
    steward, reader = _setup(api)
    withheld = api.search(reader, "call about the invoice").json()["policy"]["withheld"]
    assert withheld == [{"reason": "clearance", "count": 1, "source_id": "s1", "steward": "st"}]
    r = _file(api, reader)
    assert r.status_code == 201, r.text
    req = r.json()
    assert req["status"] == "open" and req["requester_id"] == "r1"
    listed = api.client.get("/v1/access-requests", headers=steward, params={"status": "open"}).json()
    assert [x["id"] for x in listed] == [req["id"]]
    assert [x["id"] for x in api.client.get("/v1/access-requests", headers=reader).json()] == [req["id"]]
    r = api.client.post(f"/v1/access-requests/{req['id']}/decision", headers=steward,
                        json={"decision": "grant", "note": "ok", "add_groups": ["g"]})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "granted" and r.json()["decided_by"] == "st"
    again = api.client.post(f"/v1/access-requests/{req['id']}/decision", headers=steward,
                            json={"decision": "refuse", "note": "no"})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "request_closed")
    actions = [x["action"] for x in api.client.get("/v1/audit", headers=api.admin,
                                                   params={"source_id": "s1", "event": "write"}).json()["records"]]
    assert actions[-2:] == ["access_request.file", "access_request.grant"]


def test_grant_can_open_the_source_to_a_new_group(api):
    steward, _ = _setup(api)
    outsider = api.principal("o1", groups=["g", "h"], clearance="confidential")
    req = _file(api, outsider).json()
    r = api.client.post(f"/v1/access-requests/{req['id']}/decision", headers=steward,
                        json={"decision": "grant", "add_read_groups": ["h"]})
    assert r.status_code == 200, r.text
    assert api.client.get("/v1/sources/s1", headers=api.admin).json()["read_groups"] == ["g", "h"]
    only_h = api.principal("o2", groups=["h"], clearance="confidential")
    assert api.search(only_h, "call about the invoice").json()["hits"]


def test_refusal_needs_a_note_and_changes_nothing(api):
    steward, reader = _setup(api)
    req = _file(api, reader).json()
    path = f"/v1/access-requests/{req['id']}/decision"
    r = api.client.post(path, headers=steward, json={"decision": "refuse"})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "note_required")
    r = api.client.post(path, headers=steward, json={"decision": "refuse", "note": "need a manager's approval"})
    assert r.json()["status"] == "refused" and r.json()["decision_note"] == "need a manager's approval"


def test_request_rules_and_roles(api):
    steward, reader = _setup(api)
    stranger = api.principal("x", groups=["nope"])
    other_steward = api.principal("st2", roles=["steward"], groups=["g"])
    # unknown and unreadable sources look the same: nothing is hinted at
    for headers, body in ((stranger, {}), (reader, {"source_id": "ghost"})):
        r = _file(api, headers, **body)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "source_not_found")
    r = _file(api, reader, reason="curiosity")
    assert r.status_code == 422
    req = _file(api, reader).json()
    r = _file(api, reader)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "request_exists")
    assert api.client.get("/v1/access-requests", headers=other_steward).json() == []
    path = f"/v1/access-requests/{req['id']}/decision"
    for headers, code in ((reader, "missing_role"), (other_steward, "not_source_steward")):
        r = api.client.post(path, headers=headers, json={"decision": "grant"})
        assert (r.status_code, r.json()["error"]["code"]) == (403, code)
    r = api.client.post(path, headers=steward, json={"decision": "grant", "add_groups": ["finance"]})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "group_not_on_source")
    r = api.client.post("/v1/access-requests/nope/decision", headers=steward, json={"decision": "grant"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "access_request_not_found")


def test_an_agent_files_for_its_user_and_the_user_benefits(api):
    steward, _ = _setup(api)
    api.principal("u", groups=["g"], clearance="confidential")
    bot = api.principal("bot", kind="agent", groups=["g"], clearance="confidential", may_act_for=["u"])
    req = _file(api, {**bot, "X-Acting-For": "u"}).json()
    assert req["acting_for"] == "u"
    r = api.client.post(f"/v1/access-requests/{req['id']}/decision", headers=steward,
                        json={"decision": "grant", "add_groups": ["k"], "add_read_groups": ["k"]})
    assert r.status_code == 200, r.text
    assert api.client.get("/v1/principals/u", headers=api.admin).json()["groups"] == ["g", "k"]
    assert api.client.get("/v1/principals/bot", headers=api.admin).json()["groups"] == ["g"]
