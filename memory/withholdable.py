"""Could the policy withhold anything this caller can read? If not, a search has no withheld hits to count.

Every search counts the hits its caller's groups could read but clearance, jurisdiction or consent stopped,
with a second vector search over the readable set. Many callers can read nothing of the sort: their
clearance covers every label in their groups' sources, those sources' jurisdictions are allowed where they
are, and no consent gate applies. For them that search would find nothing to count, so the service skips it.

The decision reads a summary per source (`sources.max_label`, `sources.has_personal`: the worst any chunk a
search could still reach there can be; raised with the chunks' transaction, and recounted when a retraction or a
restore changes what is reachable) grouped by jurisdiction, and asks
`policy.may_withhold`, which runs `policy.explain` on each worst case. What is served never depends on it:
served hits still come only from the full filter inside the vector search. A summary that lags (a chunk
revealed while its source's summary is still being committed) could at worst leave one search's withheld
count short, never serve a chunk.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import cast

from sqlalchemy import Table, bindparam, case, exists, func, or_, select, update
from sqlalchemy.orm import Session

from memory import policy
from memory.consent import ConsentBlock
from memory.models import Chunk, DocumentVersion, Source, SourceReadGroup
from memory.readable_sources import ReadableSource

_S, _G, _C, _V = (cast(Table, m.__table__) for m in (Source, SourceReadGroup, Chunk, DocumentVersion))
# The worst case per jurisdiction over the sources the caller's groups can read (one row per jurisdiction).
_READABLE = exists().where(
    _G.c.source_id == _S.c.id, _G.c.group.in_(bindparam("groups", expanding=True))
).correlate(_S)
_WORST = (
    # A source's worst label is at least its floor (policy.effective_label: a floor raised before its relabel).
    select(_S.c.jurisdiction, func.max(case((_S.c.floor > _S.c.max_label, _S.c.floor), else_=_S.c.max_label)),
           func.max(case((_S.c.has_personal, 1), else_=0)))
    .where(_READABLE, _S.c.max_label.is_not(None))
    .group_by(_S.c.jurisdiction)
)
_WORST_OF = _WORST.where(_S.c.id.in_(bindparam("ids", expanding=True)))


def could_withhold(
    session: Session, *, who: policy.EffectivePrincipal, rules: policy.TransferRules,
    source_ids: Collection[str] | None, consent: ConsentBlock,
) -> bool:
    """False only when no chunk of the sources `who` can read (within `source_ids`) could be withheld from
    this search. One statement, grouped by jurisdiction."""
    if not who.groups:
        return False
    if consent.readable_with_personal:  # consent withholds their personal data from this search
        return True
    params: dict[str, object] = {"groups": sorted(who.groups)}
    if source_ids is not None:
        params["ids"] = sorted(source_ids)
    rows = session.execute(_WORST if source_ids is None else _WORST_OF, params).all()
    worst = [policy.WorstCase(jurisdiction=j, max_label=int(label), has_personal=bool(personal))
             for j, label, personal in rows]
    return policy.may_withhold(who, rules, worst)


def could_withhold_among(
    who: policy.EffectivePrincipal, rules: policy.TransferRules, sources: Sequence[ReadableSource],
    consent: ConsentBlock,
) -> bool:
    """`could_withhold` on the caller's readable sources already read (memory.readable_sources): no statement."""
    if not who.groups or not sources:
        return False
    if consent.readable_with_personal:
        return True
    worst: dict[str, tuple[int, bool]] = {}
    for s in sources:
        if s.max_label is None:
            continue
        label, personal = worst.get(s.jurisdiction, (s.max_label, s.has_personal))
        worst[s.jurisdiction] = (max(label, s.max_label), personal or s.has_personal)
    return policy.may_withhold(who, rules, [
        policy.WorstCase(jurisdiction=j, max_label=label, has_personal=personal)
        for j, (label, personal) in sorted(worst.items())
    ])


def record_chunks(session: Session, *, source_id: str, max_label: int, has_personal: bool) -> None:
    """Raise the source's summary to cover chunks being stored (call in the transaction that stores them).
    A summary that already covers them is left alone: no row is written, so the policy epoch, which every
    change to a source moves (memory.policy_cache), stays where it is for the usual ingest."""
    values: dict[str, object] = {
        "max_label": case(
            (_S.c.max_label.is_(None), max_label), (_S.c.max_label < max_label, max_label), else_=_S.c.max_label
        )
    }
    raises = [_S.c.max_label.is_(None), _S.c.max_label < max_label]
    if has_personal:
        values["has_personal"] = True
        raises.append(_S.c.has_personal.is_(False))
    session.execute(update(_S).where(_S.c.id == source_id, or_(*raises)).values(**values))


def recount_source(session: Session, *, source_id: str) -> None:
    """Set the source's summary to what its chunks that some search could still reach hold: those of every
    version not retracted (time-travel searches reach superseded versions too). Call it in the transaction
    that retracts or restores a version, after its flush: the summary then commits with the change. One
    statement, so on PostgreSQL a concurrent ingest's raise (record_chunks) applies on top of it."""
    reachable = _C.join(_V, _V.c.id == _C.c.version_id)
    live = (_C.c.source_id == source_id, _V.c.retracted_at.is_(None))
    session.execute(update(_S).where(_S.c.id == source_id).values(
        max_label=select(func.max(_C.c.label)).select_from(reachable).where(*live).scalar_subquery(),
        has_personal=exists().select_from(reachable).where(*live, _C.c.personal.is_(True)),
    ))
