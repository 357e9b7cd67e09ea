"""The VectorStore protocol and the backend-neutral access filter both backends translate.

Every point is one chunk occurrence (a chunk of one document version in one source). Its payload holds
exactly what the policy needs to decide visibility, so the decision runs *inside* the vector search.
Flags are stored as int 0/1 (qdrant-edge 0.9.0 never matches boolean filter values).

A chunk with personal data has a second point, its *masked twin*: the same payload with `masked_twin` = 1 and
the vector of its masked text (what a caller who reads it masked is served). A filter admits, per source, either
the chunk's clear point or its twin, never both (memory.stores.filters): a masked caller is ranked on what it
may read, not on the clear text. Every selector (version, source) reaches a chunk's twin with its clear point.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

import numpy as np

# Sentinel for "still valid": an epoch-seconds value far in the future (year 9999).
OPEN_END = 253402300799.0

# Payload field names (all indexed by both backends).
F_CHUNK_ID = "chunk_id"  # keyword
F_SOURCE_ID = "source_id"  # keyword
F_DOCUMENT_ID = "document_id"  # keyword
F_VERSION_ID = "version_id"  # keyword
F_READ_GROUPS = "read_groups"  # keyword[]
F_LABEL = "label"  # integer 0..3 (classifiers.types.Label)
LABEL_MIN = 0  # the lowest label (public); stores never hold a negative label
F_JURISDICTION = "jurisdiction"  # keyword
F_PERSONAL = "personal"  # integer 0/1
F_ENTITY_TYPES = "entity_types"  # keyword[]
F_VALID_FROM = "valid_from"  # float epoch seconds
F_VALID_TO = "valid_to"  # float epoch seconds, OPEN_END while current
F_RETRACTED = "retracted"  # integer 0/1
F_COMMITTED = "committed"  # integer 0/1: 0 until the version's SQL transaction committed
# integer 0/1, derived, never set on its own: committed and valid_to == OPEN_END (the document's current
# version). Latest-only searches (no as_of) test this one field instead of committed + two float ranges,
# which costs the engine about as much as the rest of the filter together.
F_CURRENT = "current"
# integer 0/1: 1 on a personal chunk's masked twin, 0 on every clear point. A filter admits clear points by
# `masked_twin == 0`, so a point lacking the field (written before it existed, before the store's open-time
# backfill) is admitted by no filter at all (fail closed).
F_MASKED_TWIN = "masked_twin"

KEYWORD_FIELDS = (F_CHUNK_ID, F_SOURCE_ID, F_DOCUMENT_ID, F_VERSION_ID, F_READ_GROUPS, F_JURISDICTION, F_ENTITY_TYPES)
INTEGER_FIELDS = (F_LABEL, F_PERSONAL, F_RETRACTED, F_COMMITTED, F_CURRENT, F_MASKED_TWIN)
FLOAT_FIELDS = (F_VALID_FROM, F_VALID_TO)


def is_current(committed: bool, valid_to: float) -> bool:
    return bool(committed) and valid_to >= OPEN_END


@dataclass(frozen=True, slots=True)
class ChunkPayload:
    chunk_id: str
    source_id: str
    document_id: str
    version_id: str
    read_groups: tuple[str, ...]
    label: int
    jurisdiction: str
    personal: bool
    entity_types: tuple[str, ...]
    valid_from: float
    valid_to: float = OPEN_END
    retracted: bool = False
    committed: bool = False
    masked_twin: bool = False  # the point holds the masked text's vector (F_MASKED_TWIN)

    def to_dict(self) -> dict[str, object]:
        return {
            F_CHUNK_ID: self.chunk_id,
            F_SOURCE_ID: self.source_id,
            F_DOCUMENT_ID: self.document_id,
            F_VERSION_ID: self.version_id,
            F_READ_GROUPS: list(self.read_groups),
            F_LABEL: int(self.label),
            F_JURISDICTION: self.jurisdiction,
            F_PERSONAL: int(self.personal),
            F_ENTITY_TYPES: list(self.entity_types),
            F_VALID_FROM: float(self.valid_from),
            F_VALID_TO: float(self.valid_to),
            F_RETRACTED: int(self.retracted),
            F_COMMITTED: int(self.committed),
            F_CURRENT: int(self.current),
            F_MASKED_TWIN: int(self.masked_twin),
        }

    @property
    def current(self) -> bool:
        """The document's current version, once committed (what a latest-only search may serve)."""
        return is_current(self.committed, self.valid_to)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ChunkPayload:
        return cls(
            chunk_id=str(d[F_CHUNK_ID]),
            source_id=str(d[F_SOURCE_ID]),
            document_id=str(d[F_DOCUMENT_ID]),
            version_id=str(d[F_VERSION_ID]),
            read_groups=tuple(str(g) for g in cast(list[object], d.get(F_READ_GROUPS) or [])),
            label=int(d[F_LABEL]),  # type: ignore[call-overload]
            jurisdiction=str(d[F_JURISDICTION]),
            personal=bool(d[F_PERSONAL]),
            entity_types=tuple(str(e) for e in cast(list[object], d.get(F_ENTITY_TYPES) or [])),
            valid_from=float(d[F_VALID_FROM]),  # type: ignore[arg-type]
            valid_to=float(d[F_VALID_TO]),  # type: ignore[arg-type]
            retracted=bool(d[F_RETRACTED]),
            committed=bool(d[F_COMMITTED]),
            masked_twin=bool(d.get(F_MASKED_TWIN, 0)),
        )

    def twin(self) -> ChunkPayload:
        """The payload of this chunk's masked twin: the same fields, flagged."""
        return dataclasses.replace(self, masked_twin=True)


