"""A source's documents for its steward (GET /v1/sources/{id}/documents, `memory documents list|versions`):
pagination that never skips or repeats, literal prefixes, states, staleness, who may list, the audit of each
read. Through the real SQL + Qdrant Edge + parsing (model doubles), and once through the whole real stack."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from memory import document_listing
from memory.db import transaction
from memory.errors import ValidationFailedError
from memory.models import Document, DocumentVersion

NAMES = ["b.md", "a.md", "hr/2025/pay.md", "hr/2024/pay.md", "hr_x.md", "hr%.md", "z.md"]


def _upload(api: Any, key: str, text: str, headers: dict[str, str]) -> None:
    r = api.client.post("/v1/sources/s1/documents", headers=headers, data={"external_key": key},
                        files={"file": (key.rsplit("/", 1)[-1], text.encode())})
    assert r.status_code == 201, r.text


def _setup(api: Any) -> tuple[dict[str, str], dict[str, str]]:
    steward = api.principal("st", roles=["steward", "reader"], groups=["g"])
    api.source("s1", read_groups=["g"], steward="st")
    for i, name in enumerate(NAMES):
        _upload(api, name, f"Document {i}: the travel policy covers meals on day {i}.", steward)
    return steward, {n: d["document_id"] for n, d in _by_key(api, steward).items()}


def _by_key(api: Any, headers: dict[str, str], **params: Any) -> dict[str, dict[str, Any]]:
    r = api.client.get("/v1/sources/s1/documents", headers=headers, params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    return {d["external_key"]: d for d in r.json()["documents"]}


def _keys(api: Any, headers: dict[str, str], **params: Any) -> list[str]:
    return list(_by_key(api, headers, **params))


def test_pages_follow_the_external_keys_without_skipping_or_repeating(api: Any) -> None:
    steward, ids = _setup(api)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        r = api.client.get("/v1/sources/s1/documents", headers=steward, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        seen += [d["external_key"] for d in body["documents"]]
        if pages == 1:  # a document added between pages is listed where its key falls, nothing else moves
            _upload(api, "zz.md", "A late addition about meals.", steward)
        cursor = body["next_cursor"]
        if cursor is None:
            break
    # The database's order of external keys (its collation: PostgreSQL's may not be Python's), each key once.
    assert seen == _keys(api, steward) and sorted(seen) == sorted([*NAMES, "zz.md"]) and pages == 3
    d = _by_key(api, steward)["a.md"]
    assert (d["state"], d["versions"], d["label"], d["personal"], d["stale"]) == ("active", 1, "public", False,
                                                                                  False)
    assert d["current"]["version"] == 1 and d["current"]["sha256"] and d["document_id"] == ids["a.md"]


def test_a_prefix_is_taken_literally(api: Any) -> None:
    steward, _ = _setup(api)
    assert _keys(api, steward, key_prefix="hr/") == ["hr/2024/pay.md", "hr/2025/pay.md"]
    assert _keys(api, steward, key_prefix="hr_") == ["hr_x.md"]  # `_` is not a wildcard
    assert _keys(api, steward, key_prefix="hr%") == ["hr%.md"]  # nor is `%`
    assert _keys(api, steward, key_prefix="nothing") == []


def test_states_follow_retraction_a_new_version_and_a_failed_ingest(api: Any) -> None:
    steward, ids = _setup(api)
    r = api.client.post(f"/v1/documents/{ids['b.md']}/retract", headers=steward, json={"reason": "outdated"})
    assert r.status_code == 200, r.text
    _upload(api, "z.md", "The travel policy now covers taxis too.", steward)
    with transaction(api.container.sessions) as s:  # a document whose every ingest failed has no current version
        s.add(Document(id="doc-failed", source_id="s1", external_key="broken.pdf",
                       created_at=s.get(Document, ids["a.md"]).created_at, current_version=0))
    listed = _by_key(api, steward)
    assert listed["b.md"]["state"] == "retracted" and listed["b.md"]["current"]["retraction_reason"] == "outdated"
    assert (listed["z.md"]["versions"], listed["z.md"]["current"]["version"]) == (2, 2)
    assert (listed["broken.pdf"]["state"], listed["broken.pdf"]["current"], listed["broken.pdf"]["versions"]) == (
        "none", None, 0)
    assert _keys(api, steward, state="retracted") == ["b.md"]
    assert _keys(api, steward, state="none") == ["broken.pdf"]
    assert "b.md" not in _keys(api, steward, state="active") and "z.md" in _keys(api, steward, state="active")


def test_a_version_an_older_pipeline_processed_is_stale(api: Any) -> None:
    steward, ids = _setup(api)
    with transaction(api.container.sessions) as s:
        s.execute(update(DocumentVersion).where(DocumentVersion.document_id == ids["a.md"])
                  .values(pipeline_version="ingest-1"))
    listed = _by_key(api, steward)
    assert listed["a.md"]["stale"] and not listed["b.md"]["stale"]


def test_only_the_steward_auditors_and_admins_list_a_source(api: Any) -> None:
    _setup(api)
    other = api.principal("st2", roles=["steward"], groups=["g"])  # sees s1 (reads it), does not steward it
    stranger = api.principal("st3", roles=["steward"], groups=["elsewhere"])
    reader = api.principal("r1", groups=["g"])
    auditor = api.principal("aud", roles=["auditor"])

    def code(headers: dict[str, str], source: str = "s1") -> tuple[int, str | None]:
        r = api.client.get(f"/v1/sources/{source}/documents", headers=headers)
        return r.status_code, (r.json().get("error") or {}).get("code") if r.status_code != 200 else None

    assert code(other) == (403, "not_source_steward")
    assert code(stranger) == code(stranger, "nope") == (404, "source_not_found")  # existence is not revealed
    assert code(reader) == (403, "missing_role")
    assert code(auditor) == code(api.admin) == (200, None)
    assert code({"Authorization": "Bearer gm_nope"})[0] == 401


def test_an_agent_lists_as_the_user_it_acts_for_never_as_itself(api: Any) -> None:
    """Access under delegation is the user's within the agent's ceiling: an agent stewarding s1 learns nothing
    of it for a user who does not steward it, and may list it for the user who does (roles intersected)."""
    api.principal("u", roles=["steward"], groups=["g"])
    owner = api.principal("st", roles=["steward", "reader"], groups=["g"])
    api.source("s1", read_groups=["g"], steward="st")
    _upload(api, "plan.md", "The reorganisation plan.", owner)
    bot = api.principal("bot", kind="agent", roles=["steward"], groups=["g"], may_act_for_any=True)
    api.client.patch("/v1/sources/s1", headers=api.admin, json={"steward": "bot"}).raise_for_status()
    r = api.client.get("/v1/sources/s1/documents", headers={**bot, "X-Acting-For": "u"})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "not_source_steward")
    api.client.patch("/v1/sources/s1", headers=api.admin, json={"steward": "st"}).raise_for_status()
    r = api.client.get("/v1/sources/s1/documents", headers={**bot, "X-Acting-For": "st"})
    assert r.status_code == 200 and [d["external_key"] for d in r.json()["documents"]] == ["plan.md"], r.text
    doc = r.json()["documents"][0]["document_id"]
    assert api.client.get(f"/v1/documents/{doc}/versions", headers={**bot, "X-Acting-For": "st"}).status_code == 200
    r = api.client.get(f"/v1/documents/{doc}/versions", headers={**bot, "X-Acting-For": "u"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "document_not_found")


def test_a_prefix_is_case_sensitive_on_every_database(api: Any) -> None:
    steward = api.principal("st", roles=["steward", "reader"], groups=["g"])
    api.source("s1", read_groups=["g"], steward="st")
    _upload(api, "hr/pay.md", "Pay scales.", steward)
    _upload(api, "HR/pay.md", "Pay scales, again.", steward)
    assert _keys(api, steward, key_prefix="hr/") == ["hr/pay.md"]
    assert _keys(api, steward, key_prefix="HR") == ["HR/pay.md"]


def test_bad_paging_parameters_are_422_with_stable_codes(api: Any) -> None:
    steward, _ = _setup(api)
    lone_surrogate = base64.urlsafe_b64encode(b'["\\ud800","d"]').decode()
    for params, expected in (({"cursor": "not-a-cursor"}, "invalid_cursor"),
                             ({"cursor": document_listing.encode_cursor("a", "b")[:-3] + "!!!"}, "invalid_cursor"),
                             ({"cursor": document_listing.encode_cursor("a\x00", "d")}, "invalid_cursor"),
                             ({"cursor": lone_surrogate}, "invalid_cursor"),
                             ({"key_prefix": "a\x00"}, "invalid_key_prefix"),
                             ({"limit": 0}, None), ({"limit": 501}, None), ({"state": "gone"}, None)):
        r = api.client.get("/v1/sources/s1/documents", headers=steward, params=params)
        assert r.status_code == 422, (params, r.text)
        if expected:
            assert r.json()["error"]["code"] == expected


def test_every_listing_and_version_history_is_audited_without_the_prefix_in_clear(api: Any) -> None:
    steward, ids = _setup(api)
    _keys(api, steward, key_prefix="hr/2025/")
    assert api.client.get(f"/v1/documents/{ids['a.md']}/versions", headers=steward).status_code == 200
    records = api.client.get("/v1/audit", headers=api.admin, params={"event": "read"}).json()["records"]
    listed = [r for r in records if r["body"]["action"] == "documents.list"]
    assert listed[-1]["principal_id"] == "st" and listed[-1]["source_id"] == "s1"
    assert listed[-1]["body"]["details"] == {
        "key_prefix_sha256": hashlib.sha256(b"hr/2025/").hexdigest(), "state": None, "continued": False,
        "returned": 1}
    assert "hr/2025/" not in json.dumps(records)
    [versions] = [r for r in records if r["body"]["action"] == "document.versions"]
    assert (versions["document_id"], versions["body"]["details"]) == (ids["a.md"], {"returned": 1})
    assert api.client.get("/v1/audit/verify", headers=api.admin).json()["valid"] is True


def test_the_openapi_documents_the_listing(api: Any) -> None:
    op = api.client.get("/openapi.json").json()["paths"]["/v1/sources/{source_id}/documents"]["get"]
    assert {"401", "403", "404", "422"} <= set(op["responses"])
    assert {p["name"] for p in op["parameters"]} >= {"limit", "cursor", "key_prefix", "state"}


def test_a_cursor_round_trips_any_key_and_rejects_forgeries() -> None:
    for key in ("a.md", "hr/ü/ñ.txt", "", "x" * 1000):
        assert document_listing.decode_cursor(document_listing.encode_cursor(key, "doc-1")) == (key, "doc-1")
    for forged in ("", "@@", "e30", document_listing.encode_cursor("a", "b")[:5]):
        with pytest.raises(ValidationFailedError) as exc:
            document_listing.decode_cursor(forged)
        assert exc.value.code == "invalid_cursor"


@pytest.mark.slow
def test_a_steward_sees_what_the_real_classifier_found_in_each_document(real_api: Any) -> None:
    """The whole real stack: Presidio labels the personal document, the listing says so, retraction shows."""
    steward = real_api.principal("st", roles=["steward", "reader"], groups=["g"])
    real_api.source("s1", read_groups=["g"], steward="st", floor="internal")
    assert real_api.upload("s1", "team.txt", "Contact Ms Alice Smith at alice.smith@example.com about payroll.",
                           headers=steward).status_code == 201
    assert real_api.upload("s1", "policy.txt", "Meals on business trips are reimbursed up to the daily limit.",
                           headers=steward).status_code == 201
    listed = _by_key(real_api, steward)
    assert listed["team.txt"]["personal"] and listed["team.txt"]["label"] == "confidential"
    assert not listed["policy.txt"]["personal"] and listed["policy.txt"]["label"] == "internal"
    doc = listed["team.txt"]["document_id"]
    r = real_api.client.post(f"/v1/documents/{doc}/retract", headers=steward, json={"reason": "personal data"})
    assert r.status_code == 200, r.text
    assert _keys(real_api, steward, state="retracted") == ["team.txt"]


def test_the_cli_lists_documents_and_their_versions(env: Path) -> None:
    from tests.conftest import invoke

    assert invoke("principals", "create", "st", "--roles", "steward").exit_code == 0
    assert invoke("sources", "add", "hr", "--name", "HR", "--steward", "st", "--jurisdiction", "EU",
                  "--read-groups", "hr").exit_code == 0
    folder = env / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("Parental leave is twelve weeks at full pay.\n")
    (folder / "sub" / "b.txt").write_text("Sick leave needs a note from the fourth day.")
    assert invoke("ingest", "hr", str(folder), "--no-optimize").exit_code == 0
    r = invoke("documents", "list", "hr", "--limit", "1", "--json")
    assert r.exit_code == 0, r.output
    first = json.loads(r.output)
    assert [d["external_key"] for d in first["documents"]] == ["a.md"] and first["next_cursor"]
    r = invoke("documents", "list", "hr", "--cursor", first["next_cursor"], "--json")
    second = json.loads(r.output)
    assert [d["external_key"] for d in second["documents"]] == ["sub/b.txt"] and second["next_cursor"] is None
    r = invoke("documents", "list", "hr", "--limit", "1")
    assert r.exit_code == 0 and "a.md" in r.output and "next page: --cursor" in r.output, r.output
    r = invoke("documents", "versions", first["documents"][0]["document_id"], "--json")
    assert r.exit_code == 0 and json.loads(r.output)["versions"][0]["version"] == 1, r.output
    r = invoke("documents", "versions", first["documents"][0]["document_id"])
    assert r.exit_code == 0 and "active" in r.output, r.output
    for args, code in ((("documents", "list", "nope"), "source_not_found"),
                       (("documents", "list", "hr", "--state", "gone"), "invalid_state"),
                       (("documents", "list", "hr", "--cursor", "forged"), "invalid_cursor"),
                       (("documents", "versions", "nope"), "document_not_found")):
        r = invoke(*args)
        assert r.exit_code == 2 and f"error: {code}:" in r.output, (args, r.output)
    r = invoke("audit", "export", "--action", "documents.list")
    assert r.exit_code == 0 and len([x for x in r.stdout.splitlines() if x.startswith("{")]) == 3, r.output
