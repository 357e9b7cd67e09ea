"""The hash chain: valid under concurrent writers, and any edit, deletion or insertion is found."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

import pytest
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from memory import audit, principals
from memory import search as search_svc
from memory import sources as sources_svc
from memory.db import transaction
from memory.models import AuditChunk, AuditHead, AuditRecord


def _append_many(container, n: int, who: str = "t") -> None:
    with transaction(container.sessions) as s:
        for i in range(n):
            audit.append(s, audit.Write(action="test.write", target=f"{who}-{i}"), principal_id=who)


def _verify(container) -> audit.ChainReport:
    with container.sessions() as s:
        return audit.verify_chain(s)


def _run_threads(workers: list[Callable[[], None]]) -> None:
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(w)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def test_chain_stays_valid_with_concurrent_appenders(container):
    start = _verify(container).head_seq
    threads, per_thread = 8, 25

    def writer(k: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(per_thread):  # one transaction per record, like requests
                with transaction(container.sessions) as s:
                    audit.append(s, audit.Write(action="test.write", target=f"{k}-{i}"), principal_id=f"w{k}")
        return run

    _run_threads([writer(k) for k in range(threads)])
    report = _verify(container)
    assert report.valid, report
    assert report.head_seq == report.checked == start + threads * per_thread
    with container.sessions() as s:
        seqs = list(s.execute(select(AuditRecord.seq).order_by(AuditRecord.seq)).scalars())
    assert seqs == list(range(1, report.head_seq + 1))


def test_chain_stays_valid_with_concurrent_searches_and_writes(container, fake_embedder):
    with transaction(container.sessions) as s:
        principals.create_principal(s, spec=principals.NewPrincipal(
            id="r1", kind="user", groups=("g",), clearance="internal", jurisdiction="EU",
            roles=("reader", "steward")), actor="t")

    def searcher() -> None:
        for _ in range(15):
            with transaction(container.sessions) as s:
                who = principals.resolve_effective(s, caller=principals.get_principal(s, principal_id="r1"),
                                                   acting_for=None)
                search_svc.search(s, store=container.store, embedder=fake_embedder, who=who,
                                  request=search_svc.SearchRequest(query="anything at all"))

    def registrar(k: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(10):
                with transaction(container.sessions) as s:
                    sources_svc.register(s, spec=sources_svc.NewSource(
                        id=f"s{k}-{i}", name="x", steward="r1", jurisdiction="EU", read_groups=("g",)), actor="t")
        return run

    _run_threads([searcher, searcher, registrar(1), registrar(2)])
    report = _verify(container)
    assert report.valid, report


def test_a_long_lived_session_appends_after_others_committed(container):
    """A session reused across commits must not append from a stale copy of the head."""
    with container.sessions() as mine:
        audit.append(mine, audit.Write(action="test.write", target="a"), principal_id="t")
        mine.commit()
        _append_many(container, 3, "other")
        audit.append(mine, audit.Write(action="test.write", target="b"), principal_id="t")
        mine.commit()
    assert _verify(container).valid


def _tamper(container, fn: Callable[[Session], None]) -> None:
    with transaction(container.sessions) as s:
        fn(s)


@pytest.mark.parametrize("field,value", [
    ("principal_id", "mallory"),
    ("body", {"action": "test.write", "target": "forged", "details": {}}),
    ("event", "read"),
    ("hash", "0" * 64),
])
def test_an_edited_record_is_the_first_broken_seq(container, field, value):
    _append_many(container, 10)
    head = _verify(container).head_seq
    target = head - 5
    _tamper(container, lambda s: s.execute(update(AuditRecord).where(AuditRecord.seq == target).values({field: value})))
    report = _verify(container)
    assert not report.valid and report.first_broken_seq == target, report


def test_a_deleted_middle_record_is_found(container):
    _append_many(container, 10)
    target = _verify(container).head_seq - 4

    def drop(s: Session) -> None:
        s.execute(delete(AuditChunk).where(AuditChunk.seq == target))
        s.execute(delete(AuditRecord).where(AuditRecord.seq == target))

    _tamper(container, drop)
    report = _verify(container)
    assert not report.valid and report.first_broken_seq == target and "missing" in (report.reason or "")


def test_a_deleted_tail_is_found(container):
    _append_many(container, 10)
    head = _verify(container).head_seq
    _tamper(container, lambda s: s.execute(delete(AuditRecord).where(AuditRecord.seq > head - 3)))
    report = _verify(container)
    assert not report.valid and report.first_broken_seq == head - 2 and "tail" in (report.reason or "")


def test_a_deleted_tail_with_a_rewound_head_is_still_found_by_hash(container):
    _append_many(container, 10)
    head = _verify(container).head_seq

    def rewind(s: Session) -> None:
        s.execute(delete(AuditRecord).where(AuditRecord.seq == head))
        s.execute(update(AuditHead).values(seq=head - 1))

    _tamper(container, rewind)
    report = _verify(container)
    assert not report.valid and report.first_broken_seq == head


def test_a_deleted_tail_with_a_rewritten_head_is_found_by_an_anchor_kept_outside(api):
    """Cut the newest records and set the head to the last one left, hash included: the chain alone is
    consistent again. The head an earlier check reported, kept outside the database, is what shows the cut."""
    c = api.container
    _append_many(c, 5)
    earlier = api.client.get("/v1/audit/verify", headers=api.admin).json()
    assert earlier["valid"] and len(earlier["head_hash"]) == 64
    anchor = {"anchor_seq": earlier["head_seq"], "anchor_hash": earlier["head_hash"]}
    assert api.client.get("/v1/audit/verify", headers=api.admin, params=anchor).json()["valid"]
    _append_many(c, 3)

    def cut(s: Session) -> None:
        keep = earlier["head_seq"] - 3
        s.execute(delete(AuditRecord).where(AuditRecord.seq > keep))
        last = s.get(AuditRecord, keep)
        s.execute(update(AuditHead).values(seq=keep, hash=last.hash))

    _tamper(c, cut)
    assert _verify(c).valid  # the chain alone cannot tell
    body = api.client.get("/v1/audit/verify", headers=api.admin, params=anchor).json()
    assert body["valid"] is False and "tail deleted" in body["reason"], body
    forged = {**anchor, "anchor_seq": 1}  # a record still there, with another hash than the one given
    body = api.client.get("/v1/audit/verify", headers=api.admin, params=forged).json()
    assert body["valid"] is False and body["first_broken_seq"] == 1 and "another hash" in body["reason"]
    for bad in ({"anchor_seq": 3}, {"anchor_hash": "a" * 64}, {"anchor_seq": 3, "anchor_hash": "XYZ"},
                {"anchor_seq": 0, "anchor_hash": "a" * 64}):
        r = api.client.get("/v1/audit/verify", headers=api.admin, params=bad)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_anchor"), r.text


def test_a_record_inserted_beyond_the_head_is_found(container):
    _append_many(container, 3)
    head = _verify(container).head_seq

    def forge(s: Session) -> None:
        last = s.get(AuditRecord, head)
        s.add(AuditRecord(seq=head + 1, ts=last.ts, event="write", body={}, prev_hash=last.hash, hash="f" * 64))

    _tamper(container, forge)
    report = _verify(container)
    assert not report.valid and report.first_broken_seq == head + 1


@pytest.mark.parametrize("seq", [0, -5])
def test_a_record_inserted_before_the_first_is_found(api, seq):
    """Forged at seq <= 0 with its served-chunk rows, it would make its principal one who was served a chunk (a
    citation's access, usage, a retraction's impact report): the walk starts at 1, the check does not."""
    _, served = _served(api)
    first = _verify(api.container)
    assert first.valid

    def forge(s: Session) -> None:
        s.add(AuditRecord(seq=seq, ts=s.get(AuditRecord, 1).ts, event="search", principal_id="mallory",
                          body={"chunk_ids": served}, prev_hash="0" * 64, hash="f" * 64))
        s.flush()
        s.execute(insert(AuditChunk).values([{"seq": seq, "chunk_id": c} for c in served]))

    _tamper(api.container, forge)
    report = _verify(api.container)
    assert (report.valid, report.first_broken_seq) == (False, seq) and "before the chain" in (report.reason or "")
    assert report.checked == first.checked


def _served(api) -> tuple[int, list[str]]:
    """A reader searches a document; returns the search record's seq and the chunk ids it served."""
    reader = api.principal("r1", groups=["g"])
    api.source("s1", read_groups=["g"])
    api.upload("s1", "e.md", "# Expenses\n\nMeal expenses are reimbursed up to forty euros per day.\n")
    hits = api.search(reader, "meal expenses").json()["hits"]
    assert hits
    with api.container.sessions() as s:
        seq = s.scalar(select(func.max(AuditRecord.seq)).where(AuditRecord.event == "search"))
    _append_many(api.container, 3)  # the tampered record is not the last one
    return seq, [h["citation"]["chunk_id"] for h in hits]


