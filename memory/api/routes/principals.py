"""Principals and API keys (admin). Writes are audited with the admin and, for an agent acting for an admin
user, that user (X-Acting-For)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from memory import principal_changes, principals
from memory.api import presenters, schemas
from memory.api.deps import SessionDep, TransactionPerHop, WhoDep, role
from memory.policy import EffectivePrincipal

router = APIRouter(prefix="/v1", tags=["principals"], responses=schemas.ERRORS, route_class=TransactionPerHop)
# The admin as a parameter (not `dependencies=[role("admin")]` plus the caller): one authentication per request.
AdminDep = Annotated[EffectivePrincipal, role("admin")]


@router.post("/principals", status_code=201, response_model=schemas.PrincipalCreated)
def create_principal(body: schemas.PrincipalCreate, session: SessionDep, admin: AdminDep) -> schemas.PrincipalCreated:
    """Create a principal and its first API key (the key is shown once)."""
    spec = principals.NewPrincipal(
        id=body.id, kind=body.kind, groups=tuple(body.groups), clearance=body.clearance,
        jurisdiction=body.jurisdiction, roles=tuple(body.roles), display_name=body.display_name,
        may_act_for=tuple(body.may_act_for), may_act_for_any=body.may_act_for_any,
    )
    actor, acting_for = admin.principal_id, admin.acting_for
    p = principals.create_principal(session, spec=spec, actor=actor, acting_for=acting_for)
    issued = principals.issue_key(session, principal_id=p.id, actor=actor, acting_for=acting_for,
                                  expires_at=body.key_expires_at)
    return schemas.PrincipalCreated(
        principal=presenters.principal(p),
        key=schemas.KeyOut(key_id=issued.key_id, api_key=issued.token, expires_at=issued.expires_at),
    )


@router.get("/principals", response_model=list[schemas.PrincipalOut], dependencies=[role("admin")])
def list_principals(session: SessionDep) -> list[schemas.PrincipalOut]:
    return [presenters.principal(p) for p in principals.list_principals(session)]


@router.get("/principals/{principal_id}", response_model=schemas.PrincipalOut)
def get_principal(principal_id: str, session: SessionDep, who: WhoDep) -> schemas.PrincipalOut:
    """Admins read anyone; every principal reads itself."""
    if who.principal_id != principal_id:
        principals.require_role(who, "admin")
    return presenters.principal(principals.get_principal(session, principal_id=principal_id))


@router.patch("/principals/{principal_id}", response_model=schemas.PrincipalOut)
def patch_principal(
    principal_id: str, body: schemas.PrincipalPatch, session: SessionDep, admin: AdminDep
) -> schemas.PrincipalOut:
    """Change the given attributes: active, groups, clearance, roles, delegations (`may_act_for`,
    `may_act_for_any`). Roles and delegations apply from the principal's next request."""
    change = principal_changes.PrincipalChange(
        active=body.active, groups=None if body.groups is None else tuple(body.groups), clearance=body.clearance,
        roles=None if body.roles is None else tuple(body.roles),
        may_act_for=None if body.may_act_for is None else tuple(body.may_act_for),
        may_act_for_any=body.may_act_for_any,
    )
    return presenters.principal(principal_changes.update_principal(
        session, principal_id=principal_id, change=change, actor=admin.principal_id, acting_for=admin.acting_for,
    ))


@router.post("/principals/{principal_id}/keys", status_code=201, response_model=schemas.KeyOut)
def issue_key(principal_id: str, body: schemas.KeyCreate, session: SessionDep, admin: AdminDep) -> schemas.KeyOut:
    """Issue another key (rotation: issue, switch clients, revoke the old one)."""
    issued = principals.issue_key(session, principal_id=principal_id, actor=admin.principal_id,
                                  acting_for=admin.acting_for, expires_at=body.expires_at,
                                  description=body.description)
    return schemas.KeyOut(key_id=issued.key_id, api_key=issued.token, expires_at=issued.expires_at)


@router.get("/principals/{principal_id}/keys", response_model=list[schemas.KeyOut], dependencies=[role("admin")])
def list_keys(principal_id: str, session: SessionDep) -> list[schemas.KeyOut]:
    principals.get_principal(session, principal_id=principal_id)
    return [presenters.key(k) for k in principals.list_keys(session, principal_id=principal_id)]


@router.delete("/keys/{key_id}", response_model=schemas.KeyOut)
def revoke_key(key_id: str, session: SessionDep, who: WhoDep) -> schemas.KeyOut:
    """Revoke a key at once. Admins revoke any key; a principal may revoke its own."""
    return presenters.key(principals.revoke_key(session, key_id=key_id, actor=who.principal_id,
                                                acting_for=who.acting_for, caller=who))