@dataclass(frozen=True, slots=True)
class JurisdictionGrant:
    """Data resident in `data_jurisdiction` may be served; `personal_ok=False` admits only chunks
    without personal data (the deny_personal rule). allow and allow_masked both have personal_ok=True;
    allow_masked also has `masked=True`: its chunks with personal data are admitted through their masked twins
    only, the others as they are."""

    data_jurisdiction: str
    personal_ok: bool
    masked: bool = False

    def admits(self, personal: bool, masked_twin: bool) -> bool:
        """Whether a point (of this jurisdiction) with these two flags passes the grant."""
        if masked_twin:
            return self.personal_ok and self.masked
        return not personal or (self.personal_ok and not self.masked)


@dataclass(frozen=True, slots=True)
class SourceScope:
    """The group, jurisdiction, consent and source-restriction clauses of an `AccessFilter`, resolved against
    SQL's sources when the search was planned: a clear point of a source in `full` matches, and one of a source
    in `non_personal` matches when it holds no personal data (the deny_personal rule, or a consent gate). A
    source in `masked` (allow_masked) admits its chunks without personal data as they are and the masked twins
    of the others. Checked on one indexed field (the point's immutable source id) instead of read groups,
    jurisdiction and consent clauses per visited point: the filtered graph search then costs about what an
    unfiltered one does."""

    full: frozenset[str]
    non_personal: frozenset[str] = frozenset()
    masked: frozenset[str] = frozenset()

    def admits(self, source_id: str, personal: bool, masked_twin: bool = False) -> bool:
        if masked_twin:
            return source_id in self.masked and source_id not in self.full
        return source_id in self.full or (
            not personal and (source_id in self.non_personal or source_id in self.masked))


