"""Recourse: file a request after a withheld hit, the steward lists and decides (or escalates to admins,
who may raise clearance or set a transfer rule); everything audited."""

from __future__ import annotations

import pytest

from classifiers.types import Label
from memory import access_grants
from memory.access_grants import Grant, TransferGrant
from memory.access_requests import REASONS
from memory.errors import ForbiddenError, ValidationFailedError
from memory.policy import WITHHELD_REASONS, EffectivePrincipal, Identity, effective

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
    # groups never lift a clearance withhold: the response says so instead of pretending
    resolution = r.json()["resolution"]
    assert resolution["resolved"] is False and resolution["failing_checks"] == ["clearance"]
    assert "changes nothing that lifts 'clearance'" in resolution["notes"][0]
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


def test_a_decider_who_may_not_see_the_source_gets_the_404_of_an_unknown_request(api):
    steward, reader = _setup(api)
    req = _file(api, reader).json()
    outsider = api.principal("st-out", roles=["steward"], groups=["elsewhere"])
    r = api.client.post(f"/v1/access-requests/{req['id']}/decision", headers=outsider,
                        json={"decision": "refuse", "note": "no"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "access_request_not_found")
    assert req["source_id"] not in r.text
    r = api.client.post(f"/v1/access-requests/{req['id']}/decision", headers=steward,
                        json={"decision": "refuse", "note": "no"})
    assert r.status_code == 200, r.text


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


def test_an_agent_acting_for_one_user_lists_only_that_users_requests(api):
    _setup(api)
    for user in ("u", "v"):
        api.principal(user, groups=["g"], clearance="internal")
    bot = api.principal("bot", kind="agent", groups=["g"], clearance="confidential", may_act_for=["u", "v"])
    for_u = _file(api, {**bot, "X-Acting-For": "u"}, justification="u's invoice").json()
    for_v = _file(api, {**bot, "X-Acting-For": "v"}, justification="v's private matter").json()
    own = _file(api, api.principal("w", groups=["g"]), justification="w's own").json()

    def listed(headers):
        r = api.client.get("/v1/access-requests", headers=headers)
        assert r.status_code == 200, r.text
        return sorted(x["id"] for x in r.json())

    assert listed({**bot, "X-Acting-For": "u"}) == [for_u["id"]]  # never v's request, nor its justification
    assert listed({**bot, "X-Acting-For": "v"}) == [for_v["id"]]
    assert listed(bot) == sorted([for_u["id"], for_v["id"]])  # on its own: every request it filed
    assert own["id"] not in listed(bot)


def _decide(api, headers, req_id, **body):
    return api.client.post(f"/v1/access-requests/{req_id}/decision", headers=headers, json=body)


def _admin_writes(api):
    records = api.client.get("/v1/audit", headers=api.admin, params={"principal": "admin", "event": "write"})
    return [(x["action"], x["body"]["target"], x["body"]["details"]) for x in records.json()["records"]]


def test_a_steward_may_not_raise_clearance_or_set_a_transfer_rule(api):
    steward, reader = _setup(api)
    req = _file(api, reader).json()
    for body in ({"clearance": "confidential"}, {"transfer_rule": {"rule": "allow"}}):
        r = _decide(api, steward, req["id"], decision="grant", **body)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "admin_required"), body
    assert api.client.get("/v1/principals/r1", headers=api.admin).json()["clearance"] == "internal"
    assert api.client.get("/v1/access-requests?status=open", headers=reader).json()[0]["id"] == req["id"]


