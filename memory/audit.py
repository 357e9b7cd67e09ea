"""Append-only, hash-chained audit log.

Each record's hash covers its own fields and the previous record's hash, so any edit, insertion or
deletion breaks the chain at a findable point. Appends lock the single `audit_head` row (FOR UPDATE on
PostgreSQL; SQLite transactions already begin IMMEDIATE), so concurrent writers append strictly in order.
Records are written in the caller's transaction: a data change and its audit record commit together.
The `audit_chunks` rows (which chunks a record served, for "who saw this") are an index of the hashed body's
`chunk_ids`: verify checks them against it, so a deleted, added or altered row is found like an edited record.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, cast

from sqlalchemy import Row, Table, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session

from memory.errors import ValidationFailedError
from memory.models import AuditChunk, AuditHead, AuditRecord

GENESIS = "0" * 64
ACTOR_MAX = 128  # the principal_id and acting_for columns
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
    # Served in clear from a version this caller could not see whole (another chunk of it masked or withheld):
    # their citations carried no measure of the version's clear text (provenance.VERSION_MEASURE_FIELDS), and
    # a later lookup or verify by the same caller shows or compares none either (memory.verification).
    partial_chunk_ids: list[str] = field(default_factory=list)


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


def served_chunk_ids(body: object) -> list[str]:
    """The chunk ids a record's hashed body says it served (search events); [] for every other record."""
    ids = body.get("chunk_ids") if isinstance(body, dict) else None
    return [str(c) for c in ids] if isinstance(ids, list) else []


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


def lock_head(session: Session) -> None:
    """Take the chain head's lock now, ahead of this transaction's append (which takes it again): every append
    before it has committed, and every append after it waits for this transaction. A reader that must not miss
    a record (a retraction's impact report) or that must see what committed before its own record (a search's
    last check of its hits) reads after this."""
    session.execute(_READ_HEAD).one_or_none()


def append(
    session: Session,
    event: AuditEvent,
    *,
    principal_id: str | None,
    acting_for: str | None = None,
    source_id: str | None = None,
    document_id: str | None = None,
    now: datetime | None = None,
) -> Appended:
    """Append one record in the session's transaction (the caller commits).

    Core statements, not the unit of work: this runs on every search, and three statements (record,
    chunk rows, head) are all it needs. The head row is locked first, so appends are strictly ordered.
    The audit_chunks rows are written from the body's `chunk_ids` (one source: verify holds the rows to it)."""
    for who in (principal_id, acting_for):
        # The CLI's actor is whatever its operator typed (--actor, MEMORY_CLI_ACTOR): longer than the column, a
        # 422 before anything is written, not PostgreSQL refusing the row (a 500).
        if who is not None and len(who) > ACTOR_MAX:
            raise ValidationFailedError(f"an actor is at most {ACTOR_MAX} characters long (got {len(who)})",
                                        code="invalid_actor")
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
    rows = [{"seq": seq, "chunk_id": c} for c in dict.fromkeys(served_chunk_ids(body))]
    if rows:
        session.execute(_INSERT_CHUNKS, rows)
    session.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": digest})
    return Appended(seq=seq, hash=digest, ts=ts)


@dataclass(frozen=True)
class ChainReport:
    """The outcome of verify_chain: the first broken seq and why, or valid with how many records it checked."""

    valid: bool
    checked: int
    head_seq: int
    first_broken_seq: int | None = None
    reason: str | None = None
    head_hash: str | None = None  # when valid: the anchor to keep outside the database for the next check


@dataclass(frozen=True)
class Anchor:
    """A record an earlier check saw (its seq and hash, kept outside the database): the chain must still hold it.
    The chain and its head live in one database, so someone who can write it can cut the newest records and
    rewrite the head to the last one left; only a hash kept elsewhere shows the cut."""

    seq: int
    hash: str


def anchor(seq: int | None, hash_: str | None) -> Anchor | None:
    """The anchor a caller gave (both parts, or neither: None); 422 `invalid_anchor` otherwise."""
    if seq is None and hash_ is None:
        return None
    if seq is None or hash_ is None or seq < 1 or len(hash_) != 64 or any(c not in "0123456789abcdef" for c in hash_):
        raise ValidationFailedError("an anchor is a record's seq (>= 1) and its hash (64 lowercase hex digits), both",
                                    code="invalid_anchor")
    return Anchor(seq, hash_)