@pytest.mark.parametrize("tamper", ["delete", "add", "alter"])
def test_a_tampered_audit_chunks_row_is_the_first_broken_seq(api, tamper):
    seq, served = _served(api)
    assert _verify(api.container).valid
    where = (AuditChunk.seq == seq) & (AuditChunk.chunk_id == served[0])
    change = {
        "delete": delete(AuditChunk).where(where),  # hide that the reader was served the chunk
        "add": insert(AuditChunk).values(seq=seq, chunk_id="f" * 32),
        "alter": update(AuditChunk).where(where).values(chunk_id="f" * 32),
    }[tamper]
    _tamper(api.container, lambda s: s.execute(change))

    report = _verify(api.container)
    assert not report.valid and report.first_broken_seq == seq and "audit_chunks" in (report.reason or ""), report
    body = api.client.get("/v1/audit/verify", headers=api.admin).json()
    assert body["valid"] is False and body["first_broken_seq"] == seq and "audit_chunks" in body["reason"]


def test_audit_chunks_rows_on_a_record_that_served_nothing_are_found(container):
    _append_many(container, 5)
    target = _verify(container).head_seq - 2
    _tamper(container, lambda s: s.execute(insert(AuditChunk).values(seq=target, chunk_id="f" * 32)))
    report = _verify(container)
    assert not report.valid and report.first_broken_seq == target and "1 not in the record" in (report.reason or "")