def test_steward_escalates_and_the_admin_raises_clearance(api):
    steward, reader = _setup(api)
    req = _file(api, reader).json()
    r = _decide(api, steward, req["id"], decision="escalate")
    assert (r.status_code, r.json()["error"]["code"]) == (422, "note_required")
    r = _decide(api, steward, req["id"], decision="escalate", note="fine by me; needs confidential",
                add_groups=["g"])
    assert (r.status_code, r.json()["error"]["code"]) == (422, "grant_on_escalation")
    r = _decide(api, steward, req["id"], decision="escalate", note="fine by me; needs confidential")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["escalated_by"], r.json()["resolution"]) == ("escalated", "st", None)
    # escalated: the admins' to decide, and it stays pending (no duplicate filing)
    for body, expected in (({"decision": "escalate", "note": "again"}, (409, "already_escalated")),
                           ({"decision": "grant"}, (403, "admin_required")),
                           ({"decision": "refuse", "note": "changed my mind"}, (403, "admin_required"))):
        r = _decide(api, steward, req["id"], **body)
        assert (r.status_code, r.json()["error"]["code"]) == expected, body
    r = _file(api, reader)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "request_exists")
    escalated = api.client.get("/v1/access-requests", headers=api.admin, params={"status": "escalated"}).json()
    assert [(x["id"], x["escalation_note"]) for x in escalated] == [(req["id"], "fine by me; needs confidential")]
    # a grant only raises, and must name a valid level
    for level, expected in (("internal", (422, "clearance_not_raised")), ("top-secret", (422, "invalid_request"))):
        r = _decide(api, api.admin, req["id"], decision="grant", clearance=level)
        assert (r.status_code, r.json()["error"]["code"]) == expected, level
    r = _decide(api, api.admin, req["id"], decision="grant", clearance="confidential", note="approved")
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["status"], out["decided_by"], out["escalated_by"]) == ("granted", "admin", "st")
    assert out["changes"] == {"clearance": {"principal": "r1", "before": "internal", "after": "confidential"}}
    assert out["resolution"] == {
        "reason": "clearance", "resolved": True, "beneficiary": "r1", "beneficiary_resolved": True,
        "failing_checks": [], "detail": "clearance confidential vs label confidential", "notes": [],
    }
    found = api.search(reader, "call about the invoice").json()
    assert found["policy"]["withheld"] == [] and found["hits"][0]["citation"]["source_id"] == "s1"
    writes = _admin_writes(api)
    assert [(a, t) for a, t, _ in writes[-2:]] == [("principal.clearance", "r1"), ("access_request.grant", req["id"])]
    assert writes[-2][2] == {"before": "internal", "after": "confidential"}
    assert writes[-1][2]["resolved"] is True and writes[-1][2]["escalated_by"] == "st"
    steward_writes = api.client.get("/v1/audit", headers=api.admin, params={"principal": "st", "event": "write"})
    assert steward_writes.json()["records"][-1]["body"]["action"] == "access_request.escalate"


def test_a_jurisdiction_grant_writes_a_new_transfer_rules_version(api):
    steward, _ = _setup(api)
    india = api.principal("in1", groups=["g"], clearance="confidential", jurisdiction="IN")
    withheld = api.search(india, "call about the invoice").json()["policy"]["withheld"]
    assert [w["reason"] for w in withheld] == ["jurisdiction"]
    req = _file(api, india, reason="jurisdiction").json()
    assert _decide(api, steward, req["id"], decision="escalate", note="EU->IN masked is fine").status_code == 200
    before = api.client.get("/v1/policy/jurisdictions", headers=api.admin).json()
    for body, expected in (({"clearance": "restricted"}, (422, "change_not_for_reason")),
                           ({"transfer_rule": {"rule": "deny_personal"}}, (422, "transfer_rule_not_widened")),
                           ({"transfer_rule": {"rule": "deny"}}, (422, "invalid_request"))):
        r = _decide(api, api.admin, req["id"], decision="grant", **body)
        assert (r.status_code, r.json()["error"]["code"]) == expected, body
    r = _decide(api, api.admin, req["id"], decision="grant", transfer_rule={"rule": "allow_masked"})
    assert r.status_code == 200, r.text
    out = r.json()
    version = before["version"] + 1
    assert out["changes"] == {"transfer_rule": {"data": "EU", "caller": "IN", "before": "deny_personal",
                                                "after": "allow_masked", "rules_version": version}}
    assert out["resolution"]["resolved"] is True and out["resolution"]["detail"].startswith("EU->IN: allow_masked")
    after = api.client.get("/v1/policy/jurisdictions", headers=api.admin).json()
    assert after["version"] == version
    assert {"data": "EU", "caller": "IN", "rule": "allow_masked"} in after["rules"]
    assert len(after["rules"]) == len(before["rules"])  # one pair changed, nothing else
    found = api.search(india, "call about the invoice").json()
    assert found["policy"]["withheld"] == [] and found["hits"][0]["masked"] is True
    assert [a for a, _, _ in _admin_writes(api)[-2:]] == ["policy.jurisdictions", "access_request.grant"]


