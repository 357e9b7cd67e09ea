"""Ingestion workflow: bytes -> pipeline -> vectors + SQL, with no half-visible version, ever.

This orchestrator owns its units of work (it is the one place that commits in steps, because a crash
between the SQL and vector writes must leave a state the next run can repair):

  A. SQL: the version row as `pending`                       (commit)
  B. vectors: every chunk upserted with committed=0          (invisible to every search)
  C. SQL: chunks + spans, version `active`, previous version superseded, audit record   (commit)
  D. vectors: new points committed=1, previous version's valid_to closed; SQL: vectors_synced  (commit)

`repair()` finishes D for versions left unsynced and deletes the points of versions left pending.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from classifiers.types import Label
from ingest.errors import IngestError
from ingest.types import ProcessedDocument
from memory import audit, withholdable
from memory import sources as sources_svc
from memory.clock import utcnow
from memory.db import transaction
from memory.errors import ServiceError
from memory.metrics import INGEST_CHUNKS, INGEST_DOCUMENTS, INGEST_SECONDS
from memory.models import Chunk, Document, DocumentVersion, PiiSpan
from memory.stores.base import OPEN_END, ChunkPayload, PayloadPatch, Selector, VectorPoint, VectorStore

if TYPE_CHECKING:
    from ingest.pipeline import IngestItem

log = logging.getLogger(__name__)
POINT_NAMESPACE = uuid.UUID("6f1c9a8e-3f3c-4c55-9f7e-9b1d2f0c7a11")
PIPELINE_VERSION = "memory-ingest/1"


class DocumentProcessor(Protocol):
    """What the workflow needs of ingest.pipeline.IngestPipeline."""

    def process_many(self, items: Sequence[IngestItem]) -> list[ProcessedDocument | IngestError]: ...

    def wait_ready(self) -> None:
        """Block until a file would be processed at full speed (e.g. a parse worker has loaded)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class FileInput:
    data: bytes
    filename: str
    external_key: str  # document identity within the source (relative path or steward-given id)
    uri: str


@dataclass
class IngestOutcome:
    external_key: str
    status: str  # created | updated | unchanged | failed
    document_id: str | None = None
    version: int | None = None
    version_id: str | None = None
    chunks: int = 0
    embedded: int = 0  # chunks whose vector was computed (not from cache)
    entity_counts: dict[str, int] = field(default_factory=dict)
    error_code: str | None = None
    error: str | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    # Parsed anyway, with these left out (skipped email attachments, a partly readable file):
    # {"code", "message", "attachment"}, code as in ingest.errors or "attachment_limit".
    warnings: list[dict[str, str | None]] = field(default_factory=list)


def document_id_for(source_id: str, external_key: str) -> str:
    return hashlib.sha256(f"{source_id}\0{external_key}".encode()).hexdigest()[:24]


def version_id_for(document_id: str, version: int) -> str:
    return f"{document_id}-v{version}"


def chunk_id_for(version_id: str, ordinal: int, sha: str) -> str:
    """Derived from content and position: the same version always yields the same chunk ids."""
    return hashlib.sha256(f"{version_id}\0{ordinal}\0{sha}".encode()).hexdigest()[:32]


def point_id_for(chunk_id: str) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, chunk_id))


def _latest(session: Session, document_id: str) -> DocumentVersion | None:
    return session.execute(
        select(DocumentVersion)
        .where(DocumentVersion.document_id == document_id, DocumentVersion.status.in_(("active", "superseded")))
        .order_by(DocumentVersion.version.desc())
        .limit(1)
    ).scalar_one_or_none()


def ingest_files(
    factory: sessionmaker[Session],
    store: VectorStore,
    processor: DocumentProcessor,
    *,
    source_id: str,
    files: Sequence[FileInput],
    actor: str,
) -> list[IngestOutcome]:
    """Ingest a batch of files into one source; every file gets an outcome, failures never stop the batch."""
    with factory() as session:
        src = sources_svc.get(session, source_id=source_id)
        floor, groups, juris = Label(src.floor), sources_svc.read_groups(src), src.jurisdiction
    outcomes: dict[int, IngestOutcome] = {}
    todo: list[int] = []
    with factory() as session:
        for i, f in enumerate(files):
            doc_id = document_id_for(source_id, f.external_key)
            latest = _latest(session, doc_id)
            if latest is not None and latest.sha256 == hashlib.sha256(f.data).hexdigest():
                outcomes[i] = IngestOutcome(f.external_key, "unchanged", doc_id, latest.version, latest.id,
                                            chunks=latest.chunk_count)
            else:
                todo.append(i)
    from ingest.pipeline import IngestItem  # heavy (unstructured): only when there is work

    t0 = time.perf_counter()
    items = [IngestItem(files[i].data, files[i].filename, floor) for i in todo]
    results = processor.process_many(items) if items else []
    per_doc_process = (time.perf_counter() - t0) / max(1, len(todo))
    stored: list[str] = []
    try:
        _store_all(factory, store, todo, results, files, outcomes, stored, source_id=source_id, groups=groups,
                   jurisdiction=juris, actor=actor, per_doc_process=per_doc_process)
    finally:
        if stored:
            _sync_versions(factory, store, stored)
    for o in outcomes.values():
        INGEST_DOCUMENTS.labels(status=o.status).inc()
        if o.status in ("created", "updated"):
            INGEST_CHUNKS.inc(o.chunks)
            INGEST_SECONDS.observe(sum(o.timings_s.values()))
    return [outcomes[i] for i in range(len(files))]


