"""Ingestion workflow: bytes -> pipeline -> vectors + SQL, with no half-visible version, ever.

This orchestrator owns its units of work (it is the one place that commits in steps, because a crash
between the SQL and vector writes must leave a state the next run can repair):

  A. SQL: the version row as `pending`                       (commit)
  B. vectors: every chunk upserted with committed=0          (invisible to every search)
  C. SQL, under the source's and the document's row locks: chunks + spans, version `active`, previous version
     superseded, audit record; the new points re-stamped first if the source's access changed since it was
     read (so they never admit more than SQL); the same bytes stored meanwhile -> `unchanged`   (commit)
  D. vectors: new points committed=1, previous version's valid_to closed; SQL: vectors_synced  (commit)

D reads the rows it copies under their locks and holds them over the patch until it marks them synced, so an
overlapping ingest, retraction or restore waits and it never copies a stale state (vector_sync.sync_versions).
A failed D leaves the upload committed and reported `revealed=False`; uploading the same bytes again (or
`vector_sync.repair()`) finishes it.

`repair()` finishes D for versions left unsynced and deletes the points of versions left pending longer
than a grace period (a younger one may be another replica's live ingest). An ingest that was only slow fails when
it wakes up, and the points it may still upsert are never revealed: its version id is its own (`new_version_id`),
although the next ingest of the document takes its version number.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol
from urllib.parse import unquote

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from classifiers.types import Label
from ingest.errors import IngestError
from ingest.types import ProcessedDocument
from ingest.versioning import older_pipeline
from memory import audit, db_errors, policy_store, principals, withholdable
from memory import sources as sources_svc
from memory.clock import utcnow
from memory.db import transaction
from memory.errors import ConflictError, ServiceError
from memory.metrics import INGEST_CHUNKS, INGEST_DOCUMENTS, INGEST_SECONDS
from memory.models import REACHABLE_STATUSES, Chunk, Document, DocumentVersion, PiiSpan, Source
from memory.stores.base import OPEN_END, ChunkPayload, Selector, VectorPoint, VectorStore
from memory.vector_sync import REVEALING, abandon, lock_document, sync_versions, unsynced_versions

if TYPE_CHECKING:
    from ingest.pipeline import IngestItem

log = logging.getLogger(__name__)
POINT_NAMESPACE = uuid.UUID("6f1c9a8e-3f3c-4c55-9f7e-9b1d2f0c7a11")
_SHA_BATCH = 500  # bound parameters per IN (...) query


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
    # Chunks whose text this source did not hold already. Not "computed, not from cache": a hit on text cached
    # from another source would tell the uploader that text exists there (the audit record keeps the real work).
    embedded: int = 0
    entity_counts: dict[str, int] = field(default_factory=dict)
    error_code: str | None = None
    error: str | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    # Parsed anyway, with these left out (skipped email attachments, a partly readable file):
    # {"code", "message", "attachment"}, code as in ingest.errors or "attachment_limit".
    warnings: list[dict[str, str | None]] = field(default_factory=list)
    # False: committed, but revealing its vectors (step D) failed, so the previous version is still served;
    # uploading the same bytes again, or repair(), finishes it.
    revealed: bool = True
    # `updated` with the latest version's own bytes: an older pipeline had processed them (`reprocesses`), so
    # they were processed again and stored as a new version.
    reprocessed: bool = False
    # The error behind a `failed` outcome, so a single upload can answer with its status (a ServiceError's 503 or
    # 409; anything unexpected, 500).
    exception: Exception | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class _Activation:
    """What step C decided: `unchanged` when the same bytes became the latest version meanwhile."""

    status: str  # created | updated | unchanged
    version: int
    version_id: str
    chunks: int
    to_sync: tuple[str, ...]
    to_heal: tuple[str, ...] = ()  # left unsynced before this ingest (_ToReveal.heal)
    reprocessed: bool = False  # the same bytes as the version it supersedes, classified anew (IngestOutcome)


@dataclass
class _ToReveal:
    """The versions a batch's step D syncs. `own`: those this ingest changed (its new version, the one it
    superseded); their `retracted` flag is not copied (vector_sync.sync_versions). `heal`: versions found
    unsynced that something else left so (a restore whose reveal never ran, an earlier failed step D): they
    are synced as repair() syncs them, the flag included, or marking them synced would leave a restored
    version hidden for good."""

    own: list[str] = field(default_factory=list)
    heal: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.own or self.heal)

    def add(self, own: Sequence[str] = (), heal: Sequence[str] = ()) -> None:
        REVEALING.claim([*own, *heal])  # repair() leaves them to this ingest's step D (release() after it)
        self.own.extend(own)
        self.heal.extend(heal)

    def release(self) -> None:
        REVEALING.release([*self.own, *self.heal])


class _Access(NamedTuple):
    """The access fields a version's points were written with, and the floor its chunks were labelled with."""

    read_groups: tuple[str, ...]
    jurisdiction: str
    floor: int


