"""Principals and API keys (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from memory import principals
from memory.api import presenters, schemas
from memory.api.deps import CallerDep, SessionDep, role
from memory.policy import EffectivePrincipal

router = APIRouter(prefix="/v1", tags=["principals"], responses=schemas.ERRORS)
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
    p = principals.create_principal(session, spec=spec, actor=admin.principal_id)
    issued = principals.issue_key(session, principal_id=p.id, actor=admin.principal_id, expires_at=body.key_expires_at)
    return schemas.PrincipalCreated(
        principal=presenters.principal(p),
        key=schemas.KeyOut(key_id=issued.key_id, api_key=issued.token, expires_at=issued.expires_at),
    )


@router.get("/principals", response_model=list[schemas.PrincipalOut], dependencies=[role("admin")])
def list_principals(session: SessionDep) -> list[schemas.PrincipalOut]:
    return [presenters.principal(p) for p in principals.list_principals(session)]


@router.get("/principals/{principal_id}", response_model=schemas.PrincipalOut)
def get_principal(principal_id: str, session: SessionDep, caller: CallerDep) -> schemas.PrincipalOut:
    """Admins read anyone; every principal reads itself."""
    if caller.id != principal_id:
        principals.require_role(caller, "admin")
    return presenters.principal(principals.get_principal(session, principal_id=principal_id))


@router.patch("/principals/{principal_id}", response_model=schemas.PrincipalOut)
def patch_principal(
    principal_id: str, body: schemas.PrincipalPatch, session: SessionDep, admin: AdminDep
) -> schemas.PrincipalOut:
    p = principals.get_principal(session, principal_id=principal_id)
    actor = admin.principal_id
    if body.active is not None:
        p = principals.set_active(session, principal_id=principal_id, active=body.active, actor=actor)
    if body.groups is not None:
        p = principals.update_groups(session, principal_id=principal_id, groups=body.groups, actor=actor)
    if body.clearance is not None:
        p = principals.set_clearance(session, principal_id=principal_id, clearance=body.clearance, actor=actor)
    return presenters.principal(p)


@router.post("/principals/{principal_id}/keys", status_code=201, response_model=schemas.KeyOut)
def issue_key(principal_id: str, body: schemas.KeyCreate, session: SessionDep, admin: AdminDep) -> schemas.KeyOut:
    """Issue another key (rotation: issue, switch clients, revoke the old one)."""
    issued = principals.issue_key(session, principal_id=principal_id, actor=admin.principal_id,
                                  expires_at=body.expires_at, description=body.description)
    return schemas.KeyOut(key_id=issued.key_id, api_key=issued.token, expires_at=issued.expires_at)


@router.get("/principals/{principal_id}/keys", response_model=list[schemas.KeyOut], dependencies=[role("admin")])
def list_keys(principal_id: str, session: SessionDep) -> list[schemas.KeyOut]:
    principals.get_principal(session, principal_id=principal_id)
    return [presenters.key(k) for k in principals.list_keys(session, principal_id=principal_id)]


@router.delete("/keys/{key_id}", response_model=schemas.KeyOut)
def revoke_key(key_id: str, session: SessionDep, caller: CallerDep) -> schemas.KeyOut:
    """Revoke a key at once. Admins revoke any key; a principal may revoke its own."""
    return presenters.key(principals.revoke_key(session, key_id=key_id, actor=caller.id, caller=caller))
