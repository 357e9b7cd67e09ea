"""Backfill masked twins for personal chunks stored before twins existed (`memory backfill-twins`).

A chunk with personal data is served to a caller who reads it masked only through its masked twin (the vector
of its masked text: memory.stores.base), so a chunk stored without one is not served to such callers at all
(fail closed) until this runs. Per batch of such chunks (keyset order by chunk id, so a run always ends):

  1. the masked text (classifiers.masking over the chunk's stored spans: what the caller is served), embedded
     through the content-addressed cache like an ingest's;
  2. the twin point upserted *uncommitted* (`committed=0`: no search filter admits it) with a copy of the chunk's
     point's payload (flagged), then that payload read again until it matches the copy: a retraction or access
     change that patched the chunk's point between the read and the upsert is copied too (one that runs after
     the upsert patches the twin itself, by version or source);
  3. SQL, in one transaction per batch (the versions' rows locked in id order): `chunks.masked_point_id` set,
     only for a chunk SQL still holds personal (a relabel may have changed it) and a twin whose point is there,
     and the chunks' versions that were marked synced marked unsynced (the crash breadcrumb for step 4). This
     run's twins that no chunk names (unsettled, or no longer personal) are deleted under the same locks, so
     never one another run has named since;
  4. the twin points alone committed with their version's validity from SQL (`_commit_twins`: read and patched
     under the versions' row locks, as ingestion's step D does), and the versions marked synced again. The
     versions' other points are not patched (a patch moves a point out of its indexed segment).

A crash before 3 leaves twins that no row names and no filter admits; the next run stores them again under the
same derived ids and names them (meanwhile, a sync of their version by anything else, such as a restore's
reveal or a supersede, commits them too: they are then admitted and dropped at render, taking a `top_k` slot
until the next run). A crash between 3 and 4 leaves named, uncommitted twins (their chunks are not served to
callers who read them masked: fail closed) in versions marked unsynced, which `vector_sync.repair()` (at start,
on the API's timer) syncs whole.

Idempotent: chunks that have a twin are never selected again. Chunks embedded with another model than the
configured one, or whose point is missing from the store, are skipped and counted (re-ingest them, or run
`memory repair`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from classifiers.masking import mask
from ingest.embedders import Embedder, EmbeddingCache
from memory import audit
from memory.db import transaction
from memory.ingestion import masked_point_id_for
from memory.metrics import CHUNKS_WITHOUT_TWIN
from memory.models import REACHABLE_STATUSES, Chunk, DocumentVersion, PiiSpan
from memory.stores.base import ChunkPayload, PayloadPatch, Selector, VectorPoint, VectorStore
from memory.vector_sync import REVEALING, closing_first

log = logging.getLogger(__name__)

_SETTLE_ROUNDS = 5
_CHUNKS = cast(Table, Chunk.__table__)
# Named only on a chunk SQL still holds personal (a relabel may have made it not personal since it was read).
_NAME_TWIN = (
    update(_CHUNKS)
    .where(_CHUNKS.c.id == bindparam("cid"), _CHUNKS.c.masked_point_id.is_(None), _CHUNKS.c.personal.is_(True))
    .values(masked_point_id=bindparam("mid"))
)


def _uncommitted_twin(payload: ChunkPayload) -> ChunkPayload:
    """The payload a backfilled twin is stored with until its version is synced (step 4): no filter admits it."""
    return dataclasses.replace(payload.twin(), committed=False)


class _Lacking(NamedTuple):
    """A personal chunk without a twin, as the backfill reads it."""

    id: str
    point_id: str
    version_id: str
    text: str
    embedding_model: str


@dataclass
class TwinBackfill:
    """What a run did: twins stored, and personal chunks left without one (with why)."""

    stored: int = 0
    embedded: int = 0  # masked texts embedded now (the others came from the cache)
    other_model: int = 0  # the chunk's version was embedded with another model than the configured one
    point_missing: int = 0  # the chunk's own point is not in the vector store
    # dropped: its point kept changing while the twin was written, or it is no longer personal (a relabel); the
    # next run tries again if it still lacks one
    unsettled: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"stored": self.stored, "embedded": self.embedded, "other_model": self.other_model,
                "point_missing": self.point_missing, "unsettled": self.unsettled}


def count_lacking(session: Session) -> int:
    """Personal chunks without a masked twin (not served to callers who read them masked)."""
    return int(session.scalar(select(func.count()).select_from(Chunk).where(
        Chunk.personal.is_(True), Chunk.masked_point_id.is_(None))) or 0)


def backfill(
    factory: sessionmaker[Session], store: VectorStore, embedder: Embedder, cache: EmbeddingCache | None, *,
    batch: int = 256,
) -> TwinBackfill:
    """Store the masked twin of every personal chunk that lacks one (see the module docstring)."""
    if batch < 1:
        raise ValueError("batch must be positive")
    report, after = TwinBackfill(), ""
    while True:
        with factory() as session:
            rows = [_Lacking(*r) for r in session.execute(
                select(Chunk.id, Chunk.point_id, Chunk.version_id, Chunk.text, DocumentVersion.embedding_model)
                .join(DocumentVersion, DocumentVersion.id == Chunk.version_id)
                .where(Chunk.personal.is_(True), Chunk.masked_point_id.is_(None), Chunk.id > after,
                       DocumentVersion.status.in_(REACHABLE_STATUSES))
                .order_by(Chunk.id).limit(batch)
            )]
            spans: dict[str, list[PiiSpan]] = {}
            for span in session.scalars(select(PiiSpan).where(PiiSpan.chunk_id.in_([r.id for r in rows]))):
                spans.setdefault(span.chunk_id, []).append(span)
            session.expunge_all()
        if not rows:
            break
        after = rows[-1].id
        same_model = [r for r in rows if r.embedding_model == embedder.model_id]
        report.other_model += len(rows) - len(same_model)
        _store_batch(factory, store, embedder, cache, same_model, spans, report)
    log.info("masked_twins.backfill %s", " ".join(f"{k}={v}" for k, v in report.as_dict().items()))
    return report


def run(
    factory: sessionmaker[Session], store: VectorStore, embedder: Embedder, cache: EmbeddingCache | None, *,
    actor: str, batch: int = 256,
) -> dict[str, int]:
    """A backfill run as an operator sees it (`memory backfill-twins`, and the API once at start): its counts,
    plus `lacking`, the personal chunks still without a twin (also the gauge
    `memory_personal_chunks_without_twin`); audited `maintenance.backfill_twins` when it stored any."""
    counts = backfill(factory, store, embedder, cache, batch=batch).as_dict()
    with transaction(factory) as session:
        counts["lacking"] = count_lacking(session)
        if counts["stored"]:
            audit.append(session, audit.Write(action="maintenance.backfill_twins", target="vectors",
                                              details=dict(counts)), principal_id=actor)
    CHUNKS_WITHOUT_TWIN.set(counts["lacking"])
    if counts["lacking"]:
        log.warning("masked_twins.lacking chunks=%d (not served to callers who read them masked)", counts["lacking"])
    return counts


def _store_batch(
    factory: sessionmaker[Session], store: VectorStore, embedder: Embedder, cache: EmbeddingCache | None,
    rows: Sequence[_Lacking], spans: dict[str, list[PiiSpan]], report: TwinBackfill,
) -> None:
    points = {p.id: p for p in store.retrieve([r.point_id for r in rows])}
    present = [r for r in rows if r.point_id in points]
    report.point_missing += len(rows) - len(present)
    if not present:
        return
    vectors = _vectors(embedder, cache, [mask(r.text, spans.get(r.id, [])) for r in present], report)
    twin_of = {r.id: masked_point_id_for(r.id) for r in present}
    twins = {twin_of[r.id]: VectorPoint(twin_of[r.id], vec, _uncommitted_twin(points[r.point_id].payload))
             for r, vec in zip(present, vectors, strict=True)}
    store.upsert(list(twins.values()))
    unsettled = _settle(store, twins, {twin_of[r.id]: r.point_id for r in present})
    versions = sorted({r.version_id for r in present})
    REVEALING.claim(versions)  # this process's repair() leaves them to step 4
    try:
        with transaction(factory) as session:
            # The versions' rows locked in id order (as sync_versions and relabel lock them): naming a twin, and
            # deleting one no chunk names, serialise with every other run's.
            before = _version_states(session, versions)
            ids = [r.id for r in present]
            already = set(session.scalars(
                select(Chunk.id).where(Chunk.id.in_(ids), Chunk.masked_point_id.is_not(None))))
            # Named only if its point is there (another run may have deleted it under this lock) and it settled.
            there = {p.id for p in store.retrieve(sorted(set(twins) - unsettled))}
            to_name = [{"cid": r.id, "mid": twin_of[r.id]} for r in present
                       if r.id not in already and twin_of[r.id] in there]
            if to_name:
                session.connection().execute(_NAME_TWIN, to_name)
            named = set(session.scalars(select(Chunk.id).where(
                Chunk.id.in_(ids), Chunk.masked_point_id.in_(list(twin_of.values())))))
            # Ours that no chunk names (unsettled, or no longer personal: a relabel): never committed, so admitted
            # by no filter; deleted under the lock, so never a twin another run has named since.
            dropped = sorted(twin_of[r.id] for r in present if r.id not in named)
            if dropped:
                store.delete(Selector(point_ids=tuple(dropped)))
            marked = [vid for vid, (_, synced) in before.items() if synced]  # the others are repair()'s already
            if marked:
                session.execute(update(DocumentVersion).where(DocumentVersion.id.in_(marked))
                                .values(vectors_synced=False))
        # Every named twin of the batch is committed, one another run named too (this run's upsert replaced its
        # point with an uncommitted copy), unless that copy never settled: it stays uncommitted (fail closed) in a
        # version left unsynced, which repair() syncs from SQL.
        stale = {r.id for r in present if r.id in already and twin_of[r.id] in unsettled}
        twins_of = {vid: [twin_of[r.id] for r in present if r.version_id == vid and r.id in named - stale]
                    for vid in versions}
        _commit_twins(factory, store, twins_of, {vid: st for vid, (st, _) in before.items()},
                      set(marked) - {r.version_id for r in present if r.id in stale})
    finally:
        REVEALING.release(versions)
    report.stored += len(named - already)
    report.unsettled += len(dropped)


class _VersionState(NamedTuple):
    """What a version's points carry from its SQL row (validity) and what else would make another writer patch
    them (a retraction or restore)."""

    status: str
    valid_from: float
    valid_to: float
    retracted_at: object
    restored_at: object


def _version_states(session: Session, version_ids: Sequence[str]) -> dict[str, tuple[_VersionState, bool]]:
    """Each version's state and whether its vectors are marked synced, the rows locked in id order."""
    rows = session.execute(
        select(DocumentVersion.id, DocumentVersion.status, DocumentVersion.valid_from, DocumentVersion.valid_to,
               DocumentVersion.retracted_at, DocumentVersion.restored_at, DocumentVersion.vectors_synced)
        .where(DocumentVersion.id.in_(version_ids)).order_by(DocumentVersion.id).with_for_update())
    return {r.id: (_VersionState(r.status, r.valid_from, r.valid_to, r.retracted_at, r.restored_at),
                   bool(r.vectors_synced)) for r in rows}