def test_the_admin_refuses_an_escalated_request(api):
    steward, reader = _setup(api)
    req = _file(api, reader).json()
    _decide(api, steward, req["id"], decision="escalate", note="your call")
    r = _decide(api, api.admin, req["id"], decision="refuse", note="not for contractors", clearance="restricted")
    assert (r.status_code, r.json()["error"]["code"]) == (422, "grant_on_refusal")
    r = _decide(api, api.admin, req["id"], decision="refuse", note="not for contractors")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["decision_note"], r.json()["resolution"]) == (
        "refused", "not for contractors", None)
    assert api.client.get("/v1/principals/r1", headers=api.admin).json()["clearance"] == "internal"
    assert [w["reason"] for w in api.search(reader, "call about the invoice").json()["policy"]["withheld"]] == [
        "clearance"]
    for body in ({"decision": "grant", "clearance": "confidential"}, {"decision": "escalate", "note": "x"}):
        r = _decide(api, api.admin, req["id"], **body)
        assert (r.status_code, r.json()["error"]["code"]) == (409, "request_closed"), body
    assert _admin_writes(api)[-1][0] == "access_request.refuse"


def test_an_agents_ceiling_that_still_withholds_is_reported(api):
    _setup(api)
    api.principal("u", groups=["g"], clearance="internal")
    bot = {**api.principal("bot", kind="agent", groups=["g"], clearance="internal", may_act_for=["u"]),
           "X-Acting-For": "u"}
    req = _file(api, bot).json()
    r = _decide(api, api.admin, req["id"], decision="grant", clearance="confidential")
    assert r.status_code == 200, r.text
    res = r.json()["resolution"]
    assert (res["beneficiary"], res["beneficiary_resolved"], res["resolved"]) == ("u", True, False)
    assert "'bot' acts for it within its own ceiling" in res["notes"][0]
    assert [w["reason"] for w in api.search(bot, "call about the invoice").json()["policy"]["withheld"]] == [
        "clearance"]
    # the agent's ceiling is a separate, explicit admin change
    r = api.client.patch("/v1/principals/bot", headers=api.admin, json={"clearance": "confidential"})
    assert r.status_code == 200 and r.json()["clearance"] == "confidential"
    assert api.search(bot, "call about the invoice").json()["hits"]


def test_a_raise_that_falls_short_of_the_sources_labels_is_reported(api):
    _setup(api)
    iban = "# Pay\n\nPay the invoice to DE89 3704 0044 0532 0130 00 today.\n"
    assert api.upload("s1", "pay.md", iban).status_code == 201
    reader = api.principal("r2", groups=["g"], clearance="internal")
    req = _file(api, reader).json()
    res = _decide(api, api.admin, req["id"], decision="grant", clearance="confidential").json()["resolution"]
    assert (res["resolved"], res["detail"]) == (False, "clearance confidential vs label restricted")
    assert "does not cover every current chunk" in res["notes"][0]


GRANTS = {
    "groups": Grant(add_groups=("g",)),
    "read_groups": Grant(add_read_groups=("h",)),
    "clearance": Grant(clearance="confidential"),
    "transfer": Grant(transfer_rule=TransferGrant(rule="allow")),
    "consent_purpose": Grant(add_consent_purpose="billing"),
}


def _who(*roles: str) -> EffectivePrincipal:
    return effective(Identity("p", "user", frozenset(), Label.PUBLIC, "EU", frozenset(roles)))