def document_id_for(source_id: str, external_key: str) -> str:
    return hashlib.sha256(f"{source_id}\0{external_key}".encode()).hexdigest()[:24]


def new_version_id(document_id: str, version: int) -> str:
    """A new id for the version numbered `version`, unique to the ingest reserving it. The number is reused once
    repair has abandoned (deleted) the version that held it; the id never is, so an ingest that wakes up after
    repair abandoned it finds its row gone instead of the next ingest's, and the points it may still upsert carry
    an id no version will ever have: no step D reveals them, and no step C commits its chunks under another row."""
    return f"{document_id}-v{version}-{secrets.token_hex(6)}"


def chunk_id_for(version_id: str, ordinal: int, sha: str) -> str:
    """Derived from content and position: the same version always yields the same chunk ids."""
    return hashlib.sha256(f"{version_id}\0{ordinal}\0{sha}".encode()).hexdigest()[:32]


def point_id_for(chunk_id: str) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, chunk_id))


def masked_point_id_for(chunk_id: str) -> str:
    """The point id of the chunk's masked twin: derived like its point's, so storing a twin again (a retried
    ingest, `memory backfill-twins` after a crash) replaces it instead of adding another."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{chunk_id}\0masked-twin"))


def reprocesses(latest: DocumentVersion, pipeline_version: str | None = None) -> bool:
    """Whether an ingest of the latest version's own bytes processes them again instead of being `unchanged`:
    an older pipeline generation than `pipeline_version` (default: this code's) processed them, so its labels,
    personal data or masking may be what that pipeline found (names are classified since ingest-2; operations.md,
    "Reprocessing after an upgrade"). Never a retracted version: its retraction holds (restore it first), and
    new bytes are a new version as ever. Never a newer generation (ingest.versioning.older_pipeline)."""
    return latest.retracted_at is None and older_pipeline(latest.pipeline_version, pipeline_version)


def _latest(session: Session, document_id: str) -> DocumentVersion | None:
    return session.execute(
        select(DocumentVersion)
        .where(DocumentVersion.document_id == document_id, DocumentVersion.status.in_(REACHABLE_STATUSES))
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
    acting_for: str | None = None,
) -> list[IngestOutcome]:
    """Ingest a batch of files into one source; every file gets an outcome, failures never stop the batch."""
    with factory() as session:
        src = sources_svc.get(session, source_id=source_id)
        # Read now for the points of step B; step C re-reads them under the source lock (they may change meanwhile).
        written = _Access(sources_svc.read_groups(src), src.jurisdiction, src.floor)
    outcomes, todo, heal, kept = _unchanged_files(factory, source_id, files)
    stored = _ToReveal()
    try:
        stored.add(heal=heal)
        from ingest.pipeline import IngestItem  # heavy (unstructured): only when there is work

        t0 = time.perf_counter()
        # The key and the URI are shown beside the text too (a folder or a key may name a person).
        items = [IngestItem(files[i].data, files[i].filename, Label(written.floor),
                            shown_names=(files[i].external_key, unquote(files[i].uri))) for i in todo]
        results = processor.process_many(items) if items else []
        per_doc_process = (time.perf_counter() - t0) / max(1, len(todo))
        _store_all(factory, store, todo, results, files, outcomes, stored, source_id=source_id, written=written,
                   actor=actor, acting_for=acting_for, per_doc_process=per_doc_process, kept=kept)
    finally:
        try:
            if stored:
                _reveal(factory, store, stored, outcomes.values())
        finally:
            stored.release()
    for o in outcomes.values():
        INGEST_DOCUMENTS.labels(status=o.status).inc()
        if o.status in ("created", "updated"):
            INGEST_CHUNKS.inc(o.chunks)
            INGEST_SECONDS.observe(sum(o.timings_s.values()))
    return [outcomes[i] for i in range(len(files))]


def _unchanged_files(
    factory: sessionmaker[Session], source_id: str, files: Sequence[FileInput]
) -> tuple[dict[int, IngestOutcome], list[int], list[str], dict[int, IngestOutcome]]:
    """Outcomes of files whose bytes are the document's latest version, the indexes of the others, the versions
    to reveal (an upload that committed but failed step D is finished by its retry), and the `unchanged`
    outcome of each file whose bytes are reprocessed (`reprocesses`), kept if the pipeline now refuses them."""
    outcomes: dict[int, IngestOutcome] = {}
    todo: list[int] = []
    heal: list[str] = []
    kept: dict[int, IngestOutcome] = {}
    with factory() as session:
        for i, f in enumerate(files):
            doc_id = document_id_for(source_id, f.external_key)
            latest = _latest(session, doc_id)
            if latest is None or latest.sha256 != hashlib.sha256(f.data).hexdigest():
                todo.append(i)
                continue
            unchanged = IngestOutcome(f.external_key, "unchanged", doc_id, latest.version, latest.id,
                                      chunks=latest.chunk_count)
            if not latest.vectors_synced:
                heal.extend(unsynced_versions(session, doc_id))
            if reprocesses(latest):
                kept[i] = unchanged
                todo.append(i)
            else:
                outcomes[i] = unchanged
    return outcomes, todo, heal, kept


def _reveal(
    factory: sessionmaker[Session], store: VectorStore, versions: _ToReveal, outcomes: Iterable[IngestOutcome]
) -> None:
    """Step D for the batch. The versions have committed, so a failure here is reported on their outcomes
    (`revealed=False`), not raised: an error would tell the client its upload failed, and its retry would
    then be `unchanged`. They stay unsynced, so that retry (or repair()) reveals them."""
    try:
        heal = set(versions.heal)
        own = [v for v in versions.own if v not in heal]
        sync_versions(factory, store, own)
        if heal:
            sync_versions(factory, store, sorted(heal), include_retracted=True)
        failed: set[str] = set()
    except Exception:
        log.warning("ingest.reveal_failed versions=%d", len(versions.own) + len(versions.heal), exc_info=True)
        failed = set(versions.own) | set(versions.heal)
    for o in outcomes:
        if o.version_id in failed:
            o.revealed = False


def _store_all(
    factory: sessionmaker[Session], store: VectorStore, todo: Sequence[int],
    results: Sequence[ProcessedDocument | IngestError], files: Sequence[FileInput], outcomes: dict[int, IngestOutcome],
    stored: _ToReveal, *, source_id: str, written: _Access, actor: str, acting_for: str | None,
    per_doc_process: float,
    kept: dict[int, IngestOutcome],
) -> None:
    """Steps A-C for each processed file. `kept`: the `unchanged` outcome of files whose stored bytes were being
    reprocessed; if the pipeline now refuses them (a limit or parser change since), the stored version stays,
    with a warning, instead of a failed upload of a document that is stored and served."""
    for i, res in zip(todo, results, strict=True):
        f = files[i]
        if isinstance(res, IngestError) and i in kept:
            outcomes[i] = kept[i]
            outcomes[i].warnings.append({"code": res.code, "message": f"not reprocessed: {res.message}",
                                         "attachment": None})
            log.warning("ingest.reprocess_refused source=%s code=%s", source_id, res.code)
            continue
        if isinstance(res, IngestError):
            outcomes[i] = IngestOutcome(f.external_key, "failed", error_code=res.code, error=res.message,
                                        exception=res)  # an upload raises it as it is (its class keeps its status)
            log.info("ingest.failed source=%s code=%s", source_id, res.code)
            continue
        try:
            outcomes[i] = _store_document(
                factory, store, source_id=source_id, written=written,
                file=f, doc=res, actor=actor, acting_for=acting_for, to_sync=stored,
            )
            outcomes[i].timings_s.setdefault("process", per_doc_process)
        except ServiceError as exc:
            outcomes[i] = IngestOutcome(f.external_key, "failed", error_code=exc.code, error=exc.message,
                                        exception=exc)
            log.info("ingest.failed source=%s code=%s", source_id, exc.code)
        except Exception as exc:
            busy = db_errors.retryable(exc)  # the database was busy or unreachable: this file may be sent again
            if busy is not None:
                log.warning("ingest.failed source=%s code=%s", source_id, busy.code)
                outcomes[i] = IngestOutcome(f.external_key, "failed", error_code=busy.code, error=busy.message,
                                            exception=exc)
                continue
            # The message is not logged (it could quote stored values); the traceback only at DEBUG.
            log.error("ingest.store_failed source=%s error=%s", source_id, type(exc).__name__)
            log.debug("ingest.store_failed traceback", exc_info=True)
            outcomes[i] = IngestOutcome(f.external_key, "failed", error_code="internal_error",
                                        error="storing the document failed unexpectedly", exception=exc)


def _store_document(
    factory: sessionmaker[Session],
    store: VectorStore,
    *,
    source_id: str,
    written: _Access,
    file: FileInput,
    doc: ProcessedDocument,
    actor: str,
    to_sync: _ToReveal,
    acting_for: str | None = None,
) -> IngestOutcome:
    """Steps A-C for one processed file; `written`: the access its points are upserted with."""
    doc_id = document_id_for(source_id, file.external_key)
    valid_from = time.time()
    t_store = time.perf_counter()
    vid = _reserve(factory, doc_id=doc_id, source_id=source_id, file=file, doc=doc, actor=actor,
                   valid_from=valid_from)
    points, chunk_rows = _rows(doc, source_id=source_id, doc_id=doc_id, vid=vid, written=written,
                               valid_from=valid_from)
    try:
        if points:  # B. vectors, invisible
            store.upsert(points)
        embedded = _embedded_for_uploader(factory, source_id, doc)
        with transaction(factory) as session:
            done = _activate(session, store, source_id=source_id, doc_id=doc_id, vid=vid, written=written,
                             doc=doc, chunk_rows=chunk_rows, actor=actor, acting_for=acting_for)
    except BaseException:
        abandon(factory, store, vid)
        raise
    to_sync.add(done.to_sync, done.to_heal)
    if done.status == "unchanged":  # the same bytes were stored meanwhile (a retry, a second worker)
        abandon(factory, store, vid)
        log.info("ingest.duplicate_dropped version=%s kept=%s", vid, done.version_id)
        return IngestOutcome(file.external_key, "unchanged", doc_id, done.version, done.version_id,
                             chunks=done.chunks)
    # D. reveal: done by the caller for the whole batch (one flush); a crash before is finished by repair()
    return IngestOutcome(
        file.external_key, done.status, doc_id, done.version, vid, chunks=done.chunks, embedded=embedded,
        entity_counts=doc.entity_counts, timings_s={**doc.timings_s, "store": time.perf_counter() - t_store},
        warnings=[{"code": w.code, "message": w.message, "attachment": w.attachment} for w in doc.warnings],
        reprocessed=done.reprocessed,
    )


def _reserve(
    factory: sessionmaker[Session], *, doc_id: str, source_id: str, file: FileInput, doc: ProcessedDocument,
    actor: str, valid_from: float,
) -> str:
    """A. reserve the next version number as `pending`; returns its id."""
    try:
        with transaction(factory) as session:
            if session.get(Document, doc_id) is None:
                session.add(Document(id=doc_id, source_id=source_id, external_key=file.external_key,
                                     created_at=utcnow(), current_version=0))
                session.flush()
            lock_document(session, doc_id)
            latest_no = session.execute(
                select(func.max(DocumentVersion.version)).where(DocumentVersion.document_id == doc_id)
            ).scalar_one_or_none() or 0
            vid = new_version_id(doc_id, latest_no + 1)
            v = doc.versions
            session.add(DocumentVersion(
                id=vid, document_id=doc_id, version=latest_no + 1, status="pending", sha256=doc.sha256,
                size_bytes=doc.size_bytes, mime_type=doc.mime_type, filename=file.filename, uri=file.uri,
                ingested_at=utcnow(), ingested_by=actor, valid_from=valid_from, valid_to=OPEN_END,
                pipeline_version=v.pipeline, parser_version=v.parser, chunker_version=v.chunker,
                classifier_version=v.classifier, label_map_version=v.label_map, embedding_model=v.embedding_model,
                chunk_count=len(doc.chunks), text_length=doc.text_length, vectors_synced=False,
                max_label=max((int(c.label) for c in doc.chunks), default=None),
                has_personal=any(c.has_personal_data for c in doc.chunks),
                names_pii=[{"name": n.name, "spans": [{"entity_type": f.entity_type, "start": f.start, "end": f.end}
                                                      for f in n.findings]} for n in doc.names_pii] or None,
            ))
    except IntegrityError as exc:
        raise ConflictError("document changed concurrently; retry", code="concurrent_update") from exc
    return vid


def _rows(
    doc: ProcessedDocument, *, source_id: str, doc_id: str, vid: str, written: _Access, valid_from: float
) -> tuple[list[VectorPoint], list[Chunk]]:
    """The version's points (uncommitted: each chunk's, and the masked twin of each chunk with personal data)
    and chunk rows."""
    points = []
    chunk_rows = []
    for pc in doc.chunks:
        d = pc.draft
        cid = chunk_id_for(vid, d.ordinal, d.sha256)
        pid = point_id_for(cid)
        payload = ChunkPayload(
            chunk_id=cid, source_id=source_id, document_id=doc_id, version_id=vid,
            read_groups=written.read_groups, label=int(pc.label), jurisdiction=written.jurisdiction,
            personal=pc.has_personal_data, entity_types=pc.entity_types, valid_from=valid_from, committed=False,
        )
        points.append(VectorPoint(pid, pc.vector, payload))
        twin_id = None
        if pc.has_personal_data and pc.masked_vector is not None:
            # No masked vector (a processor that makes none): no twin, so a masked caller is not served the chunk.
            twin_id = masked_point_id_for(cid)
            points.append(VectorPoint(twin_id, pc.masked_vector, payload.twin()))
        chunk_rows.append(Chunk(
            id=cid, point_id=pid, masked_point_id=twin_id, version_id=vid, document_id=doc_id, source_id=source_id,
            ordinal=d.ordinal,
            text=d.text, sha256=d.sha256, start=d.start, end=d.end, page_number=d.page_number, attachment=d.attachment,
            element_types=list(d.element_types), token_count=d.token_count, label=int(pc.label),
            personal=pc.has_personal_data, entity_types=list(pc.entity_types),
            spans=[PiiSpan(entity_type=s.entity_type, start=s.start, end=s.end, score=s.score,
                           recognizer=s.recognizer) for s in pc.findings],
        ))
    return points, chunk_rows


def _embedded_for_uploader(factory: sessionmaker[Session], source_id: str, doc: ProcessedDocument) -> int:
    """Chunks whose text this source does not hold yet: what an upload reports as embedded. It depends only
    on what the uploader can know (this file, this source), never on the content-addressed cache, which
    other sources fill too."""
    shas = sorted({c.draft.sha256 for c in doc.chunks})
    held: set[str] = set()
    with factory() as session:
        for i in range(0, len(shas), _SHA_BATCH):
            held.update(session.scalars(select(Chunk.sha256).distinct().where(
                Chunk.source_id == source_id, Chunk.sha256.in_(shas[i:i + _SHA_BATCH]))))
    return sum(1 for c in doc.chunks if c.draft.sha256 not in held)


def _activate(
    session: Session, store: VectorStore, *, source_id: str, doc_id: str, vid: str, written: _Access,
    doc: ProcessedDocument, chunk_rows: list[Chunk], actor: str, acting_for: str | None,
) -> _Activation:
    """C. make the version the document's version of record (the caller commits)."""
    # The source row first (access changes lock it: none commits between the check below and our commit), then
    # the document row, so concurrent ingests of one document activate strictly one after another (SQLite:
    # BEGIN IMMEDIATE already serialises them).
    src = sources_svc.get(session, source_id=source_id, for_update=True)
    lock_document(session, doc_id)
    version = session.get(DocumentVersion, vid, populate_existing=True)
    if version is None or version.status != "pending":
        # repair() on another replica took this ingest for dead and abandoned it: its points may be gone.
        raise ConflictError("the version being stored was abandoned; retry", code="concurrent_update")
    previous = _latest(session, doc_id)
    same_bytes = previous is not None and previous.sha256 == version.sha256
    # The same bytes stored meanwhile (a retry, a second worker; a concurrent reprocessing that won): unchanged,
    # even when that version is newer than the one reserved here.
    if previous is not None and same_bytes and not reprocesses(previous, version.pipeline_version):
        heal = tuple(unsynced_versions(session, doc_id)) if not previous.vectors_synced else ()
        return _Activation("unchanged", previous.version, previous.id, previous.chunk_count, (), heal)
    if previous is not None and previous.version > version.version:
        raise ConflictError("a newer version was stored concurrently; retry", code="concurrent_update")
    if src.floor != written.floor:  # read under the source's lock, which a floor change takes
        raise ConflictError("the source's floor changed while the document was processed; retry",
                            code="floor_changed")
    _restamp_access(store, src, vid, written)
    # Validity is decided under the lock, so windows never overlap or run backwards.
    valid_from = max(time.time(), previous.valid_from + 1e-6 if previous is not None else 0.0)
    version.valid_from = valid_from
    session.add_all(chunk_rows)
    if chunk_rows:
        withholdable.record_chunks(session, source_id=source_id, max_label=max(c.label for c in chunk_rows),
                                   has_personal=any(c.personal for c in chunk_rows))
    version.status = "active"
    left_unsynced = previous is not None and not previous.vectors_synced  # by a restore, or a failed step D
    if previous is not None:
        previous.status = "superseded"
        previous.valid_to = valid_from
        previous.superseded_by = vid
        previous.vectors_synced = False
    document = session.get(Document, doc_id)
    assert document is not None
    document.current_version = version.version
    status = "updated" if previous is not None else "created"
    audit.append(
        session,
        audit.Write(action="document.ingest", target=vid, details={
            "status": status, "version": version.version, "sha256": doc.sha256,
            "chunks": len(chunk_rows), "entity_counts": doc.entity_counts,
            "supersedes": previous.id if previous else None,
            # The embedding work done (usage metering); auditors only, unlike the upload's response.
            "embedded": sum(1 for c in doc.chunks if not c.embedding_cached),
            "embedded_tokens": sum(c.draft.token_count for c in doc.chunks if not c.embedding_cached),
            # The teams the ingest is charged to, as they are now (a member moving on does not move past work).
            "groups": principals.teams_of(session, user_id=acting_for or actor, acting=acting_for is not None),
            # And the masked texts of chunks with personal data embedded (their masked twins' vectors).
            "embedded_masked": sum(1 for c in doc.chunks if c.masked_vector is not None
                                   and not c.masked_embedding_cached),
            **({"reprocessed": True} if same_bytes else {}),
        }),
        principal_id=actor, acting_for=acting_for, source_id=source_id, document_id=doc_id,
    )
    # The label map the chunks were labelled with must still be the one in force, or a relabel run since the map
    # changed (memory.relabel) would not have seen them. Read after the audit append: a label-map change appends
    # too, so it either committed before this read (seen: refused, retry) or waits for this commit (and a relabel
    # after it sees this version).
    if policy_store.label_map(session)[0].version != version.label_map_version:
        raise ConflictError("the label map changed while the document was processed; retry",
                            code="label_map_changed")
    mine = (vid,) + ((previous.id,) if previous is not None and not left_unsynced else ())
    return _Activation(status, version.version, vid, len(chunk_rows), mine,
                       (previous.id,) if previous is not None and left_unsynced else (), reprocessed=same_bytes)


def _restamp_access(store: VectorStore, src: Source, version_id: str, written: _Access) -> None:
    """The version's points take the source's access as SQL holds it now (we hold its row lock), if it changed
    since the points were written: a narrowing committed meanwhile re-stamped the source's points, but these
    may have been upserted after it. Patched before our commit, so the vectors never admit more than SQL."""
    now = sources_svc.access_payload(src)
    if (now.read_groups, now.jurisdiction) != (tuple(sorted(written.read_groups)), written.jurisdiction):
        store.patch(Selector(version_ids=(version_id,)), now)
        log.info("ingest.access_restamped version=%s source=%s", version_id, src.id)


