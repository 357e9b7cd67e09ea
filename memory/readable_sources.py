"""The sources a caller's groups can read, as one SQL read per search: what the search's filter, consent gate
and withheld-count decision need of each.

A search plans from these rows (memory.search): the filter admits each readable source's chunks in full, for
those without personal data only, or not at all (`policy.build_filter(readable=...)`, a `SourceScope`), so the
vector engine checks one indexed field, the point's source id, instead of its read groups, jurisdiction and
consent per visited point (scripts/bench_search_steps.py). The same rows give the consent block
(`consent_block`) and whether anything could be withheld (`memory.withholdable.could_withhold_among`), which
otherwise take a statement each.

SQL is the source of truth for a source's read groups, jurisdiction and consent at the moment the plan reads
them; a change committed after that is checked again when the hits are read (memory.search: a hit whose
source its caller's groups can no longer read is dropped, never served).

A caller who can read more than `limit` sources gets `None`: the search then filters on the read groups and
jurisdictions the vectors carry (the plan's size stays bounded however many sources an enterprise registers).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, exists, select
from sqlalchemy.orm import Session

from memory import policy
from memory.consent import NOTHING_BLOCKED, ConsentBlock
from memory.models import Source, SourceReadGroup

# Above this many readable sources a search filters on read groups instead (memory.search).
DEFAULT_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class ReadableSource:
    id: str
    jurisdiction: str
    max_label: int | None  # the worst label any chunk a search can reach holds, the floor included (None: none yet)
    has_personal: bool
    requires_consent: bool
    consent_purposes: tuple[str, ...]
    floor: int = 0  # every chunk's label is at least this now (policy.effective_label)


_S, _G = (cast(Table, m.__table__) for m in (Source, SourceReadGroup))
_READABLE = (
    select(_S.c.id, _S.c.jurisdiction, _S.c.max_label, _S.c.has_personal, _S.c.personal_data_requires_consent,
           _S.c.consent_purposes, _S.c.floor)
    .where(exists().where(_G.c.source_id == _S.c.id, _G.c.group.in_(bindparam("groups", expanding=True)))
           .correlate(_S))
    .limit(bindparam("limit"))
)
_READABLE_OF = _READABLE.where(_S.c.id.in_(bindparam("ids", expanding=True)))


def read(
    session: Session, *, groups: Collection[str], source_ids: Collection[str] | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[ReadableSource] | None:
    """The sources `groups` can read (within `source_ids`), or None when there are more than `limit`."""
    if not groups or (source_ids is not None and not source_ids):
        return []
    params: dict[str, object] = {"groups": sorted(groups), "limit": limit + 1}
    if source_ids is not None:
        params["ids"] = sorted(source_ids)
    rows = session.execute(_READABLE if source_ids is None else _READABLE_OF, params).all()
    if len(rows) > limit:
        return None
    return [
        ReadableSource(id=sid, jurisdiction=j,
                       max_label=policy.effective_label(label, floor) if label is not None else None,
                       has_personal=bool(personal), requires_consent=bool(gated),
                       consent_purposes=tuple(purposes or ()), floor=int(floor or 0))
        for sid, j, label, personal, gated, purposes, floor in rows
    ]


_ABOVE = (
    select(_S.c.id)
    .where(exists().where(_G.c.source_id == _S.c.id, _G.c.group.in_(bindparam("groups", expanding=True)))
           .correlate(_S), _S.c.floor > bindparam("clearance"))
)


def floors_above(session: Session, *, groups: Collection[str], clearance: int) -> frozenset[str]:
    """The sources `groups` can read whose floor is above `clearance` (the read-group filter leaves them out:
    policy.build_filter `above_clearance`). Floors are raised rarely; most callers get none."""
    if not groups:
        return frozenset()
    return frozenset(session.scalars(_ABOVE, {"groups": sorted(groups), "clearance": int(clearance)}))


def consent_block(sources: Sequence[ReadableSource], purpose: str | None) -> ConsentBlock:
    """memory.consent.blocked_sources for readable sources: the readable ones `purpose` may not see the personal
    data of (a source the caller cannot read is outside the filter's scope anyway)."""
    hit = [s for s in sources if policy.consent_blocks(s.requires_consent, s.consent_purposes, purpose)]
    if not hit:
        return NOTHING_BLOCKED
    blocked = frozenset(s.id for s in hit)
    return ConsentBlock(blocked, blocked, frozenset(s.id for s in hit if s.has_personal))
