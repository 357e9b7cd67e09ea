"""Sources: registered by stewards with owner, jurisdiction, read groups, floor and flags.

Read groups empty = nobody reads (never "everyone"). Changing groups or jurisdiction re-stamps the
access payload of the source's vectors before the change is acknowledged (the caller commits after).
`personal_data_requires_consent` with `consent_purposes`: the source's personal data is served only to
searches stating one of those purposes (memory.consent); both are read from SQL at query time, so changing
them re-stamps nothing and applies to the next search.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from classifiers.types import Label
from memory import audit, policy
from memory.clock import utcnow
from memory.consent import normalise_purposes
from memory.db import transaction
from memory.errors import ConflictError, ForbiddenError, NotFoundError, ValidationFailedError
from memory.models import REACHABLE_STATUSES, Chunk, DocumentVersion, Principal, Source, SourceReadGroup
from memory.policy import EffectivePrincipal, normalise_jurisdiction
from memory.principals import validate_id
from memory.stores.base import PayloadPatch, Selector, VectorStore

log = logging.getLogger(__name__)

# The columns' sizes (memory.models.Source), checked here so every edge refuses an oversized value with a 422
# instead of PostgreSQL refusing the row (a 500); the API's schemas use the same limits.
NAME_MAX = 256
URI_MAX = 1024
DESCRIPTION_MAX = 4096


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

    def governs(self) -> list[str]:
        """The fields it changes that decide who reads the source and under what rules (all but name and
        description)."""
        fields = ("steward", "read_groups", "jurisdiction", "floor", "personal_data_requires_consent",
                  "consent_purposes")
        return [f for f in fields if getattr(self, f) is not None]


def refuse_delegated_governance(changes: Iterable[str], *, who: EffectivePrincipal, what: str) -> None:
    """Who reads a source and under what rules is set by its steward's (or an admin's) own key: an agent acting
    for the steward may manage the source's documents, never hand the source, its readers or its rules to
    anyone (itself included). 403 `delegated_change_refused`. (An agent acting for an admin holds the admin role
    itself, roles being intersected: it may do all this on its own key, so the rule would protect nothing.)"""
    changed = sorted(changes)
    if who.acting_for is not None and changed and "admin" not in who.roles:
        raise ForbiddenError(f"{what} ({', '.join(changed)}) needs the steward's own key, not an agent acting for "
                             f"{who.acting_for!r}", code="delegated_change_refused", details={"fields": changed})


def _check_steward(session: Session, principal_id: str, *, names_principals: bool) -> None:
    """A source's steward must be able to manage it (ensure_steward): an active principal with the steward role
    (or an admin). Handing a source to a reader or an agent would leave it to admins alone.

    `names_principals`: the caller may learn which principal ids exist (an admin, the CLI): an unknown id is 404
    `principal_not_found`. For anyone else it is the same 422 `invalid_steward` as an existing principal who
    cannot steward, so a steward cannot list principal ids by naming guesses (only admins read principals)."""
    p = session.get(Principal, principal_id)
    if p is None and names_principals:
        raise NotFoundError(f"steward {principal_id!r} is not a principal", code="principal_not_found")
    roles = {r.role for r in p.roles} if p is not None else set()
    if p is None or not p.active or not roles & {"steward", "admin"}:
        raise ValidationFailedError(f"{principal_id!r} cannot steward a source: it needs to be an active principal "
                                    "with the steward role", code="invalid_steward")


def _checked_text(value: str, what: str, code: str, *, most: int, least: int = 0) -> str:
    if not least <= len(value) <= most:
        raise ValidationFailedError(f"{what} must be {least}-{most} characters long (got {len(value)})", code=code)
    return value


def read_groups(source: Source) -> tuple[str, ...]:
    return tuple(sorted(g.group for g in source.read_groups))


def register(
    session: Session, *, spec: NewSource, actor: str | None, acting_for: str | None = None,
    names_principals: bool = False,
) -> Source:
    """Register a source. Its id is a name every steward shares: an id in use is 409 `source_exists`, whoever
    holds it (ids are not secret; docs/operations.md). `names_principals`: see _check_steward."""
    validate_id(spec.id, "source id")
    _checked_text(spec.name, "a source's name", "invalid_source_name", least=1, most=NAME_MAX)
    _checked_text(spec.uri, "a source's uri", "invalid_uri", most=URI_MAX)
    _checked_text(spec.description, "a source's description", "invalid_description", most=DESCRIPTION_MAX)
    if session.get(Source, spec.id) is not None:
        raise ConflictError(f"source {spec.id!r} exists", code="source_exists")
    _check_steward(session, spec.steward, names_principals=names_principals)
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
        acting_for=acting_for,
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


def get(session: Session, *, source_id: str, for_update: bool = False) -> Source:
    """The source; `for_update`: row-locked until the transaction ends (PostgreSQL; a SQLite write transaction
    already holds the database lock), which orders changes of its access with their vector patches, and re-read
    (populate_existing): a copy loaded earlier in the session may predate a change committed meanwhile."""
    src = (
        session.execute(
            select(Source).where(Source.id == source_id).with_for_update().execution_options(populate_existing=True)
        ).scalar_one_or_none()
        if for_update else session.get(Source, source_id)
    )
    if src is None:
        raise NotFoundError(f"source {source_id!r} not found", code="source_not_found")
    return src


def list_all(session: Session) -> list[Source]:
    return list(session.execute(select(Source).order_by(Source.id)).scalars())


def steward_identity(who: EffectivePrincipal) -> str:
    """Whose stewardship a caller exercises: the user an agent or service acts for (the `steward` role must be in
    both, as every role: they are intersected), else the caller's own. An agent acting for someone never stewards
    a source through its own id: access is the user's, within the agent's ceiling."""
    return who.acting_for or who.principal_id


def _sees_every_source(who: EffectivePrincipal) -> bool:
    return bool({"admin", "auditor"} & set(who.roles))


def _readable(who: EffectivePrincipal) -> Select[str]:
    return select(SourceReadGroup.source_id).where(SourceReadGroup.group.in_(sorted(who.groups)))


def stewarded(who: EffectivePrincipal) -> Select[str]:
    """The ids of the sources `who` stewards (`stewards`), as a subquery."""
    q = select(Source.id).where(Source.steward_id == steward_identity(who))
    return q.where(Source.id.in_(_readable(who))) if who.acting_for is not None else q


def stewards(who: EffectivePrincipal, src: Source) -> bool:
    """Whether `who` stewards `src` (the role aside): its steward on their own key; under delegation, the user's
    stewardship within the agent's ceiling, so only a source the effective groups (the user's and the agent's in
    common) read. An agent never manages, nor learns of, a source outside its own reach for a user who stewards
    it."""
    if src.steward_id != steward_identity(who):
        return False
    return who.acting_for is None or bool(who.groups & set(read_groups(src)))


def list_visible(session: Session, *, who: EffectivePrincipal) -> list[Source]:
    """The sources a steward may see: those they steward (`stewards`) and those their groups read (admins and
    auditors: all). Another team's source, its read groups, steward and consent purposes, are not revealed."""
    if _sees_every_source(who):
        return list_all(session)
    return list(session.execute(
        select(Source).where(Source.id.in_(stewarded(who)) | Source.id.in_(_readable(who))).order_by(Source.id)
    ).scalars())


