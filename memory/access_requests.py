"""Recourse: a caller whose hits were withheld (clearance, jurisdiction or consent) asks the source's steward.

File -> the steward lists and decides: grant, refuse with a note, or escalate to admins with a note.
A grant may change groups (the steward's own source) and, to lift the withheld reason itself, the
beneficiary's clearance or a transfer rule (admins only), or the source's consent purposes (its steward;
see memory.access_grants). A consent request names the purpose its searches state. Every change goes
through its own audited service, and the decision is audited with what changed and whether the reason is
now resolved. An escalated request is decided by admins only.

A request may only name a source the caller's groups can already read: the withheld path never hints at
sources outside the caller's groups, and neither does this one (unknown and unreadable look the same).
The beneficiary of a grant is the user an agent acted for, or the caller itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from memory import access_grants, audit, consent
from memory import sources as sources_svc
from memory.access_grants import Grant, Resolution
from memory.clock import utcnow
from memory.errors import ConflictError, ForbiddenError, NotFoundError, ValidationFailedError
from memory.models import AccessRequest, Source
from memory.policy import WITHHELD_REASONS, EffectivePrincipal
from memory.stores.base import VectorStore

REASONS = frozenset(WITHHELD_REASONS)
PENDING = frozenset({"open", "escalated"})  # awaiting a decision
STATUSES = PENDING | {"granted", "refused"}
DECISIONS = ("grant", "refuse", "escalate")
MAX_TEXT = 4000


@dataclass(frozen=True)
class Decided:
    """A decision's outcome: the request, what the grant changed and whether it lifted the reason."""

    request: AccessRequest
    changes: dict[str, object]
    resolution: Resolution | None = None  # grants only
    # Source access the vectors take once the decision commits: the caller commits, then publishes each
    # (memory.sources.publish_access).
    pending: tuple[sources_svc.SourceUpdate, ...] = ()

    def publish(self, factory: sessionmaker[Session], store: VectorStore) -> None:
        """After the decision committed: the granted source access reaches the vectors."""
        for source_id in dict.fromkeys(u.source.id for u in self.pending if u.access_changed):
            sources_svc.publish_access(factory, store, source_id)


def _text(value: str, what: str, *, required: bool) -> str:
    text = (value or "").strip()
    if required and not text:
        raise ValidationFailedError(f"{what} is required", code=f"{what}_required")
    if len(text) > MAX_TEXT:
        raise ValidationFailedError(f"{what} is longer than {MAX_TEXT} characters", code=f"{what}_too_long")
    return text


def file_request(
    session: Session, *, who: EffectivePrincipal, source_id: str, reason: str, justification: str,
    purpose: str | None = None,
) -> AccessRequest:
    """Open a request to the steward of `source_id` (409 if the same one is already open). `purpose`: what the
    caller's searches state; required for a consent request (422 `purpose_required`), and the resolution of
    any request is computed for it."""
    if reason not in REASONS:
        raise ValidationFailedError(f"reason must be one of {sorted(REASONS)}", code="invalid_reason")
    text = _text(justification, "justification", required=True)
    purpose = consent.normalise_purpose(purpose) if purpose is not None else None
    if reason == "consent" and purpose is None:
        raise ValidationFailedError("a consent request names the purpose to consent to", code="purpose_required")
    src = session.get(Source, source_id)
    if src is None or not (who.groups & set(sources_svc.read_groups(src))):
        raise NotFoundError(f"source {source_id!r} not found", code="source_not_found")
    duplicate = session.execute(
        select(AccessRequest.id).where(
            AccessRequest.requester_id == who.principal_id, AccessRequest.source_id == source_id,
            AccessRequest.reason == reason, AccessRequest.status.in_(PENDING),
            AccessRequest.purpose.is_(None) if purpose is None else AccessRequest.purpose == purpose,
            AccessRequest.acting_for.is_(None) if who.acting_for is None
            else AccessRequest.acting_for == who.acting_for,
        )
    ).first()
    if duplicate is not None:
        raise ConflictError("a pending request for this source and reason exists", code="request_exists",
                            details={"request_id": duplicate[0]})
    req = AccessRequest(
        id=str(uuid.uuid4()), requester_id=who.principal_id, acting_for=who.acting_for, source_id=source_id,
        reason=reason, purpose=purpose, justification=text, status="open", created_at=utcnow(),
    )
    session.add(req)
    session.flush()
    audit.append(
        session,
        audit.Write(action="access_request.file", target=req.id,
                    details={"reason": reason, "purpose": purpose, "steward": src.steward_id}),
        principal_id=who.principal_id, acting_for=who.acting_for, source_id=source_id,
    )
    return req


def get_request(session: Session, *, request_id: str, for_update: bool = False) -> AccessRequest:
    """`for_update`: lock the row until the transaction ends (PostgreSQL `SELECT ... FOR UPDATE`; SQLite's
    BEGIN IMMEDIATE already serialises writers) and re-read it, so concurrent deciders queue on it."""
    req = session.get(AccessRequest, request_id, with_for_update=for_update, populate_existing=for_update)
    if req is None:
        raise NotFoundError(f"access request {request_id!r} not found", code="access_request_not_found")
    return req


