"""Bring stored chunks to the label map and source floors in force (`memory relabel`, `POST /v1/admin/relabel`).

A chunk's label is max(its source's floor, the label map's label for its entity types), and it holds personal
data when one of its entity types is personal under the map (ingest.pipeline). Both are fixed when the chunk is
stored: a new label-map version (`PUT /v1/policy/labels`) or a changed floor (`PATCH /v1/sources/{id}`) applies
to what is ingested next, and to what is already stored only once this runs. Everything it needs is stored: each
chunk keeps its entity types (its text's and those of the names shown beside it) and its PII spans (for masking).

Per batch of versions a search can reach (keyset by version id, so a version is always relabelled whole):

  1. each chunk's target (label, personal) from the map and its source's floor, and the payloads of its points
     (its clear point and its masked twin, by the twin's derived id as well as SQL's, so a twin a crash left
     unnamed is found);
  2. **tighten**: every point looser than its target in any way (a lower label, or not personal where the target
     is) gets the stricter of the two, before SQL changes: the vectors never admit more than both SQL and the
     target allow, and a crash after this step leaves them stricter (fail closed);
  3. SQL, in one transaction: the chunks' label and personal flag (a chunk not personal names no masked twin),
     their versions' summaries (`max_label`, `has_personal`, which decide whether a citation may measure the
     whole version) and their sources' (`withholdable.recount_source`), and one audit record (`policy.relabel`).
     It locks the sources and then the versions (the order every writer takes), tightens the points once more
     (another run's step 4 may have copied older SQL labels over step 2's), and refuses to commit labels of
     a floor or map no longer in force (409 `floor_changed` / `label_map_changed`: run again);
  4. **settle**: the vectors copied from SQL, read under the versions' row locks so that no relabel commits
     between the read and the copy: the masked twins of chunks SQL holds not personal deleted first, then every
     point set to its chunk's label and flag.

A chunk that became personal has no masked twin yet: until one is stored it is not served to a caller who reads
its source masked (fail closed). The callers (CLI, API: `Container.relabel`) store the missing twins after the
run, and after a run that failed too (earlier batches may have made chunks personal). `label_map_version` on a
version stays the map its ingest applied (a citation records it, and a citation an auditor kept must still
verify); the audit log says which map relabelled which versions, and when.

An ingest that labelled its chunks under a map or floor no longer in force is refused at its commit
(memory.ingestion `_activate`), so a run started after a change sees every version labelled before it.

Idempotent: a run where SQL and the vectors already agree with the targets writes nothing. A crash anywhere leaves
vectors at least as strict as SQL; the next run finishes. Dry run: counts what would change, writes nothing.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import Select, bindparam, exists, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from classifiers.labels import LabelMap
from memory import audit, policy_store, sources, withholdable
from memory.db import transaction
from memory.errors import ConflictError
from memory.ingestion import masked_point_id_for
from memory.models import REACHABLE_STATUSES, Chunk, Document, DocumentVersion, Source
from memory.stores.base import ChunkPayload, PayloadPatch, Selector, VectorStore

log = logging.getLogger(__name__)

DEFAULT_BATCH = 64  # versions per batch (one SQL transaction each)


class Labels(NamedTuple):
    """What a chunk's points carry of its classification."""

    label: int
    personal: bool

    def stricter(self, other: Labels) -> Labels:
        return Labels(max(self.label, other.label), self.personal or other.personal)


class _Chunk(NamedTuple):
    id: str
    point_id: str
    # Where its masked twin may be: the derived id (memory.ingestion.masked_point_id_for), which finds a twin a
    # crash left unnamed, and the one SQL names if that differs.
    twin_ids: tuple[str, ...]
    version_id: str
    source_id: str
    floor: int  # its source's, when the batch was read
    named: bool  # SQL names a masked twin for it
    stored: Labels
    target: Labels

    @property
    def sql_behind(self) -> bool:
        """SQL does not hold the target: its label or flag differ, or it names a twin the target has no use for."""
        return self.stored != self.target or (self.named and not self.target.personal)


def _twin_ids(chunk_id: str, named: str | None) -> tuple[str, ...]:
    derived = masked_point_id_for(chunk_id)
    return (derived,) if named in (None, derived) else (derived, named)


