"""The governed read path: one filter, applied inside the vector search, then per-caller rendering,
citations, a policy explanation, and an audit record in the caller's transaction.

The plan reads the sources the caller's groups can read from SQL (memory.readable_sources) and resolves the
read-group, jurisdiction and consent rules per source: the filter then checks one indexed field per visited
point, the source id, with the label and version clauses (policy.build_filter, `SourceScope`). A source change
(read groups, jurisdiction, floor, consent) or a version superseded between the plan and the hits' SQL read is
caught on those rows (the hit is dropped). A caller who can read more sources than SCOPED_SOURCES_LIMIT is
filtered on the read groups and jurisdiction the vectors carry.

A source's floor holds at query time (policy.effective_label): a raised floor applies from its commit, before the
relabel that brings its stored chunks to it. A source above the caller's clearance is out of the filter's scope;
SQL's rows apply the floor to every label this module decides on (render, withheld counts, whole versions).

The request's `purpose` decides consent (memory.consent): personal data of a source that requires consent
is served only when the purpose is one its data subjects consented to; otherwise it is withheld with reason
`consent`, inside the filter like every other rule.

A second search over what the caller's groups could read finds the withheld hits to count. It also shows
when the served graph search was stranded (a hit no rule withholds ranks above the last served one): the
served search then runs once more under the same filter with a wider beam (recall repair, Beam.WIDE).

SQL wins over the vectors' payload at render: a hit whose row SQL does not admit (a change caught mid-way, a
patch a shard missed) is dropped, and its top_k slot is filled by the same filtered search asked for more,
skipping what was dropped (`_refill`); the withheld count then follows what was finally served.

A chunk with personal data that the caller reads masked (allow_masked) is searched through its masked twin,
the vector of its masked text (memory.stores.base): its score is the twin's, so it tells nothing of the clear
text. SQL maps a twin's point id to its chunk's row (`_rows`), and the hit is served masked or not at all. The
count search ranks a chunk with personal data through its twin too, whoever asks: a withheld count never
depends on a personal chunk's clear text (else a caller allowed the masked text could search again with a purpose
its data subjects did not consent to and read the count as a yes/no on a guessed name). A candidate served
through its twin is the same chunk. Recall repair compares like with like: a non-personal candidate's score with
the served floor, a personal one's only when the caller reads it masked (both searches ranked its twin).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
from sqlalchemy import Table, bindparam, exists, or_, select
from sqlalchemy.orm import Session

from classifiers.types import Label
from memory import audit, consent, policy, policy_store, readable_sources, withholdable
from memory.clock import aware
from memory.errors import ValidationFailedError
from memory.models import REACHABLE_STATUSES, Chunk, DocumentVersion, PiiSpan, Source, SourceReadGroup
from memory.policy_cache import PolicyReads
from memory.provenance import Citation
from memory.rendering import mask
from memory.stores.base import AccessFilter, Beam, Ranked, VectorStore, is_current

log = logging.getLogger(__name__)

# A caller who can read more sources than this is filtered on read groups (memory.readable_sources).
SCOPED_SOURCES_LIMIT = readable_sources.DEFAULT_LIMIT
QUERY_MAX = 4000  # characters in a query, whatever the edge (the API's SearchIn holds the same)
# The plan's policy reads when no process cache is given (the CLI's one-off search): straight from SQL.
_FROM_SQL = PolicyReads(maxsize=0)


class QueryEmbedder(Protocol):
    @property
    def model_id(self) -> str: ...

    def embed_query(self, text: str) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...


@dataclass(frozen=True)
class SearchRequest:
    query: str
    top_k: int = 10
    as_of: float | None = None
    source_ids: tuple[str, ...] | None = None
    purpose: str | None = None  # a slug; personal data of consent-gated sources needs a consented one


@dataclass(frozen=True)
class Hit:
    score: float
    text: str
    label: str
    entity_types: list[str]
    masked: bool
    citation: Citation
    # False: masked, or served in clear from a version this caller may not see whole, so the citation carries
    # no measure of the version's clear text (provenance.VERSION_MEASURE_FIELDS).
    whole_version: bool


@dataclass(frozen=True)
class Withheld:
    reason: str  # clearance | jurisdiction | consent
    count: int
    source_id: str
    steward: str


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    effective_principal: dict[str, Any]
    acting_for_chain: list[str]
    rules_applied: dict[str, Any]
    withheld: list[Withheld]
    audit_seq: int
    latency_ms: float
    timings_ms: dict[str, float] = field(default_factory=dict)
    # The served search was run a second time with a wider beam: the first missed a hit the caller may see.
    recall_repaired: bool = False
    # Hits the vectors' payload admitted and SQL did not (dropped at render), whose top_k slots were filled again.
    refilled: int = 0


def query_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class SearchPlan:
    """What a search reads from SQL before its vectors: the rules and consent in force, the filters, and whether
    a withheld-count search runs (`plan`). The API makes it in the transaction that authenticates the caller
    and commits it before the query embeds, so no SQL transaction is open while the model and the vector engine
    run (on SQLite the write lock is then held only to render the hits and append the audit record), and the
    policy reads follow the authentication's reads instead of the forward pass, which evicts the CPU caches."""

    request: SearchRequest
    who: policy.EffectivePrincipal
    as_of: float
    purpose: str | None
    rules: policy.TransferRules
    blocked: consent.ConsentBlock
    flt: AccessFilter
    readable: AccessFilter | None  # None: no readable source could have anything withheld; no count search
    started: float  # time.perf_counter() when the search began: the audited latency covers the plan
    policy_ms: float