def _commit_twins(
    factory: sessionmaker[Session], store: VectorStore, twins_of: dict[str, list[str]],
    state: dict[str, _VersionState], marked: set[str],
) -> None:
    """Step 4: commit the twins with their version's validity from SQL, patching the twin points only (a patch
    moves a point out of its indexed segment: the versions' other points are left where they are). The version
    rows are locked (in id order) before they are read and over the patch, so no other writer (a newer version
    superseding one, a retraction or restore) commits between the read and the copy, and a failure leaves the
    versions this run marked unsynced for repair(). A version this run marked unsynced (`marked`) is marked
    synced again only if nothing changed it since step 3 read it (`state`): whoever changed it syncs it (or
    repair() does). The retracted flag is not patched: the twin copied its chunk's point's, and a retraction or
    restore patches the twin with the rest of its version. On SQLite the lock is the database's write lock."""
    with transaction(factory) as session:
        now = _version_states(session, sorted(twins_of))
        for vid, (st, _) in sorted(now.items(), key=lambda kv: closing_first(kv[1][0].valid_to, kv[0])):
            if twins_of[vid]:
                store.patch(Selector(point_ids=tuple(twins_of[vid])),
                            PayloadPatch(committed=True, valid_from=st.valid_from, valid_to=st.valid_to),
                            durable=False)
        store.flush()
        unchanged = [vid for vid, (st, synced) in now.items() if vid in marked and not synced and st == state[vid]]
        if unchanged:
            session.execute(update(DocumentVersion).where(DocumentVersion.id.in_(unchanged))
                            .values(vectors_synced=True))