def _store_all(
    factory: sessionmaker[Session], store: VectorStore, todo: Sequence[int],
    results: Sequence[ProcessedDocument | IngestError], files: Sequence[FileInput], outcomes: dict[int, IngestOutcome],
    stored: list[str], *, source_id: str, groups: tuple[str, ...], jurisdiction: str, actor: str,
    per_doc_process: float,
) -> None:
    for i, res in zip(todo, results, strict=True):
        f = files[i]
        if isinstance(res, IngestError):
            outcomes[i] = IngestOutcome(f.external_key, "failed", error_code=res.code, error=res.message)
            log.info("ingest.failed source=%s code=%s", source_id, res.code)
            continue
        try:
            outcomes[i] = _store_document(
                factory, store, source_id=source_id, source_groups=groups, jurisdiction=jurisdiction, file=f,
                doc=res, actor=actor, to_sync=stored,
            )
            outcomes[i].timings_s.setdefault("process", per_doc_process)
        except ServiceError as exc:
            outcomes[i] = IngestOutcome(f.external_key, "failed", error_code=exc.code, error=exc.message)


def _store_document(
    factory: sessionmaker[Session],
    store: VectorStore,
    *,
    source_id: str,
    source_groups: tuple[str, ...],
    jurisdiction: str,
    file: FileInput,
    doc: ProcessedDocument,
    actor: str,
    to_sync: list[str],
) -> IngestOutcome:
    doc_id = document_id_for(source_id, file.external_key)
    valid_from = time.time()
    t_store = time.perf_counter()
    # A. reserve the version number as `pending`
    try:
        with transaction(factory) as session:
            if session.get(Document, doc_id) is None:
                session.add(Document(id=doc_id, source_id=source_id, external_key=file.external_key,
                                     created_at=utcnow(), current_version=0))
                session.flush()
            _lock_document(session, doc_id)
            latest_no = session.execute(
                select(func.max(DocumentVersion.version)).where(DocumentVersion.document_id == doc_id)
            ).scalar_one_or_none() or 0
            number = latest_no + 1
            vid = version_id_for(doc_id, number)
            v = doc.versions
            session.add(DocumentVersion(
                id=vid, document_id=doc_id, version=number, status="pending", sha256=doc.sha256,
                size_bytes=doc.size_bytes, mime_type=doc.mime_type, filename=file.filename, uri=file.uri,
                ingested_at=utcnow(), ingested_by=actor, valid_from=valid_from, valid_to=OPEN_END,
                pipeline_version=v.pipeline, parser_version=v.parser, chunker_version=v.chunker,
                classifier_version=v.classifier, label_map_version=v.label_map, embedding_model=v.embedding_model,
                chunk_count=len(doc.chunks), text_length=doc.text_length, vectors_synced=False,
            ))
    except IntegrityError as exc:
        raise ServiceError("document changed concurrently; retry", code="concurrent_update") from exc
    # B. vectors, invisible
    points = []
    chunk_rows = []
    for pc in doc.chunks:
        d = pc.draft
        cid = chunk_id_for(vid, d.ordinal, d.sha256)
        pid = point_id_for(cid)
        points.append(VectorPoint(pid, pc.vector, ChunkPayload(
            chunk_id=cid, source_id=source_id, document_id=doc_id, version_id=vid, read_groups=source_groups,
            label=int(pc.label), jurisdiction=jurisdiction, personal=pc.has_personal_data,
            entity_types=pc.entity_types, valid_from=valid_from, committed=False,
        )))
        chunk_rows.append(Chunk(
            id=cid, point_id=pid, version_id=vid, document_id=doc_id, source_id=source_id, ordinal=d.ordinal,
            text=d.text, sha256=d.sha256, start=d.start, end=d.end, page_number=d.page_number, attachment=d.attachment,
            element_types=list(d.element_types), token_count=d.token_count, label=int(pc.label),
            personal=pc.has_personal_data, entity_types=list(pc.entity_types),
            spans=[PiiSpan(entity_type=s.entity_type, start=s.start, end=s.end, score=s.score,
                           recognizer=s.recognizer) for s in pc.findings],
        ))
    try:
        if points:
            store.upsert(points)
        # C. make it the document's version of record. The document row is locked so concurrent
        # ingests of one document activate strictly one after another (SQLite: BEGIN IMMEDIATE already).
        with transaction(factory) as session:
            _lock_document(session, doc_id)
            version = session.get(DocumentVersion, vid)
            assert version is not None
            previous = _latest(session, doc_id)
            if previous is not None and previous.version > version.version:
                raise ServiceError("a newer version was stored concurrently; retry", code="concurrent_update")
            # Validity is decided under the lock, so windows never overlap or run backwards.
            valid_from = max(time.time(), previous.valid_from + 1e-6 if previous is not None else 0.0)
            version.valid_from = valid_from
            session.add_all(chunk_rows)
            if chunk_rows:
                withholdable.record_chunks(session, source_id=source_id, max_label=max(c.label for c in chunk_rows),
                                           has_personal=any(c.personal for c in chunk_rows))
            version.status = "active"
            status = "created"
            if previous is not None:
                status = "updated"
                previous.status = "superseded"
                previous.valid_to = valid_from
                previous.superseded_by = vid
                previous.vectors_synced = False
            document = session.get(Document, doc_id)
            assert document is not None
            document.current_version = version.version
            audit.append(
                session,
                audit.Write(action="document.ingest", target=vid, details={
                    "status": status, "version": version.version, "sha256": doc.sha256,
                    "chunks": len(chunk_rows), "entity_counts": doc.entity_counts,
                    "supersedes": previous.id if previous else None,
                    "embedded": sum(1 for c in doc.chunks if not c.embedding_cached),
                }),
                principal_id=actor, source_id=source_id, document_id=doc_id,
            )
    except BaseException:
        _abandon(factory, store, vid)
        raise
    to_sync.extend([vid] + ([previous.id] if previous is not None else []))
    # D. reveal: done by the caller for the whole batch (one flush); a crash before is finished by repair()
    return IngestOutcome(
        file.external_key, status, doc_id, version.version, vid, chunks=len(chunk_rows),
        embedded=sum(1 for c in doc.chunks if not c.embedding_cached), entity_counts=doc.entity_counts,
        timings_s={**doc.timings_s, "store": time.perf_counter() - t_store},
        warnings=[{"code": w.code, "message": w.message, "attachment": w.attachment} for w in doc.warnings],
    )