def plan(
    session: Session, *, who: policy.EffectivePrincipal, request: SearchRequest, max_top_k: int = 100,
    now: float | None = None, reads: PolicyReads | None = None,
) -> SearchPlan:
    """Validate the request and read the policy it runs under (see SearchPlan). `reads`: the process's policy
    reads (memory.policy_cache), kept while the policy epoch holds; None reads them from SQL."""
    started = time.perf_counter()
    as_of, purpose = _validated(request, max_top_k, now)
    return _read_policy(session, who, request, as_of, purpose, started, reads)


def _validated(request: SearchRequest, max_top_k: int, now: float | None) -> tuple[float, str | None]:
    if not request.query.strip():
        raise ValidationFailedError("query must not be empty", code="empty_query")
    if len(request.query) > QUERY_MAX:
        raise ValidationFailedError(f"query is longer than {QUERY_MAX} characters", code="query_too_long")
    if not 1 <= request.top_k <= max_top_k:
        raise ValidationFailedError(f"top_k must be within 1..{max_top_k}", code="invalid_top_k")
    current = time.time() if now is None else now
    as_of = current if request.as_of is None else request.as_of
    if as_of > current + 1:
        raise ValidationFailedError("as_of is in the future", code="as_of_in_future")
    return as_of, consent.normalise_purpose(request.purpose) if request.purpose is not None else None


def _read_policy(
    session: Session, who: policy.EffectivePrincipal, request: SearchRequest, as_of: float, purpose: str | None,
    started: float, reads: PolicyReads | None = None,
) -> SearchPlan:
    t = time.perf_counter()
    latest = request.as_of is None
    # The rules in force now, whatever as_of: time travel chooses document versions, never older (possibly
    # looser) policy, like the caller's groups and clearance, which are always the current ones. And one read
    # of the sources the caller's groups can read: the filter's scope, the consent gate and whether anything
    # could be withheld (memory.readable_sources); past its limit, the read-group filter instead.
    rules, readable = (reads or _FROM_SQL).read(session, groups=who.groups, source_ids=request.source_ids,
                                                limit=SCOPED_SOURCES_LIMIT)
    if readable is not None:
        blocked = readable_sources.consent_block(readable, purpose)
        counting = withholdable.could_withhold_among(who, rules, readable, blocked)
        scope: dict[str, str] | None = {s.id: s.jurisdiction for s in readable}
        above = policy.floors_above(who, {s.id: s.floor for s in readable})
    else:
        blocked = consent.blocked_sources(session, purpose=purpose, groups=who.groups, source_ids=request.source_ids)
        counting = withholdable.could_withhold(session, who=who, rules=rules, source_ids=request.source_ids,
                                               consent=blocked)
        scope = None
        # Past the readable sources' limit: the sources above the caller's clearance by one statement (an index
        # seek on the floor).
        above = readable_sources.floors_above(session, groups=who.groups, clearance=who.clearance)
    flt = policy.build_filter(who, rules, as_of=as_of, source_ids=request.source_ids, latest=latest,
                              consent_blocked=blocked.sources, readable=scope, above_clearance=above)
    # No readable source holds anything the policy could withhold from this caller: nothing to count, so no
    # count search (what is served never depends on this).
    count_flt = policy.readable_filter(who, as_of=as_of, source_ids=request.source_ids, latest=latest,
                                       readable=scope) if counting else None
    return SearchPlan(request=request, who=who, as_of=as_of, purpose=purpose, rules=rules, blocked=blocked,
                      flt=flt, readable=count_flt, started=started, policy_ms=(time.perf_counter() - t) * 1000)