@dataclass
class RelabelReport:
    """What a run did (or, dry, would do)."""

    label_map_version: str = ""
    versions: int = 0  # versions examined
    chunks: int = 0  # their chunks
    versions_relabelled: int = 0  # versions with a chunk whose SQL label or flag changed
    raised: int = 0  # chunks whose label went up
    lowered: int = 0  # ... down
    now_personal: int = 0  # chunks that now hold personal data (their masked twin is stored after the run)
    no_longer_personal: int = 0  # ... that no longer do (their masked twin deleted)
    points_patched: int = 0  # vector points written (both steps; a point behind SQL after a crash counts too)
    points_missing: int = 0  # chunks whose clear point is not in the vector store (`memory repair` / re-ingest)
    # Chunks whose points did not carry what SQL held when the run read them (a crash's leftovers; a dry run says
    # how many a run would copy).
    vectors_behind: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"label_map_version": self.label_map_version, "versions": self.versions, "chunks": self.chunks,
                "versions_relabelled": self.versions_relabelled, "raised": self.raised, "lowered": self.lowered,
                "now_personal": self.now_personal, "no_longer_personal": self.no_longer_personal,
                "points_patched": self.points_patched, "points_missing": self.points_missing,
                "vectors_behind": self.vectors_behind, "dry_run": self.dry_run}


def target(label_map: LabelMap, floor: int, entity_types: Iterable[str]) -> Labels:
    """A chunk's label and flag under `label_map` in a source with this floor (as ingest.pipeline derives them)."""
    types = list(entity_types)
    return Labels(max(int(floor), int(label_map.label_for(types))), label_map.is_personal(types))


def relabel(
    factory: sessionmaker[Session], store: VectorStore, *, actor: str, acting_for: str | None = None,
    source_id: str | None = None, batch: int = DEFAULT_BATCH, dry_run: bool = False,
    on_batch: Callable[[RelabelReport], None] | None = None,
) -> RelabelReport:
    """Relabel every chunk of the versions a search can reach (of one source, or all) under the label map in
    force and their sources' floors (the module docstring has the steps). `on_batch`: called with the report so
    far after each batch has settled (a background job's progress; what it raises stops the run there, every
    batch done left whole)."""
    if batch < 1:
        raise ValueError("batch must be positive")
    with factory() as session:
        if source_id is not None:
            sources.get(session, source_id=source_id)  # source_not_found
        label_map = policy_store.label_map(session)[0]
    report, after = RelabelReport(label_map_version=label_map.version, dry_run=dry_run), ""
    while True:
        with factory() as session:
            version_ids = list(session.scalars(_versions_after(after, source_id, batch)))
            chunks = _chunks(session, version_ids, label_map) if version_ids else []
        if not version_ids:
            break
        after = version_ids[-1]
        report.versions += len(version_ids)
        report.chunks += len(chunks)
        _relabel_batch(factory, store, chunks, label_map, report, actor=actor, acting_for=acting_for)
        if on_batch is not None:
            on_batch(report)
    log.info("relabel.done %s", " ".join(f"{k}={v}" for k, v in report.as_dict().items()))
    return report


def versions_to_examine(session: Session, source_id: str | None = None) -> int:
    """How many versions a run (of one source, or all) examines, as it starts (a job's progress total)."""
    q = select(func.count()).select_from(DocumentVersion).where(DocumentVersion.status.in_(REACHABLE_STATUSES))
    if source_id is not None:
        q = q.join(Document, Document.id == DocumentVersion.document_id).where(Document.source_id == source_id)
    return int(session.scalar(q) or 0)


def chunks_exceed(session: Session, source_id: str, limit: int) -> bool:
    """Whether a run over one source would examine more than `limit` chunks (those of the versions a search can
    reach): counted up to `limit + 1` at most, so a large source costs no more than a small one to ask."""
    reachable = (
        select(Chunk.id).join(DocumentVersion, DocumentVersion.id == Chunk.version_id)
        .where(Chunk.source_id == source_id, DocumentVersion.status.in_(REACHABLE_STATUSES)).limit(limit + 1)
    )
    return int(session.scalar(select(func.count()).select_from(reachable.subquery())) or 0) > limit