def may_see(who: EffectivePrincipal, src: Source) -> bool:
    """Whether `who` may know that `src` exists (`list_visible`): admins and auditors, its steward, its readers."""
    return _sees_every_source(who) or stewards(who, src) or bool(who.groups & set(read_groups(src)))


def get_visible(session: Session, *, who: EffectivePrincipal, source_id: str) -> Source:
    """The source, if `who` may see it (`may_see`); otherwise the same `source_not_found` as an unknown id."""
    src = get(session, source_id=source_id)
    if may_see(who, src):
        return src
    raise NotFoundError(f"source {source_id!r} not found", code="source_not_found")


def ensure_steward(
    who: EffectivePrincipal | str, src: Source, roles: Iterable[str] = (), *, unseen: NotFoundError | None = None
) -> None:
    """Only the source's steward (or an admin) manages it. Anyone else gets 403 `not_source_steward` if they may
    see the source (`may_see`), else the 404 of an unknown id (`unseen`, by default `source_not_found`): a write
    route answers another team's source as it answers a missing one. (A bare principal id, the CLI's operator,
    carries no groups: 403.) Under delegation the stewardship is the user's within the agent's ceiling
    (`stewards`)."""
    role_set = set(who.roles) if isinstance(who, EffectivePrincipal) else set(roles)
    if "admin" in role_set:
        return
    steward = stewards(who, src) if isinstance(who, EffectivePrincipal) else who == src.steward_id
    if not steward or "steward" not in role_set:
        if isinstance(who, EffectivePrincipal) and not may_see(who, src):
            raise unseen or NotFoundError(f"source {src.id!r} not found", code="source_not_found")
        raise ForbiddenError(f"only the steward of {src.id!r} may do this", code="not_source_steward")


@dataclass(frozen=True)
class SourceUpdate:
    """An applied, not yet committed, source change; `access_changed`: its read groups or jurisdiction changed,
    so its vectors take the new access once it has committed (`publish_access`)."""

    source: Source
    access_changed: bool