def search(
    session: Session,
    *,
    store: VectorStore,
    embedder: QueryEmbedder,
    who: policy.EffectivePrincipal,
    request: SearchRequest,
    max_top_k: int = 100,
    now: float | None = None,
    planned: SearchPlan | None = None,
) -> SearchResult:
    """The governed search. `planned`: this search's plan (`plan`), made and committed earlier; without one
    the policy is read here, after the query embeds (on SQLite every transaction holds the write lock from its
    first statement, BEGIN IMMEDIATE, and the model's ~10 ms need not serialise concurrent searches)."""
    if planned is not None and (planned.request != request or planned.who != who):
        raise ValueError("the search plan was made for another request or caller")
    started = planned.started if planned is not None else time.perf_counter()
    if planned is None:
        as_of, purpose = _validated(request, max_top_k, now)
    t_embed = time.perf_counter()
    vector = embedder.embed_query(request.query)
    t_search = time.perf_counter()
    if planned is None:
        planned = _read_policy(session, who, request, as_of, purpose, started)
    served = _serve(session, store, vector, planned)
    t_audit = time.perf_counter()
    if session.get_bind().dialect.name != "sqlite":
        # The chain head's lock, once, ahead of this search's append: every retraction and policy change appends
        # under it too, so one that commits after the reads below waits for this search's record. (On SQLite this
        # transaction has held the database's write lock since its first statement.)
        audit.lock_head(session)
    if _rules_changed_since(session, planned):
        # An admin's transfer-rule change committed after the plan read the rules: this search must not serve
        # under the rules it replaced (its record would follow the change's). Planned again from SQL, now that
        # the change is read (on PostgreSQL under the chain head's lock, which every policy change's audit append
        # takes: none can commit until this search has), and served again. Rare: rules change by an admin's hand.
        log.warning("search.rules_changed planned_version=%d", planned.rules.version)
        planned = _read_policy(session, who, request, planned.as_of, planned.purpose, started)
        served = _serve(session, store, vector, planned)
    rules, flt, blocked, purpose, as_of = planned.rules, planned.flt, planned.blocked, planned.purpose, planned.as_of
    latest, counting, withheld = request.as_of is None, planned.readable is not None, served.withheld
    hits = _unless_retracted_since(session, served.hits)
    latency_ms = (time.perf_counter() - started) * 1000
    tokens = embedder.count_tokens(request.query)
    rules_applied = {
        "groups": sorted(flt.groups),
        "max_label": Label(flt.max_label or 0).slug,
        "caller_jurisdictions": list(who.jurisdictions),
        "jurisdiction_grants": [
            # masked: its personal data is served masked, searched through the chunks' masked twins.
            {"data": g.data_jurisdiction, "personal": g.personal_ok, "masked": g.masked} for g in (flt.grants or ())
        ],
        "transfer_rules_version": rules.version,
        "as_of": as_of,
        "latest_only": latest,
        "source_ids": sorted(flt.source_ids) if flt.source_ids is not None else None,
        "excludes_retracted": True,
        "purpose": purpose,
        # Only sources the caller's groups can read: the filter also holds the others, never named.
        "consent_blocked_sources": sorted(blocked.readable),
        # False: no readable source could have anything withheld, so none was searched for (withheld is empty).
        "withheld_counted": counting,
    }
    record = audit.append(
        session,
        audit.SearchPerformed(
            query_sha256=query_sha256(request.query), top_k=request.top_k, as_of=as_of,
            filter_summary=rules_applied, chunk_ids=[h.citation.chunk_id for h in hits],
            masked_chunk_ids=[h.citation.chunk_id for h in hits if h.masked],
            partial_chunk_ids=[h.citation.chunk_id for h in hits if not h.masked and not h.whole_version],
            withheld={f"{w.source_id}:{w.reason}": w.count for w in withheld},
            latency_ms=round(latency_ms, 3), embedding_tokens=tokens,
        ),
        principal_id=who.principal_id, acting_for=who.acting_for,
    )
    return SearchResult(
        hits=hits,
        effective_principal={
            "principal_id": who.principal_id, "acting_for": who.acting_for, "groups": sorted(who.groups),
            "clearance": who.clearance.slug, "jurisdictions": list(who.jurisdictions),
        },
        acting_for_chain=who.chain,
        rules_applied=rules_applied,
        withheld=withheld,
        audit_seq=record.seq,
        latency_ms=latency_ms,
        recall_repaired=served.repaired,
        refilled=served.refilled,
        timings_ms={
            "embed": (t_search - t_embed) * 1000, "policy": planned.policy_ms, **served.timings_ms,
            "audit": (time.perf_counter() - t_audit) * 1000,
        },
    )


