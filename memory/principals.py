"""Principals (users, services, agents), API keys and delegation. Keyword-only services over a
session; they never commit. Each write is audited with the admin who made it (`actor`) and, when that admin
is an agent or service acting for a user, that user (`acting_for`).

API keys look like `gm_<key id>_<secret>`. Only sha256(secret) is stored; the full key is returned once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, literal, select, union_all
from sqlalchemy.orm import Session, joinedload

from classifiers.types import Label
from memory import audit
from memory.clock import aware, utc, utcnow
from memory.errors import AuthError, ConflictError, ForbiddenError, NotFoundError, ValidationFailedError
from memory.models import ApiKey, Delegation, Principal, PrincipalGroup, PrincipalRole
from memory.policy import KINDS, ROLES, EffectivePrincipal, Identity, effective, normalise_jurisdiction

# fullmatch, not match: "$" would also accept a trailing newline ("hr\n", an id that looks like another).
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")
_KEY = re.compile(r"gm_([a-z0-9]{16})_([A-Za-z0-9_-]{20,128})")

# The most names (groups, read groups, users an agent may act for, purposes, the sources a search names) one
# request may carry, whatever the edge: far above any real team's, low enough that one request cannot write an
# unbounded list into the audit log. The API's schemas use it too.
MAX_NAMES = 1000


@dataclass(frozen=True)
class NewPrincipal:
    id: str
    kind: str
    groups: tuple[str, ...]
    clearance: str
    jurisdiction: str
    roles: tuple[str, ...] = ("reader",)
    display_name: str = ""
    may_act_for: tuple[str, ...] = ()  # user ids this agent/service may act for
    may_act_for_any: bool = False


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    token: str  # shown once
    expires_at: datetime | None


def validate_id(value: str, what: str) -> str:
    if not _ID.fullmatch(value):
        raise ValidationFailedError(f"invalid {what} {value!r}", code=f"invalid_{what.replace(' ', '_')}")
    return value


def within_names_limit(values: Iterable[str], what: str) -> tuple[str, ...]:
    """`values` as a tuple, or 422 `too_many_names` past MAX_NAMES."""
    names = tuple(values)
    if len(names) > MAX_NAMES:
        raise ValidationFailedError(f"at most {MAX_NAMES} {what} (got {len(names)})", code="too_many_names")
    return names


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def identity(p: Principal) -> Identity:
    return Identity(
        id=p.id,
        kind=p.kind,
        groups=frozenset(g.group for g in p.groups),
        clearance=Label(p.clearance),
        jurisdiction=p.jurisdiction,
        roles=frozenset(r.role for r in p.roles),
        active=p.active,
    )


def valid_roles(roles: Iterable[str]) -> tuple[str, ...]:
    wanted = tuple(dict.fromkeys(roles))
    bad_roles = set(wanted) - ROLES
    if bad_roles:
        raise ValidationFailedError(f"unknown roles {sorted(bad_roles)}", code="invalid_role")
    return wanted


def delegation_targets(
    session: Session, *, agent_id: str, kind: str, user_ids: Iterable[str], any_user: bool
) -> tuple[str, ...]:
    """The users an agent/service may act for, deduplicated; or `invalid_delegation` (422) when the principal
    is a user, or a target is itself, an agent or a service, and `principal_not_found` (404) when unknown."""
    targets = tuple(dict.fromkeys(within_names_limit(user_ids, "users to act for")))
    if (targets or any_user) and kind == "user":
        raise ValidationFailedError("only agents and services may act for users", code="invalid_delegation")
    for user_id in targets:
        if user_id == agent_id:
            raise ValidationFailedError(f"{agent_id!r} cannot act for itself", code="invalid_delegation")
        target = session.get(Principal, user_id)
        if target is None:
            raise NotFoundError(f"user {user_id!r} not found", code="principal_not_found")
        if target.kind != "user":
            raise ValidationFailedError(f"{user_id!r} is not a user ({target.kind})", code="invalid_delegation")
    return targets


def create_principal(
    session: Session, *, spec: NewPrincipal, actor: str | None, acting_for: str | None = None
) -> Principal:
    validate_id(spec.id, "principal id")
    if spec.kind not in KINDS:
        raise ValidationFailedError(f"kind must be one of {sorted(KINDS)}", code="invalid_kind")
    roles = valid_roles(spec.roles)
    if session.get(Principal, spec.id) is not None:
        raise ConflictError(f"principal {spec.id!r} exists", code="principal_exists")
    targets = delegation_targets(session, agent_id=spec.id, kind=spec.kind, user_ids=spec.may_act_for,
                                  any_user=spec.may_act_for_any)
    clearance = Label.parse(spec.clearance)
    p = Principal(
        id=spec.id,
        kind=spec.kind,
        display_name=spec.display_name,
        clearance=int(clearance),
        jurisdiction=normalise_jurisdiction(spec.jurisdiction),
        active=True,
        may_act_for_any=spec.may_act_for_any,
        created_at=utcnow(),
    )
    p.groups = [PrincipalGroup(group=validate_id(g, "group"))
                for g in dict.fromkeys(within_names_limit(spec.groups, "groups"))]
    p.roles = [PrincipalRole(role=r) for r in roles]
    session.add(p)
    session.flush()
    p.delegations = [Delegation(agent_id=p.id, user_id=user_id) for user_id in targets]
    session.flush()
    audit.append(
        session,
        audit.Write(action="principal.create", target=p.id, details={
            "kind": p.kind, "groups": sorted(g.group for g in p.groups), "clearance": clearance.slug,
            "jurisdiction": p.jurisdiction, "roles": sorted(r.role for r in p.roles),
            "may_act_for": list(targets), "may_act_for_any": spec.may_act_for_any,
        }),
        principal_id=actor, acting_for=acting_for,
    )
    return p


def get_principal(session: Session, *, principal_id: str) -> Principal:
    p = session.get(Principal, principal_id)
    if p is None:
        raise NotFoundError(f"principal {principal_id!r} not found", code="principal_not_found")
    return p


def teams_of(session: Session, *, user_id: str, acting: bool) -> list[str]:
    """The teams work done for `user_id` is charged to (memory.usage): its groups now, when it is a user (or acted
    for: only users are acted for). Teams are groups of people: an agent or service working for no user has none."""
    p = session.get(Principal, user_id)
    if p is None or (not acting and p.kind != "user"):
        return []
    return sorted(g.group for g in p.groups)


def list_principals(session: Session) -> list[Principal]:
    return list(session.execute(select(Principal).order_by(Principal.id)).scalars())


def set_active(
    session: Session, *, principal_id: str, active: bool, actor: str | None, acting_for: str | None = None
) -> Principal:
    p = get_principal(session, principal_id=principal_id)
    p.active = active
    audit.append(session, audit.Write(action="principal.activate" if active else "principal.deactivate",
                                      target=p.id), principal_id=actor, acting_for=acting_for)
    return p


def update_groups(
    session: Session, *, principal_id: str, groups: Iterable[str], actor: str | None, acting_for: str | None = None
) -> Principal:
    p = get_principal(session, principal_id=principal_id)
    p.groups = [PrincipalGroup(group=validate_id(g, "group"))
                for g in dict.fromkeys(within_names_limit(groups, "groups"))]
    session.flush()
    audit.append(session, audit.Write(action="principal.groups", target=p.id,
                                      details={"groups": sorted(g.group for g in p.groups)}),
                 principal_id=actor, acting_for=acting_for)
    return p


def set_clearance(
    session: Session, *, principal_id: str, clearance: str | Label, actor: str | None, acting_for: str | None = None
) -> Principal:
    """Set a principal's clearance (a global attribute: it applies to every source; callers check who may)."""
    p = get_principal(session, principal_id=principal_id)
    before, after = Label(p.clearance), Label.parse(clearance)
    p.clearance = int(after)
    record_change(session, p, "principal.clearance", before.slug, after.slug, actor=actor, acting_for=acting_for)
    return p


