"""Boundaries of the read paths found by a security review: time travel never loosens policy, version history
is scoped to the source's steward, an agent's citation lookups are scoped to the user it acts for, and a source
whose access changes is never served under a mix of its old and new access (through the real stack)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from memory import sources
from memory.db import transaction
from memory.errors import PolicyError
from memory.policy import JURISDICTION_IN_TRANSIT, normalise_jurisdiction
from memory.stores.base import PayloadPatch, Selector
from memory.vector_sync import repair

EMAIL_DOC = "Payroll note: contact Ms Alice Smith at alice.smith@example.com about the payroll bonus."


def _hits(r: Any) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    return r.json()["hits"]


def _point_ids(api: Any, source_id: str) -> list[str]:
    from sqlalchemy import select

    from memory.models import Chunk

    with api.container.sessions() as s:
        return list(s.execute(select(Chunk.point_id).where(Chunk.source_id == source_id)).scalars())


def _access(api: Any, ids: list[str]) -> set[tuple[tuple[str, ...], str]]:
    return {(p.payload.read_groups, p.payload.jurisdiction) for p in api.container.store.retrieve(ids)}


def _group_filtered(api: Any, monkeypatch: pytest.MonkeyPatch, headers: dict[str, str], query: str,
                    **kw: Any) -> list[dict[str, Any]]:
    """A search as a caller who can read more sources than the scoped limit makes it: filtered on the read groups
    and jurisdiction the vectors carry (memory.readable_sources), not on SQL's sources."""
    import memory.search

    with monkeypatch.context() as m:
        m.setattr(memory.search, "SCOPED_SOURCES_LIMIT", 0)
        return _hits(api.search(headers, query, **kw))


def test_time_travel_runs_under_the_rules_in_force_now(api: Any) -> None:
    """An admin denies EU->US; a search with as_of before the change does not get the old allow_masked."""
    api.source("hr", jurisdiction="EU", read_groups=["g"])
    assert api.upload("hr", "note.txt", EMAIL_DOC).status_code == 201
    us = api.principal("bob", groups=["g"], clearance="restricted", jurisdiction="US")
    assert _hits(api.search(us, "payroll bonus"))[0]["masked"]  # the default EU->US rule: allow_masked
    time.sleep(1.1)
    before_change = datetime.fromtimestamp(time.time(), tz=UTC).isoformat()
    time.sleep(1.1)
    rules = [r for r in api.client.get("/v1/policy/jurisdictions", headers=api.admin).json()["rules"]
             if not (r["data"] == "EU" and r["caller"] == "US")]
    r = api.client.put("/v1/policy/jurisdictions", headers=api.admin,
                       json={"rules": [*rules, {"data": "EU", "caller": "US", "rule": "deny"}]})
    assert r.status_code == 200, r.text
    assert _hits(api.search(us, "payroll bonus")) == []
    past = api.search(us, "payroll bonus", as_of=before_change)
    assert _hits(past) == []
    assert past.json()["policy"]["rules_applied"]["transfer_rules_version"] == r.json()["version"]
    [withheld] = past.json()["policy"]["withheld"]
    assert withheld["reason"] == "jurisdiction"


def test_version_history_is_scoped_to_the_sources_steward(api: Any) -> None:
    api.source("hr", jurisdiction="EU", read_groups=["hr"], floor="restricted")
    doc_id = api.upload("hr", "salaries-2025.txt", "Restructuring plan for the payroll team.").json()["document_id"]
    other = api.principal("steward2", groups=["marketing"], clearance="public", roles=["steward"])
    r = api.client.get(f"/v1/documents/{doc_id}/versions", headers=other)
    unknown = api.client.get("/v1/documents/nope/versions", headers=other)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "document_not_found")
    assert r.json()["error"]["code"] == unknown.json()["error"]["code"]  # existence is not revealed
    auditor = api.principal("aud", roles=["auditor"])
    assert api.client.get(f"/v1/documents/{doc_id}/versions", headers=auditor).status_code == 200
    assert api.client.get(f"/v1/documents/{doc_id}/versions", headers=api.admin).status_code == 200
    own = api.principal("st-hr", groups=["hr"], roles=["steward"])
    api.client.patch("/v1/sources/hr", headers=api.admin, json={"steward": "st-hr"}).raise_for_status()
    assert api.client.get(f"/v1/documents/{doc_id}/versions", headers=own).status_code == 200


