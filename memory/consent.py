"""Consent to purposes: whose personal data a search may see, given the purpose it states.

A source flagged `personal_data_requires_consent` records the purposes its data subjects consented to
(`consent_purposes`, lowercase slugs such as `support` or `billing`). A chunk with personal data from such
a source is served only to a search whose `purpose` is one of them: no purpose, or another one, and it is
withheld (reason `consent`, counted and the steward named, never hidden). Chunks without personal data and
sources without the flag are unaffected; purposes recorded on a source without the flag change nothing.

Enforced inside the vector search, never after it: search() finds the sources the request's purpose may not
see (from the readable sources it reads anyway, memory.readable_sources, or with `blocked_sources`, one query
over the indexed flag) and the filter excludes their chunks with personal data. Consent is read at query
time from SQL, so a steward's change applies to the next search with nothing to re-stamp on the vectors; like
read groups, it is the current state even for an `as_of` search.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, exists, select
from sqlalchemy.orm import Session

from memory import policy
from memory.errors import ValidationFailedError
from memory.models import Source, SourceReadGroup

PURPOSE_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")  # fullmatch: "$" would accept a trailing newline


def normalise_purpose(value: str) -> str:
    """A purpose slug: 1-64 of a-z 0-9 _ -, starting with a letter (case and surrounding blanks ignored)."""
    slug = value.strip().lower()
    if not PURPOSE_RE.fullmatch(slug):
        raise ValidationFailedError(
            f"invalid purpose {value!r}: 1-64 lowercase letters, digits, '-' or '_', starting with a letter",
            code="invalid_purpose",
        )
    return slug


def normalise_purposes(values: Iterable[str]) -> list[str]:
    """Validated, de-duplicated, sorted (the stored form)."""
    return sorted({normalise_purpose(v) for v in values})


def blocks(src: Source, purpose: str | None) -> bool:
    """True when `src`'s personal data is withheld from a search for `purpose`."""
    return policy.consent_blocks(src.personal_data_requires_consent, src.consent_purposes or (), purpose)


@dataclass(frozen=True)
class ConsentBlock:
    """The sources a search's purpose may not see the personal data of.

    `sources` goes into the filter. Read here (`blocked_sources`, for a search filtered on the vectors' read
    groups) it holds every gated source, readable by the caller or not: a read-group change reaches the vectors
    before SQL commits, so narrowing the set to SQL's read groups could serve a chunk while the two disagree.
    Read from the readable sources (memory.readable_sources, for a search scoped to SQL's sources) it holds only
    those: the scope admits nothing else. `readable` is the part the caller's groups can read: the only part a
    response or an audit summary may name, since sources outside the caller's groups are never hinted at.
    """

    sources: frozenset[str]
    readable: frozenset[str]
    # Readable, blocked, and holding personal data (sources.has_personal): the consent gate withholds something.
    readable_with_personal: frozenset[str] = frozenset()


NOTHING_BLOCKED = ConsentBlock(frozenset(), frozenset())

# Every search runs this: built once (Core, on the tables), the caller's groups an expanding parameter.
_S, _G = (cast(Table, m.__table__) for m in (Source, SourceReadGroup))
_GATED = select(
    _S.c.id, _S.c.consent_purposes,
    exists().where(_G.c.source_id == _S.c.id, _G.c.group.in_(bindparam("groups", expanding=True))).correlate(_S),
    _S.c.has_personal,
).where(_S.c.personal_data_requires_consent.is_(True))


def blocked_sources(
    session: Session, *, purpose: str | None, groups: Collection[str], source_ids: Collection[str] | None = None
) -> ConsentBlock:
    """One query over the indexed flag (no rows, and so no filter clause, when no source requires consent).
    `source_ids`: the search is restricted to these, so others need not be listed."""
    rows = session.execute(_GATED, {"groups": sorted(groups)}).all()
    if not rows:
        return NOTHING_BLOCKED
    wanted = set(source_ids) if source_ids is not None else None
    hit = [
        (sid, bool(can_read), bool(personal)) for sid, purposes, can_read, personal in rows
        if (wanted is None or sid in wanted) and policy.consent_blocks(True, purposes or (), purpose)
    ]
    return ConsentBlock(frozenset(s for s, _, _ in hit), frozenset(s for s, r, _ in hit if r),
                        frozenset(s for s, r, p in hit if r and p))