@dataclass(frozen=True)
class AccessFilter:
    """What a caller may see, as data. The policy module builds it; each backend translates it.

    A point matches iff: committed, not retracted, read_groups ∩ groups ≠ ∅, label <= max_label,
    valid_from <= as_of < valid_to, and some grant admits (jurisdiction, personal). With `latest=True`
    (a search without as_of, at as_of = now) the version clause is "the current version" instead: the
    same points, since a committed version is valid from its activation (<= now) until superseded. `source_ids`, when
    set, further restricts to those sources. A chunk with personal data of a source in `consent_blocked_sources`
    (the search's purpose is not one its data subjects consented to) never matches; empty = no such clause.
    Empty `groups` or empty `grants` match nothing (fail closed). `max_label=None` and `grants=None` switch off
    those two clauses: used only to count *withheld* hits, and such a filter admits the chunks without personal
    data by their clear points and the others by their masked twins only (no count depends on a clear text a
    caller may at most read masked).

    Masked twins (`ChunkPayload.masked_twin`): a twin matches only through a grant or scope that reads its
    jurisdiction or source masked, and a clear point with personal data never does through one; so each chunk
    is admitted once, as its clear point or as its twin.

    `scope` set: the read-group, jurisdiction and consent clauses are replaced by the scope (`SourceScope`:
    those same rules, already applied to each readable source's SQL row); `groups` (empty: nothing) and
    `grants` then only describe the filter, and `consent_blocked_sources` is not read. An empty scope matches
    nothing.
    """

    groups: frozenset[str]
    max_label: int | None
    grants: tuple[JurisdictionGrant, ...] | None
    as_of: float
    source_ids: frozenset[str] | None = None
    latest: bool = False
    consent_blocked_sources: frozenset[str] = frozenset()
    scope: SourceScope | None = None
    # No point of these sources matches (the read-group filter's sources whose floor is above the caller's
    # clearance: policy.effective_label); empty = no such clause. A scope leaves such sources out itself.
    excluded_sources: frozenset[str] = frozenset()

    def matches(self, p: ChunkPayload) -> bool:
        """Reference semantics in Python (used by tests and the explain endpoint, never after search)."""
        if not p.committed or p.retracted:
            return False
        if self.latest and not p.current:
            return False
        if p.source_id in self.excluded_sources:
            return False
        if self.scope is not None:
            return (
                bool(self.groups) and self.scope.admits(p.source_id, p.personal, p.masked_twin)
                and (self.source_ids is None or p.source_id in self.source_ids)
                and (self.max_label is None or p.label <= self.max_label)
                and (self.latest or p.valid_from <= self.as_of < p.valid_to)
            )
        if not (set(p.read_groups) & self.groups):
            return False
        if self.max_label is not None and p.label > self.max_label:
            return False
        if not self.latest and not (p.valid_from <= self.as_of < p.valid_to):
            return False
        if self.source_ids is not None and p.source_id not in self.source_ids:
            return False
        if p.personal and p.source_id in self.consent_blocked_sources:
            return False
        if self.grants is not None:
            return any(g.data_jurisdiction == p.jurisdiction and g.admits(p.personal, p.masked_twin)
                       for g in self.grants)
        return p.masked_twin or not p.personal  # the withheld count: personal chunks through their twins


class Beam(enum.Enum):
    """How wide a graph search looks. SERVE: the configured beam, for hits that are served (filtered
    recall@10 >= 0.99 measured at every selectivity). COUNT: a narrower beam for hits that are only counted,
    never served or named (the withheld counts); scripts/bench_query.py measures its recall separately.
    WIDE: a much wider beam for the served search's second try, when the first one is seen to have missed a
    hit the caller may see (memory.search's recall repair: fragmented filters can strand a graph search)."""

    SERVE = "serve"
    COUNT = "count"
    WIDE = "wide"


@dataclass(frozen=True, slots=True)
class VectorPoint:
    id: str  # UUID string
    vector: Sequence[float]
    payload: ChunkPayload


@dataclass(frozen=True, slots=True)
class ScoredPoint:
    id: str
    score: float
    payload: ChunkPayload


@dataclass(frozen=True, slots=True)
class Ranked:
    """A hit without its payload (rank_batch): what the governed read path needs from a search, since SQL
    renders the served hits and only a few counted ones need their payload (retrieve)."""

    id: str
    score: float


