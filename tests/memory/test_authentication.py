"""Request authentication: `who_for_token` (column statements, every request) decides exactly as the ORM path
(`authenticate` + `resolve_effective`) does, for every kind of caller and every refusal; and the search
endpoint, which runs authentication and search in one worker hop, still refuses a missing key first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from memory import principals
from memory.db import transaction
from memory.errors import AuthError, ForbiddenError, ValidationFailedError
from memory.models import ApiKey
from memory.principals import NewPrincipal


def _setup(c: Any) -> dict[str, str]:
    """Principals of each kind and state; returns their keys."""
    keys: dict[str, str] = {}
    specs = [
        NewPrincipal(id="alice", kind="user", groups=("eng", "ops"), clearance="confidential", jurisdiction="EU",
                     roles=("reader", "steward")),
        NewPrincipal(id="bob", kind="user", groups=("eng",), clearance="internal", jurisdiction="US"),
        NewPrincipal(id="gone", kind="user", groups=("eng",), clearance="internal", jurisdiction="EU"),
        NewPrincipal(id="bot", kind="agent", groups=("eng",), clearance="internal", jurisdiction="EU",
                     may_act_for=("alice",)),
        NewPrincipal(id="any-svc", kind="service", groups=("eng", "ops"), clearance="restricted",
                     jurisdiction="US", may_act_for_any=True),
        NewPrincipal(id="no-roles", kind="user", groups=("eng",), clearance="public", jurisdiction="EU", roles=()),
    ]
    with transaction(c.sessions) as s:
        for spec in specs:
            principals.create_principal(s, spec=spec, actor="test")
            keys[spec.id] = principals.issue_key(s, principal_id=spec.id, actor="test").token
        old = principals.issue_key(s, principal_id="bob", actor="test",
                                   expires_at=datetime.now(UTC) + timedelta(hours=1))
        s.get(ApiKey, old.key_id).expires_at = datetime.now(UTC) - timedelta(seconds=1)  # its hour has passed
        keys["expired"] = old.token
        revoked = principals.issue_key(s, principal_id="bob", actor="test")
        principals.revoke_key(s, key_id=revoked.key_id, actor="test")
        keys["revoked"] = revoked.token
        principals.get_principal(s, principal_id="gone").active = False
    return keys


def _fast(s: Any, token: str, acting_for: str | None) -> Any:
    return principals.who_for_token(s, token=token, acting_for=acting_for)


def _slow(s: Any, token: str, acting_for: str | None) -> Any:
    return principals.resolve_effective(s, caller=principals.authenticate(s, token=token), acting_for=acting_for)


def _outcome(container: Any, path: Any, token: str, acting_for: str | None) -> Any:
    """The effective principal, or the refusal (error class and stable code)."""
    with transaction(container.sessions) as s:
        try:
            return path(s, token, acting_for)
        except (AuthError, ForbiddenError, ValidationFailedError) as exc:
            return type(exc).__name__, exc.code


CASES = [
    ("alice", None), ("bob", None), ("bot", "alice"), ("bot", "bob"), ("bot", None), ("any-svc", "bob"),
    ("any-svc", "alice"), ("any-svc", "gone"), ("any-svc", "bot"), ("any-svc", "ghost"), ("alice", "bob"),
    ("gone", None), ("no-roles", None), ("expired", None), ("revoked", None), ("missing", None),
    ("malformed", None), ("wrong-secret", None),
    # A present but blank X-Acting-For is refused (not read as absent); the key is checked first.
    ("bot", ""), ("any-svc", " "), ("alice", ""), ("revoked", ""),
]


def test_who_for_token_decides_exactly_as_the_orm_path(container: Any) -> None:
    keys = _setup(container)
    keys["missing"] = ""
    keys["malformed"] = "Bearer nonsense"
    keys["wrong-secret"] = keys["alice"][: -4] + "AAAA"
    for name, acting_for in CASES:
        fast = _outcome(container, _fast, keys[name], acting_for)
        slow = _outcome(container, _slow, keys[name], acting_for)
        assert fast == slow, (name, acting_for, fast, slow)
    # The table covers every outcome: served as self, as a delegate, and each refusal.
    with transaction(container.sessions) as s:
        who = principals.who_for_token(s, token=keys["bot"], acting_for="alice")
        assert who.principal_id == "bot" and who.acting_for == "alice" and who.groups == frozenset({"eng"})
        with pytest.raises(AuthError) as exc:
            principals.who_for_token(s, token=keys["revoked"], acting_for=None)
        assert exc.value.code == "revoked_api_key"
        with pytest.raises(ForbiddenError) as forbidden:
            principals.who_for_token(s, token=keys["bot"], acting_for="bob")
        assert forbidden.value.code == "delegation_not_allowed"
        with pytest.raises(ValidationFailedError) as blank:
            principals.who_for_token(s, token=keys["any-svc"], acting_for="")
        assert blank.value.code == "invalid_acting_for"


def test_search_refuses_a_missing_key_before_reading_the_body(api: Any) -> None:
    r = api.client.post("/v1/search", json={"top_k": "many"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    r = api.client.post("/v1/search", headers={"Authorization": "Basic dXNlcjpwYXNz"}, json={"query": "x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"


def test_search_checks_the_key_role_and_delegation_in_its_one_hop(api: Any) -> None:
    api.source("s1", read_groups=("g",))
    reader = api.principal("r", groups=["g"])
    no_role = api.principal("nr", groups=["g"], roles=[])
    agent = api.principal("bot", kind="agent", groups=["g"], may_act_for=["r"])
    assert api.search(reader, "x").status_code == 200
    r = api.search(no_role, "x")
    assert r.status_code == 403 and r.json()["error"]["code"] == "missing_role"
    r = api.search({**agent, "X-Acting-For": "r"}, "x")
    assert r.status_code == 200 and r.json()["policy"]["acting_for_chain"] == ["bot", "r"]
    r = api.search({**agent, "X-Acting-For": "nr"}, "x")
    assert r.status_code == 403 and r.json()["error"]["code"] == "delegation_not_allowed"
    r = api.search({"Authorization": "Bearer gm_0123456789abcdef_wrongwrongwrongwrongwrong"}, "x")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    # A refused search writes nothing: the audit log holds only the two served searches.
    audit = api.client.get("/v1/audit", headers=api.admin, params={"event": "search"}).json()
    assert sorted(rec["principal_id"] for rec in audit["records"]) == ["bot", "r"]


def test_each_refusal_is_one_structured_log_line_without_the_secret(api: Any, caplog: Any) -> None:
    """Refusals write no audit record (an unauthenticated caller must not be able to grow the hash chain), so
    each is one `api.refused` log line a SIEM can alert on: status, code, route template, the key id (never
    the secret), whether an X-Acting-For header came."""
    no_role = api.principal("nr", groups=["g"], roles=[])
    agent = api.principal("bot", kind="agent", groups=["g"])
    secret = "wrongwrongwrongwrongwrong"
    with caplog.at_level("WARNING", logger="memory.api.exception_handlers"):
        api.client.post("/v1/search", json={"query": "x"})
        api.search({"Authorization": f"Bearer gm_0123456789abcdef_{secret}"}, "x")
        api.search(no_role, "x")
        api.search({**agent, "X-Acting-For": "nr"}, "x")
        api.client.get("/v1/sources/s-secret-id", headers={"Authorization": f"Bearer gm_0123456789abcdef_{secret}"})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("api.refused")]
    assert [line.split()[1:3] for line in lines] == [
        ["status=401", "code=missing_api_key"], ["status=401", "code=invalid_api_key"],
        ["status=403", "code=missing_role"], ["status=403", "code=delegation_not_allowed"],
        ["status=401", "code=invalid_api_key"],
    ]
    assert "key_id=0123456789abcdef" in lines[1] and "route=/v1/search" in lines[1]
    assert "acting_for_header=True" in lines[3] and "route=/v1/sources/{source_id}" in lines[4]
    assert not any(secret in line or "s-secret-id" in line for line in lines)


@pytest.mark.parametrize(("offset_hours", "expired"), [(5, True), (-8, False), (14, True)])
def test_key_expiry_is_the_same_instant_whatever_offset_it_is_written_in(
    api: Any, offset_hours: int, expired: bool
) -> None:
    """SQLite keeps no offset: an expiry written as +05:00 one hour ago must not pass for 4 more hours (it is
    refused as already past when the key is issued), and one written as -08:00 in an hour must not expire 9
    hours early once stored; both are compared and stored in UTC."""
    from datetime import timezone

    api.principal("kim")
    zone = timezone(timedelta(hours=offset_hours))
    at = datetime.now(zone) + (timedelta(hours=-1) if expired else timedelta(hours=1))
    r = api.client.post("/v1/principals/kim/keys", headers=api.admin, json={"expires_at": at.isoformat()})
    if expired:
        assert (r.status_code, r.json()["error"]["code"]) == (422, "expiry_in_past")
        return
    assert r.status_code == 201, r.text
    search = api.search({"Authorization": f"Bearer {r.json()['api_key']}"}, "anything")
    assert search.status_code == 200, search.text


def test_over_long_fields_are_refused_before_the_database(api: Any) -> None:
    """A value longer than its column is a 422 on both databases (PostgreSQL would raise, and its error would
    carry the bound values into the log)."""
    r = api.client.post("/v1/principals", headers=api.admin, json={
        "id": "u9", "kind": "user", "display_name": "x" * 257, "groups": [], "clearance": "public",
        "jurisdiction": "EU", "roles": ["reader"]})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")
    api.principal("kim")
    r = api.client.post("/v1/principals/kim/keys", headers=api.admin, json={"description": "d" * 257})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")


def test_database_errors_never_carry_bound_values(container: Any) -> None:
    from sqlalchemy import text

    with pytest.raises(Exception) as exc, container.sessions() as s:
        s.execute(text("SELECT * FROM no_such_table WHERE x = :secret"), {"secret": "alice.smith@example.com"})
    assert "alice.smith@example.com" not in str(exc.value)