def _versions_after(after: str, source_id: str | None, batch: int) -> Select[str]:
    q = select(DocumentVersion.id).where(DocumentVersion.status.in_(REACHABLE_STATUSES), DocumentVersion.id > after)
    if source_id is not None:
        q = q.join(Document, Document.id == DocumentVersion.document_id).where(Document.source_id == source_id)
    return q.order_by(DocumentVersion.id).limit(batch)


def _chunks(session: Session, version_ids: Sequence[str], label_map: LabelMap) -> list[_Chunk]:
    rows = session.execute(
        select(Chunk.id, Chunk.point_id, Chunk.masked_point_id, Chunk.version_id, Chunk.source_id, Chunk.label,
               Chunk.personal, Chunk.entity_types, Source.floor)
        .join(Source, Source.id == Chunk.source_id).where(Chunk.version_id.in_(version_ids)).order_by(Chunk.id))
    return [_Chunk(r.id, r.point_id, _twin_ids(r.id, r.masked_point_id), r.version_id, r.source_id, int(r.floor),
                   r.masked_point_id is not None, Labels(int(r.label), bool(r.personal)),
                   target(label_map, r.floor, r.entity_types or ()))
            for r in rows]


def _relabel_batch(
    factory: sessionmaker[Session], store: VectorStore, chunks: Sequence[_Chunk], label_map: LabelMap,
    report: RelabelReport, *, actor: str, acting_for: str | None,
) -> None:
    payloads = _payloads(store, chunks)
    report.points_missing += sum(1 for c in chunks if c.point_id not in payloads)
    report.vectors_behind += sum(1 for c in chunks if _vectors_differ(c, c.stored, payloads))
    changed = [c for c in chunks if c.sql_behind]
    _count(changed, report)
    behind = changed or [c for c in chunks if _vectors_differ(c, c.target, payloads)]
    if not behind or report.dry_run:
        return
    tightened = _tighten(store, chunks, payloads)
    covered: set[str] = set()
    try:
        if changed:
            _commit(factory, store, changed, label_map, actor=actor, acting_for=acting_for, tightened=tightened)
            covered = {c.version_id for c in changed}
        # The commit's record (`policy.relabel`) covers the versions whose labels changed; the points written for
        # any other version (vectors that were looser or stricter than SQL: a crashed run's leftovers, a failed
        # publish) are audited by the copy (`policy.relabel_sync`).
        report.points_patched += sum(tightened.values()) + _settle(
            factory, store, chunks, audit_as=(actor, acting_for), covered=covered, tightened=tightened)
    except BaseException:
        # The commit was refused (409) or failed, or the copy failed before its record: the points tightened for
        # versions no record names are audited on their own. (A process that dies here leaves that write
        # unrecorded: the vectors only ever got stricter than SQL, and the next run's copy records setting them
        # back.)
        _audit_tightened(factory, {v: n for v, n in tightened.items() if v not in covered},
                         audit_as=(actor, acting_for))
        raise


def _payloads(store: VectorStore, chunks: Sequence[_Chunk]) -> dict[str, ChunkPayload]:
    ids = [pid for c in chunks for pid in (c.point_id, *c.twin_ids)]
    return {p.id: p.payload for p in store.retrieve(ids)}


def _labels(p: ChunkPayload) -> Labels:
    return Labels(int(p.label), bool(p.personal))


def _vectors_differ(c: _Chunk, want: Labels, payloads: dict[str, ChunkPayload]) -> bool:
    """Whether the chunk's points do not carry `want` (or a twin exists where `want` is not personal)."""
    clear = payloads.get(c.point_id)
    if clear is not None and _labels(clear) != want:
        return True
    twins = [payloads[t] for t in c.twin_ids if t in payloads]
    return any(not want.personal or _labels(t) != want for t in twins)


def _tally(changed: Sequence[_Chunk]) -> dict[str, int]:
    """What the SQL changes of a batch do to its chunks (the report's counts and the audit record's)."""
    return {"raised": sum(1 for c in changed if c.target.label > c.stored.label),
            "lowered": sum(1 for c in changed if c.target.label < c.stored.label),
            "now_personal": sum(1 for c in changed if c.target.personal and not c.stored.personal),
            "no_longer_personal": sum(1 for c in changed if c.stored.personal and not c.target.personal)}