def update(
    session: Session, *, source_id: str, patch: SourcePatch, store: VectorStore, actor: str | None,
    acting_for: str | None = None, names_principals: bool = False,
) -> SourceUpdate:
    """Apply `patch` (at least one field: an empty one is 422 `nothing_to_change`, not an audited no-op)."""
    if patch == SourcePatch():
        raise ValidationFailedError("give at least one field to change", code="nothing_to_change")
    src = get(session, source_id=source_id, for_update=True)
    before = describe(src)
    if patch.name is not None:
        src.name = _checked_text(patch.name, "a source's name", "invalid_source_name", least=1, most=NAME_MAX)
    if patch.description is not None:
        src.description = _checked_text(patch.description, "a source's description", "invalid_description",
                                        most=DESCRIPTION_MAX)
    if patch.floor is not None:
        # The floor applies to chunks at ingest; the edges relabel the chunks already stored after the commit
        # (memory.relabel, which reads the floor under the source's lock).
        src.floor = int(Label.parse(patch.floor))
    if patch.personal_data_requires_consent is not None:
        src.personal_data_requires_consent = patch.personal_data_requires_consent
    if patch.consent_purposes is not None:
        src.consent_purposes = normalise_purposes(patch.consent_purposes)
    if patch.steward is not None:
        _check_steward(session, patch.steward, names_principals=names_principals)
        src.steward_id = patch.steward
    old_groups, old_jurisdiction = set(read_groups(src)), src.jurisdiction
    if patch.read_groups is not None:
        src.read_groups = [SourceReadGroup(group=validate_id(g, "group")) for g in dict.fromkeys(patch.read_groups)]
    if patch.jurisdiction is not None:
        src.jurisdiction = normalise_jurisdiction(patch.jurisdiction)
    src.updated_at = utcnow()
    session.flush()
    access_changed = patch.read_groups is not None or patch.jurisdiction is not None
    if access_changed:
        # Before SQL commits, the vectors take the narrower of the old and new access: the groups in both, and a
        # jurisdiction no transfer rule admits while it changes. Whatever fails from here on (the commit, the
        # process), the vectors never admit more than SQL does; `publish_access`, after the commit, widens them
        # to the new access (a crash before it leaves the source narrowed: re-apply the change).
        narrow_groups = tuple(sorted(old_groups & set(read_groups(src))))
        store.patch(Selector(source_id=src.id), PayloadPatch(
            read_groups=narrow_groups,
            jurisdiction=policy.JURISDICTION_IN_TRANSIT if src.jurisdiction != old_jurisdiction else None,
        ))
    audit.append(
        session,
        audit.Write(action="source.update", target=src.id, details={"before": before, "after": describe(src)}),
        principal_id=actor,
        acting_for=acting_for,
        source_id=src.id,
    )
    return SourceUpdate(src, access_changed)


def access_payload(src: Source) -> PayloadPatch:
    """The access fields a source's vectors carry, from SQL."""
    return PayloadPatch(read_groups=tuple(sorted(read_groups(src))), jurisdiction=src.jurisdiction)


def publish_access(factory: sessionmaker[Session], store: VectorStore, source_id: str) -> None:
    """After a change of a source's access committed: its vectors take the access SQL holds now, read and
    patched under the source's row lock. So when two changes finish out of order, the later publish still
    writes the latest committed access, never the one its own change computed."""
    with transaction(factory) as session:
        src = get(session, source_id=source_id, for_update=True)
        store.patch(Selector(source_id=src.id), access_payload(src))


# Two stored chunks of a source whose chunks a search can still reach, their points and masked twins (if they
# have one), and one masked twin of it whatever the two are: index seeks per source, never a scan of every chunk
# (repair runs every few minutes, and on SQLite its reads hold the write lock).
_REACHABLE = DocumentVersion.status.in_(REACHABLE_STATUSES)
_ACCESS_SAMPLES = (
    select(Chunk.point_id, Chunk.masked_point_id)
    .join(DocumentVersion, DocumentVersion.id == Chunk.version_id)
    .where(Chunk.source_id == bindparam("source_id"), _REACHABLE)
    .limit(2)
)
_TWIN_SAMPLE = (
    select(Chunk.masked_point_id)
    .join(DocumentVersion, DocumentVersion.id == Chunk.version_id)
    .where(Chunk.source_id == bindparam("source_id"), Chunk.masked_point_id.is_not(None), _REACHABLE)
    .limit(1)
)


def settle_access(factory: sessionmaker[Session], store: VectorStore) -> list[str]:
    """Republish (`publish_access`) every source whose vectors do not carry the access SQL holds: a change that
    narrowed them and whose publish never ran (the process died after the commit, or the vector store failed
    then), or whose commit failed (the vectors stay narrowed until then). Returns their ids.

    Each narrowing and each publish is one vector-store operation over the whole source, so two points of it
    tell, and a masked twin of it (on a Qdrant cluster an operation can fail on some shards only, and a source's
    twins may live on other shards than its sampled chunks: docs/operations.md). Runs in `vector_sync.repair`
    (memory.maintenance: at start, on a timer, on request); safe beside live changes: a publish reads SQL under
    the source's row lock, so it writes the latest committed access, as the change's own does."""
    with factory() as session:
        expected = {s.id: (frozenset(read_groups(s)), s.jurisdiction) for s in list_all(session)}
        samples = list(dict.fromkeys(
            pid for sid in expected
            for row in [*session.execute(_ACCESS_SAMPLES, {"source_id": sid}),
                        *session.execute(_TWIN_SAMPLE, {"source_id": sid})]
            for pid in row if pid is not None))
    carried = [(p.payload.source_id, (frozenset(p.payload.read_groups), p.payload.jurisdiction))
               for p in store.retrieve(samples)]
    stale = sorted({sid for sid, access in carried if sid in expected and access != expected[sid]})
    for source_id in stale:
        publish_access(factory, store, source_id)
    if stale:
        log.warning("sources.access_republished sources=%d", len(stale))
    return stale