def test_an_audit_chunks_row_without_a_record_is_found(container):
    """Written around the foreign key (the sqlite3 shell has them off; on PostgreSQL, the constraint dropped)."""
    _append_many(container, 3)
    head = _verify(container).head_seq
    url = container.engine.url
    if url.get_backend_name() == "sqlite":
        with sqlite3.connect(str(url.database)) as raw:
            raw.execute("INSERT INTO audit_chunks (seq, chunk_id) VALUES (?, ?)", (head + 7, "f" * 32))
        raw.close()
    else:
        with transaction(container.sessions) as s:
            s.execute(text("ALTER TABLE audit_chunks DROP CONSTRAINT fk_audit_chunks_seq_audit_log"))
            s.execute(insert(AuditChunk).values(seq=head + 7, chunk_id="f" * 32))
    report = _verify(container)
    assert not report.valid and report.first_broken_seq == head + 7 and "no record" in (report.reason or ""), report


def test_an_appends_chunk_rows_are_its_bodys_chunk_ids(container):
    event = audit.SearchPerformed(query_sha256="0" * 64, top_k=1, as_of=0.0, filter_summary={},
                                  chunk_ids=["a", "b", "a"], masked_chunk_ids=[], withheld={}, latency_ms=0.0,
                                  embedding_tokens=0)
    with transaction(container.sessions) as s:
        seq = audit.append(s, event, principal_id="t").seq
    with container.sessions() as s:
        assert sorted(s.scalars(select(AuditChunk.chunk_id).where(AuditChunk.seq == seq))) == ["a", "b"]
        assert audit.verify_chain(s).valid
