"""Retraction and restore of document versions, with the impact report.

Retract: the SQL row is marked first (flushed, so the row is locked in this transaction), then the
version's vector payload is patched `retracted=1` BEFORE the caller commits. A search can only be
answered from the vector filter, so once the retraction commits no search can return the version's chunks.
If the commit then fails, the vectors stay hidden while SQL says "not retracted": that fails closed, and
retracting again (or `restore`) brings both back in line.

Restore is the opposite case and therefore ordered the other way: SQL is changed and marked unsynced in
the caller's transaction, and the vectors are revealed only after it commits (`reveal`, run by the caller;
`vector_sync.repair` finishes it after a crash). Revealing before the commit could serve a chunk SQL still
calls retracted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from memory import audit, documents, vector_sync, withholdable
from memory import sources as sources_svc
from memory.clock import aware, utcnow
from memory.errors import ConflictError, NotFoundError, ValidationFailedError
from memory.models import REACHABLE_STATUSES, AuditChunk, AuditRecord, Chunk, Document, DocumentVersion
from memory.policy import EffectivePrincipal
from memory.stores.base import PayloadPatch, Selector, VectorStore

log = logging.getLogger(__name__)
MAX_REASON = 2000


@dataclass(frozen=True)
class ServedRecord:
    """One audit record that served chunks of the retracted version."""

    seq: int
    ts: datetime
    event: str
    principal_id: str | None
    acting_for: str | None
    chunk_ids: list[str]


@dataclass(frozen=True)
class ImpactReport:
    document_id: str
    source_id: str
    version_id: str
    version: int
    action: str  # retracted | restored
    at: datetime
    by: str
    reason: str
    audit_seq: int
    chunk_count: int
    served: list[ServedRecord]

    @property
    def principals(self) -> list[str]:
        """Everyone who was served the version: callers and the users they acted for."""
        ids = {r.principal_id for r in self.served} | {r.acting_for for r in self.served}
        return sorted(i for i in ids if i)


def _reason(reason: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise ValidationFailedError("a reason is required", code="reason_required")
    if len(text) > MAX_REASON:
        raise ValidationFailedError(f"reason is longer than {MAX_REASON} characters", code="reason_too_long")
    return text


def _version(session: Session, version_id: str) -> DocumentVersion:
    # Lock the row: two stewards retracting at once queue here (SQLite serialises whole transactions).
    v = session.execute(
        select(DocumentVersion).where(DocumentVersion.id == version_id).with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if v is None or v.status not in REACHABLE_STATUSES:
        raise NotFoundError(f"version {version_id!r} not found", code="version_not_found")
    return v


def impact(session: Session, *, version_id: str) -> list[ServedRecord]:
    """Every audit record that served any chunk of this version, oldest first."""
    rows = session.execute(
        select(AuditRecord.seq, AuditRecord.ts, AuditRecord.event, AuditRecord.principal_id,
               AuditRecord.acting_for, AuditChunk.chunk_id)
        .join(AuditChunk, AuditChunk.seq == AuditRecord.seq)
        .join(Chunk, Chunk.id == AuditChunk.chunk_id)
        .where(Chunk.version_id == version_id)
        .order_by(AuditRecord.seq, AuditChunk.chunk_id)
    ).all()
    by_seq: dict[int, ServedRecord] = {}
    for seq, ts, event, principal_id, acting_for, chunk_id in rows:
        rec = by_seq.setdefault(seq, ServedRecord(seq, aware(ts), event, principal_id, acting_for, []))
        rec.chunk_ids.append(chunk_id)
    return list(by_seq.values())


def _stewarded_version(
    session: Session, version_id: str, actor: EffectivePrincipal
) -> tuple[DocumentVersion, Document]:
    """The version and its document, once `actor` is shown to steward the document's source. Locks the source
    row, then the version row: the order every writer takes (source, document, version, audit head), so a
    retraction and an ingest of the same source queue instead of deadlocking on PostgreSQL."""
    source_id = session.scalar(
        select(Document.source_id).join(DocumentVersion, DocumentVersion.document_id == Document.id)
        .where(DocumentVersion.id == version_id)
    )
    if source_id is None:
        raise NotFoundError(f"version {version_id!r} not found", code="version_not_found")
    src = sources_svc.get(session, source_id=source_id, for_update=True)
    v = _version(session, version_id)
    doc = session.get(Document, v.document_id)
    assert doc is not None
    sources_svc.ensure_steward(actor, src)
    return v, doc


def retract(
    session: Session, store: VectorStore, *, version_id: str, reason: str, actor_effective: EffectivePrincipal,
    current: bool = False,
) -> ImpactReport:
    """Retract one version (its steward or an admin): invisible to every search once the caller commits.
    `current`: the caller means the document's current version (`retract_document` without a version), which
    it read before this took the source's lock; if an ingest made another version current meanwhile, 409
    `concurrent_update` (retry) rather than a retraction of the version it superseded, which on PostgreSQL
    (reads take no lock) left the new one, the same text when it was reprocessed, served."""
    why = _reason(reason)
    v, doc = _stewarded_version(session, version_id, actor_effective)
    if current and v.status != "active":
        raise ConflictError("the document got a new version while retracting; retry", code="concurrent_update")
    if v.retracted_at is not None:
        raise ConflictError(f"version {version_id!r} is already retracted", code="already_retracted")
    now = utcnow()
    v.retracted_at, v.retracted_by, v.retraction_reason = now, actor_effective.principal_id, why
    v.restored_at, v.restored_by = None, None
    session.flush()  # SQL first, in this transaction; the vectors next, before the commit (module docstring)
    withholdable.recount_source(session, source_id=doc.source_id)
    store.patch(Selector(version_ids=(v.id,)), PayloadPatch(retracted=True))
    # Under the chain head's lock: every search that served this version and appended before it is in the report;
    # a search appending after it waits for this commit, and its last check then drops the retracted hits
    # (memory.search). Read before the lock, a search committing meanwhile was missed (PostgreSQL).
    audit.lock_head(session)
    served = impact(session, version_id=v.id)
    record = audit.append(
        session,
        audit.Write(action="version.retract", target=v.id, details={
            "version": v.version, "reason": why, "chunks": v.chunk_count, "impact_records": len(served),
            "acting_for": actor_effective.acting_for,
        }),
        principal_id=actor_effective.principal_id, acting_for=actor_effective.acting_for,
        source_id=doc.source_id, document_id=doc.id,
    )
    log.info("version.retracted version=%s impact_records=%d", v.id, len(served))
    return ImpactReport(doc.id, doc.source_id, v.id, v.version, "retracted", now, actor_effective.principal_id,
                        why, record.seq, v.chunk_count, served)


def restore(
    session: Session, *, version_id: str, reason: str, actor_effective: EffectivePrincipal
) -> ImpactReport:
    """Undo a retraction in SQL; the caller commits, then calls `reveal` (module docstring). It serves the version
    again: an agent acting for the steward may retract, never restore (403 `delegated_change_refused`)."""
    why = _reason(reason)
    v, doc = _stewarded_version(session, version_id, actor_effective)
    sources_svc.refuse_delegated_governance(["restore"], who=actor_effective, what="restoring a retracted version")
    if v.retracted_at is None:
        raise ConflictError(f"version {version_id!r} is not retracted", code="not_retracted")
    previous = {"retracted_at": aware(v.retracted_at).isoformat(), "retracted_by": v.retracted_by,
                "retraction_reason": v.retraction_reason}
    now = utcnow()
    v.retracted_at, v.retracted_by, v.retraction_reason = None, None, None
    v.restored_at, v.restored_by = now, actor_effective.principal_id
    v.vectors_synced = False  # repair() re-syncs from SQL if we crash before reveal()
    session.flush()
    withholdable.recount_source(session, source_id=doc.source_id)  # raised before reveal() shows the chunks
    record = audit.append(
        session,
        audit.Write(action="version.restore", target=v.id, details={
            "version": v.version, "reason": why, "previous": previous, "acting_for": actor_effective.acting_for,
        }),
        principal_id=actor_effective.principal_id, acting_for=actor_effective.acting_for,
        source_id=doc.source_id, document_id=doc.id,
    )
    log.info("version.restored version=%s", v.id)
    return ImpactReport(doc.id, doc.source_id, v.id, v.version, "restored", now, actor_effective.principal_id,
                        why, record.seq, v.chunk_count, impact(session, version_id=v.id))


def reveal(factory: sessionmaker[Session], store: VectorStore, *, version_ids: list[str]) -> None:
    """After a restore committed: make the vector payload match SQL again (its own unit of work)."""
    # The ingestion workflow owns the one routine that copies SQL state onto the vector payload. It holds the
    # rows' locks from its read to its mark, so a retraction that starts while it patches waits, then patches.
    vector_sync.sync_versions(factory, store, version_ids, include_retracted=True)


def version_id_for(
    session: Session, *, document_id: str, version: int | None, actor: EffectivePrincipal | None = None
) -> str:
    """The id of `version` of a document, or of its current version when `version` is None. With `actor`: a
    document of a source they do not steward is `document_not_found` (as an unknown id: a steward of another
    source learns nothing about which documents exist: documents.get_stewarded_document)."""
    doc = (
        session.get(Document, document_id) if actor is None
        else documents.get_stewarded_document(session, document_id=document_id, who=actor)
    )
    if doc is None:
        raise NotFoundError(f"document {document_id!r} not found", code="document_not_found")
    number = doc.current_version if version is None else version
    vid = session.execute(
        select(DocumentVersion.id).where(DocumentVersion.document_id == document_id,
                                         DocumentVersion.version == number)
    ).scalar_one_or_none()
    if vid is None:
        raise NotFoundError(f"document {document_id!r} has no version {number}", code="version_not_found")
    return vid


def retract_document(
    session: Session, store: VectorStore, *, document_id: str, version: int | None, reason: str,
    actor_effective: EffectivePrincipal,
) -> ImpactReport:
    """Retract a version of a document (default: its current version)."""
    vid = version_id_for(session, document_id=document_id, version=version, actor=actor_effective)
    return retract(session, store, version_id=vid, reason=reason, actor_effective=actor_effective,
                   current=version is None)