def list_requests(
    session: Session, *, who: EffectivePrincipal, status: str | None = None, source_id: str | None = None
) -> list[AccessRequest]:
    """Admins: all (escalated ones are theirs to decide). Stewards: requests for sources they steward.
    Everyone: the requests they filed, and those filed on their behalf. An agent acting for a user: only the
    requests it filed for that same user (as memory.verification.Viewer does for serving records), never
    those it filed for someone else, nor the user's own."""
    if status is not None and status not in STATUSES:
        raise ValidationFailedError(f"status must be one of {sorted(STATUSES)}", code="invalid_status")
    q = select(AccessRequest)
    if "admin" not in who.roles:
        if who.acting_for is None:
            mine = or_(AccessRequest.requester_id == who.principal_id, AccessRequest.acting_for == who.principal_id)
        else:
            mine = and_(AccessRequest.requester_id == who.principal_id, AccessRequest.acting_for == who.acting_for)
        if "steward" in who.roles:
            mine = or_(mine, AccessRequest.source_id.in_(sources_svc.stewarded(who)))
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
) -> Decided:
    """Grant, refuse (with a note) or escalate (with a note) a pending request: the steward of its source or an
    admin; an escalated request, admins only; a grant to the steward themselves, admins only; a grant under
    delegation, never (an agent may refuse or escalate for its steward). Errors: 403 `not_source_steward` /
    `admin_required` / `self_decision` / `delegated_change_refused`, 404 `access_request_not_found` (unknown, or its
    source hidden from the caller: sources.ensure_steward), 409
    `request_closed` / `already_escalated`, 422 for bad input (see memory.access_grants for grants)."""
    if decision not in DECISIONS:
        raise ValidationFailedError(f"decision must be one of {list(DECISIONS)}", code="invalid_decision")
    # Locked: two deciders at once (steward and admin, two admins) must not both act on one open request;
    # the second waits for the first to commit, then sees its status and gets 409.
    req = get_request(session, request_id=request_id, for_update=True)
    # The source row next, before any audit append takes the audit head: the order every writer takes (source,
    # then audit head), and a grant then reads the source's read groups as committed, not a stale copy.
    src = sources_svc.get(session, source_id=req.source_id, for_update=True)
    # A decider who may not see the source gets the 404 of an unknown request: nothing names the source.
    sources_svc.ensure_steward(who, src, unseen=NotFoundError(f"access request {request_id!r} not found",
                                                              code="access_request_not_found"))
    if req.status not in PENDING:
        raise ConflictError(f"access request is already {req.status}", code="request_closed")
    if decision == "escalate" and req.status == "escalated":
        raise ConflictError("access request is already escalated", code="already_escalated")
    if req.status == "escalated" and "admin" not in who.roles:
        raise ForbiddenError("the request was escalated: only an admin decides it", code="admin_required")
    text = _text(note, "note", required=decision != "grant")
    grant = grant or Grant()
    if decision != "grant" and grant.kinds:
        code = {"refuse": "grant_on_refusal", "escalate": "grant_on_escalation"}[decision]
        raise ValidationFailedError(f"a decision to {decision} changes nothing", code=code)
    if decision == "escalate":
        return _escalate(session, req=req, who=who, note=text)
    changes: dict[str, object] = {}
    resolution: Resolution | None = None
    pending: tuple[sources_svc.SourceUpdate, ...] = ()
    if decision == "grant":
        # A grant widens who reads the source (groups, clearance, read groups, consent): the steward's own key.
        sources_svc.refuse_delegated_governance(["grant"], who=who, what="granting access")
        deciders = {who.principal_id, who.acting_for} - {None}
        if "admin" not in who.roles and deciders & {req.requester_id, req.acting_for, access_grants.beneficiary(req)}:
            # Four eyes: a steward never grants access to themselves (nor to an agent acting for them).
            raise ForbiddenError("a steward may not grant a request they filed or benefit from; an admin decides it",
                                 code="self_decision")
        access_grants.check_authority(who, reason=req.reason, grant=grant)
        applied = access_grants.apply(session, store, req=req, src=src, grant=grant, actor=who.principal_id,
                                     admin="admin" in who.roles, acting_for=who.acting_for)
        changes, pending = applied.changes, applied.pending
        resolution = access_grants.resolve(session, req=req, src=src, grant=grant)
    req.status = "granted" if decision == "grant" else "refused"
    req.decided_by, req.decided_at, req.decision_note = who.principal_id, utcnow(), text
    session.flush()
    details: dict[str, object] = {
        "requester": req.requester_id, "acting_for": req.acting_for, "reason": req.reason, "purpose": req.purpose,
        "changes": changes, "escalated_by": req.escalated_by,
    }
    if resolution is not None:
        details["resolved"] = resolution.resolved
        details["beneficiary_resolved"] = resolution.beneficiary_resolved
    audit.append(
        session, audit.Write(action=f"access_request.{decision}", target=req.id, details=details),
        principal_id=who.principal_id, acting_for=who.acting_for, source_id=req.source_id,
    )
    return Decided(request=req, changes=changes, resolution=resolution, pending=pending)


def _escalate(session: Session, *, req: AccessRequest, who: EffectivePrincipal, note: str) -> Decided:
    """Hand the request to admins: the steward agrees, but what would lift the reason is admin-only."""
    req.status = "escalated"
    req.escalated_by, req.escalated_at, req.escalation_note = who.principal_id, utcnow(), note
    session.flush()
    audit.append(
        session,
        audit.Write(action="access_request.escalate", target=req.id, details={
            "requester": req.requester_id, "acting_for": req.acting_for, "reason": req.reason,
            "needs": sorted(access_grants.REMEDIES.get(req.reason, frozenset())),
        }),
        principal_id=who.principal_id, acting_for=who.acting_for, source_id=req.source_id,
    )
    return Decided(request=req, changes={})