@dataclass(frozen=True)
class _Served:
    """What one pass over the vectors and SQL's rows serves under a plan, and where its time went."""

    hits: list[Hit]
    withheld: list[Withheld]
    repaired: bool
    refilled: int
    timings_ms: dict[str, float]


def _serve(session: Session, store: VectorStore, vector: np.ndarray, planned: SearchPlan) -> _Served:
    """The hits and withheld counts `planned` allows for the embedded query: its filters inside the vector
    searches, then SQL's rows, which classify, render and drop what SQL no longer admits (refilled)."""
    request, who = planned.request, planned.who
    rules, flt, blocked, purpose, as_of = planned.rules, planned.flt, planned.blocked, planned.purpose, planned.as_of
    latest = request.as_of is None
    t_vectors = time.perf_counter()
    # Served hits and the withheld count's candidates in one store call (one request to a server); the
    # served ones come from the full filter, never from filtering the readable ones. The candidates are
    # only counted, so their search takes the narrower COUNT beam. Ids and scores only: SQL holds the rest
    # (vector payload reads cost ~0.1 ms a point on the embedded store).
    if planned.readable is not None:
        points, could_read = store.rank_batch(
            vector, [flt, planned.readable], request.top_k, (Beam.SERVE, Beam.COUNT)
        )
    else:
        (points,), could_read = store.rank_batch(vector, [flt], request.top_k, (Beam.SERVE,)), []
    t_withheld = time.perf_counter()
    # One SQL statement reads the served hits and the withheld candidates: SQL's fields render the first and
    # classify the second (the source of truth; no vector payload is read on this path).
    candidates, floor = _candidates(request, points, could_read)
    rows = _rows(session, [p.id for p in points] + [p.id for p in candidates], who.groups)
    reason_of = _Reasons(who, rules, blocked.sources, purpose, as_of=as_of, latest=latest)
    counts, missed = _classify(reason_of, candidates, floor, rows, _served_chunks(points, rows))
    repaired, repair_ms = missed > 0, 0.0
    if repaired:
        # Recall repair. The count search found hits this caller may see that rank above the served search's
        # last hit, so the graph search under the full filter lost its way (a fragmented filter can strand
        # it). Search again under the same filter with a much wider beam: what is served still comes from
        # the filter inside the search; the classification only noticed the gap.
        log.info("search.recall_repair missed=%d top_k=%d", missed, request.top_k)
        t_repair = time.perf_counter()
        points = store.rank_batch(vector, [flt], request.top_k, (Beam.WIDE,))[0]
        repair_ms = (time.perf_counter() - t_repair) * 1000
        counts = _recount(session, request, points, could_read, rows, reason_of, who.groups)
    t_render = time.perf_counter()
    hits, dropped = _render(session, who, rules, points, rows, reason_of)
    refilled = 0
    if dropped:  # rare: the payload admitted what SQL does not (a change caught mid-way); timed as render
        served = [p for p in points if p.id not in dropped]
        if len(hits) < request.top_k:
            before = len(hits)
            beam = Beam.WIDE if repaired else Beam.SERVE
            served, hits = _refill(session, store, vector, planned, beam, served, rows, hits, dropped, reason_of)
            refilled = len(hits) - before
            log.info("search.refilled dropped=%d refilled=%d top_k=%d", len(dropped), refilled, request.top_k)
        # The withheld count follows what is served: a dropped hit SQL withholds is counted, under the new floor.
        counts = _recount(session, request, served, could_read, rows, reason_of, who.groups)
    withheld = [
        Withheld(reason=reason, count=n, source_id=sid, steward=steward)
        for (sid, reason, steward), n in sorted(counts.items())
    ]
    return _Served(hits=hits, withheld=withheld, repaired=repaired, refilled=refilled, timings_ms={
        "vector_search": (t_withheld - t_vectors) * 1000 + repair_ms,
        "withheld": (t_render - t_withheld) * 1000 - repair_ms,
        "render": (time.perf_counter() - t_render) * 1000,
    })


