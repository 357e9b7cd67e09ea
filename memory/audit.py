"""Append-only, hash-chained audit log.

Each record's hash covers its own fields and the previous record's hash, so any edit, insertion or
deletion breaks the chain at a findable point. Appends lock the single `audit_head` row (FOR UPDATE on
PostgreSQL; SQLite transactions already begin IMMEDIATE), so concurrent writers append strictly in order.
Records are written in the caller's transaction: a data change and its audit record commit together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from memory.models import AuditChunk, AuditHead, AuditRecord

GENESIS = "0" * 64
# Table-level statements: no ORM unit of work or identity map on the append path.
# Built once: constant statements keep SQLAlchemy's compile cache hot (values come as parameters).
_RECORDS, _CHUNKS, _HEAD = (cast(Table, m.__table__) for m in (AuditRecord, AuditChunk, AuditHead))
_READ_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update()
_INSERT_RECORD = insert(_RECORDS)
_INSERT_CHUNKS = insert(_CHUNKS)
_MOVE_HEAD = update(_HEAD).where(_HEAD.c.id == 1).values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))


@dataclass(frozen=True)
class AuditEvent:
    """Base of typed audit events; `name` is the stable event name stored in the log."""

    name: ClassVar[str] = "event"

    def body(self) -> dict[str, Any]:
        # Shallow: append() canonicalises through JSON anyway (asdict's deep copy is wasted work).
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class SearchPerformed(AuditEvent):
    name: ClassVar[str] = "search"
    query_sha256: str
    top_k: int
    as_of: float
    filter_summary: dict[str, Any]
    chunk_ids: list[str]
    masked_chunk_ids: list[str]
    withheld: dict[str, int]
    latency_ms: float
    embedding_tokens: int


@dataclass(frozen=True)
class Write(AuditEvent):
    """A generic write: `action` names it (source.register, document.ingest, version.retract ...)."""

    name: ClassVar[str] = "write"
    action: str
    target: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Read(AuditEvent):
    """A governed read other than search (citation lookup, explain, audit export)."""

    name: ClassVar[str] = "read"
    action: str
    target: str
    details: dict[str, Any] = field(default_factory=dict)


def _ts(dt: datetime) -> str:
    if dt.tzinfo is None:  # SQLite returns naive datetimes; we only ever store UTC
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def record_hash(
    *,
    seq: int,
    ts: datetime,
    event: str,
    principal_id: str | None,
    acting_for: str | None,
    source_id: str | None,
    document_id: str | None,
    body: dict[str, Any],
    prev_hash: str,
) -> str:
    material = json.dumps(
        {
            "seq": seq,
            "ts": _ts(ts),
            "event": event,
            "principal_id": principal_id,
            "acting_for": acting_for,
            "source_id": source_id,
            "document_id": document_id,
            "body": body,
            "prev_hash": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode()).hexdigest()


@dataclass(frozen=True)
class Appended:
    """What an append wrote: the record's position and hash in the chain."""

    seq: int
    hash: str
    ts: datetime


def append(
    session: Session,
    event: AuditEvent,
    *,
    principal_id: str | None,
    acting_for: str | None = None,
    source_id: str | None = None,
    document_id: str | None = None,
    chunk_ids: Sequence[str] = (),
    now: datetime | None = None,
) -> Appended:
    """Append one record in the session's transaction (the caller commits).

    Core statements, not the unit of work: this runs on every search, and three statements (record,
    chunk rows, head) are all it needs. The head row is locked first, so appends are strictly ordered."""
    head = session.execute(_READ_HEAD).one_or_none()
    if head is None:  # a database created without the migration's seed row
        session.execute(insert(_HEAD).values(id=1, seq=0, hash=GENESIS))
        prev_seq, prev_hash = 0, GENESIS
    else:
        prev_seq, prev_hash = head.seq, head.hash
    ts = now or datetime.now(UTC)
    seq = prev_seq + 1
    body = json.loads(json.dumps(event.body()))  # canonical JSON types, as they will be read back
    digest = record_hash(
        seq=seq, ts=ts, event=event.name, principal_id=principal_id, acting_for=acting_for,
        source_id=source_id, document_id=document_id, body=body, prev_hash=prev_hash,
    )
    session.execute(_INSERT_RECORD, {
        "seq": seq, "ts": ts, "event": event.name, "principal_id": principal_id, "acting_for": acting_for,
        "source_id": source_id, "document_id": document_id, "body": body, "prev_hash": prev_hash, "hash": digest,
    })
    rows = [{"seq": seq, "chunk_id": c} for c in dict.fromkeys(chunk_ids)]
    if rows:
        session.execute(_INSERT_CHUNKS, rows)
    session.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": digest})
    return Appended(seq=seq, hash=digest, ts=ts)


@dataclass(frozen=True)
class ChainReport:
    valid: bool
    checked: int
    head_seq: int
    first_broken_seq: int | None = None
    reason: str | None = None


def _iter_records(session: Session, batch: int, upto: int) -> Iterator[AuditRecord]:
    last = 0
    while True:
        rows = session.execute(
            select(AuditRecord)
            .where(AuditRecord.seq > last, AuditRecord.seq <= upto)
            .order_by(AuditRecord.seq)
            .limit(batch)
        ).scalars().all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        for row in rows:  # only our rows: the caller's other objects stay in its session
            session.expunge(row)


def verify_chain(session: Session, *, batch: int = 5000) -> ChainReport:
    """Recompute every hash in order; report the first broken link (edit, insertion or deletion)."""
    head = session.execute(
        select(AuditHead).where(AuditHead.id == 1).execution_options(populate_existing=True)
    ).scalar_one_or_none()
    expected_prev = GENESIS
    expected_seq = 1
    checked = 0
    head_seq = head.seq if head else 0
    head_hash = head.hash if head else GENESIS
    # Only up to the head read above: on PostgreSQL (read committed) writers keep appending during a long
    # verify, and their records are not part of this check. Records beyond the head are checked below.
    for rec in _iter_records(session, batch, head_seq):
        if rec.seq != expected_seq:
            return ChainReport(False, checked, head_seq, expected_seq, f"record {expected_seq} is missing")
        if rec.prev_hash != expected_prev:
            return ChainReport(False, checked, head_seq, rec.seq, "prev_hash does not match the previous record")
        digest = record_hash(
            seq=rec.seq, ts=rec.ts, event=rec.event, principal_id=rec.principal_id, acting_for=rec.acting_for,
            source_id=rec.source_id, document_id=rec.document_id, body=rec.body, prev_hash=rec.prev_hash,
        )
        if digest != rec.hash:
            return ChainReport(False, checked, head_seq, rec.seq, "record content does not match its hash")
        expected_prev = rec.hash
        expected_seq += 1
        checked += 1
    if checked != head_seq or expected_prev != head_hash:
        return ChainReport(
            False, checked, head_seq, checked + 1, "records after the last verified one are missing (tail deleted)"
        )
    # A record and the head commit together, so a record beyond the (re-read) head was written around the
    # chain. Read max(seq) first: any head read afterwards is at least as new as every committed record.
    top = session.execute(select(func.max(AuditRecord.seq))).scalar_one_or_none() or 0
    fresh = session.execute(
        select(AuditHead.seq).where(AuditHead.id == 1).execution_options(populate_existing=True)
    ).scalar_one_or_none() or 0
    if top > fresh:
        return ChainReport(False, checked, head_seq, fresh + 1, "records beyond the chain head (inserted around it)")
    return ChainReport(True, checked, head_seq)
