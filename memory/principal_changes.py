"""An admin's changes to a principal after its creation: roles, delegations (`may_act_for`, `may_act_for_any`),
and the combined PATCH (`update_principal`: every attribute in the caller's transaction, one audit record each).
Authentication reads roles and delegations on every request, so a change applies from the next one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory import principals
from memory.errors import ConflictError
from memory.models import Delegation, Principal, PrincipalRole


def set_roles(
    session: Session, *, principal_id: str, roles: Iterable[str], actor: str | None, acting_for: str | None = None
) -> Principal:
    """Replace a principal's roles (reader, steward, auditor, admin; empty: none). Read on every request."""
    p = principals.get_principal(session, principal_id=principal_id)
    wanted = principals.valid_roles(roles)
    before = sorted(r.role for r in p.roles)
    p.roles = [PrincipalRole(role=r) for r in wanted]
    principals.record_change(session, p, "principal.roles", before, sorted(wanted), actor=actor, acting_for=acting_for)
    return p


def set_delegations(
    session: Session, *, principal_id: str, user_ids: Iterable[str], actor: str | None, acting_for: str | None = None
) -> Principal:
    """Replace the users an agent/service may act for (empty: none). Authentication reads delegations on every
    request, so a withdrawn one is refused from the agent's next request on."""
    p = principals.get_principal(session, principal_id=principal_id)
    targets = principals.delegation_targets(session, agent_id=p.id, kind=p.kind, user_ids=user_ids, any_user=False)
    before = sorted(d.user_id for d in p.delegations)
    kept = [d for d in p.delegations if d.user_id in targets]
    have = {d.user_id for d in kept}
    p.delegations = kept + [Delegation(agent_id=p.id, user_id=u) for u in targets if u not in have]
    principals.record_change(session, p, "principal.delegations", before, sorted(targets), actor=actor,
                             acting_for=acting_for)
    return p


def set_may_act_for_any(
    session: Session, *, principal_id: str, value: bool, actor: str | None, acting_for: str | None = None
) -> Principal:
    """Allow or withdraw an agent's/service's acting for any active user (read on every request)."""
    p = principals.get_principal(session, principal_id=principal_id)
    principals.delegation_targets(session, agent_id=p.id, kind=p.kind, user_ids=(), any_user=value)
    before = p.may_act_for_any
    p.may_act_for_any = value
    principals.record_change(session, p, "principal.may_act_for_any", before, value, actor=actor,
                             acting_for=acting_for)
    return p


@dataclass(frozen=True)
class PrincipalChange:
    """What an admin changes on a principal; None leaves that attribute as it is."""

    active: bool | None = None
    groups: tuple[str, ...] | None = None
    clearance: str | None = None
    roles: tuple[str, ...] | None = None
    may_act_for: tuple[str, ...] | None = None
    may_act_for_any: bool | None = None


def update_principal(
    session: Session, *, principal_id: str, change: PrincipalChange, actor: str | None, acting_for: str | None = None
) -> Principal:
    """Apply each given attribute of `change`, one audit record each (the caller's transaction: all or none)."""
    by = {"actor": actor, "acting_for": acting_for}
    p = principals.get_principal(session, principal_id=principal_id)
    was_admin = p.active and any(r.role == "admin" for r in p.roles)
    if change.active is not None:
        p = principals.set_active(session, principal_id=principal_id, active=change.active, **by)
    if change.groups is not None:
        p = principals.update_groups(session, principal_id=principal_id, groups=change.groups, **by)
    if change.clearance is not None:
        p = principals.set_clearance(session, principal_id=principal_id, clearance=change.clearance, **by)
    if change.roles is not None:
        p = set_roles(session, principal_id=principal_id, roles=change.roles, **by)
    if change.may_act_for is not None:
        p = set_delegations(session, principal_id=principal_id, user_ids=change.may_act_for, **by)
    if change.may_act_for_any is not None:
        p = set_may_act_for_any(session, principal_id=principal_id, value=change.may_act_for_any, **by)
    if was_admin and (change.active is False or change.roles is not None):
        _keep_an_admin(session)
    return p


def _keep_an_admin(session: Session) -> None:
    """Refuse a change that takes away the last active admin (nobody could then manage principals through the
    API; the CLI, run on the host, still can).
    Counted after the change, in its transaction: every change appended an audit record first, which locks the
    audit head, so two admins demoting each other at once are counted one after the other."""
    session.flush()
    admins = session.scalar(
        select(func.count()).select_from(PrincipalRole).join(Principal, Principal.id == PrincipalRole.principal_id)
        .where(PrincipalRole.role == "admin", Principal.active.is_(True))
    )
    if not admins:
        raise ConflictError("this change would leave no active admin", code="last_admin")