def _settle(store: VectorStore, twins: dict[str, VectorPoint], clear_of: dict[str, str]) -> set[str]:
    """Re-copy the chunk's point's payload onto each twin until the two agree; the twins that never did."""
    pending = set(twins)
    for _ in range(_SETTLE_ROUNDS):
        now = {p.id: p.payload for p in store.retrieve([clear_of[t] for t in sorted(pending)])}
        stale = [VectorPoint(t, twins[t].vector, _uncommitted_twin(now[clear_of[t]])) for t in sorted(pending)
                 if clear_of[t] in now and _uncommitted_twin(now[clear_of[t]]) != twins[t].payload]
        gone = {t for t in pending if clear_of[t] not in now}
        if not stale:
            return gone
        twins.update({p.id: p for p in stale})
        store.upsert(stale)
        pending = {p.id for p in stale} | gone
    return pending


def _vectors(embedder: Embedder, cache: EmbeddingCache | None, texts: list[str], report: TwinBackfill
             ) -> list[Sequence[float]]:
    """One vector per text: from the cache by the text's sha256, the others embedded in one call and cached."""
    shas = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    found = dict(cache.get_many(embedder.model_id, shas)) if cache is not None else {}
    missing = list(dict.fromkeys(s for s in shas if s not in found))
    if missing:
        text_of = dict(zip(shas, texts, strict=True))
        fresh = embedder.embed([text_of[s] for s in missing])
        computed = {s: fresh[i] for i, s in enumerate(missing)}
        if cache is not None:
            cache.put_many(embedder.model_id, computed)
        found.update(computed)
        report.embedded += len(missing)
    return [found[s].tolist() for s in shas]