def test_an_agents_citation_lookup_is_scoped_to_the_user_it_acts_for(api: Any) -> None:
    api.source("hr", jurisdiction="EU", read_groups=["g"])
    assert api.upload("hr", "note.txt", "Quarterly payroll bonus plan for the hr team.").status_code == 201
    alice = api.principal("alice", groups=["g"], clearance="restricted")
    api.principal("bob", groups=["other"], clearance="restricted")
    bot = api.principal("bot", kind="agent", groups=["g", "other"], clearance="restricted",
                        may_act_for=["alice", "bob"])
    for_alice, for_bob = {**bot, "X-Acting-For": "alice"}, {**bot, "X-Acting-For": "bob"}
    cid = _hits(api.search(for_alice, "payroll bonus"))[0]["citation"]["chunk_id"]
    assert _hits(api.search(for_bob, "payroll bonus")) == []
    r = api.client.get(f"/v1/citations/{cid}", headers=for_bob)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "not_served_to_caller")
    verify = api.client.post("/v1/citations/verify", headers=for_bob, json={"citation": {"chunk_id": cid}})
    assert verify.status_code == 403
    # The same pair, the agent on its own, and alice herself (served through the agent) may look it up.
    served = api.client.get(f"/v1/citations/{cid}", headers=for_alice)
    assert served.status_code == 200
    assert [(s["principal_id"], s["acting_for"]) for s in served.json()["served_by"]] == [("bot", "alice")]
    assert api.client.get(f"/v1/citations/{cid}", headers=bot).status_code == 200
    assert api.client.get(f"/v1/citations/{cid}", headers=alice).status_code == 200


def test_a_hit_sql_would_withhold_is_dropped_not_served_unmasked(api: Any) -> None:
    """Vectors and SQL disagree on a source's jurisdiction (a change caught mid-way): IN->US withholds personal
    data, EU->US masks it. The hit the EU payload admits is dropped: SQL wins, nothing is served in clear."""
    api.source("hr", jurisdiction="IN", read_groups=["g"])
    assert api.upload("hr", "note.txt", EMAIL_DOC).status_code == 201
    us = api.principal("bob", groups=["g"], clearance="restricted", jurisdiction="US")
    assert _hits(api.search(us, "payroll bonus")) == []
    api.container.store.patch(Selector(source_id="hr"), PayloadPatch(jurisdiction="EU"))
    assert _hits(api.search(us, "payroll bonus")) == []


