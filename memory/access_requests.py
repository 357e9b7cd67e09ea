"""Recourse: a caller whose hits were withheld (clearance or jurisdiction) asks the source's steward.

File -> the steward lists and decides: grant (optionally adding groups to the beneficiary or read groups
to the source, both through their own audited services) or refuse with a note. Every step is audited.

A request may only name a source the caller's groups can already read: the withheld path never hints at
sources outside the caller's groups, and neither does this one (unknown and unreadable look the same).
The beneficiary of a grant is the user an agent acted for, or the caller itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from memory import audit, principals
from memory import sources as sources_svc
from memory.clock import utcnow
from memory.errors import ConflictError, NotFoundError, ValidationFailedError
from memory.models import AccessRequest, Source
from memory.policy import EffectivePrincipal
from memory.stores.base import VectorStore

REASONS = frozenset({"clearance", "jurisdiction"})
STATUSES = frozenset({"open", "granted", "refused"})
MAX_TEXT = 4000


@dataclass(frozen=True)
class Grant:
    """What a grant changes, beyond closing the request (both optional)."""

    add_groups: tuple[str, ...] = ()  # added to the beneficiary; must be read groups of the source
    add_read_groups: tuple[str, ...] = ()  # added to the source's read groups


def beneficiary(req: AccessRequest) -> str:
    return req.acting_for or req.requester_id


def _text(value: str, what: str, *, required: bool) -> str:
    text = (value or "").strip()
    if required and not text:
        raise ValidationFailedError(f"{what} is required", code=f"{what}_required")
    if len(text) > MAX_TEXT:
        raise ValidationFailedError(f"{what} is longer than {MAX_TEXT} characters", code=f"{what}_too_long")
    return text


def file_request(
    session: Session, *, who: EffectivePrincipal, source_id: str, reason: str, justification: str
) -> AccessRequest:
    """Open a request to the steward of `source_id` (409 if the same one is already open)."""
    if reason not in REASONS:
        raise ValidationFailedError(f"reason must be one of {sorted(REASONS)}", code="invalid_reason")
    text = _text(justification, "justification", required=True)
    src = session.get(Source, source_id)
    if src is None or not (who.groups & set(sources_svc.read_groups(src))):
        raise NotFoundError(f"source {source_id!r} not found", code="source_not_found")
    duplicate = session.execute(
        select(AccessRequest.id).where(
            AccessRequest.requester_id == who.principal_id, AccessRequest.source_id == source_id,
            AccessRequest.reason == reason, AccessRequest.status == "open",
            AccessRequest.acting_for.is_(None) if who.acting_for is None
            else AccessRequest.acting_for == who.acting_for,
        )
    ).first()
    if duplicate is not None:
        raise ConflictError("an open request for this source and reason exists", code="request_exists",
                            details={"request_id": duplicate[0]})
    req = AccessRequest(
        id=str(uuid.uuid4()), requester_id=who.principal_id, acting_for=who.acting_for, source_id=source_id,
        reason=reason, justification=text, status="open", created_at=utcnow(),
    )
    session.add(req)
    session.flush()
    audit.append(
        session,
        audit.Write(action="access_request.file", target=req.id, details={"reason": reason, "steward": src.steward_id}),
        principal_id=who.principal_id, acting_for=who.acting_for, source_id=source_id,
    )
    return req


def get_request(session: Session, *, request_id: str) -> AccessRequest:
    req = session.get(AccessRequest, request_id)
    if req is None:
        raise NotFoundError(f"access request {request_id!r} not found", code="access_request_not_found")
    return req


def list_requests(
    session: Session, *, who: EffectivePrincipal, status: str | None = None, source_id: str | None = None
) -> list[AccessRequest]:
    """Admins: all. Stewards: requests for sources they steward. Everyone: the requests they filed."""
    if status is not None and status not in STATUSES:
        raise ValidationFailedError(f"status must be one of {sorted(STATUSES)}", code="invalid_status")
    q = select(AccessRequest)
    if "admin" not in who.roles:
        mine = or_(AccessRequest.requester_id == who.principal_id, AccessRequest.acting_for == who.principal_id)
        if "steward" in who.roles:
            stewarded = select(Source.id).where(Source.steward_id == who.principal_id)
            mine = or_(mine, AccessRequest.source_id.in_(stewarded))
        q = q.where(mine)
    if status is not None:
        q = q.where(AccessRequest.status == status)
    if source_id is not None:
        q = q.where(AccessRequest.source_id == source_id)
    return list(session.execute(q.order_by(AccessRequest.created_at, AccessRequest.id)).scalars())


def decide(
    session: Session,
    store: VectorStore,
    *,
    request_id: str,
    who: EffectivePrincipal,
    decision: str,
    note: str = "",
    grant: Grant | None = None,
) -> AccessRequest:
    """Grant or refuse an open request (steward of its source, or an admin). A refusal needs a note."""
    if decision not in ("grant", "refuse"):
        raise ValidationFailedError("decision must be grant or refuse", code="invalid_decision")
    req = get_request(session, request_id=request_id)
    src = sources_svc.get(session, source_id=req.source_id)
    sources_svc.ensure_steward(who, src)
    if req.status != "open":
        raise ConflictError(f"access request is already {req.status}", code="request_closed")
    text = _text(note, "note", required=decision == "refuse")
    changes: dict[str, object] = {}
    if decision == "grant" and grant is not None:
        changes = _apply_grant(session, store, req=req, src=src, grant=grant, actor=who.principal_id)
    elif grant is not None and (grant.add_groups or grant.add_read_groups):
        raise ValidationFailedError("a refusal changes nothing", code="grant_on_refusal")
    req.status = "granted" if decision == "grant" else "refused"
    req.decided_by, req.decided_at, req.decision_note = who.principal_id, utcnow(), text
    session.flush()
    audit.append(
        session,
        audit.Write(action=f"access_request.{decision}", target=req.id, details={
            "requester": req.requester_id, "acting_for": req.acting_for, "reason": req.reason, "changes": changes,
        }),
        principal_id=who.principal_id, acting_for=who.acting_for, source_id=req.source_id,
    )
    return req


def _apply_grant(
    session: Session, store: VectorStore, *, req: AccessRequest, src: Source, grant: Grant, actor: str
) -> dict[str, object]:
    changes: dict[str, object] = {}
    current_read = set(sources_svc.read_groups(src))
    if grant.add_groups:
        # A steward may hand out only the groups of their own source, never another team's.
        foreign = sorted(set(grant.add_groups) - current_read - set(grant.add_read_groups))
        if foreign:
            raise ValidationFailedError(f"groups {foreign} do not read this source", code="group_not_on_source")
        target = principals.get_principal(session, principal_id=beneficiary(req))
        have = [g.group for g in target.groups]
        principals.update_groups(session, principal_id=target.id, groups=_union(have, grant.add_groups), actor=actor)
        changes["groups_added_to"] = {target.id: sorted(set(grant.add_groups) - set(have))}
    if grant.add_read_groups:
        groups = _union(sorted(current_read), grant.add_read_groups)
        sources_svc.update(session, source_id=src.id, patch=sources_svc.SourcePatch(read_groups=groups),
                           store=store, actor=actor)
        changes["read_groups_added"] = sorted(set(grant.add_read_groups) - current_read)
    return changes


def _union(have: Sequence[str], add: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*have, *add]))
