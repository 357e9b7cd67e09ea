"""Administering principals after creation: roles and delegations change (API and CLI) and apply from the
next request; delegations name existing users only; every admin write records who made it and the user an
agent made it for; a blank X-Acting-For is refused; a missing key is refused before the body is read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from memory import cli, cli_audit, cli_commands  # noqa: F401  (registers commands)
from tests.conftest import invoke


def code(r: Any) -> str:
    return str(r.json()["error"]["code"])


def _patch(api: Any, pid: str, headers: dict[str, str] | None = None, **body: Any) -> Any:
    return api.client.patch(f"/v1/principals/{pid}", headers=headers or api.admin, json=body)


def _writes(api: Any, target: str) -> list[dict[str, Any]]:
    r = api.client.get("/v1/audit", headers=api.admin, params={"event": "write"})
    assert r.status_code == 200, r.text
    return [rec for rec in r.json()["records"] if rec["body"]["target"] == target]


# ------------------------------------------------------------------------------------------ roles, delegations


def test_a_withdrawn_delegation_is_refused_on_the_agents_next_request(api: Any) -> None:
    api.principal("alice", groups=["g"])
    api.principal("bob", groups=["g"])
    bot = api.principal("bot", kind="agent", groups=["g"], may_act_for=["alice"])
    anybot = api.principal("anybot", kind="agent", groups=["g"], may_act_for_any=True)
    assert api.search({**bot, "X-Acting-For": "alice"}, "x").status_code == 200
    assert api.search({**anybot, "X-Acting-For": "bob"}, "x").status_code == 200

    r = _patch(api, "bot", may_act_for=["bob"])
    assert r.status_code == 200 and r.json()["may_act_for"] == ["bob"]
    assert code(api.search({**bot, "X-Acting-For": "alice"}, "x")) == "delegation_not_allowed"
    assert api.search({**bot, "X-Acting-For": "bob"}, "x").status_code == 200
    assert _patch(api, "bot", may_act_for=[]).json()["may_act_for"] == []
    assert code(api.search({**bot, "X-Acting-For": "bob"}, "x")) == "delegation_not_allowed"

    r = _patch(api, "anybot", may_act_for_any=False)
    assert r.status_code == 200 and r.json()["may_act_for_any"] is False
    assert code(api.search({**anybot, "X-Acting-For": "bob"}, "x")) == "delegation_not_allowed"
    assert api.search(anybot, "x").status_code == 200  # still itself

    assert [(w["action"], w["body"]["details"]) for w in _writes(api, "bot")[-2:]] == [
        ("principal.delegations", {"before": ["alice"], "after": ["bob"]}),
        ("principal.delegations", {"before": ["bob"], "after": []}),
    ]
    assert _writes(api, "anybot")[-1]["body"]["details"] == {"before": True, "after": False}


def test_a_changed_role_applies_on_the_next_request(api: Any) -> None:
    deputy = api.principal("deputy", roles=["reader", "admin"])
    assert api.client.get("/v1/principals", headers=deputy).status_code == 200
    r = _patch(api, "deputy", roles=["reader", "auditor"])
    assert r.status_code == 200 and r.json()["roles"] == ["auditor", "reader"]
    r = api.client.get("/v1/principals", headers=deputy)
    assert (r.status_code, code(r)) == (403, "missing_role")
    assert api.client.get("/v1/audit", headers=deputy).status_code == 200
    assert _patch(api, "deputy", roles=[]).json()["roles"] == []
    assert code(api.search(deputy, "x")) == "missing_role"
    assert [w["body"]["details"] for w in _writes(api, "deputy") if w["action"] == "principal.roles"] == [
        {"before": ["admin", "reader"], "after": ["auditor", "reader"]},
        {"before": ["auditor", "reader"], "after": []},
    ]


def test_only_admins_change_roles_and_delegations(api: Any) -> None:
    api.principal("alice")
    steward = api.principal("st", roles=["steward", "reader"])
    api.principal("bot", kind="agent")
    for body in ({"roles": ["admin"]}, {"may_act_for": ["alice"]}, {"may_act_for_any": True}):
        r = _patch(api, "bot", headers=steward, **body)
        assert (r.status_code, code(r)) == (403, "missing_role")
        r = _patch(api, "st", headers=steward, **body)
        assert (r.status_code, code(r)) == (403, "missing_role")


@pytest.mark.parametrize(("target", "body", "status", "expected"), [
    ("alice", {"may_act_for": ["bob"]}, 422, "invalid_delegation"),  # a user acts for nobody
    ("alice", {"may_act_for_any": True}, 422, "invalid_delegation"),
    ("bot", {"may_act_for": ["other-bot"]}, 422, "invalid_delegation"),  # an agent is not a user
    ("bot", {"may_act_for": ["svc"]}, 422, "invalid_delegation"),  # nor a service
    ("bot", {"may_act_for": ["bot"]}, 422, "invalid_delegation"),  # nor itself
    ("bot", {"may_act_for": ["ghost"]}, 404, "principal_not_found"),
    ("bot", {"roles": ["superuser"]}, 422, "invalid_request"),
    ("ghost", {"roles": ["reader"]}, 404, "principal_not_found"),
])
def test_invalid_changes_are_refused_and_change_nothing(
    api: Any, target: str, body: dict[str, Any], status: int, expected: str
) -> None:
    api.principal("alice")
    api.principal("bob")
    api.principal("other-bot", kind="agent")
    api.principal("svc", kind="service")
    api.principal("bot", kind="agent", may_act_for=["alice"])
    before = api.client.get("/v1/audit", headers=api.admin).json()["records"][-1]["seq"]
    r = _patch(api, target, active=False, **body)  # the valid part is rolled back with the invalid one
    assert (r.status_code, code(r)) == (status, expected)
    assert api.client.get("/v1/audit", headers=api.admin).json()["records"][-1]["seq"] == before + 1  # the GET
    if target != "ghost":
        p = api.client.get(f"/v1/principals/{target}", headers=api.admin).json()
        assert p["active"] is True and p["may_act_for"] == (["alice"] if target == "bot" else [])


@pytest.mark.parametrize(("spec", "status", "expected"), [
    ({"kind": "user", "may_act_for": ["alice"]}, 422, "invalid_delegation"),
    ({"kind": "agent", "may_act_for": ["other-bot"]}, 422, "invalid_delegation"),
    ({"kind": "service", "may_act_for": ["svc"]}, 422, "invalid_delegation"),
    ({"kind": "agent", "may_act_for": ["new"]}, 422, "invalid_delegation"),  # itself
    ({"kind": "agent", "may_act_for": ["ghost"]}, 404, "principal_not_found"),
])
def test_delegations_at_creation_name_existing_users_only(
    api: Any, spec: dict[str, Any], status: int, expected: str
) -> None:
    api.principal("alice")
    api.principal("other-bot", kind="agent")
    api.principal("svc", kind="service")
    r = api.client.post("/v1/principals", headers=api.admin, json={
        "id": "new", "clearance": "internal", "jurisdiction": "EU", **spec})
    assert (r.status_code, code(r)) == (status, expected)
    assert code(api.client.get("/v1/principals/new", headers=api.admin)) == "principal_not_found"


# ------------------------------------------------------------------------------------------------ acting-for


def test_admin_writes_by_an_agent_record_the_user_it_acts_for(api: Any) -> None:
    api.principal("alice", roles=["reader", "admin"])
    bot = api.principal("bot", kind="agent", roles=["reader", "admin"], may_act_for=["alice"])
    as_alice = {**bot, "X-Acting-For": "alice"}
    r = api.client.post("/v1/principals", headers=as_alice, json={
        "id": "made", "kind": "user", "clearance": "internal", "jurisdiction": "EU"})
    assert r.status_code == 201, r.text
    assert _patch(api, "made", headers=as_alice, roles=["reader", "auditor"], groups=["g"]).status_code == 200
    key_id = api.client.post("/v1/principals/made/keys", headers=as_alice, json={}).json()["key_id"]
    assert api.client.delete(f"/v1/keys/{key_id}", headers=as_alice).status_code == 200
    writes = _writes(api, "made")
    assert [w["action"] for w in writes] == [
        "principal.create", "key.issue", "principal.groups", "principal.roles", "key.issue", "key.revoke"]
    assert {(w["principal_id"], w["acting_for"]) for w in writes} == {("bot", "alice")}
    # The admin acting alone is recorded alone.
    assert _patch(api, "made", active=False).status_code == 200
    assert (_writes(api, "made")[-1]["principal_id"], _writes(api, "made")[-1]["acting_for"]) == ("admin", None)


def test_source_policy_and_upload_writes_by_an_agent_record_the_user_it_acts_for(api: Any) -> None:
    api.principal("alice", groups=["g"], roles=["reader", "steward", "admin"])
    bot = api.principal("bot", kind="agent", groups=["g"], roles=["reader", "steward", "admin"],
                        may_act_for=["alice"])
    as_alice = {**bot, "X-Acting-For": "alice"}
    r = api.client.post("/v1/sources", headers=as_alice, json={
        "id": "kb", "name": "KB", "jurisdiction": "EU", "read_groups": ["g"], "floor": "internal"})
    assert r.status_code == 201, r.text
    assert api.client.patch("/v1/sources/kb", headers=as_alice, json={"read_groups": ["g", "h"]}).status_code == 200
    assert api.upload("kb", "a.md", "# Note\n\nThe quarterly plan.\n", headers=as_alice).status_code == 201
    rules = api.client.get("/v1/policy/jurisdictions", headers=api.admin).json()["rules"]
    assert api.client.put("/v1/policy/jurisdictions", headers=as_alice, json={"rules": rules}).status_code == 200
    r = api.client.get("/v1/audit", headers=api.admin, params={"event": "write"})
    actions = {"source.register", "source.update", "document.ingest", "policy.jurisdictions"}
    by_agent = [(w["body"]["action"], w["principal_id"], w["acting_for"]) for w in r.json()["records"]
                if w["body"]["action"] in actions and w["principal_id"] == "bot"]
    assert sorted(a for a, _, _ in by_agent) == sorted(actions)
    assert {(p, u) for _, p, u in by_agent} == {("bot", "alice")}


def test_an_agent_revoking_keys_is_capped_by_the_user_it_acts_for(api: Any) -> None:
    api.principal("alice")  # not an admin
    bot = api.principal("bot", kind="agent", roles=["reader", "admin"], may_act_for=["alice"])
    api.principal("victim")
    key_id = api.client.get("/v1/principals/victim/keys", headers=api.admin).json()[0]["key_id"]
    r = api.client.delete(f"/v1/keys/{key_id}", headers={**bot, "X-Acting-For": "alice"})
    assert (r.status_code, code(r)) == (403, "missing_role")
    r = api.client.delete(f"/v1/keys/{key_id}", headers={**bot, "X-Acting-For": "victim"})
    assert (r.status_code, code(r)) == (403, "delegation_not_allowed")


@pytest.mark.parametrize("caller", ["bot", "anybot", "bob"])
@pytest.mark.parametrize("blank", ["", " ", "\t"])
def test_a_blank_acting_for_header_is_refused_not_ignored(api: Any, caller: str, blank: str) -> None:
    api.principal("alice", groups=["g"])
    keys = {
        "bot": api.principal("bot", kind="agent", groups=["g"], roles=["reader", "admin"], may_act_for=["alice"]),
        "anybot": api.principal("anybot", kind="agent", groups=["g"], may_act_for_any=True),
        "bob": api.principal("bob", groups=["g"]),
    }
    headers = {**keys[caller], "X-Acting-For": blank}
    r = api.search(headers, "x")
    assert (r.status_code, code(r)) == (422, "invalid_acting_for")
    r = api.client.get(f"/v1/principals/{caller}", headers=headers)
    assert (r.status_code, code(r)) == (422, "invalid_acting_for")
    # The key is checked first: a wrong key is 401 whatever the header says.
    r = api.search({"Authorization": "Bearer gm_0123456789abcdef_wrongwrongwrongwrongwrong", "X-Acting-For": blank},
                   "x")
    assert (r.status_code, code(r)) == (401, "invalid_api_key")


# ------------------------------------------------------------------------------------- authentication order


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/principals"),
    ("PATCH", "/v1/principals/admin"),
    ("POST", "/v1/principals/admin/keys"),
    ("POST", "/v1/access-requests"),
    ("POST", "/v1/search"),
    ("PUT", "/v1/policy/jurisdictions"),
    ("POST", "/v1/sources/s1/documents"),
])
@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer  ", "Basic dXNlcjpwYXNz"])
def test_a_missing_key_is_refused_before_the_body_is_read(
    api: Any, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    r = api.client.request(method, path, headers=headers, content="{not json")
    assert (r.status_code, code(r)) == (401, "missing_api_key")
    assert r.headers["WWW-Authenticate"] == "Bearer" and r.headers["X-Request-ID"]


def test_a_present_key_is_checked_before_the_body_is_refused(api: Any) -> None:
    """A wrong key is 401 whatever the body, unparseable JSON included (FastAPI parses it before the route's
    dependencies: the invalid-request handler checks the key first); a valid key with a broken body is 422."""
    wrong = {"Authorization": "Bearer gm_0123456789abcdef_wrongwrongwrongwrongwrong",
             "Content-Type": "application/json"}
    for content in ("{not json", '{"id": 1}'):
        r = api.client.post("/v1/principals", headers=wrong, content=content)
        assert (r.status_code, code(r)) == (401, "invalid_api_key"), content
        assert r.headers["www-authenticate"] == "Bearer"
    r = api.client.post("/v1/search", headers=wrong, content="{not json")
    assert (r.status_code, code(r)) == (401, "invalid_api_key")
    r = api.client.post("/v1/principals", headers={**api.admin, "Content-Type": "application/json"},
                        content="{not json")
    assert (r.status_code, code(r)) == (422, "invalid_request")


def test_routes_without_authentication_are_untouched(api: Any) -> None:
    assert api.client.get("/healthz").status_code == 200
    assert api.client.get("/metrics").status_code == 200
    assert api.client.get("/openapi.json").status_code == 200
    r = api.client.get("/v1/nothing-here")
    assert (r.status_code, code(r)) == (404, "route_not_found")
    r = api.client.get("/v1/search")  # a known path, another method
    assert (r.status_code, code(r)) == (405, "method_not_allowed")


# ------------------------------------------------------------------------------------------------------- CLI



def test_cli_changes_roles_and_delegations(env: Path) -> None:
    assert invoke("principals", "create", "alice", "--groups", "g").exit_code == 0
    assert invoke("principals", "create", "bot", "--kind", "agent", "--groups", "g", "--may-act-for", "alice",
                  "--roles", "reader,auditor").exit_code == 0
    assert invoke("search", "x", "--as", "bot", "--acting-for", "alice", "--json").exit_code == 0

    r = invoke("principals", "update", "bot", "--may-act-for", "", "--roles", "reader", "--actor", "ops")
    assert r.exit_code == 0, r.output
    shown = json.loads(r.output)
    assert shown["may_act_for"] == [] and shown["roles"] == ["reader"]
    r = invoke("search", "x", "--as", "bot", "--acting-for", "alice")
    assert r.exit_code == 2 and "delegation_not_allowed" in r.output
    r = invoke("principals", "update", "bot", "--may-act-for-any")
    assert r.exit_code == 0 and json.loads(r.output)["may_act_for_any"] is True
    assert invoke("search", "x", "--as", "bot", "--acting-for", "alice", "--json").exit_code == 0
    r = invoke("search", "x", "--as", "bot", "--acting-for", "")
    assert r.exit_code == 2 and "invalid_acting_for" in r.output
    r = invoke("principals", "update", "bot", "--no-may-act-for-any", "--inactive")
    assert r.exit_code == 0 and json.loads(r.output)["active"] is False

    r = invoke("audit", "export", "--action", "principal.delegations")
    assert r.exit_code == 0, r.output
    (record,) = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    assert record["principal_id"] == "ops" and record["body"]["details"] == {"before": ["alice"], "after": []}


@pytest.mark.parametrize(("args", "expected"), [
    (("alice",), "nothing_to_change"),
    (("alice", "--may-act-for-any"), "invalid_delegation"),
    (("bot", "--may-act-for", "bot"), "invalid_delegation"),
    (("bot", "--may-act-for", "ghost"), "principal_not_found"),
    (("bot", "--roles", "superuser"), "invalid_role"),
    (("bot", "--clearance", "ultra"), "unknown_label"),
    (("ghost", "--roles", "reader"), "principal_not_found"),
])
def test_cli_refuses_invalid_changes_with_a_code(env: Path, args: tuple[str, ...], expected: str) -> None:
    invoke("principals", "create", "alice")
    invoke("principals", "create", "bot", "--kind", "agent")
    r = invoke("principals", "update", *args)
    assert r.exit_code == 2 and r.output.startswith(f"error: {expected}: ") and "Traceback" not in r.output


def test_the_last_active_admin_cannot_be_demoted_or_deactivated(api: Any) -> None:
    admins = [p["id"] for p in api.client.get("/v1/principals", headers=api.admin).json() if "admin" in p["roles"]]
    assert admins == ["admin"]
    for body in ({"roles": ["reader"]}, {"active": False}):
        r = _patch(api, "admin", **body)
        assert (r.status_code, code(r)) == (409, "last_admin"), body
    assert "admin" in api.client.get("/v1/principals/admin", headers=api.admin).json()["roles"]
    api.principal("admin2", roles=["admin"])
    assert _patch(api, "admin", roles=["reader"]).status_code == 200  # another admin remains