def _rules_changed_since(session: Session, planned: SearchPlan) -> bool:
    """Whether transfer rules newer than the plan's are in force now, read in the search's transaction under the
    chain head's lock (`search`)."""
    return policy_store.rules_version(session) != planned.rules.version


def _unless_retracted_since(session: Session, hits: list[Hit]) -> list[Hit]:
    """The hits whose version no retraction committed since their rows were read. A retraction reports every
    search that served the version and appended before it (memory.retraction, under the chain head's lock); a
    search that appends after it must not serve the version. On PostgreSQL (read committed, no read locks) a
    retraction can commit between this search's read of the rows and its append: with the head's lock taken
    first (`search` takes it), one more read sees it, and the hit is dropped. On SQLite this transaction has held
    the database's write lock since its first statement, so no retraction commits in between: nothing to read."""
    if not hits or session.get_bind().dialect.name == "sqlite":
        return hits
    gone = set(session.scalars(_RETRACTED_AMONG, {"ids": sorted({h.citation.version_id for h in hits})}))
    if gone:
        log.warning("search.retracted_meanwhile versions=%d", len(gone))
    return [h for h in hits if h.citation.version_id not in gone]


def _candidates(
    request: SearchRequest, served: Sequence[Ranked], readable: Sequence[Ranked]
) -> tuple[list[Ranked], float]:
    """The readable hits that rank where they would have been served but were not, and that floor: the last
    served hit's score (any score when the served search came back short)."""
    served_ids = {p.id for p in served}
    floor = served[-1].score if len(served) >= request.top_k else float("-inf")
    return [p for p in readable if p.id not in served_ids and p.score >= floor], floor


def _recount(
    session: Session, request: SearchRequest, served: Sequence[Ranked], readable: Sequence[Ranked],
    rows: dict[str, Any], reason_of: _Reasons, groups: frozenset[str],
) -> dict[tuple[str, str, str], int]:
    """The withheld counts again, once what is served changed (recall repair, refill): the rows not read yet
    are read into `rows`. A miss left now is logged: the slots are full, but not with the best hits."""
    candidates, floor = _candidates(request, served, readable)
    unread = [p.id for p in [*served, *candidates] if p.id not in rows]
    if unread:
        rows.update(_rows(session, unread, groups))
    counts, missed = _classify(reason_of, candidates, floor, rows, _served_chunks(served, rows))
    if missed:
        log.warning("search.recall_repair_incomplete missed=%d top_k=%d", missed, request.top_k)
    return counts


REFILL_ROUNDS = 3  # searches at most, after render dropped hits, to fill their slots again


def _refill(
    session: Session, store: VectorStore, vector: np.ndarray, planned: SearchPlan, beam: Beam,
    served: list[Ranked], rows: dict[str, Any], hits: list[Hit], dropped: set[str], reason_of: _Reasons,
) -> tuple[list[Ranked], list[Hit]]:
    """Fill the top_k slots of hits dropped at render (`dropped`: point ids the vectors' payload admitted and SQL
    does not, e.g. a retraction some shard missed). The same filtered search again, for top_k plus the points
    dropped so far, skipping those: what is served still comes from the filter inside the search, in its rank
    order; nothing is filtered after it but by SQL's rows, as always. `dropped` grows with what the new hits
    drop. A round is taken only if it serves more hits than the last. Returns the served points (in rank order)
    and their hits."""
    top_k = planned.request.top_k
    for _ in range(REFILL_ROUNDS):
        if len(served) >= top_k:
            break
        ranked = store.rank_batch(vector, [planned.flt], top_k + len(dropped), (beam,))[0]
        fresh = [p for p in ranked if p.id not in dropped][:top_k]
        if len(fresh) <= len(served):  # the filter admits nothing more
            break
        unread = [p.id for p in fresh if p.id not in rows]
        if unread:
            rows.update(_rows(session, unread, planned.who.groups))
        fresh_hits, more = _render(session, planned.who, planned.rules, fresh, rows, reason_of)
        dropped |= more
        if len(fresh_hits) <= len(hits):
            # The vectors changed under the search (a retraction patched between its searches): a round that
            # serves no more than the last is not taken; the next one skips what this one dropped.
            continue
        hits, served = fresh_hits, [p for p in fresh if p.id not in more]
    return served, hits


