"""Step D of ingestion and its repair: make the vector payload of document versions match SQL (reveal), undo
versions that never became active, and finish at startup whatever a crash interrupted (memory.ingestion's
docstring has the steps). Retraction's restore reveals through `sync_versions` too."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import NamedTuple

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from memory import sources
from memory.clock import utcnow
from memory.db import transaction
from memory.models import REACHABLE_STATUSES, Chunk, Document, DocumentVersion
from memory.stores.base import OPEN_END, PayloadPatch, Selector, VectorStore

log = logging.getLogger(__name__)
# Step A runs after parsing and embedding, so a live ingest keeps a version pending only while it upserts (B)
# and commits (C): seconds. Settings.ingest_pending_grace_s overrides this default.
PENDING_GRACE_S = 15 * 60.0
# Versions per step-D transaction: their rows stay locked over their patches (one request each to a Qdrant server;
# on SQLite the database's write lock), so a batch is kept small.
SYNC_BATCH = 16
# The most recent retractions, and as many restores, whose vectors each repair run checks (settle_retractions).
RETRACTION_CHECKS = 100


class _PayloadState(NamedTuple):
    """The SQL fields a version's vector payload is copied from (retracted: None when not copied)."""

    status: str
    valid_from: float
    valid_to: float
    retracted: bool | None


