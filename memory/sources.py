"""Sources: registered by stewards with owner, jurisdiction, read groups, floor and flags.

Read groups empty = nobody reads (never "everyone"). Changing groups or jurisdiction re-stamps the
access payload of the source's vectors before the change is acknowledged (the caller commits after).
`personal_data_requires_consent` with `consent_purposes`: the source's personal data is served only to
searches stating one of those purposes (memory.consent); both are read from SQL at query time, so changing
them re-stamps nothing and applies to the next search.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from classifiers.types import Label
from memory import audit
from memory.clock import utcnow
from memory.consent import normalise_purposes
from memory.errors import ConflictError, ForbiddenError, NotFoundError
from memory.models import Principal, Source, SourceReadGroup
from memory.policy import EffectivePrincipal, normalise_jurisdiction
from memory.principals import validate_id
from memory.stores.base import PayloadPatch, Selector, VectorStore


@dataclass(frozen=True)
class NewSource:
    id: str
    name: str
    steward: str
    jurisdiction: str
    read_groups: tuple[str, ...]
    floor: str = "internal"
    uri: str = ""
    description: str = ""
    personal_data_requires_consent: bool = False
    consent_purposes: tuple[str, ...] = ()  # what the data subjects consented to (lowercase slugs)


@dataclass(frozen=True)
class SourcePatch:
    name: str | None = None
    read_groups: tuple[str, ...] | None = None
    floor: str | None = None
    jurisdiction: str | None = None
    steward: str | None = None
    description: str | None = None
    personal_data_requires_consent: bool | None = None
    consent_purposes: tuple[str, ...] | None = None  # replaces the list


def read_groups(source: Source) -> tuple[str, ...]:
    return tuple(sorted(g.group for g in source.read_groups))


def register(session: Session, *, spec: NewSource, actor: str | None) -> Source:
    validate_id(spec.id, "source id")
    if session.get(Source, spec.id) is not None:
        raise ConflictError(f"source {spec.id!r} exists", code="source_exists")
    if session.get(Principal, spec.steward) is None:
        raise NotFoundError(f"steward {spec.steward!r} is not a principal", code="principal_not_found")
    now = utcnow()
    src = Source(
        id=spec.id,
        name=spec.name,
        steward_id=spec.steward,
        jurisdiction=normalise_jurisdiction(spec.jurisdiction),
        floor=int(Label.parse(spec.floor)),
        uri=spec.uri,
        description=spec.description,
        personal_data_requires_consent=spec.personal_data_requires_consent,
        consent_purposes=normalise_purposes(spec.consent_purposes),
        created_at=now,
        updated_at=now,
    )
    src.read_groups = [SourceReadGroup(group=validate_id(g, "group")) for g in dict.fromkeys(spec.read_groups)]
    session.add(src)
    session.flush()
    audit.append(
        session,
        audit.Write(action="source.register", target=src.id, details=describe(src)),
        principal_id=actor,
        source_id=src.id,
    )
    return src


def describe(src: Source) -> dict[str, object]:
    return {
        "name": src.name,
        "steward": src.steward_id,
        "jurisdiction": src.jurisdiction,
        "read_groups": list(read_groups(src)),
        "floor": Label(src.floor).slug,
        "personal_data_requires_consent": src.personal_data_requires_consent,
        "consent_purposes": list(src.consent_purposes or ()),
    }


def get(session: Session, *, source_id: str) -> Source:
    src = session.get(Source, source_id)
    if src is None:
        raise NotFoundError(f"source {source_id!r} not found", code="source_not_found")
    return src


def list_all(session: Session) -> list[Source]:
    return list(session.execute(select(Source).order_by(Source.id)).scalars())


def ensure_steward(who: EffectivePrincipal | str, src: Source, roles: Iterable[str] = ()) -> None:
    """Only the source's steward (or an admin) manages it."""
    pid = who.principal_id if isinstance(who, EffectivePrincipal) else who
    role_set = set(who.roles) if isinstance(who, EffectivePrincipal) else set(roles)
    if "admin" in role_set:
        return
    if pid != src.steward_id or "steward" not in role_set:
        raise ForbiddenError(f"only the steward of {src.id!r} may do this", code="not_source_steward")


def update(session: Session, *, source_id: str, patch: SourcePatch, store: VectorStore, actor: str | None) -> Source:
    src = get(session, source_id=source_id)
    before = describe(src)
    payload = PayloadPatch()
    if patch.name is not None:
        src.name = patch.name
    if patch.description is not None:
        src.description = patch.description
    if patch.floor is not None:
        # The floor applies to chunks at ingest; existing chunks keep their label until re-ingested.
        src.floor = int(Label.parse(patch.floor))
    if patch.personal_data_requires_consent is not None:
        src.personal_data_requires_consent = patch.personal_data_requires_consent
    if patch.consent_purposes is not None:
        src.consent_purposes = normalise_purposes(patch.consent_purposes)
    if patch.steward is not None:
        if session.get(Principal, patch.steward) is None:
            raise NotFoundError(f"steward {patch.steward!r} is not a principal", code="principal_not_found")
        src.steward_id = patch.steward
    if patch.read_groups is not None:
        src.read_groups = [SourceReadGroup(group=validate_id(g, "group")) for g in dict.fromkeys(patch.read_groups)]
        payload = PayloadPatch(read_groups=tuple(sorted(dict.fromkeys(patch.read_groups))))
    if patch.jurisdiction is not None:
        src.jurisdiction = normalise_jurisdiction(patch.jurisdiction)
        payload = PayloadPatch(read_groups=payload.read_groups, jurisdiction=src.jurisdiction)
    src.updated_at = utcnow()
    session.flush()
    if payload.to_dict():
        # Access changes reach the vectors before the SQL change commits: a narrowing is never late.
        store.patch(Selector(source_id=src.id), payload)
    audit.append(
        session,
        audit.Write(action="source.update", target=src.id, details={"before": before, "after": describe(src)}),
        principal_id=actor,
        source_id=src.id,
    )
    return src