def _served_chunks(served: Sequence[Ranked], rows: dict[str, Any]) -> set[str]:
    """The chunk ids of the served hits (a masked twin's is its chunk's)."""
    return {rows[p.id].id for p in served if p.id in rows}


class _Reasons:
    """The recourse reason that withholds a SQL row from this search's caller (None: none does): the policy's
    clearance, jurisdiction and consent checks on the row's fields, memoised by those fields (a search's rows
    share a few sources and labels)."""

    def __init__(self, who: policy.EffectivePrincipal, rules: policy.TransferRules,
                 consent_blocked: frozenset[str], purpose: str | None, *, as_of: float, latest: bool) -> None:
        self._who, self._rules, self._blocked, self._purpose = who, rules, consent_blocked, purpose
        self._as_of, self._latest = as_of, latest
        self._seen: dict[tuple[str, int, bool, str, bool], str | None] = {}
        self._masking: dict[str, bool] = {}

    def __call__(self, r: Any) -> str | None:
        return self.of(r.source_id, policy.effective_label(r.label, r.source_floor), r.personal,
                       r.source_jurisdiction, self.consent_blocked(r))

    def out_of_reach(self, r: Any) -> bool:
        """Whether SQL no longer lets this search reach the row at all, whoever asks: its version retracted, its
        source unshared with the caller's groups, or its version not the one this search reads (`reachable`)."""
        return r.retracted_at is not None or not r.readable or not self.reachable(r)

    def reachable(self, r: Any) -> bool:
        """Whether SQL holds the row's version as the one this search reads: committed (active or superseded)
        and current now (no as_of) or valid at as_of. Its vectors say so too, but a version's reveal and its
        predecessor's close are two patches, and a search between them must not serve both (SQL wins)."""
        if r.version_status not in REACHABLE_STATUSES:
            return False
        return is_current(True, r.valid_to) if self._latest else r.valid_from <= self._as_of < r.valid_to

    def consent_blocked(self, r: Any) -> bool:
        """Whether the row's source withholds its personal data from this search's purpose: as the plan read it,
        or as SQL holds it now (a consent withdrawn after the plan: SQL wins, as for read groups and floors)."""
        return r.source_id in self._blocked or policy.consent_blocks(
            bool(r.requires_consent), r.consent_purposes or (), self._purpose)

    def masks(self, jurisdiction: str) -> bool:
        """Whether the rule for `jurisdiction` masks this caller's personal data (memoised)."""
        if jurisdiction not in self._masking:
            self._masking[jurisdiction] = policy.masks(self._who, self._rules, jurisdiction=jurisdiction,
                                                       personal=True)
        return self._masking[jurisdiction]

    def masked(self, r: Any) -> bool:
        """Whether the row is served to this caller masked (then only through its masked twin)."""
        return bool(r.personal) and self.masks(r.source_jurisdiction)

    def of(self, source_id: str, label: int, personal: bool, jurisdiction: str, consent_blocked: bool) -> str | None:
        key = (source_id, label, personal, jurisdiction, consent_blocked)
        if key not in self._seen:
            self._seen[key] = policy.first_withheld_reason(policy.recourse_checks(
                self._who, self._rules, label=label, jurisdiction=jurisdiction, personal=personal,
                source_id=source_id, consent_blocked=(source_id,) if consent_blocked else (), purpose=self._purpose,
            ))
        return self._seen[key]

    def whole_version(self, r: Any, masks: bool) -> bool:
        """Whether this caller may see every chunk of the row's version in clear: its worst chunk (highest
        label, personal data if any has it: `document_versions.max_label`, `has_personal`) is neither withheld
        nor masked. `masks`: whether the rule for the source's jurisdiction masks personal data for the caller.
        A version without its summary is not whole (fail closed)."""
        if r.version_max_label is None:
            return False
        personal = bool(r.version_personal)
        return not (personal and masks) and self.of(
            r.source_id, policy.effective_label(r.version_max_label, r.source_floor), personal,
            r.source_jurisdiction, self.consent_blocked(r)) is None