def test_a_source_access_change_narrows_the_vectors_before_sql_commits(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.source("hr", jurisdiction="IN", read_groups=["g", "h"])
    assert api.upload("hr", "note.txt", "Quarterly payroll bonus plan for the hr team.").status_code == 201
    ids = _point_ids(api, "hr")
    with pytest.raises(RuntimeError), transaction(api.container.sessions) as s:
        sources.update(s, source_id="hr", store=api.container.store, actor="admin",
                       patch=sources.SourcePatch(read_groups=("h", "k"), jurisdiction="EU"))
        # Before the commit: the groups in both, and a jurisdiction no rule admits.
        assert _access(api, ids) == {(("h",), JURISDICTION_IN_TRANSIT)}
        raise RuntimeError("the commit fails")
    # SQL kept the old access, and a search follows SQL's sources: the change never happened. The vectors stay
    # narrowed (fail closed for a search filtered on their read groups) until repair or the change again.
    src = api.client.get("/v1/sources/hr", headers=api.admin).json()
    assert (sorted(src["read_groups"]), src["jurisdiction"]) == (["g", "h"], "IN")
    reader = api.principal("kim", groups=["h"], clearance="restricted", jurisdiction="IN")
    assert _hits(api.search(reader, "payroll bonus"))
    assert _group_filtered(api, monkeypatch, reader, "payroll bonus") == []
    r = api.client.patch("/v1/sources/hr", headers=api.admin, json={"read_groups": ["h", "k"], "jurisdiction": "EU"})
    assert r.status_code == 200, r.text
    assert _access(api, ids) == {(("h", "k"), "EU")}
    eu = api.principal("kai", groups=["k"], clearance="restricted", jurisdiction="EU")
    assert _hits(api.search(eu, "payroll bonus"))


def test_repair_gives_a_source_left_narrowed_by_a_failed_commit_its_access_back(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.source("hr", jurisdiction="IN", read_groups=["g", "h"])
    assert api.upload("hr", "note.txt", "Quarterly payroll bonus plan for the hr team.").status_code == 201
    api.source("other", jurisdiction="EU", read_groups=["g"])
    assert api.upload("other", "memo.txt", "The canteen closes early on Fridays.").status_code == 201
    ids = _point_ids(api, "hr")
    with pytest.raises(RuntimeError), transaction(api.container.sessions) as s:
        sources.update(s, source_id="hr", store=api.container.store, actor="admin",
                       patch=sources.SourcePatch(read_groups=("h", "k"), jurisdiction="EU"))
        raise RuntimeError("the commit fails")
    reader = api.principal("gil", groups=["g"], clearance="restricted", jurisdiction="IN")
    assert _hits(api.search(reader, "payroll bonus plan", top_k=1))[0]["citation"]["source_id"] == "hr"  # SQL's
    assert _group_filtered(api, monkeypatch, reader, "payroll bonus plan", top_k=1)[0]["citation"]["source_id"] \
        == "other"
    assert repair(api.container.sessions, api.container.store)["republished"] == 1
    assert _access(api, ids) == {(("g", "h"), "IN")}  # what SQL kept
    assert _group_filtered(api, monkeypatch, reader, "payroll bonus plan", top_k=1)[0]["citation"]["source_id"] \
        == "hr"
    assert repair(api.container.sessions, api.container.store)["republished"] == 0  # settled: nothing to do


def test_repair_publishes_a_committed_access_change_whose_publish_never_ran(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process died (or the vector store failed) between the commit and publish_access: a search follows
    SQL's sources at once, while the vectors' copy of the access stays narrowed until repair, which runs at every
    start and as `memory repair`, writes what SQL holds."""
    api.source("s1", read_groups=["eng"])
    assert api.upload("s1", "plan.md", "# Plan\n\nThe merger closes in March.").status_code == 201
    ids = _point_ids(api, "s1")
    with transaction(api.container.sessions) as s:
        assert sources.update(s, source_id="s1", store=api.container.store, actor="admin",
                              patch=sources.SourcePatch(read_groups=("eng", "sales"), jurisdiction="UK")).access_changed
    assert _access(api, ids) == {(("eng",), JURISDICTION_IN_TRANSIT)}
    sales = api.principal("sam", groups=["sales"], clearance="restricted", jurisdiction="UK")
    assert _hits(api.search(sales, "merger"))
    assert _group_filtered(api, monkeypatch, sales, "merger") == []
    assert repair(api.container.sessions, api.container.store) == {"abandoned": 0, "synced": 0, "republished": 1,
                                                                   "retractions_resynced": 0}
    assert _access(api, ids) == {(("eng", "sales"), "UK")}
    assert _group_filtered(api, monkeypatch, sales, "merger")


def test_an_admin_runs_repair_through_the_api_and_it_is_audited(api: Any) -> None:
    from sqlalchemy import select

    from memory.models import AuditRecord

    api.source("s1", read_groups=["eng"])
    assert api.upload("s1", "plan.md", "# Plan\n\nThe merger closes in March.").status_code == 201
    with transaction(api.container.sessions) as s:  # committed; the publish never ran (vector store down)
        sources.update(s, source_id="s1", store=api.container.store, actor="admin",
                       patch=sources.SourcePatch(read_groups=("eng", "sales")))
    steward = api.principal("st", roles=["steward"])
    r = api.client.post("/v1/admin/repair", headers=steward)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "missing_role")
    r = api.client.post("/v1/admin/repair", headers=api.admin)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("abandoned", "synced", "republished", "retractions_resynced")} == {
        "abandoned": 0, "synced": 0, "republished": 1, "retractions_resynced": 0}
    assert _access(api, _point_ids(api, "s1")) == {(("eng", "sales"), "EU")}
    out = api.client.post("/v1/admin/repair", headers=api.admin).json()
    assert out["republished"] == 0
    assert out["unindexed_points"] == api.container.store.stats()["points"] > 0  # a tiny store: none indexed
    with api.container.sessions() as s:
        bodies = [b for b in s.scalars(select(AuditRecord.body)) if b.get("action") == "maintenance.repair"]
    assert bodies == [{"action": "maintenance.repair", "target": "vectors",  # a run that fixed nothing: none
                       "details": {"abandoned": 0, "synced": 0, "republished": 1, "retractions_resynced": 0}}]


def test_the_repair_loop_settles_a_narrowed_source_while_the_api_runs(api: Any) -> None:
    from memory.maintenance import RepairLoop

    api.source("s1", read_groups=["eng"])
    assert api.upload("s1", "plan.md", "# Plan\n\nThe merger closes in March.").status_code == 201
    ids = _point_ids(api, "s1")
    with transaction(api.container.sessions) as s:
        sources.update(s, source_id="s1", store=api.container.store, actor="admin",
                       patch=sources.SourcePatch(read_groups=("eng", "sales")))
    loop = RepairLoop(api.container.sessions, api.container.store, interval_s=0.05, pending_grace_s=900)
    loop.start()
    try:
        deadline = time.monotonic() + 20
        while _access(api, ids) != {(("eng", "sales"), "EU")} and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        loop.stop()
    assert _access(api, ids) == {(("eng", "sales"), "EU")}


def test_a_failed_repair_run_is_logged_and_the_loop_goes_on(api: Any, caplog: Any) -> None:
    from memory.maintenance import RepairLoop

    class Down:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("vector store down")

    loop = RepairLoop(api.container.sessions, Down(), interval_s=60, pending_grace_s=900)  # type: ignore[arg-type]
    assert loop.run_once() is None
    assert "maintenance.repair_failed error=RuntimeError" in caplog.text
    assert RepairLoop(api.container.sessions, api.container.store, interval_s=60, pending_grace_s=900).run_once() == {
        "abandoned": 0, "synced": 0, "republished": 0, "retractions_resynced": 0}
    with pytest.raises(ValueError):
        RepairLoop(api.container.sessions, api.container.store, interval_s=0, pending_grace_s=900)


def test_the_repair_loop_gauges_unindexed_points_and_survives_a_failed_read(api: Any, caplog: Any) -> None:
    from prometheus_client import REGISTRY

    from memory.maintenance import RepairLoop, watch_index

    api.source("s1", read_groups=["eng"])
    assert api.upload("s1", "plan.md", "# Plan\n\nThe merger closes in March.").status_code == 201
    loop = RepairLoop(api.container.sessions, api.container.store, interval_s=3600, pending_grace_s=900,
                      watch=lambda: watch_index(api.container.store, warn_above=0))
    loop.start()
    loop.stop(timeout_s=30)
    points = api.container.store.stats()["points"]
    assert points > 0 and REGISTRY.get_sample_value("memory_vector_points_unindexed") == points  # a tiny store
    assert "vectors.unindexed" in caplog.text

    class Down:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("vector store down")

    down: Any = Down()
    broken = RepairLoop(api.container.sessions, down, interval_s=3600, pending_grace_s=900,
                        watch=lambda: watch_index(down, warn_above=0))
    broken.start()
    broken.stop(timeout_s=30)
    assert "maintenance.watch_index_failed error=RuntimeError" in caplog.text


def test_an_upload_gauges_the_index_backlog_and_a_failed_read_does_not_fail_it(
    api: Any, caplog: Any, monkeypatch: Any
) -> None:
    """What the API ingests is gauged as it lands (the embedded store has no background optimizer), not only at
    the next repair run, which alone warns (once an interval, not once an upload); the upload has committed, so
    a failed read is logged, never returned as an error."""
    from prometheus_client import REGISTRY

    api.source("s1", read_groups=["eng"])
    monkeypatch.setattr(api.container.settings, "unindexed_warn_points", 0)
    assert api.upload("s1", "plan.md", "# Plan\n\nThe merger closes in March.").status_code == 201
    points = api.container.store.stats()["points"]
    assert points > 0 and REGISTRY.get_sample_value("memory_vector_points_unindexed") == points  # a tiny store
    assert "vectors.unindexed" not in caplog.text

    def down() -> dict[str, int]:
        raise RuntimeError("vector store down")

    monkeypatch.setattr(api.container.store, "stats", down)
    r = api.upload("s1", "memo.md", "# Memo\n\nThe audit starts in April.")
    assert r.status_code == 201, r.text
    assert "vectors.watch_index_failed error=RuntimeError" in caplog.text
    assert api.upload("s1", "memo.md", "# Memo\n\nThe audit starts in April.").status_code == 200  # unchanged


def test_the_in_transit_jurisdiction_is_reserved() -> None:
    with pytest.raises(PolicyError):
        normalise_jurisdiction(JURISDICTION_IN_TRANSIT.lower())


def test_access_changes_that_finish_out_of_order_publish_the_latest(api: Any) -> None:
    """Change 1 widens and commits, change 2 narrows and publishes, then change 1's publish lands: the vectors
    hold what SQL holds last (the narrow groups), not what change 1 computed."""
    api.source("s1", read_groups=["eng"])
    assert api.upload("s1", "plan.md", "# Plan\n\nThe merger closes in March.").status_code == 201
    ids = _point_ids(api, "s1")
    with transaction(api.container.sessions) as s:
        first = sources.update(s, source_id="s1", store=api.container.store, actor="admin",
                               patch=sources.SourcePatch(read_groups=("eng", "sales")))
    with transaction(api.container.sessions) as s:
        sources.update(s, source_id="s1", store=api.container.store, actor="admin",
                       patch=sources.SourcePatch(read_groups=("eng",)))
    sources.publish_access(api.container.sessions, api.container.store, "s1")
    assert first.access_changed
    sources.publish_access(api.container.sessions, api.container.store, "s1")  # change 1's, late
    assert _access(api, ids) == {(("eng",), "EU")}
    sales = api.principal("sam", groups=["sales"], clearance="restricted")
    assert _hits(api.search(sales, "merger")) == []


def test_a_caller_served_a_chunk_masked_never_gets_a_hash_of_its_clear_text(api: Any) -> None:
    """The masked hit, its lookup and its verify carry no clear-text hash (one would confirm guessed values) and
    no measure of the clear text (offsets, token count, file size)."""
    import hashlib

    api.source("hr", jurisdiction="EU", read_groups=["g"])
    assert api.upload("hr", "note.txt", EMAIL_DOC).status_code == 201
    us = api.principal("bob", groups=["g"], clearance="restricted", jurisdiction="US")  # EU->US: allow_masked
    [hit] = _hits(api.search(us, "payroll bonus"))
    assert hit["masked"] and "alice.smith" not in hit["text"]
    cited = hit["citation"]
    assert (cited["chunk_sha256"], cited["version_sha256"]) == (None, None)
    looked_up = api.client.get(f"/v1/citations/{cited['chunk_id']}", headers=us).json()
    assert looked_up["citation"]["chunk_sha256"] is None and looked_up["chunk"]["sha256"] is None
    assert looked_up["version"]["sha256"] is None
    verified = api.client.post("/v1/citations/verify", headers=us, json={"citation": cited}).json()
    assert verified["valid"] and verified["recomputed_chunk_sha256"] is None
    guess = hit["text"].replace("<PERSON>", "Alice Smith").replace("<EMAIL_ADDRESS>", "alice.smith@example.com")
    guessed = api.client.post("/v1/citations/verify", headers=us, json={
        "citation": {**cited, "chunk_sha256": hashlib.sha256(guess.encode()).hexdigest()}}).json()
    wrong = api.client.post("/v1/citations/verify", headers=us, json={
        "citation": {**cited, "chunk_sha256": "0" * 64}}).json()
    assert guessed["valid"] == wrong["valid"] and guessed["problems"] == wrong["problems"]  # no oracle
    # ... and a hash it did not compare never makes the citation valid (a forged one would pass otherwise)
    assert wrong["valid"] is False and [p["code"] for p in wrong["problems"]] == ["unverifiable_field"]
    # Nor the clear text's offsets, token count or file size: with the masked text's length they would give the
    # length of the masked values; a guessed offset is not compared either.
    assert (cited["start"], cited["end"]) == (None, None)
    assert (looked_up["citation"]["start"], looked_up["citation"]["end"]) == (None, None)
    assert (looked_up["chunk"]["start"], looked_up["chunk"]["end"], looked_up["chunk"]["token_count"]) == (None,) * 3
    assert looked_up["version"]["size_bytes"] is None
    right_end = api.client.post("/v1/citations/verify", headers=us, json={
        "citation": {**cited, "start": 0, "end": len(EMAIL_DOC)}}).json()
    wrong_end = api.client.post("/v1/citations/verify", headers=us, json={
        "citation": {**cited, "start": 0, "end": 3}}).json()
    assert right_end["valid"] == wrong_end["valid"] and right_end["problems"] == wrong_end["problems"]
    assert right_end["valid"] is False and {p["field"] for p in right_end["problems"]} == {"start", "end"}
    # A caller served it in clear, and an auditor, get the hashes and offsets.
    eu = api.principal("eve", groups=["g"], clearance="restricted", jurisdiction="EU")
    [clear] = _hits(api.search(eu, "payroll bonus"))
    assert not clear["masked"] and clear["citation"]["chunk_sha256"] == hashlib.sha256(EMAIL_DOC.encode()).hexdigest()
    assert (clear["citation"]["start"], clear["citation"]["end"]) == (0, len(EMAIL_DOC))
    assert api.client.post("/v1/citations/verify", headers=eu, json={"citation": clear["citation"]}).json()["valid"]
    wrong_offset = api.client.post("/v1/citations/verify", headers=eu,
                                   json={"citation": {**clear["citation"], "end": 3}}).json()
    assert [p["field"] for p in wrong_offset["problems"]] == ["end"]
    auditor = api.principal("aud", roles=["auditor"])
    audited = api.client.get(f"/v1/citations/{cited['chunk_id']}", headers=auditor).json()
    assert audited["chunk"]["sha256"] and audited["chunk"]["end"] == len(EMAIL_DOC) and audited["chunk"]["token_count"]


CONTACTS_DOC = (
    "# Vendor escalation contacts\n\n## Primary contact\n\nFor escalations about the Acme payroll integration call "
    "Margaret Thornbury at +44 20 7946 0958 or write to margaret.thornbury@acme-payroll.example.com.\n\n"
    "## Escalation procedure\n\nOpen a ticket in the vendor portal first. If the vendor does not answer within two "
    "business days, escalate to the account manager and copy the procurement team on every message.\n"
)


def test_a_clear_hit_from_a_version_with_a_masked_or_withheld_neighbour_carries_no_measure_of_the_version(
    api: Any,
) -> None:
    """Served in clear, a chunk whose version holds another chunk this caller gets masked (or is withheld from)
    comes without the version's hash and its offsets: with the served texts, the hash would confirm a guess of
    the masked values offline, and the offsets would give their length. Lookup and verify agree; a caller who may
    see the whole version, and an auditor, get them."""
    import hashlib

    from memory.models import AuditRecord

    api.source("vendors", jurisdiction="EU", read_groups=["g"])
    assert api.upload("vendors", "contacts.md", CONTACTS_DOC).status_code == 201
    query = "vendor escalation procedure ticket portal"
    us = api.principal("bob", groups=["g"], clearance="restricted", jurisdiction="US")  # EU->US: allow_masked
    hits = _hits(api.search(us, query, top_k=5))
    masked = [h for h in hits if h["masked"]]
    [clear] = [h for h in hits if not h["masked"] and "vendor portal" in h["text"]]
    assert masked and "margaret.thornbury@" not in masked[0]["text"]
    cited = clear["citation"]
    assert cited["chunk_sha256"] == hashlib.sha256(clear["text"].encode()).hexdigest()
    assert (cited["version_sha256"], cited["start"], cited["end"]) == (None, None, None)
    with transaction(api.container.sessions) as s:
        body = s.query(AuditRecord).filter(AuditRecord.event == "search").order_by(AuditRecord.seq.desc()).first().body
    assert body["partial_chunk_ids"] == [cited["chunk_id"]]
    looked_up = api.client.get(f"/v1/citations/{cited['chunk_id']}", headers=us).json()
    assert looked_up["citation"]["version_sha256"] is None and looked_up["citation"]["chunk_sha256"]
    assert (looked_up["version"]["sha256"], looked_up["version"]["size_bytes"]) == (None, None)
    assert (looked_up["chunk"]["start"], looked_up["chunk"]["end"]) == (None, None) and looked_up["chunk"]["sha256"]
    assert api.client.post("/v1/citations/verify", headers=us, json={"citation": cited}).json()["valid"]
    real = hashlib.sha256(CONTACTS_DOC.encode()).hexdigest()
    right, wrong = (api.client.post("/v1/citations/verify", headers=us, json={
        "citation": {**cited, "version_sha256": h}}).json() for h in (real, "0" * 64))
    assert right["valid"] is False and right["problems"] == wrong["problems"]  # no oracle
    assert [p["code"] for p in right["problems"]] == ["unverifiable_field"]
    # A caller who may see the whole version in clear gets its hash and the offsets.
    eu = api.principal("eve", groups=["g"], clearance="restricted", jurisdiction="EU")
    whole = [h for h in _hits(api.search(eu, query, top_k=5)) if "vendor portal" in h["text"]]
    assert whole[0]["citation"]["version_sha256"] == real and whole[0]["citation"]["end"]
    # Withheld, not masked: a neighbour above the caller's clearance hides the version's measures too.
    assert {h["label"] for h in hits} == {"confidential", "public"}
    low = api.principal("lou", groups=["g"], clearance="public", jurisdiction="EU")
    r = api.search(low, query, top_k=5).json()
    assert [w["reason"] for w in r["policy"]["withheld"]] == ["clearance"]
    assert r["hits"] and all(h["citation"]["version_sha256"] is None and h["citation"]["end"] is None
                             and h["citation"]["chunk_sha256"] for h in r["hits"])
    auditor = api.principal("aud", roles=["auditor"])
    audited = api.client.get(f"/v1/citations/{cited['chunk_id']}", headers=auditor).json()
    assert audited["version"]["sha256"] == real and audited["chunk"]["end"]


def test_personal_data_in_a_file_or_attachment_name_is_masked_or_withheld_with_the_chunk(api: Any) -> None:
    """A file or an attachment named after a person: its chunks carry that personal data, so a caller who gets
    them masked gets the names masked in the citation (and in the lookup), and a caller the jurisdiction
    denies personal data is not served them (withheld, counted), however clean the text itself is."""
    import email.message

    msg = email.message.EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "hr@example.com", "payroll@example.com", "New hire"
    msg.set_content("The signed paperwork for the new logistics hire is attached.")
    msg.add_attachment(b"# CV\n\nTen years of warehouse logistics experience.\n", maintype="text",
                       subtype="markdown", filename="Ms_Lena_Fischer_cv.md")
    api.source("hr", jurisdiction="EU", read_groups=["g"])
    assert api.upload("hr", "Ms_Lena_Fischer_contract.md", "# Contract\n\nSalary band 4, starting in April.\n"
                      ).status_code == 201
    assert api.upload("hr", "new-hire.eml", msg.as_bytes()).status_code == 201
    us = api.principal("bob", groups=["g"], clearance="restricted", jurisdiction="US")  # EU->US: allow_masked
    india = api.principal("ira", groups=["g"], clearance="restricted", jurisdiction="IN")  # EU->IN: deny_personal
    eu = api.principal("eve", groups=["g"], clearance="restricted", jurisdiction="EU")

    [contract] = [h for h in _hits(api.search(us, "salary band contract", top_k=10)) if "Salary band" in h["text"]]
    assert contract["masked"] and "PERSON" in contract["entity_types"]
    assert contract["citation"]["document_uri"] == "upload://hr/Ms_<PERSON>_contract.md"
    [cv] = [h for h in _hits(api.search(us, "warehouse logistics experience", top_k=10)) if "Ten years" in h["text"]]
    assert cv["masked"] and cv["citation"]["attachment"] == "Ms_<PERSON>_cv.md"
    assert "Fischer" not in str(cv) and "Fischer" not in str(contract)
    looked_up = api.client.get(f"/v1/citations/{contract['citation']['chunk_id']}", headers=us).json()
    assert looked_up["version"]["filename"] == looked_up["document"]["external_key"] == "Ms_<PERSON>_contract.md"
    assert looked_up["citation"]["document_uri"] == "upload://hr/Ms_<PERSON>_contract.md"
    cv_up = api.client.get(f"/v1/citations/{cv['citation']['chunk_id']}", headers=us).json()
    assert cv_up["chunk"]["attachment"] == "Ms_<PERSON>_cv.md" and "Fischer" not in str(cv_up)
    for hit in (contract, cv):
        verified = api.client.post("/v1/citations/verify", headers=us, json={"citation": hit["citation"]}).json()
        assert verified["valid"], verified["problems"]
    # Denied personal data: neither chunk is served; both are counted as withheld by jurisdiction.
    r = api.search(india, "salary band contract warehouse logistics experience", top_k=10).json()
    assert not any("Salary band" in h["text"] or "Ten years" in h["text"] for h in r["hits"])
    assert {w["reason"] for w in r["policy"]["withheld"]} == {"jurisdiction"}
    # In clear for a caller who may see it.
    [clear] = [h for h in _hits(api.search(eu, "salary band contract", top_k=10)) if "Salary band" in h["text"]]
    assert not clear["masked"] and clear["citation"]["document_uri"] == "upload://hr/Ms_Lena_Fischer_contract.md"


def test_a_person_in_a_folder_or_a_key_is_masked_however_the_uri_spells_it(api: Any, tmp_path: Any) -> None:
    """Folders (the key) and keys a steward chooses are shown beside the text too: classified with the file name,
    and masked in the percent-encoded URI `memory ingest --uri-base` builds."""
    from memory import documents

    folder = tmp_path / "people" / "Ms Anna Berg"  # the fake classifier reads ASCII names (see conftest)
    folder.mkdir(parents=True)
    (folder / "notes.md").write_text("# Notes\n\nPrefers the late shift in the warehouse.\n")
    api.source("hr", jurisdiction="EU", read_groups=["g"])
    c = api.container
    [outcome] = documents.ingest_paths(c.sessions, c.store, c.ingest_pipeline, source_id="hr", actor="admin",
                                       paths=[str(tmp_path / "people")], max_bytes=10**6,
                                       uri_base="https://intranet.example/hr")
    assert outcome.status == "created", outcome
    r = api.client.post("/v1/sources/hr/documents", headers=api.admin,
                        data={"external_key": "contracts/Ms Lena Fischer"},
                        files={"file": ("contract.md", b"# Contract\n\nSalary band 4, starting in April.\n")})
    assert r.status_code == 201, r.text
    us = api.principal("bob", groups=["g"], clearance="restricted", jurisdiction="US")  # EU->US: allow_masked
    [notes] = [h for h in _hits(api.search(us, "late shift warehouse", top_k=10)) if "late shift" in h["text"]]
    assert notes["masked"] and notes["citation"]["document_uri"] == (
        "https://intranet.example/hr/Ms%20<PERSON>/notes.md")
    [contract] = [h for h in _hits(api.search(us, "salary band", top_k=10)) if "Salary band" in h["text"]]
    assert contract["masked"] and contract["citation"]["document_uri"] == "upload://hr/contracts/Ms <PERSON>"
    looked_up = api.client.get(f"/v1/citations/{notes['citation']['chunk_id']}", headers=us).json()
    assert looked_up["document"]["external_key"] == "Ms <PERSON>/notes.md"
    assert not any(n in str(x) for n in ("Berg", "Fischer") for x in (notes, contract, looked_up))


def test_real_stack_a_person_in_a_file_name_is_found_and_a_place_is_not_personal(real_api: Any) -> None:
    """Real Presidio reads `Jonas_Weber_...` as a person once its separators are spaces; a city in a file name
    is not personal data (the chunk stays served in clear where personal data is denied)."""
    api = real_api
    api.source("hr", jurisdiction="EU", read_groups=["g"])
    review = "# Performance review\n\nExceeded expectations this year and is recommended for promotion.\n"
    hours = "# Office hours\n\nThe office opens at eight and closes at six on weekdays.\n"
    assert api.upload("hr", "Jonas_Weber_performance_review.md", review).status_code == 201
    assert api.upload("hr", "berlin-office-hours.md", hours).status_code == 201
    us = api.principal("bob", groups=["g"], clearance="restricted", jurisdiction="US")  # EU->US: allow_masked
    india = api.principal("ira", groups=["g"], clearance="restricted", jurisdiction="IN")  # EU->IN: deny_personal
    [hit] = [h for h in _hits(api.search(us, "recommended for promotion", top_k=5)) if "promotion" in h["text"]]
    assert hit["masked"] and "PERSON" in hit["entity_types"]
    assert hit["citation"]["document_uri"] == "upload://hr/<PERSON>_performance_review.md"
    served = _hits(api.search(india, "office opening hours on weekdays", top_k=5))
    assert any("office opens" in h["text"] and not h["masked"] for h in served)
    assert not any("promotion" in h["text"] for h in served)


def test_stewards_see_the_sources_they_steward_or_read_only(api: Any) -> None:
    api.source("hr", read_groups=["hr"])
    api.source("wiki", read_groups=["all-staff"])
    st = api.principal("st-m", groups=["marketing", "all-staff"], roles=["steward"])
    api.source("mkt", read_groups=["marketing"], steward="st-m")
    assert [s["id"] for s in api.client.get("/v1/sources", headers=st).json()] == ["mkt", "wiki"]
    hidden = api.client.get("/v1/sources/hr", headers=st)
    unknown = api.client.get("/v1/sources/nope", headers=st)
    assert (hidden.status_code, hidden.json()["error"]["code"]) == (404, "source_not_found")
    assert hidden.json()["error"]["code"] == unknown.json()["error"]["code"]
    assert api.client.get("/v1/sources/wiki", headers=st).status_code == 200
    assert {s["id"] for s in api.client.get("/v1/sources", headers=api.admin).json()} >= {"hr", "mkt", "wiki"}


def _search_across_a_change(api: Any, principal_id: str, request: Any, change: Any) -> tuple[Any, Any, Any, Any]:
    """A search as the API runs it (planned and committed, then embedded and served), with `change(session)`
    committed between the plan and the vector search. Returns (who, plan, what change returned, result)."""
    from memory import principals
    from memory import search as search_svc
    from memory.models import Principal

    c = api.container
    with transaction(c.sessions) as s:
        who = principals.resolve_effective(s, caller=s.get(Principal, principal_id), acting_for=None)
    with c.sessions() as s:
        planned = search_svc.plan(s, who=who, request=request)
        s.commit()
        with transaction(c.sessions) as other:
            changed = change(other)
        result = search_svc.search(s, store=c.store, embedder=c.query_embedder, who=who, request=request,
                                   planned=planned)
        s.commit()
    return who, planned, changed, result


def test_a_read_group_removed_after_the_plan_is_not_served_by_that_search(api: Any) -> None:
    """A search plans from SQL's sources, then embeds and searches the vectors; a change committed in between
    is checked again on the hits' SQL rows: the hit of a source its caller can no longer read is dropped."""
    from memory import search as search_svc

    api.source("hr", jurisdiction="EU", read_groups=["g", "h"])
    assert api.upload("hr", "note.txt", "Quarterly payroll bonus plan for the hr team.").status_code == 201
    api.principal("kim", groups=["g"], clearance="restricted", jurisdiction="EU")
    request = search_svc.SearchRequest(query="payroll bonus", top_k=5)
    c = api.container
    who, planned, _, result = _search_across_a_change(api, "kim", request, lambda other: sources.update(
        other, source_id="hr", store=c.store, actor="admin", patch=sources.SourcePatch(read_groups=("h",))))
    assert planned.flt.scope is not None and "hr" in planned.flt.scope.full
    assert result.hits == [] and result.withheld == []
    with c.sessions() as s:  # the next search plans without the source
        assert search_svc.plan(s, who=who, request=request).flt.scope.full == frozenset()


def test_without_a_repair_thread_the_api_reads_the_index_backlog_once_at_start(
    tmp_path: Any, db_url: str, fake_embedder: Any, fake_classifier: Any
) -> None:
    from fastapi.testclient import TestClient
    from prometheus_client import REGISTRY

    from memory.api.app import create_app
    from memory.metrics import UNINDEXED_POINTS
    from tests.conftest import make_container

    c = make_container(tmp_path, db_url, embedder=fake_embedder, classifier=fake_classifier, repair_interval_s=0)
    UNINDEXED_POINTS.set(12345)
    try:
        with TestClient(create_app(c.settings, container=c, warm=True)) as client:
            assert client.get("/readyz").status_code == 200
        assert REGISTRY.get_sample_value("memory_vector_points_unindexed") == 0  # an empty store, read at start
    finally:
        c.close()


def test_a_retractions_reason_is_withheld_from_a_caller_only_served_the_chunk_masked(api: Any) -> None:
    """A retraction's reason is a steward's free text, never classified: it may name what the caller had masked.
    The caller served the chunk masked sees that it was retracted, when and by whom; the reason only a caller
    served it in clear (or an auditor) sees."""
    api.source("hr", jurisdiction="EU", read_groups=["g"])
    up = api.upload("hr", "note.txt", EMAIL_DOC).json()
    us = api.principal("bob", groups=["g"], clearance="restricted", jurisdiction="US")  # EU->US: allow_masked
    eu = api.principal("eve", groups=["g"], clearance="restricted", jurisdiction="EU")
    [masked] = _hits(api.search(us, "payroll bonus"))
    [clear] = _hits(api.search(eu, "payroll bonus"))
    assert masked["masked"] and not clear["masked"]
    r = api.client.post(f"/v1/documents/{up['document_id']}/retract", headers=api.admin,
                        json={"reason": "Alice Smith asked for her bonus details to be removed"})
    assert r.status_code == 200, r.text
    for who, hit, reason in ((us, masked, None), (eu, clear, "Alice Smith asked for her bonus details to be removed")):
        status = api.client.post("/v1/citations/verify", headers=who,
                                 json={"citation": hit["citation"]}).json()["status"]
        assert (status["state"], status["retracted_by"], status["retraction_reason"]) == ("retracted", "admin", reason)
        looked_up = api.client.get(f"/v1/citations/{hit['citation']['chunk_id']}", headers=who).json()["status"]
        assert looked_up["retraction_reason"] == reason


def test_a_transfer_rule_changed_after_the_plan_is_in_force_for_that_search(api: Any) -> None:
    """A search plans from the rules in force, then embeds and searches the vectors; an admin's rule change
    committed in between is read again in the search's transaction, and the search runs under it (planned
    again): it never serves, or records, under the rules the change replaced."""
    from memory import policy_store
    from memory import search as search_svc
    from memory.models import AuditRecord

    api.source("hr", jurisdiction="EU", read_groups=["g"])
    assert api.upload("hr", "note.txt", EMAIL_DOC).status_code == 201
    api.principal("bob", groups=["g"], clearance="restricted", jurisdiction="US")
    request = search_svc.SearchRequest(query="payroll bonus", top_k=5)
    c = api.container
    _, planned, denied, result = _search_across_a_change(api, "bob", request, lambda other: (
        policy_store.set_transfer_rule(other, data="EU", caller="US", rule="deny", actor="admin")))
    assert denied.version > planned.rules.version
    assert result.hits == []  # the plan's EU->US rule (allow_masked) would have served the note masked
    assert [(w.source_id, w.reason) for w in result.withheld] == [("hr", "jurisdiction")]
    assert result.rules_applied["transfer_rules_version"] == denied.version
    with c.sessions() as s:
        body = s.get(AuditRecord, result.audit_seq).body
    assert body["filter_summary"]["transfer_rules_version"] == denied.version
    assert body["chunk_ids"] == []