def record_change(
    session: Session, p: Principal, action: str, before: object, after: object, *, actor: str | None,
    acting_for: str | None,
) -> None:
    """Flush a change of one attribute of `p` and audit it with its before and after values."""
    session.flush()
    audit.append(session, audit.Write(action=action, target=p.id, details={"before": before, "after": after}),
                 principal_id=actor, acting_for=acting_for)


def issue_key(
    session: Session, *, principal_id: str, actor: str | None, expires_at: datetime | None = None,
    description: str = "", token: str | None = None, acting_for: str | None = None,
) -> IssuedKey:
    """Create an API key; the token is returned once and only its hash is stored. An expiry must lie in the
    future: a key dead on arrival is a caller's mistake (often a time zone), refused `expiry_in_past`."""
    if expires_at is not None and utc(expires_at) <= utcnow():
        raise ValidationFailedError("expires_at must be in the future", code="expiry_in_past")
    get_principal(session, principal_id=principal_id)
    if token is None:
        key_id = secrets.token_hex(8)
        token = f"gm_{key_id}_{secrets.token_urlsafe(32)}"
    m = _KEY.fullmatch(token)
    if m is None:
        raise ValidationFailedError("malformed API key", code="invalid_api_key_format")
    key_id, secret = m.group(1), m.group(2)
    if session.get(ApiKey, key_id) is not None:
        raise ConflictError("key id exists", code="api_key_exists")
    session.add(ApiKey(
        id=key_id, principal_id=principal_id, secret_hash=_hash(secret), created_at=utcnow(),
        expires_at=expires_at, description=description,
    ))
    session.flush()
    audit.append(session, audit.Write(action="key.issue", target=principal_id, details={"key_id": key_id}),
                 principal_id=actor, acting_for=acting_for)
    return IssuedKey(key_id=key_id, token=token, expires_at=expires_at)