def _classify(
    reason_of: _Reasons, candidates: Sequence[Ranked], floor: float, rows: dict[str, Any], served: set[str],
) -> tuple[dict[tuple[str, str, str], int], int]:
    """The withheld counts by (source, reason, steward), and how many hits the served search missed.

    The candidates (`_candidates`) come from the top_k under the group/version/retraction clauses only, so
    each passed those inside the engine; its SQL row decides the rest with the policy's recourse checks.
    Clearance, jurisdiction or consent stopped it: it is counted as withheld (sources outside the caller's
    groups never appear, and a withheld hit's text is never used). None stopped it and it ranks strictly
    above the floor: the served search missed it, unless it holds personal data the caller reads in clear (this
    score is its twin's, the served search ranks its clear text) or it was served through its twin (`served`:
    chunk ids)."""
    counts: dict[tuple[str, str, str], int] = {}
    missed = 0
    for p in candidates:
        r = rows.get(p.id)
        if r is None or reason_of.out_of_reach(r):
            continue  # deleted, retracted, unshared or superseded since
        if r.id in served:  # served as its masked twin: the same chunk
            continue
        reason = reason_of(r)
        if reason:
            key = (r.source_id, reason, r.steward_id or "")
            counts[key] = counts.get(key, 0) + 1
        elif p.score > floor and (not r.personal or reason_of.masked(r)):  # a tie is not a miss
            # A personal chunk the caller reads in clear was ranked on its twin here, on its clear text by the
            # served search: the two scores do not compare, so it is never taken for a miss.
            missed += 1
    return counts, missed


# Hot-path statements, built once on the tables (Core: no ORM compile step per search); the id lists are
# expanding bind parameters, so SQLAlchemy's compiled cache serves every call.
_C, _V, _S, _G = (cast(Table, m.__table__) for m in (Chunk, DocumentVersion, Source, SourceReadGroup))
_ROWS = (
    select(
        _C.c.id, _C.c.text, _C.c.sha256, _C.c.start, _C.c.end, _C.c.page_number, _C.c.attachment, _C.c.label,
        _C.c.entity_types,
        _C.c.document_id, _V.c.id.label("version_id"), _V.c.version, _V.c.sha256.label("version_sha256"), _V.c.uri,
        _V.c.ingested_at, _V.c.ingested_by, _V.c.pipeline_version, _V.c.parser_version, _V.c.chunker_version,
        _V.c.classifier_version, _V.c.label_map_version, _V.c.embedding_model, _V.c.retracted_at,
        _V.c.status.label("version_status"), _V.c.valid_from, _V.c.valid_to,
        _S.c.id.label("source_id"), _S.c.uri.label("source_uri"), _C.c.point_id, _C.c.masked_point_id,
        _C.c.personal,
        _S.c.jurisdiction.label("source_jurisdiction"), _S.c.steward_id, _S.c.floor.label("source_floor"),
        _S.c.personal_data_requires_consent.label("requires_consent"), _S.c.consent_purposes,
        _V.c.max_label.label("version_max_label"), _V.c.has_personal.label("version_personal"), _V.c.names_pii,
        # Whether the caller's groups can read the source now: a read-group change committed after the plan
        # read the sources is caught here (the hit is dropped, never served or counted).
        exists().where(_G.c.source_id == _C.c.source_id, _G.c.group.in_(bindparam("groups", expanding=True)))
        .label("readable"),
    )
    .select_from(_C.join(_V, _V.c.id == _C.c.version_id).join(_S, _S.c.id == _C.c.source_id))
    # A hit is a chunk's point or its masked twin's: both columns are uniquely indexed (an index OR on
    # SQLite and PostgreSQL alike).
    .where(or_(_C.c.point_id.in_(bindparam("point_ids", expanding=True)),
               _C.c.masked_point_id.in_(bindparam("twin_ids", expanding=True))))
)


_RETRACTED_AMONG = select(_V.c.id).where(_V.c.id.in_(bindparam("ids", expanding=True)), _V.c.retracted_at.is_not(None))


