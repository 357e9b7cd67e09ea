"""Reading the audit trail: filtered, keyset-paginated by seq, and exportable as JSON lines.

Filters by source or document match both the records written about them (register, ingest, retract ...)
and the reads that served their chunks (through audit_chunks), so "who saw document D" is one query.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session, sessionmaker

from memory import audit
from memory.clock import aware, utc
from memory.db_errors import retryable
from memory.errors import ServiceError, ValidationFailedError
from memory.models import AuditChunk, AuditRecord, Chunk

log = logging.getLogger(__name__)
MAX_LIMIT = 1000


@dataclass(frozen=True)
class AuditFilter:
    principal_id: str | None = None
    acting_for: str | None = None
    source_id: str | None = None
    document_id: str | None = None
    chunk_id: str | None = None
    event: str | None = None  # search | write | read
    action: str | None = None  # body.action of write/read events, e.g. version.retract
    since: datetime | None = None
    until: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Page:
    records: list[dict[str, Any]]
    next_after_seq: int | None  # pass as after_seq for the next page; None when this was the last


def _served(column: Any, value: str) -> Any:
    """seq of records that served a chunk whose `column` (Chunk.source_id / Chunk.document_id) is value."""
    return select(AuditChunk.seq).join(Chunk, Chunk.id == AuditChunk.chunk_id).where(column == value)


def _query(flt: AuditFilter) -> Select[Any]:
    q = select(AuditRecord)
    if flt.principal_id:
        q = q.where(AuditRecord.principal_id == flt.principal_id)
    if flt.acting_for:
        q = q.where(AuditRecord.acting_for == flt.acting_for)
    if flt.source_id:
        q = q.where(or_(AuditRecord.source_id == flt.source_id,
                        AuditRecord.seq.in_(_served(Chunk.source_id, flt.source_id))))
    if flt.document_id:
        q = q.where(or_(AuditRecord.document_id == flt.document_id,
                        AuditRecord.seq.in_(_served(Chunk.document_id, flt.document_id))))
    if flt.chunk_id:
        q = q.where(AuditRecord.seq.in_(select(AuditChunk.seq).where(AuditChunk.chunk_id == flt.chunk_id)))
    if flt.event:
        q = q.where(AuditRecord.event == flt.event)
    if flt.action:
        q = q.where(AuditRecord.body["action"].as_string() == flt.action)
    if flt.since:
        q = q.where(AuditRecord.ts >= utc(flt.since))
    if flt.until:
        q = q.where(AuditRecord.ts < utc(flt.until))
    return q


def as_dict(rec: AuditRecord) -> dict[str, Any]:
    """One record as exported: every hashed field, so a copy can be re-verified offline."""
    return {
        "seq": rec.seq, "ts": aware(rec.ts).isoformat(), "event": rec.event,
        "action": rec.body.get("action") if isinstance(rec.body, dict) else None,
        "principal_id": rec.principal_id, "acting_for": rec.acting_for, "source_id": rec.source_id,
        "document_id": rec.document_id, "body": rec.body, "prev_hash": rec.prev_hash, "hash": rec.hash,
    }


def page(session: Session, *, flt: AuditFilter, after_seq: int = 0, limit: int = 100) -> Page:
    """Records matching `flt` with seq > after_seq, oldest first."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailedError(f"limit must be within 1..{MAX_LIMIT}", code="invalid_limit")
    if after_seq < 0:
        raise ValidationFailedError("after_seq must be >= 0", code="invalid_after_seq")
    rows: list[AuditRecord] = list(session.execute(
        _query(flt).where(AuditRecord.seq > after_seq).order_by(AuditRecord.seq).limit(limit + 1)
    ).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page([as_dict(r) for r in rows], rows[-1].seq if more and rows else None)


class ExportInterruptedError(ServiceError):
    """A batch after the first could not be read: the lines already written stand, the export is incomplete."""

    code = "export_interrupted"
    status = 503


def export_event(flt: AuditFilter, after_seq: int = 0) -> audit.Read:
    """The audit record of an export (the API's and the CLI's): its filter, and where a resumed one starts."""
    details: dict[str, object] = {"filter": flt.to_dict()}
    if after_seq:
        details["after_seq"] = after_seq
    return audit.Read(action="audit.export", target="audit_log", details=details)


def export_lines(
    factory: sessionmaker[Session], *, flt: AuditFilter, batch: int = 1000, after_seq: int = 0
) -> Iterator[str]:
    """JSON lines of every matching record after `after_seq`. One short session per batch, so a long export
    never holds the database (SQLite's write lock in particular) while the client reads slowly. The first batch
    is read before this returns: a failure there is the request's own error (a status the client sees), not a
    stream of 200 that ends after zero lines.

    A later batch that fails ends the lines with one error line, `{"error": {"code", "message",
    "resume_after_seq"}}` (the code is the database's `database_busy` / `database_unavailable` when it says so,
    else `internal_error`), then raises ExportInterruptedError: an HTTP stream is cut without its last chunk and
    the CLI exits non-zero, so nobody takes a partial export for a whole one; `after_seq=resume_after_seq`
    fetches the rest."""
    first = _batch(factory, flt, after_seq, batch)
    return _lines(factory, flt, batch, first, after_seq)


def _batch(factory: sessionmaker[Session], flt: AuditFilter, after: int, batch: int) -> Page:
    with factory() as session:
        return page(session, flt=flt, after_seq=after, limit=min(batch, MAX_LIMIT))


def _lines(factory: sessionmaker[Session], flt: AuditFilter, batch: int, result: Page, last: int) -> Iterator[str]:
    while True:
        for rec in result.records:
            yield json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n"
            last = rec["seq"]
        if result.next_after_seq is None:
            return
        try:
            result = _batch(factory, flt, result.next_after_seq, batch)
        except Exception as exc:
            mapped = retryable(exc)
            code = mapped.code if mapped is not None else "internal_error"
            log.warning("audit.export_interrupted code=%s resume_after_seq=%d error=%s", code, last, type(exc).__name__)
            yield json.dumps({"error": {
                "code": code, "message": "the export stopped before its end; resume after the seq given",
                "resume_after_seq": last,
            }}) + "\n"
            raise ExportInterruptedError(
                f"the export stopped after seq {last} ({code}); resume with after_seq={last}",
                details={"resume_after_seq": last, "cause": code},
            ) from exc