def revoke_key(
    session: Session, *, key_id: str, actor: str | None, caller: EffectivePrincipal | None = None,
    acting_for: str | None = None,
) -> ApiKey:
    """Revoke at once. With `caller`, only an admin or the key's own principal may revoke it."""
    key = session.get(ApiKey, key_id)
    if caller is not None and (key is None or key.principal_id != caller.principal_id):
        require_role(caller, "admin")
    if key is None:
        raise NotFoundError(f"key {key_id!r} not found", code="api_key_not_found")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    audit.append(session, audit.Write(action="key.revoke", target=key.principal_id, details={"key_id": key_id}),
                 principal_id=actor, acting_for=acting_for)
    return key


def list_keys(session: Session, *, principal_id: str) -> list[ApiKey]:
    return list(session.execute(select(ApiKey).where(ApiKey.principal_id == principal_id)).scalars())


def _authenticated_id(session: Session, token: str | None) -> str:
    """The principal id behind a bearer token (key found, secret matches, not revoked, not expired), or
    AuthError (401). Never says which part of a wrong key was wrong."""
    if not token:
        raise AuthError("missing API key", code="missing_api_key")
    m = _KEY.fullmatch(token)
    key = session.execute(_KEY_ROW, {"id": m.group(1)}).one_or_none() if m else None
    if m is None or key is None or not hmac.compare_digest(key.secret_hash, _hash(m.group(2))):
        raise AuthError("invalid API key", code="invalid_api_key")
    if key.revoked_at is not None:
        raise AuthError("API key revoked", code="revoked_api_key")
    if key.expires_at is not None and aware(key.expires_at) <= utcnow():
        raise AuthError("API key expired", code="expired_api_key")
    return str(key.principal_id)


def key_id_of(token: str | None) -> str | None:
    """The key id part of a well-formed API key (`gm_<key id>_<secret>`; not a secret), else None."""
    m = _KEY.fullmatch(token or "")
    return m.group(1) if m else None


def authenticate(session: Session, *, token: str | None) -> Principal:
    """The principal behind a bearer token, or AuthError (401), as an ORM object (routes that manage it)."""
    principal_id = _authenticated_id(session, token)
    # Groups and roles in the same statement (joined), not the relationships' default extra selects.
    p = session.execute(_PRINCIPAL_WITH_ACCESS, {"id": principal_id}).unique().scalar_one_or_none()
    if p is None or not p.active:
        raise AuthError("principal inactive or unknown", code="inactive_principal")
    return p