class _Revealing:
    """Versions this process's ingests have committed and are about to reveal (step D). `repair()` leaves them
    to their ingest: it runs on a timer while the API ingests, and syncing a batch's versions ahead of its own
    step D would be redundant work, reported and audited as a repair although nothing was broken. (Another
    replica's in-flight versions are not known here; syncing them early is harmless, only reported.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: Counter[str] = Counter()

    def claim(self, version_ids: Sequence[str]) -> None:
        with self._lock:
            self._ids.update(version_ids)

    def release(self, version_ids: Sequence[str]) -> None:
        with self._lock:
            self._ids.subtract(version_ids)
            self._ids = +self._ids  # drop zero counts

    def __contains__(self, version_id: object) -> bool:
        with self._lock:
            return self._ids[version_id] > 0 if isinstance(version_id, str) else False


REVEALING = _Revealing()


def unsynced_versions(session: Session, document_id: str | None = None) -> list[str]:
    """Versions a search can reach (active, superseded) whose vector payload is not marked in sync with SQL,
    of one document or of all."""
    q = select(DocumentVersion.id).where(DocumentVersion.status.in_(REACHABLE_STATUSES),
                                         DocumentVersion.vectors_synced.is_(False))
    if document_id is not None:
        q = q.where(DocumentVersion.document_id == document_id)
    return list(session.scalars(q))


def lock_document(session: Session, document_id: str) -> None:
    session.execute(select(Document.id).where(Document.id == document_id).with_for_update()).first()


def abandon(factory: sessionmaker[Session], store: VectorStore, version_id: str) -> bool:
    """Undo a version that never became active: its invisible points, its pending row, and its document if it
    has no other version. False if there was nothing to undo (it became active meanwhile) or undoing failed."""
    try:
        with transaction(factory) as session:
            doc_id = session.scalar(select(DocumentVersion.document_id).where(DocumentVersion.id == version_id))
            v = None
            if doc_id is not None:
                # The lock step C takes: the ingest writing this version either activated it before (we leave
                # it), or finds its row gone after our commit and fails, so no active version loses its points.
                lock_document(session, doc_id)
                v = session.get(DocumentVersion, version_id, with_for_update=True, populate_existing=True)
                if v is not None and v.status != "pending":
                    return False
            store.delete(Selector(version_ids=(version_id,)))
            if v is not None:
                session.delete(v)
                session.flush()
                _drop_empty_document(session, v.document_id)
        return True
    except Exception:  # repair() will finish this on a later run
        log.exception("ingest.abandon_failed version=%s", version_id)
        return False


def _drop_empty_document(session: Session, document_id: str) -> None:
    """A document whose only version was abandoned never had content: it goes too, rather than being listed
    with no versions."""
    if session.scalar(select(DocumentVersion.id).where(DocumentVersion.document_id == document_id).limit(1)) is None:
        doc = session.get(Document, document_id)
        if doc is not None:
            session.delete(doc)


def sync_versions(
    factory: sessionmaker[Session], store: VectorStore, version_ids: Sequence[str], *, include_retracted: bool = False
) -> None:
    """Make the vector payload of these versions match SQL, then mark them synced.

    A batch's rows are locked (in id order) before they are read, and stay locked over the patch until they are
    marked synced: no other writer (a newer ingest superseding one, a retraction or a restore) changes them in
    between, so a patch never carries a state SQL no longer holds; a failure (the store, the process) rolls the
    mark back and leaves them unsynced for repair(). (Copying a state read earlier and re-checking it after the
    patch could be interrupted after a newer ingest had marked the row synced, leaving a superseded version
    current in the vectors for good.) Versions that close are patched before versions that open: a search
    between two patches may miss a document (fail closed), never see two of its versions current (memory.search
    checks SQL's too). On SQLite the lock is the database's write lock, held for a batch's patches.

    The retracted flag belongs to retraction and restore, which patch it themselves; an ingest copying it
    would briefly show a version whose retraction is patched but not yet committed, so only `repair()`,
    restore, and an ingest for the versions it found left unsynced by them (`include_retracted=True`) copy it."""
    ids = sorted(set(version_ids))
    for start in range(0, len(ids), SYNC_BATCH):
        batch = ids[start:start + SYNC_BATCH]
        with transaction(factory) as session:
            rows = session.scalars(
                select(DocumentVersion).where(DocumentVersion.id.in_(batch)).order_by(DocumentVersion.id)
                .with_for_update().execution_options(populate_existing=True)).all()
            for v in sorted(rows, key=lambda v: closing_first(v.valid_to, v.id)):
                st = _state(v, include_retracted)
                store.patch(Selector(version_ids=(v.id,)), PayloadPatch(
                    committed=True, valid_from=st.valid_from, valid_to=st.valid_to, retracted=st.retracted,
                ), durable=False)
            store.flush()  # once per batch; the WAL already holds every patch
            for v in rows:
                v.vectors_synced = True


def closing_first(valid_to: float, version_id: str) -> tuple[bool, str]:
    """The order versions are patched in: those that close (a bounded validity) before those that open."""
    return valid_to >= OPEN_END, version_id


def _state(v: DocumentVersion, include_retracted: bool) -> _PayloadState:
    return _PayloadState(v.status, v.valid_from, v.valid_to,
                         (v.retracted_at is not None) if include_retracted else None)


def repair(
    factory: sessionmaker[Session], store: VectorStore, *, pending_grace_s: float = PENDING_GRACE_S
) -> dict[str, int]:
    """Finish or undo whatever a crash interrupted: versions left pending (abandoned) or unsynced (their SQL
    state copied onto the vectors), and source access changes left narrowed (`sources.settle_access`). Safe to
    run at every start, on every replica: a version pending for less than `pending_grace_s` may be another
    replica's live ingest, and is left to it."""
    cutoff = utcnow() - timedelta(seconds=pending_grace_s)
    with factory() as session:
        pending = list(session.execute(
            select(DocumentVersion.id).where(DocumentVersion.status == "pending",
                                             DocumentVersion.ingested_at < cutoff)).scalars())
        unsynced = [vid for vid in unsynced_versions(session) if vid not in REVEALING]
    abandoned = sum(1 for vid in pending if abandon(factory, store, vid))
    if unsynced:
        sync_versions(factory, store, unsynced, include_retracted=True)
    if abandoned or unsynced:
        log.warning("ingest.repaired pending=%d unsynced=%d", abandoned, len(unsynced))
    republished = sources.settle_access(factory, store)  # source access changes left narrowed
    resynced = settle_retractions(factory, store)
    return {"abandoned": abandoned, "synced": len(unsynced), "republished": len(republished),
            "retractions_resynced": len(resynced)}


# Versions retracted or restored, most recently first (each a scan of its partial index; no status clause, which
# SQLite's planner would take the status index for), and two points of one: a chunk's point and a masked twin,
# if the version has one (on a Qdrant cluster a version's points, its twins among them, may live on other shards,
# and a patch can fail on some shards only). Only versions a search can reach are retracted or restored.
_RECENTLY_RETRACTED = (
    select(DocumentVersion.id).where(DocumentVersion.retracted_at.is_not(None))
    .order_by(DocumentVersion.retracted_at.desc()).limit(bindparam("n"))
)
_RECENTLY_RESTORED = (
    select(DocumentVersion.id).where(DocumentVersion.restored_at.is_not(None), DocumentVersion.retracted_at.is_(None))
    .order_by(DocumentVersion.restored_at.desc()).limit(bindparam("n"))
)
_VERSION_POINT = select(Chunk.point_id).where(Chunk.version_id == bindparam("version_id")).limit(1)
_VERSION_TWIN = (
    select(Chunk.masked_point_id)
    .where(Chunk.version_id == bindparam("version_id"), Chunk.masked_point_id.is_not(None)).limit(1)
)


def settle_retractions(
    factory: sessionmaker[Session], store: VectorStore, *, recent: int = RETRACTION_CHECKS
) -> list[str]:
    """Copy SQL's retraction onto the vectors of the recently retracted or restored versions that do not carry it, and
    return their ids. A retraction patches its vectors before it commits and a restore after, and either can be left
    half done with its version marked synced: a restore whose reveal never ran (a crash) after a concurrent ingest's
    step D had marked the version synced (hidden, and nothing left to reveal it), a retraction of a restored version
    whose commit failed after its patch (hidden while SQL serves it), or a patch a Qdrant cluster applied on some
    shards only (points that pass the filter although SQL holds their retraction: the search drops them at render,
    but they take top_k slots). Two sampled points of each of the `recent` latest retractions and as many restores
    are compared with SQL; versions marked unsynced are repair()'s own work. (A failed retraction of a version never
    retracted before leaves no trace in SQL to check: retracting again or restoring settles it.)

    A mismatch is confirmed under the version's row lock, which a retraction holds from its SQL write to its commit
    (memory.retraction), so one in flight is never taken for stale: it commits first, and is then read. A confirmed
    version is marked unsynced in that transaction (a crash leaves it to the next repair) and synced as repair()
    syncs, the retracted flag included."""
    with factory() as session:
        expected = {vid: True for vid in session.scalars(_RECENTLY_RETRACTED, {"n": recent})}
        expected.update({vid: False for vid in session.scalars(_RECENTLY_RESTORED, {"n": recent})})
        samples = {pid: vid for vid in expected
                   for pid in (session.scalar(_VERSION_POINT, {"version_id": vid}),
                               session.scalar(_VERSION_TWIN, {"version_id": vid})) if pid is not None}
    suspects = sorted({samples[p.id] for p in store.retrieve(list(samples))
                       if p.payload.retracted != expected[samples[p.id]]})
    stale = []
    if suspects:
        with transaction(factory) as session:
            for vid in suspects:  # id order: the order sync_versions locks rows in
                row = session.get(DocumentVersion, vid, with_for_update=True, populate_existing=True)
                if row is None or row.status not in REACHABLE_STATUSES or not row.vectors_synced:
                    continue  # gone, or unsynced: repair() syncs it
                retracted = row.retracted_at is not None
                if any(p.payload.retracted != retracted
                       for p in store.retrieve([pid for pid, v in samples.items() if v == vid])):
                    row.vectors_synced = False
                    stale.append(vid)
    if stale:
        log.warning("vectors.retraction_resync versions=%d", len(stale))
        sync_versions(factory, store, stale, include_retracted=True)
    return stale