_PAGE_CHUNKS = select(_CHUNKS.c.seq, _CHUNKS.c.chunk_id).where(
    _CHUNKS.c.seq > bindparam("after"), _CHUNKS.c.seq <= bindparam("upto"))
# audit_chunks rows outside the verified range [1, head] that no record owns (written with foreign keys off).
# Rows of records appended after verify read the head have their record, and are not part of this check.
_STRAY_CHUNKS = select(func.min(_CHUNKS.c.seq)).where(
    or_(_CHUNKS.c.seq < 1, _CHUNKS.c.seq > bindparam("head")), ~exists().where(_RECORDS.c.seq == _CHUNKS.c.seq))


def _batches(session: Session, batch: int, upto: int) -> Iterator[tuple[Sequence[Row[Any]], dict[int, set[str]]]]:
    """Records up to `upto` in seq order, a page at a time, with the audit_chunks rows of the page's seq range.

    Core rows, not ORM objects: nothing lands in the caller's identity map, and a million-record verify
    builds no mapped instances. Both reads are range scans on a primary key (audit_chunks leads with seq)."""
    last = 0
    while True:
        rows = session.execute(
            select(_RECORDS).where(_RECORDS.c.seq > last, _RECORDS.c.seq <= upto).order_by(_RECORDS.c.seq)
            .limit(batch)
        ).all()
        if not rows:
            return
        served: dict[int, set[str]] = defaultdict(set)
        for seq, chunk_id in session.execute(_PAGE_CHUNKS, {"after": last, "upto": rows[-1].seq}):
            served[seq].add(chunk_id)
        yield rows, served
        last = rows[-1].seq


def _chunks_mismatch(body: object, rows: set[str]) -> str | None:
    hashed = set(served_chunk_ids(body))
    if rows == hashed:
        return None
    return (f"audit_chunks rows do not match the record's chunk_ids ({len(hashed - rows)} missing, "
            f"{len(rows - hashed)} not in the record)")


def verify_chain(session: Session, *, batch: int = 5000, anchor: Anchor | None = None) -> ChainReport:
    """Recompute every hash in order; report the first broken link (edit, insertion or deletion).

    Each record's audit_chunks rows must be exactly its hashed body's chunk_ids, and no row may point at a
    seq without a record: those rows answer "who was served this document", so they are held to the chain.
    `anchor`: a record an earlier check reported (`head_seq`, `head_hash`), which must still be in the chain
    with that hash (a deleted tail with a rewritten head is found only so)."""
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
    for rows, served in _batches(session, batch, head_seq):
        for rec in rows:
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
            mismatch = _chunks_mismatch(rec.body, served.get(rec.seq, set()))
            if mismatch:
                return ChainReport(False, checked, head_seq, rec.seq, mismatch)
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
    # The chain starts at seq 1: a record below it was inserted around the chain, where the walk above never
    # looks (and readers that ask "who was served this", usage and impact reports, would). Its served-chunk
    # rows have a record, so the stray check below does not see them.
    below = session.execute(select(func.min(AuditRecord.seq)).where(AuditRecord.seq < 1)).scalar_one_or_none()
    if below is not None:
        return ChainReport(False, checked, head_seq, below, f"a record at seq {below}, before the chain's first one")
    stray = session.execute(_STRAY_CHUNKS, {"head": head_seq}).scalar_one_or_none()
    if stray is not None:
        return ChainReport(False, checked, head_seq, stray,
                           f"audit_chunks rows point at seq {stray}, which has no record")
    if anchor is not None:
        kept = session.execute(select(_RECORDS.c.hash).where(_RECORDS.c.seq == anchor.seq)).scalar_one_or_none()
        if anchor.seq > head_seq or kept is None:
            return ChainReport(False, checked, head_seq, head_seq + 1,
                               f"the chain ends at seq {head_seq}, before the anchor's seq {anchor.seq} (tail deleted)")
        if kept != anchor.hash:
            return ChainReport(False, checked, head_seq, anchor.seq, "the record at the anchor's seq has another hash")
    return ChainReport(True, checked, head_seq, head_hash=head_hash)