def who_for_token(session: Session, *, token: str | None, acting_for: str | None) -> EffectivePrincipal:
    """authenticate + resolve_effective for a request, in column statements (no ORM entities): every
    authenticated request runs this, and the search endpoint on each call."""
    found = _load_identity(session, _authenticated_id(session, token))
    if found is None or not found[0].active:
        raise AuthError("principal inactive or unknown", code="inactive_principal")
    caller, may_act_for_any = found
    return _act_for(session, caller, may_act_for_any, acting_for)


def resolve_effective(session: Session, *, caller: Principal, acting_for: str | None) -> EffectivePrincipal:
    """Apply X-Acting-For: only agents/services with a delegation for that (active) user may use it."""
    return _act_for(session, identity(caller), caller.may_act_for_any, acting_for)


def _act_for(session: Session, caller: Identity, may_act_for_any: bool, acting_for: str | None) -> EffectivePrincipal:
    if acting_for is None:
        return effective(caller)
    if not acting_for.strip():  # fail closed: a blank header is a client bug, not "acting for nobody"
        raise ValidationFailedError("X-Acting-For is blank: omit it or name a user", code="invalid_acting_for")
    if caller.kind == "user":
        raise ForbiddenError("users cannot act for other users", code="delegation_not_allowed")
    allowed = may_act_for_any or session.execute(
        _DELEGATED, {"agent": caller.id, "user": acting_for}
    ).first() is not None
    if not allowed:
        raise ForbiddenError(f"{caller.id!r} may not act for {acting_for!r}", code="delegation_not_allowed")
    found = _load_identity(session, acting_for)
    if found is None or not found[0].active or found[0].kind != "user":
        raise ForbiddenError("acting-for user unknown or inactive", code="delegation_not_allowed")
    return effective(caller, found[0])


def _load_identity(session: Session, principal_id: str) -> tuple[Identity, bool] | None:
    """The principal as the policy sees it, and whether it may act for any user (two statements)."""
    row = session.execute(_IDENTITY_ROW, {"id": principal_id}).one_or_none()
    if row is None:
        return None
    groups: set[str] = set()
    roles: set[str] = set()
    for kind, value in session.execute(_MEMBERSHIPS, {"id": principal_id}):
        (groups if kind == "g" else roles).add(value)
    return Identity(
        id=row.id, kind=row.kind, groups=frozenset(groups), clearance=Label(row.clearance),
        jurisdiction=row.jurisdiction, roles=frozenset(roles), active=bool(row.active),
    ), bool(row.may_act_for_any)


# Authentication statements, built once on the tables (Core: no ORM compile step or identity map per request).
_K, _P, _G, _R, _D = (cast(Table, m.__table__) for m in (ApiKey, Principal, PrincipalGroup, PrincipalRole, Delegation))
_KEY_ROW = select(
    _K.c.principal_id, _K.c.secret_hash, _K.c.revoked_at, _K.c.expires_at
).where(_K.c.id == bindparam("id"))
_IDENTITY_ROW = select(
    _P.c.id, _P.c.kind, _P.c.clearance, _P.c.jurisdiction, _P.c.active, _P.c.may_act_for_any
).where(_P.c.id == bindparam("id"))
_MEMBERSHIPS = union_all(
    select(literal("g"), _G.c.group).where(_G.c.principal_id == bindparam("id")),
    select(literal("r"), _R.c.role).where(_R.c.principal_id == bindparam("id")),
)
_DELEGATED = select(_D.c.user_id).where(_D.c.agent_id == bindparam("agent"), _D.c.user_id == bindparam("user"))
_PRINCIPAL_WITH_ACCESS = (
    select(Principal)
    .where(Principal.id == bindparam("id"))
    .options(joinedload(Principal.groups), joinedload(Principal.roles))
)


def require_role(who: EffectivePrincipal | Principal, role: str, *alternatives: str) -> None:
    """`role` (or one of `alternatives`) held, else 403 `missing_role`; admin holds every role."""
    roles = who.roles if isinstance(who, EffectivePrincipal) else {r.role for r in who.roles}
    wanted = (role, *alternatives)
    if not (set(wanted) | {"admin"}) & set(roles):
        raise ForbiddenError(f"requires role {' or '.join(map(repr, wanted))}", code="missing_role")