def _lock_document(session: Session, document_id: str) -> None:
    session.execute(select(Document.id).where(Document.id == document_id).with_for_update()).first()


def _abandon(factory: sessionmaker[Session], store: VectorStore, version_id: str) -> None:
    """Undo a version that never became active: its invisible points and its pending row go."""
    try:
        store.delete(Selector(version_ids=(version_id,)))
        with transaction(factory) as session:
            v = session.get(DocumentVersion, version_id)
            if v is not None and v.status == "pending":
                session.delete(v)
    except Exception:  # repair() will finish this on the next run
        log.exception("ingest.abandon_failed version=%s", version_id)


def _sync_versions(
    factory: sessionmaker[Session], store: VectorStore, version_ids: Sequence[str], *, include_retracted: bool = False
) -> None:
    """Make the vector payload of these versions match SQL, then mark them synced.

    The retracted flag belongs to retraction and restore, which patch it themselves; copying it here from
    a row read earlier could undo a retraction that committed in between, so only `repair()` and restore
    (`include_retracted=True`) copy it."""
    with factory() as session:
        rows = [session.get(DocumentVersion, vid) for vid in version_ids]
    for v in rows:
        if v is None:
            continue
        store.patch(Selector(version_ids=(v.id,)), PayloadPatch(
            committed=True, valid_from=v.valid_from, valid_to=v.valid_to,
            retracted=(v.retracted_at is not None) if include_retracted else None,
        ), durable=False)
    store.flush()  # once per batch; the WAL already holds every patch
    with transaction(factory) as session:
        for v in rows:
            if v is not None:
                row = session.get(DocumentVersion, v.id)
                if row is not None:
                    row.vectors_synced = True


def repair(factory: sessionmaker[Session], store: VectorStore) -> dict[str, int]:
    """Finish or undo whatever a crash interrupted. Safe to run at every start."""
    with factory() as session:
        pending = list(session.execute(
            select(DocumentVersion.id).where(DocumentVersion.status == "pending")).scalars())
        unsynced = list(session.execute(
            select(DocumentVersion.id).where(DocumentVersion.status.in_(("active", "superseded")),
                                             DocumentVersion.vectors_synced.is_(False))).scalars())
    for vid in pending:
        _abandon(factory, store, vid)
    if unsynced:
        _sync_versions(factory, store, unsynced, include_retracted=True)
    if pending or unsynced:
        log.warning("ingest.repaired pending=%d unsynced=%d", len(pending), len(unsynced))
    return {"abandoned": len(pending), "synced": len(unsynced)}