def _rows(session: Session, point_ids: Sequence[str], groups: frozenset[str]) -> dict[str, Any]:
    """SQL's row (chunk, version, source: text, citation, policy fields, whether `groups` can read its
    source) for each point id found, under that id: a masked twin's id finds its chunk's row."""
    if not point_ids:
        return {}
    wanted = list(dict.fromkeys(point_ids))
    params = {"point_ids": wanted, "twin_ids": wanted, "groups": sorted(groups) or [""]}
    asked, out = set(wanted), {}
    for r in session.execute(_ROWS, params):
        for pid in (r.point_id, r.masked_point_id):
            if pid in asked:
                out[pid] = r
    return out


def _render(
    session: Session, who: policy.EffectivePrincipal, rules: policy.TransferRules, points: Sequence[Ranked],
    by_point: dict[str, Any], reason_of: _Reasons,
) -> tuple[list[Hit], set[str]]:
    """Text and citation for each hit, in rank order, from its SQL row (`_rows`: no ORM entities, no vector
    payloads on the hot path); whether a hit is masked is decided on SQL's fields, the source of truth; PII
    spans are read only for the hits this caller gets masked. Also the point ids dropped: SQL holds no row for
    them, or does not admit what their payload did."""
    rows = [by_point[p.id] for p in points if p.id in by_point]
    # Whether the rule for a jurisdiction masks this caller's personal data, per jurisdiction.
    masking = {j: reason_of.masks(j) for j in {r.source_jurisdiction for r in rows}}
    masked_set = {r.id for r in rows if reason_of.masked(r)}
    spans: dict[str, list[PiiSpan]] = {}
    if masked_set:
        for span in session.scalars(select(PiiSpan).where(PiiSpan.chunk_id.in_(sorted(masked_set)))):
            spans.setdefault(span.chunk_id, []).append(span)
    hits: list[Hit] = []
    dropped: set[str] = set()
    for p in points:
        r = by_point.get(p.id)
        if r is None:  # vector without its SQL row: never serve what we cannot cite
            dropped.add(p.id)
            continue
        if reason_of.out_of_reach(r) or reason_of(r):
            # Rare: a source's read groups, jurisdiction or consent changed after the plan read them, a
            # retraction was caught mid-way (it narrows the vectors before SQL commits), or a newer version's
            # reveal before its predecessor's close. SQL wins for what it holds (retraction, read groups, label,
            # jurisdiction, personal data, consent, the version in force): the hit is dropped, not served under a
            # mix of the two, and the disagreement is logged.
            log.warning("search.payload_disagrees chunk=%s version=%s", r.id, r.version_id)
            dropped.add(p.id)
            continue
        masked = r.id in masked_set
        if masked != (p.id == r.masked_point_id):
            # The filter admits a masked twin exactly where SQL masks the chunk, and its clear point elsewhere.
            # A disagreement (a source's jurisdiction changed after the plan read it) is dropped: a twin's text
            # may not be served clear, and a clear point's score may not be served beside masked text.
            log.warning("search.twin_disagrees chunk=%s version=%s twin=%s", r.id, r.version_id, not masked)
            dropped.add(p.id)
            continue
        whole = not masked and reason_of.whole_version(r, masking[r.source_jurisdiction])
        cited = Citation(
            chunk_id=r.id, document_id=r.document_id, version=r.version, version_id=r.version_id,
            chunk_sha256=r.sha256, version_sha256=r.version_sha256, source_id=r.source_id,
            source_uri=r.source_uri, document_uri=r.uri, start=r.start, end=r.end, page_number=r.page_number,
            attachment=r.attachment,
            ingested_at=aware(r.ingested_at).isoformat(), ingested_by=r.ingested_by,
            pipeline_version=r.pipeline_version, parser_version=r.parser_version,
            chunker_version=r.chunker_version, classifier_version=r.classifier_version,
            label_map_version=r.label_map_version, embedding_model=r.embedding_model,
        )
        hits.append(Hit(
            score=p.score,
            text=mask(r.text, spans.get(r.id, [])) if masked else r.text,
            label=Label(policy.effective_label(r.label, r.source_floor)).slug,
            entity_types=list(r.entity_types),
            masked=masked,
            citation=cited.for_view(clear=not masked, whole=whole, names_pii=r.names_pii),
            whole_version=whole,
        ))
    return hits, dropped