def _count(changed: Sequence[_Chunk], report: RelabelReport) -> None:
    for key, n in _tally(changed).items():
        setattr(report, key, getattr(report, key) + n)
    report.versions_relabelled += len({c.version_id for c in changed})


def _tighten(store: VectorStore, chunks: Sequence[_Chunk], payloads: dict[str, ChunkPayload]) -> Counter[str]:
    """Step 2: each point looser than its chunk's target gets the stricter of its own and the target's. The points
    written, by version."""
    groups: dict[Labels, list[str]] = defaultdict(list)
    written: Counter[str] = Counter()
    for c in chunks:
        for pid in (c.point_id, *c.twin_ids):
            if pid in payloads:
                have = _labels(payloads[pid])
                if (strict := have.stricter(c.target)) != have:
                    groups[strict].append(pid)
                    written[c.version_id] += 1
    _patch(store, groups)
    return written


def _patch(store: VectorStore, groups: dict[Labels, list[str]]) -> int:
    for labels, ids in sorted(groups.items()):
        store.patch(Selector(point_ids=tuple(sorted(ids))), PayloadPatch(label=labels.label, personal=labels.personal),
                    durable=False)
    if groups:
        store.flush()
    return sum(len(ids) for ids in groups.values())


_SET_LABELS = update(Chunk).where(Chunk.id == bindparam("cid")).values(label=bindparam("label"),
                                                                        personal=bindparam("personal"))
# A chunk not personal names no twin (its twin point is deleted in step 4); a chunk still personal keeps whatever
# twin it has, which a concurrent backfill may have named since the batch was read (memory.masked_twins names a
# twin only for a chunk SQL holds personal).
_SET_NOT_PERSONAL = update(Chunk).where(Chunk.id == bindparam("cid")).values(
    label=bindparam("label"), personal=False, masked_point_id=None)


def _commit(
    factory: sessionmaker[Session], store: VectorStore, changed: Sequence[_Chunk], label_map: LabelMap, *,
    actor: str, acting_for: str | None, tightened: Counter[str],
) -> None:
    """Step 3: the chunks' new labels in SQL, with their versions' and sources' summaries and an audit record.
    Under the versions' locks, the points are tightened once more before SQL commits: another run's step 4
    (which copies SQL under the same locks) may have set them back to the labels SQL held before this commit,
    after this run's step 2 (two runs under different label maps). The points written then are added to
    `tightened` (by version) at once, so a refused commit still audits them."""
    versions = sorted({c.version_id for c in changed})
    floors = {c.source_id: c.floor for c in changed}
    with transaction(factory) as session:
        # The order every writer locks in: sources, then versions (memory.retraction).
        locked = dict(session.execute(select(Source.id, Source.floor).where(Source.id.in_(floors))
                                      .order_by(Source.id).with_for_update()).tuples().all())
        session.execute(select(DocumentVersion.id).where(DocumentVersion.id.in_(versions))
                        .order_by(DocumentVersion.id).with_for_update()).all()
        # Never commit labels from a floor no longer in force (a floor change locks its source row).
        if locked != floors:
            raise ConflictError("a source's floor changed while relabelling; run relabel again",
                                code="floor_changed")
        tightened.update(_tighten(store, changed, _payloads(store, changed)))
        personal = [{"cid": c.id, "label": c.target.label, "personal": True} for c in changed if c.target.personal]
        if personal:
            session.connection().execute(_SET_LABELS, personal)
        other = [{"cid": c.id, "label": c.target.label} for c in changed if not c.target.personal]
        if other:
            session.connection().execute(_SET_NOT_PERSONAL, other)
        for vid in versions:
            of_version = (Chunk.version_id == vid,)
            session.execute(update(DocumentVersion).where(DocumentVersion.id == vid).values(
                max_label=select(func.max(Chunk.label)).where(*of_version).scalar_subquery(),
                has_personal=exists().where(*of_version, Chunk.personal.is_(True)),
            ))
        for sid in sorted({c.source_id for c in changed}):
            withholdable.recount_source(session, source_id=sid)
        audit.append(session, audit.Write(action="policy.relabel", target=f"label_map@{label_map.version}", details={
            "label_map_version": label_map.version, "versions": versions, "chunks": len(changed), **_tally(changed),
        }), principal_id=actor, acting_for=acting_for)
        # Nor from a map no longer in force. Read after the audit append: a label-map change appends too, so it
        # either committed before this read (seen: refused) or waits for this commit (and a run after it sees
        # these labels to change). Before the append, a change could commit between the read and this commit.
        if policy_store.label_map(session)[0].version != label_map.version:  # by content, as ingest compares
            raise ConflictError("the label map changed while relabelling; run relabel again to apply the new one",
                                code="label_map_changed")