@pytest.mark.parametrize(("roles", "reason", "grant", "error"), [
    (("steward",), "clearance", "groups", None),
    (("steward",), "jurisdiction", "read_groups", None),
    (("steward",), "clearance", "clearance", "admin_required"),
    (("steward",), "jurisdiction", "transfer", "admin_required"),
    (("admin",), "clearance", "clearance", None),
    (("admin",), "jurisdiction", "transfer", None),
    (("admin",), "jurisdiction", "clearance", "change_not_for_reason"),
    (("admin",), "clearance", "transfer", "change_not_for_reason"),
    # consent: the source's steward records the purpose; groups still allowed, never a global change
    (("steward",), "consent", "consent_purpose", None),
    (("admin",), "consent", "groups", None),
    (("admin",), "consent", "clearance", "change_not_for_reason"),
    (("admin",), "clearance", "consent_purpose", "change_not_for_reason"),
    (("steward",), "jurisdiction", "consent_purpose", "change_not_for_reason"),
    # a reason added later with no remedy listed: groups only, never a reason-bound change
    (("admin",), "curiosity", "groups", None),
    (("admin",), "curiosity", "consent_purpose", "change_not_for_reason"),
])
def test_who_may_change_what_for_which_reason(roles, reason, grant, error):
    if error is None:
        access_grants.check_authority(_who(*roles), reason=reason, grant=GRANTS[grant])
        return
    with pytest.raises((ForbiddenError, ValidationFailedError)) as exc:
        access_grants.check_authority(_who(*roles), reason=reason, grant=GRANTS[grant])
    assert exc.value.code == error


def test_remedies_name_only_real_reasons():
    # No stale entries. A reason without one still works: groups, refuse, escalate (see "curiosity" above).
    assert set(access_grants.REMEDIES) <= set(REASONS)
    # every reason a search reports as withheld can be filed
    assert set(REASONS) == set(WITHHELD_REASONS)


def test_the_api_schema_lists_exactly_the_policy_reasons():
    from typing import get_args

    from memory.api.schemas import WithheldReason
    from memory.policy import WITHHELD_REASONS

    assert get_args(WithheldReason) == WITHHELD_REASONS
    assert frozenset(WITHHELD_REASONS) == REASONS


def test_a_steward_cannot_hand_out_another_teams_group_nor_grant_themselves(api):
    steward, _ = _setup(api)
    api.source("hr-src", read_groups=["hr"])  # the admin's
    r1 = api.principal("r9", groups=["g"], clearance="confidential")
    req = _file(api, r1).json()
    path = f"/v1/access-requests/{req['id']}/decision"
    # Adding "hr" to their own source does not let them hand out "hr", which reads the admin's source.
    r = api.client.post(path, headers=steward, json={"decision": "grant", "add_read_groups": ["hr"],
                                                     "add_groups": ["hr"]})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "group_not_on_source")
    assert api.client.get("/v1/principals/r9", headers=api.admin).json()["groups"] == ["g"]
    # Their own request: never theirs to grant.
    own = _file(api, steward).json()
    r = api.client.post(f"/v1/access-requests/{own['id']}/decision", headers=steward,
                        json={"decision": "grant", "add_groups": ["g"]})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "self_decision")
    # An admin may.
    r = api.client.post(f"/v1/access-requests/{own['id']}/decision", headers=api.admin,
                        json={"decision": "grant", "note": "ok", "add_groups": ["g"]})
    assert r.status_code == 200, r.text


def test_putting_a_foreign_group_on_the_source_first_does_not_let_a_steward_hand_it_out(api):
    steward, _ = _setup(api)
    api.source("fin-src", read_groups=["finance"])  # the admin's
    r1 = api.principal("r8", groups=["g"], clearance="confidential")
    req = _file(api, r1).json()
    patched = api.client.patch("/v1/sources/s1", headers=steward, json={"read_groups": ["g", "finance"]})
    assert patched.status_code == 200, patched.text
    r = api.client.post(f"/v1/access-requests/{req['id']}/decision", headers=steward,
                        json={"decision": "grant", "add_groups": ["finance"]})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "group_not_on_source")
    assert api.client.get("/v1/principals/r8", headers=api.admin).json()["groups"] == ["g"]
