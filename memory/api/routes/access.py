"""Retraction / restore of document versions (stewards) and access requests (the recourse path)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from memory import access_grants, access_requests, retraction
from memory.api import presenters_audit as present
from memory.api import schemas, schemas_audit
from memory.api.deps import ContainerDep, SessionDep, TransactionPerHop, WhoDep, role
from memory.policy import EffectivePrincipal

router = APIRouter(prefix="/v1", responses=schemas.ERRORS, route_class=TransactionPerHop)
StewardDep = Annotated[EffectivePrincipal, role("steward")]


@router.post("/documents/{document_id}/retract", response_model=schemas_audit.ImpactOut, tags=["documents"])
def retract(
    document_id: str, body: schemas_audit.RetractIn, session: SessionDep, container: ContainerDep, who: StewardDep
) -> schemas_audit.ImpactOut:
    """Retract a version (default: the current one). Invisible to every search once this returns; the impact
    report lists every audit record that served its chunks. 409 `already_retracted`."""
    report = retraction.retract_document(session, container.store, document_id=document_id, version=body.version,
                                         reason=body.reason, actor_effective=who)
    return present.impact(report)


@router.post("/documents/{document_id}/restore", response_model=schemas_audit.ImpactOut, tags=["documents"])
def restore(
    document_id: str, body: schemas_audit.RestoreIn, session: SessionDep, container: ContainerDep, who: StewardDep
) -> schemas_audit.ImpactOut:
    """Undo a retraction. The version is served again once this returns. 409 `not_retracted`; 403
    `delegated_change_refused` under X-Acting-For (restoring needs the steward's own key)."""
    vid = retraction.version_id_for(session, document_id=document_id, version=body.version, actor=who)
    report = retraction.restore(session, version_id=vid, reason=body.reason, actor_effective=who)
    # Reveal only after the restore committed: never serve what SQL still calls retracted.
    session.commit()
    retraction.reveal(container.sessions, container.store, version_ids=[vid])
    return present.impact(report)


@router.post("/access-requests", status_code=201, response_model=schemas_audit.AccessRequestOut,
             tags=["access requests"])
def file_request(
    body: schemas_audit.AccessRequestIn, session: SessionDep, who: WhoDep
) -> schemas_audit.AccessRequestOut:
    """Ask a source's steward for access after hits were withheld for clearance, jurisdiction or consent (a
    consent request names the `purpose` its searches state). 422 `purpose_required`, `invalid_purpose`."""
    req = access_requests.file_request(session, who=who, source_id=body.source_id, reason=body.reason,
                                       justification=body.justification, purpose=body.purpose)
    return present.access_request(req)


@router.get("/access-requests", response_model=list[schemas_audit.AccessRequestOut], tags=["access requests"])
def list_requests(
    session: SessionDep,
    who: WhoDep,
    status: Annotated[str | None, Query(description="open | escalated | granted | refused")] = None,
    source_id: Annotated[str | None, Query()] = None,
) -> list[schemas_audit.AccessRequestOut]:
    """Stewards: requests for their sources. Everyone: the requests they filed. Admins: all, including the
    escalated ones they decide (`status=escalated`)."""
    rows = access_requests.list_requests(session, who=who, status=status, source_id=source_id)
    return [present.access_request(r) for r in rows]


@router.post("/access-requests/{request_id}/decision", response_model=schemas_audit.DecisionOut,
             tags=["access requests"])
def decide(
    request_id: str, body: schemas_audit.DecisionIn, session: SessionDep, container: ContainerDep, who: StewardDep
) -> schemas_audit.DecisionOut:
    """Decide a pending request (steward of the source or admin; an escalated one, admins only); audited.

    - **grant**: optionally add groups (steward) and, to lift the withheld reason itself, raise the
      beneficiary's `clearance` or set a `transfer_rule` (admins only), or, for a consent request, record the
      data subjects' consent with `add_consent_purpose` (the steward); each only for a request of that reason.
      The response's `resolution` says whether the reason still withholds any current chunk of the source,
      for the request as filed and for the beneficiary on its own (an agent's ceiling may still withhold).
    - **refuse**: with a note. **escalate**: with a note; hands the request to admins.

    Errors: 403 `not_source_steward`, `admin_required` (admin-only change, or an escalated request),
    `self_decision` (a steward granting a request they filed or benefit from), `delegated_change_refused` (a grant
    sent by an agent acting for the steward: grants need the steward's own key); 404 `access_request_not_found`
    (also when the caller may not see the request's source: neither its steward nor a reader of it);
    409 `request_closed`, `already_escalated`; 422 `note_required`, `clearance_not_raised`, `consent_purpose_present`,
    `transfer_rule_not_widened`, `change_not_for_reason`, `group_not_on_source`, `grant_on_refusal`,
    `grant_on_escalation`, `invalid_request` (malformed body)."""
    rule = body.transfer_rule
    grant = access_grants.Grant(
        add_groups=tuple(body.add_groups), add_read_groups=tuple(body.add_read_groups), clearance=body.clearance,
        transfer_rule=access_grants.TransferGrant(rule=rule.rule, caller_jurisdiction=rule.caller_jurisdiction)
        if rule is not None else None,
        add_consent_purpose=body.add_consent_purpose,
    )
    decided = access_requests.decide(session, container.store, request_id=request_id, who=who,
                                     decision=body.decision, note=body.note, grant=grant)
    out = present.decided(decided)
    session.commit()  # granted source access reaches the vectors only once SQL holds it
    decided.publish(container.sessions, container.store)
    return out