def _audit_tightened(factory: sessionmaker[Session], tightened: Mapping[str, int], *,
                     audit_as: tuple[str, str | None]) -> None:
    """The points step 2 wrote, audited on their own (`policy.relabel_sync`) when the batch's commit did not
    happen. Best effort: the commit's own error is the one raised."""
    if not tightened:
        return
    try:
        with transaction(factory) as session:
            _append_sync(session, dict(tightened), {}, sorted(tightened), audit_as)
    except Exception as exc:
        log.error("relabel.audit_failed error=%s", type(exc).__name__)


def _append_sync(session: Session, points: Mapping[str, int], twins_deleted: Mapping[str, int],
                 versions: Sequence[str], audit_as: tuple[str, str | None]) -> None:
    audit.append(session, audit.Write(action="policy.relabel_sync", target="vector_store", details={
        "versions": list(versions), "points": sum(points.get(v, 0) for v in versions),
        "twins_deleted": sum(twins_deleted.get(v, 0) for v in versions)}),
        principal_id=audit_as[0], acting_for=audit_as[1])


def _settle(factory: sessionmaker[Session], store: VectorStore, chunks: Sequence[_Chunk], *,
            audit_as: tuple[str, str | None] | None = None, covered: Set[str] = frozenset(),
            tightened: Mapping[str, int] | None = None) -> int:
    """Step 4: the chunks' points copied from SQL, read with their versions' rows locked (the lock a relabel's
    commit takes), so no commit lands between the read and the copy: the copy is never looser than SQL, a crash
    included. A chunk SQL holds not personal loses its twin before its clear point is loosened. Points written.
    `audit_as` (actor, acting for): the points written for versions outside `covered` (those whose SQL change a
    `policy.relabel` record names), here and by step 2 (`tightened`, by version), are audited
    (`policy.relabel_sync`: the versions, the points) in this transaction.
    (On SQLite the lock is the database's write lock: writers, a search's audit append among them, wait for the
    batch's copy.)"""
    versions = sorted({c.version_id for c in chunks})
    with transaction(factory) as session:
        session.execute(select(DocumentVersion.id).where(DocumentVersion.id.in_(versions))
                        .order_by(DocumentVersion.id).with_for_update()).all()
        committed = {r.id: Labels(int(r.label), bool(r.personal)) for r in session.execute(
            select(Chunk.id, Chunk.label, Chunk.personal).where(Chunk.id.in_([c.id for c in chunks])))}
        current = [c._replace(target=committed[c.id]) for c in chunks if c.id in committed]
        payloads = _payloads(store, current)
        points: Counter[str] = Counter(tightened or {})
        twins_deleted: Counter[str] = Counter()
        stale_twins: list[str] = []
        for c in current:
            if not c.target.personal:
                gone = [t for t in c.twin_ids if t in payloads]
                stale_twins += gone
                twins_deleted[c.version_id] += len(gone)
        if stale_twins:
            store.delete(Selector(point_ids=tuple(sorted(stale_twins))))
        groups: dict[Labels, list[str]] = defaultdict(list)
        for c in current:
            for pid in (c.point_id, *c.twin_ids) if c.target.personal else (c.point_id,):
                if pid in payloads and _labels(payloads[pid]) != c.target:
                    groups[c.target].append(pid)
                    points[c.version_id] += 1
        written = len(stale_twins) + _patch(store, groups)
        points.update(twins_deleted)
        uncovered = sorted(v for v, n in points.items() if n and v not in covered)
        if uncovered and audit_as is not None:
            _append_sync(session, points, twins_deleted, uncovered, audit_as)
        return written