@dataclass(frozen=True, slots=True)
class PayloadPatch:
    """Fields to overwrite on every point matching the selector."""

    valid_from: float | None = None
    valid_to: float | None = None
    retracted: bool | None = None
    committed: bool | None = None
    read_groups: tuple[str, ...] | None = None
    jurisdiction: str | None = None
    label: int | None = None
    personal: bool | None = None

    def __post_init__(self) -> None:
        # `current` is derived from both; patching one alone would leave it stale.
        if (self.committed is None) != (self.valid_to is None):
            raise ValueError("committed and valid_to are patched together (they derive `current`)")

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.valid_from is not None:
            out["valid_from"] = float(self.valid_from)
        if self.valid_to is not None:
            out["valid_to"] = float(self.valid_to)
        if self.retracted is not None:
            out["retracted"] = int(self.retracted)
        if self.committed is not None and self.valid_to is not None:
            out[F_COMMITTED] = int(self.committed)
            out[F_CURRENT] = int(is_current(self.committed, self.valid_to))
        if self.read_groups is not None:
            out["read_groups"] = list(self.read_groups)
        if self.jurisdiction is not None:
            out["jurisdiction"] = self.jurisdiction
        if self.label is not None:
            out[F_LABEL] = int(self.label)
        if self.personal is not None:
            out[F_PERSONAL] = int(self.personal)
        return out


@dataclass(frozen=True, slots=True)
class Selector:
    """Selects points to patch or delete by exactly one of version_id / source_id / point ids."""

    version_ids: tuple[str, ...] = field(default=())
    source_id: str | None = None
    point_ids: tuple[str, ...] = field(default=())


class VectorStore(Protocol):
    """A vector index with payload filtering, implemented on Qdrant Edge (embedded) and Qdrant server."""

    @property
    def dim(self) -> int: ...

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        """Insert or replace points (idempotent by id)."""
        ...

    def search(self, vector: Sequence[float] | np.ndarray, flt: AccessFilter, limit: int) -> list[ScoredPoint]:
        """Top `limit` points by cosine similarity among those matching `flt`, best first."""
        ...

    def search_batch(
        self, vector: Sequence[float] | np.ndarray, filters: Sequence[AccessFilter], limit: int,
        beams: Sequence[Beam] | None = None,
    ) -> list[list[ScoredPoint]]:
        """`search(vector, f, limit)` for each filter, in order, in one store call: the governed read path
        needs the served hits and the withheld count together (one request to a server).
        `beams[i]` is filter i's Beam (default: all SERVE)."""
        ...

    def rank_batch(
        self, vector: Sequence[float] | np.ndarray, filters: Sequence[AccessFilter], limit: int,
        beams: Sequence[Beam] | None = None,
    ) -> list[list[Ranked]]:
        """search_batch without payloads: the same ids and scores in the same order. A payload is the costly
        part of a hit (Edge, 100k points: ~0.45 ms of a ~2.3 ms top-10 search)."""
        ...

    def search_unfiltered(self, vector: Sequence[float] | np.ndarray, limit: int) -> list[ScoredPoint]:
        """Top `limit` without any filter: only for benchmarks' baselines and admin tooling."""
        ...

    def count(self, flt: AccessFilter | None = None) -> int: ...

    def stats(self) -> dict[str, int]:
        """`points`, `indexed_vectors` (Qdrant's count of vectors in HNSW indexes, as built: a payload update
        that moves a point out of its indexed segment does not lower it) and `segments`. On Qdrant Edge, which
        has no background optimizer, new points stay unindexed until `memory optimize` (memory.maintenance
        watches them)."""
        ...

    def patch(self, selector: Selector, patch: PayloadPatch, *, durable: bool = True) -> None:
        """Overwrite payload fields on the selected points; visible to searches on return. `durable=False`
        lets a batch skip the per-call flush (the WAL still has it) and call flush() once at the end."""
        ...

    def delete(self, selector: Selector) -> None: ...

    def retrieve(self, point_ids: Sequence[str]) -> list[ScoredPoint]:
        """Points by id with score 0.0 (missing ids are skipped)."""
        ...

    def flush(self) -> None: ...

    def close(self) -> None: ...
