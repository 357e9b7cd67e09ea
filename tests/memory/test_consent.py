"""Consent to purposes, through the API on the real SQL + Qdrant Edge stack: personal data of a source that
requires consent is served only to a search stating a consented purpose; otherwise withheld, never hidden."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from memory import consent
from memory.errors import ValidationFailedError

PERSONAL = "# Invoice\n\nPlease call Mr John Smith about the invoice.\n"
PLAIN = "# Invoice\n\nThe invoice process runs every month.\n"


def _source(api, sid, **body):
    r = api.client.post("/v1/sources", headers=api.admin, json={
        "id": sid, "name": sid, "steward": "st", "jurisdiction": "EU", "read_groups": ["sales"], "floor": "public",
        **body})
    assert r.status_code == 201, r.text
    return r.json()


def _setup(api):
    """Returns (steward, reader) headers."""
    steward = api.principal("st", roles=["steward", "reader"], groups=["sales"], clearance="restricted")
    reader = api.principal("r1", groups=["sales"], clearance="confidential")
    _source(api, "crm", personal_data_requires_consent=True, consent_purposes=["support"])
    for name, text in (("personal.md", PERSONAL), ("plain.md", PLAIN)):
        assert api.upload("crm", name, text).status_code == 201
    return steward, reader


def _served(res):
    return sorted((h["citation"]["source_id"], "Smith" in h["text"]) for h in res["hits"])


def test_personal_data_needs_a_consented_purpose(api):
    _, reader = _setup(api)
    res = api.search(reader, "invoice").json()
    assert _served(res) == [("crm", False)]  # the chunk without personal data needs no purpose
    assert res["policy"]["withheld"] == [{"reason": "consent", "count": 1, "source_id": "crm", "steward": "st"}]
    assert res["policy"]["rules_applied"]["purpose"] is None
    assert res["policy"]["rules_applied"]["consent_blocked_sources"] == ["crm"]
    res = api.search(reader, "invoice", purpose="marketing").json()
    assert _served(res) == [("crm", False)]
    assert [w["reason"] for w in res["policy"]["withheld"]] == ["consent"]
    res = api.search(reader, "invoice", purpose="Support").json()
    assert _served(res) == [("crm", False), ("crm", True)]
    assert res["policy"]["withheld"] == []
    assert res["policy"]["rules_applied"]["purpose"] == "support"
    assert res["policy"]["rules_applied"]["consent_blocked_sources"] == []
    r = api.search(reader, "invoice", purpose="two words")
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_purpose")


def test_a_caller_outside_the_source_groups_gets_no_hint(api):
    _setup(api)
    outsider = api.principal("o1", groups=["eng"], clearance="restricted")
    api.principal("st2", roles=["steward"], groups=["eng"])
    _source(api, "wiki", read_groups=["eng"], steward="st2")
    assert api.upload("wiki", "w.md", "# Invoice\n\nInvoices are filed in the wiki.\n").status_code == 201
    for purpose in (None, "marketing"):
        res = api.search(outsider, "invoice", **({"purpose": purpose} if purpose else {})).json()
        assert _served(res) == [("wiki", False)]
        assert res["policy"]["withheld"] == []
        assert res["policy"]["rules_applied"]["consent_blocked_sources"] == []
        assert "crm" not in str(res)
    audit = api.client.get("/v1/audit", headers=api.admin, params={"principal_id": "o1", "event": "search"}).json()
    assert audit["records"] and all("crm" not in str(rec) for rec in audit["records"])


def test_sources_without_the_flag_are_unaffected(api):
    _, reader = _setup(api)
    _source(api, "notes", consent_purposes=["support"])  # purposes without the flag change nothing
    assert api.upload("notes", "n.md", PERSONAL).status_code == 201
    res = api.search(reader, "invoice", source_ids=["notes"]).json()
    assert _served(res) == [("notes", True)]
    assert res["policy"]["withheld"] == [] and res["policy"]["rules_applied"]["consent_blocked_sources"] == []


def test_source_consent_fields_are_validated_and_audited(api):
    api.principal("st", roles=["steward"], groups=["sales"])
    body = _source(api, "crm", personal_data_requires_consent=True, consent_purposes=["Support", "billing", "support"])
    assert body["consent_purposes"] == ["billing", "support"]
    r = api.client.post("/v1/sources", headers=api.admin, json={
        "id": "bad", "name": "bad", "jurisdiction": "EU", "consent_purposes": ["no spaces allowed"]})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_purpose")
    r = api.client.patch("/v1/sources/crm", headers=api.admin, json={"consent_purposes": ["research"]})
    assert r.status_code == 200 and r.json()["consent_purposes"] == ["research"]
    records = api.client.get("/v1/audit", headers=api.admin, params={"source_id": "crm", "event": "write"}).json()
    update = [x for x in records["records"] if x["action"] == "source.update"][-1]
    assert update["body"]["details"]["before"]["consent_purposes"] == ["billing", "support"]
    assert update["body"]["details"]["after"]["consent_purposes"] == ["research"]


def test_a_consent_request_is_resolved_by_the_steward_recording_the_purpose(api):
    steward, reader = _setup(api)
    assert api.search(reader, "invoice", purpose="billing").json()["policy"]["withheld"][0]["reason"] == "consent"
    file = {"source_id": "crm", "reason": "consent", "justification": "billing disputes need the contact"}
    r = api.client.post("/v1/access-requests", headers=reader, json=file)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "purpose_required")
    r = api.client.post("/v1/access-requests", headers=reader, json={**file, "purpose": "billing"})
    assert r.status_code == 201, r.text
    req = r.json()
    assert (req["reason"], req["purpose"]) == ("consent", "billing")
    path = f"/v1/access-requests/{req['id']}/decision"
    r = api.client.post(path, headers=steward, json={"decision": "grant", "clearance": "restricted"})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "admin_required")
    r = api.client.post(path, headers=steward, json={"decision": "grant", "add_consent_purpose": "support"})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "consent_purpose_present")
    r = api.client.post(path, headers=steward, json={"decision": "grant", "add_consent_purpose": "billing"})
    assert r.status_code == 200, r.text
    assert r.json()["resolution"]["resolved"] is True and r.json()["resolution"]["failing_checks"] == []
    assert r.json()["changes"]["add_consent_purpose"]["purpose"] == "billing"
    assert api.client.get("/v1/sources/crm", headers=api.admin).json()["consent_purposes"] == ["billing", "support"]
    res = api.search(reader, "invoice", purpose="billing").json()
    assert _served(res) == [("crm", False), ("crm", True)] and res["policy"]["withheld"] == []
    actions = [x["action"] for x in api.client.get("/v1/audit", headers=api.admin,
                                                   params={"source_id": "crm", "event": "write"}).json()["records"]]
    assert actions[-3:] == ["access_request.file", "source.update", "access_request.grant"]


def test_a_consent_grant_is_only_for_a_consent_request(api):
    steward, reader = _setup(api)
    r = api.client.post("/v1/access-requests", headers=reader, json={
        "source_id": "crm", "reason": "clearance", "justification": "x"})
    assert r.status_code == 201, r.text
    r = api.client.post(f"/v1/access-requests/{r.json()['id']}/decision", headers=steward,
                        json={"decision": "grant", "add_consent_purpose": "billing"})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "change_not_for_reason")


def test_blocked_sources_is_one_query_and_empty_without_gated_sources(container):
    from memory import sources
    from memory.db import transaction
    from memory.principals import NewPrincipal, create_principal

    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    with transaction(container.sessions) as s:
        create_principal(s, spec=NewPrincipal("st", "user", ("g",), "restricted", "EU", ("steward",)), actor="t")
        sources.register(s, spec=sources.NewSource("plain", "plain", "st", "EU", ("g",)), actor="t")
    engine = container.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        with container.sessions() as s:
            assert consent.blocked_sources(s, purpose=None, groups={"g"}) == consent.NOTHING_BLOCKED
        with transaction(container.sessions) as s:
            sources.register(s, spec=sources.NewSource("crm", "crm", "st", "EU", ("g",),
                                                       personal_data_requires_consent=True,
                                                       consent_purposes=("support",)), actor="t")
            sources.register(s, spec=sources.NewSource("hidden", "hidden", "st", "EU", ("h",),
                                                       personal_data_requires_consent=True), actor="t")
        statements.clear()
        with container.sessions() as s:
            got = consent.blocked_sources(s, purpose=None, groups={"g"})
            assert len([x for x in statements if x.startswith("SELECT")]) == 1
            assert (got.sources, got.readable) == ({"crm", "hidden"}, {"crm"})
            got = consent.blocked_sources(s, purpose="support", groups={"g"}, source_ids=("crm", "plain"))
            assert (got.sources, got.readable) == (frozenset(), frozenset())
    finally:
        event.remove(engine, "before_cursor_execute", count)


@pytest.mark.parametrize(("value", "slug"), [("support", "support"), (" Billing ", "billing"), ("a-b_c9", "a-b_c9")])
def test_purpose_slugs(value, slug):
    assert consent.normalise_purpose(value) == slug


@pytest.mark.parametrize("bad", ["", " ", "9lives", "two words", "x" * 65, "émoi", "a/b"])
def test_bad_purposes_are_refused(bad):
    with pytest.raises(ValidationFailedError) as exc:
        consent.normalise_purpose(bad)
    assert exc.value.code == "invalid_purpose"


def test_a_consent_withdrawn_after_the_plan_is_caught_on_the_hits_rows(api):
    """The API commits the plan before the query embeds; a steward withdrawing the purpose in between is
    caught where SQL's rows are read, as a read-group or floor change is: the personal chunk is not served (the
    plan saw nothing to withhold, so this search counts nothing; the next one counts it)."""
    from memory import search as search_svc
    from memory.db import transaction
    from memory.principals import get_principal, resolve_effective

    steward, _ = _setup(api)
    c = api.container
    request = search_svc.SearchRequest(query="invoice", purpose="support")
    with transaction(c.sessions) as s:
        who = resolve_effective(s, caller=get_principal(s, principal_id="r1"), acting_for=None)
        planned = search_svc.plan(s, who=who, request=request, reads=c.policy_reads)
    assert planned.blocked.sources == frozenset()  # planned with the purpose consented
    r = api.client.patch("/v1/sources/crm", headers=steward, json={"consent_purposes": []})
    assert r.status_code == 200, r.text
    with transaction(c.sessions) as s:
        res = search_svc.search(s, store=c.store, embedder=c.embedder, who=who, request=request, planned=planned)
    assert sorted(("Smith" in h.text) for h in res.hits) == [False]
    assert res.rules_applied["withheld_counted"] is False and res.withheld == []
    r2 = api.principal("r2", groups=["sales"], clearance="confidential")
    after = api.search(r2, "invoice", purpose="support").json()
    assert _served(after) == [("crm", False)]
    assert [(w["reason"], w["count"]) for w in after["policy"]["withheld"]] == [("consent", 1)]
