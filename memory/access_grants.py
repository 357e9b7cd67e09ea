"""What a grant may change to resolve an access request, who may change it, and whether it did.

A request is filed for a withheld reason (clearance, jurisdiction, consent). Group changes never lift one:
the hit was withheld although the caller's groups could read it. What lifts each reason is in REMEDIES:
- clearance: the beneficiary's clearance, a global attribute of a principal (it applies to every source);
- jurisdiction: the transfer rule (source jurisdiction -> caller jurisdiction), which applies to every
  source and caller of that pair, written as a new rules version;
- consent: a purpose added to the source's consent purposes (the source's own steward, once its data
  subjects consented to it), through the audited source update.
The first two are admin-only (ADMIN_ONLY). A steward may still hand out the groups of their own source, and
escalates to admins what only an admin may change. A change that lifts a reason (REASON_BOUND) is made only
for a request of that reason.

Whether a grant resolved the reason is computed, not searched: the pure policy check of that reason's name
(memory.policy.explain) is run for the request as filed (with the purpose it names) against the most
demanding current chunk of the source (its highest label; personal if any chunk is). A reason without a
policy check of its name is reported as unknown rather than guessed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from classifiers.errors import UnknownLabelError
from classifiers.types import Label
from memory import consent, policy, policy_store, principals
from memory import sources as sources_svc
from memory.errors import ForbiddenError, ValidationFailedError
from memory.models import AccessRequest, Chunk, DocumentVersion, Source, SourceReadGroup
from memory.policy import EffectivePrincipal, Transfer, effective_label
from memory.stores.base import OPEN_END, ChunkPayload, VectorStore

ADD_GROUPS, ADD_READ_GROUPS, CLEARANCE, TRANSFER_RULE = "add_groups", "add_read_groups", "clearance", "transfer_rule"
ADD_CONSENT_PURPOSE = "add_consent_purpose"
# Which change lifts which withheld reason. A reason not listed here (one added later) can still be granted
# with group changes or refused; its resolution is read from the policy check of the same name, if any.
REMEDIES: dict[str, frozenset[str]] = {
    "clearance": frozenset({CLEARANCE}), "jurisdiction": frozenset({TRANSFER_RULE}),
    "consent": frozenset({ADD_CONSENT_PURPOSE}),
}
# Changes that reach beyond the request's source: only admins make them.
ADMIN_ONLY = frozenset({CLEARANCE, TRANSFER_RULE})
# Changes made only to lift their own reason (a global change, or a record of consent, must be justified by
# the request it closes).
REASON_BOUND = ADMIN_ONLY | {ADD_CONSENT_PURPOSE}


@dataclass(frozen=True)
class TransferGrant:
    """Set the rule for (the source's jurisdiction -> caller_jurisdiction)."""

    rule: str  # allow | allow_masked | deny_personal; must admit more than the rule in force
    caller_jurisdiction: str | None = None  # default: the beneficiary's jurisdiction


@dataclass(frozen=True)
class Grant:
    """What a grant changes, beyond closing the request (all optional)."""

    add_groups: tuple[str, ...] = ()  # added to the beneficiary; must be read groups of the source
    add_read_groups: tuple[str, ...] = ()  # added to the source's read groups
    clearance: str | None = None  # admin: raise the beneficiary's clearance to this level
    transfer_rule: TransferGrant | None = None  # admin: a new transfer rules version
    add_consent_purpose: str | None = None  # steward: the source's data subjects consented to this purpose

    @property
    def kinds(self) -> frozenset[str]:
        """The names of the changes this grant asks for."""
        asked = {ADD_GROUPS: bool(self.add_groups), ADD_READ_GROUPS: bool(self.add_read_groups),
                 CLEARANCE: self.clearance is not None, TRANSFER_RULE: self.transfer_rule is not None,
                 ADD_CONSENT_PURPOSE: self.add_consent_purpose is not None}
        return frozenset(k for k, v in asked.items() if v)


@dataclass(frozen=True)
class Resolution:
    """Whether the request's withheld reason still applies after the grant."""

    reason: str
    resolved: bool | None  # for the request as filed (the requester, acting for its user when it did)
    beneficiary: str
    beneficiary_resolved: bool | None  # for the beneficiary on its own
    failing_checks: tuple[str, ...]  # policy checks that still fail for the request as filed
    detail: str  # the reason's check, e.g. "clearance internal vs label confidential"
    notes: tuple[str, ...] = field(default_factory=tuple)


def beneficiary(req: AccessRequest) -> str:
    return req.acting_for or req.requester_id


def check_authority(who: EffectivePrincipal, *, reason: str, grant: Grant) -> None:
    """403 `admin_required` for an admin-only change by a non-admin; 422 `change_not_for_reason` for a
    reason-bound change that cannot lift the request's reason."""
    admin_only = sorted(grant.kinds & ADMIN_ONLY)
    if admin_only and "admin" not in who.roles:
        raise ForbiddenError(f"only an admin may change {admin_only}; escalate the request instead",
                             code="admin_required", details={"changes": admin_only})
    unrelated = sorted(grant.kinds & REASON_BOUND - REMEDIES.get(reason, frozenset()))
    if unrelated:
        raise ValidationFailedError(f"{unrelated} does not resolve a {reason!r} request",
                                    code="change_not_for_reason", details={"changes": unrelated, "reason": reason})


@dataclass(frozen=True)
class Applied:
    """What a grant changed, and the source access its vectors take once the decision commits (each through
    memory.sources.publish_access)."""

    changes: dict[str, object]
    pending: tuple[sources_svc.SourceUpdate, ...] = ()


def apply(session: Session, store: VectorStore, *, req: AccessRequest, src: Source, grant: Grant,
          actor: str, admin: bool = False, acting_for: str | None = None) -> Applied:
    """Validate every change, then make them through their own audited services."""
    target = principals.get_principal(session, principal_id=beneficiary(req))
    current_read = set(sources_svc.read_groups(src))
    if grant.add_groups:
        _check_groups_handed_out(session, grant, current_read, actor=actor, admin=admin)
    level = _clearance_level(target.clearance, grant.clearance) if grant.clearance is not None else None
    pair = _transfer_pair(session, src, target.jurisdiction, grant.transfer_rule) if grant.transfer_rule else None
    purpose = _new_purpose(src, grant.add_consent_purpose) if grant.add_consent_purpose is not None else None

    changes: dict[str, object] = {}
    pending: list[sources_svc.SourceUpdate] = []
    if grant.add_groups:
        have = [g.group for g in target.groups]
        principals.update_groups(session, principal_id=target.id, groups=_union(have, grant.add_groups), actor=actor,
                                 acting_for=acting_for)
        changes["groups_added_to"] = {target.id: sorted(set(grant.add_groups) - set(have))}
    if level is not None:
        before = Label(target.clearance)
        principals.set_clearance(session, principal_id=target.id, clearance=level, actor=actor,
                                 acting_for=acting_for)
        changes[CLEARANCE] = {"principal": target.id, "before": before.slug, "after": level.slug}
    if pair is not None:
        data_j, caller_j, before_mode, mode = pair
        rules = policy_store.set_transfer_rule(session, data=data_j, caller=caller_j, rule=mode.slug, actor=actor,
                                              acting_for=acting_for)
        changes[TRANSFER_RULE] = {"data": data_j, "caller": caller_j, "before": before_mode.slug,
                                  "after": mode.slug, "rules_version": rules.version}
    if purpose is not None:
        # Read at query time: no vector to re-stamp, the next search for this purpose sees the data.
        purposes = (*(src.consent_purposes or ()), purpose)
        pending.append(sources_svc.update(
            session, source_id=src.id, patch=sources_svc.SourcePatch(consent_purposes=purposes), store=store,
            actor=actor, acting_for=acting_for))
        changes[ADD_CONSENT_PURPOSE] = {"purpose": purpose, "consent_purposes": list(src.consent_purposes)}
    if grant.add_read_groups:
        # Last: it patches the vector payloads, which a later validation error could not roll back.
        groups = _union(sorted(current_read), grant.add_read_groups)
        pending.append(sources_svc.update(
            session, source_id=src.id, patch=sources_svc.SourcePatch(read_groups=groups), store=store, actor=actor,
            acting_for=acting_for))
        changes["read_groups_added"] = sorted(set(grant.add_read_groups) - current_read)
    return Applied(changes, tuple(pending))


def _check_groups_handed_out(
    session: Session, grant: Grant, current_read: set[str], *, actor: str, admin: bool
) -> None:
    """A steward may hand out only the groups of their own source (those reading it, or added to it by this
    grant), and, since a membership reaches every source the group reads, only groups that read no source
    another steward manages: a steward can put any group on their source, so that alone proves nothing.
    Admins may hand out any."""
    foreign = set(grant.add_groups) - current_read - set(grant.add_read_groups)
    if foreign:
        raise ValidationFailedError(f"groups {sorted(foreign)} do not read this source", code="group_not_on_source")
    if not admin:
        elsewhere = sorted(set(session.execute(
            select(SourceReadGroup.group).join(Source, Source.id == SourceReadGroup.source_id)
            .where(SourceReadGroup.group.in_(sorted(set(grant.add_groups))), Source.steward_id != actor)
        ).scalars()))
        if elsewhere:
            raise ValidationFailedError(f"groups {elsewhere} read sources another steward manages",
                                        code="group_not_on_source")


def _new_purpose(src: Source, requested: str) -> str:
    purpose = consent.normalise_purpose(requested)
    if purpose in (src.consent_purposes or ()):
        # A no-op would read as a recorded consent that changed nothing.
        raise ValidationFailedError(f"the source already records consent to {purpose!r}",
                                    code="consent_purpose_present", details={"purpose": purpose})
    return purpose


def _clearance_level(current: int, requested: str) -> Label:
    if not requested.strip():
        raise ValidationFailedError("a clearance grant must name a level", code="clearance_level_required")
    try:
        level = Label.parse(requested)
    except UnknownLabelError as exc:
        raise ValidationFailedError(f"unknown clearance {requested!r}", code="invalid_clearance") from exc
    if level <= current:
        # A grant only raises; an equal level would be a silent no-op, a lower one a demotion.
        raise ValidationFailedError(
            f"clearance {level.slug} does not raise the beneficiary's {Label(current).slug}",
            code="clearance_not_raised", details={"current": Label(current).slug, "requested": level.slug},
        )
    return level


def _transfer_pair(
    session: Session, src: Source, beneficiary_j: str, grant: TransferGrant
) -> tuple[str, str, Transfer, Transfer]:
    caller_j = policy.normalise_jurisdiction(grant.caller_jurisdiction or beneficiary_j)
    mode = Transfer.parse(grant.rule)
    before = policy_store.transfer_rules(session).mode(src.jurisdiction, caller_j)
    if mode <= before:
        raise ValidationFailedError(
            f"{mode.slug} does not widen the rule {src.jurisdiction}->{caller_j} ({before.slug})",
            code="transfer_rule_not_widened",
            details={"data": src.jurisdiction, "caller": caller_j, "current": before.slug, "requested": mode.slug},
        )
    return src.jurisdiction, caller_j, before, mode


def resolve(session: Session, *, req: AccessRequest, src: Source, grant: Grant) -> Resolution:
    """Does the request's reason still withhold any current chunk of the source, for the request as filed (and
    the purpose it names)?"""
    requester = principals.identity(principals.get_principal(session, principal_id=req.requester_id))
    user = principals.identity(principals.get_principal(session, principal_id=req.acting_for)) if req.acting_for \
        else None
    as_filed = policy.effective(requester, user)
    alone = policy.effective(user) if user is not None else as_filed
    rules = policy_store.transfer_rules(session)
    payload = _most_demanding(session, src)
    now = time.time()
    blocked = frozenset({src.id}) if consent.blocks(src, req.purpose) else frozenset()
    filed_checks = {c.rule: c for c in policy.explain(as_filed, rules, payload, as_of=now, consent_blocked=blocked,
                                                      purpose=req.purpose).checks}
    alone_checks = {c.rule: c for c in policy.explain(alone, rules, payload, as_of=now, consent_blocked=blocked,
                                                      purpose=req.purpose).checks}
    check, own = filed_checks.get(req.reason), alone_checks.get(req.reason)
    resolved = check.passed if check is not None else None
    failing = tuple(name for name, c in filed_checks.items() if not c.passed)
    notes = _notes(req, grant, resolved=resolved, beneficiary_resolved=own.passed if own is not None else None,
                   detail=check.detail if check is not None else "")
    others = [name for name in failing if name != req.reason]
    if others:
        notes += (f"other checks still withhold some of the source's chunks: {', '.join(others)}",)
    return Resolution(
        reason=req.reason, resolved=resolved, beneficiary=beneficiary(req),
        beneficiary_resolved=own.passed if own is not None else None, failing_checks=failing,
        detail=check.detail if check is not None else "", notes=notes,
    )


def _notes(req: AccessRequest, grant: Grant, *, resolved: bool | None, beneficiary_resolved: bool | None,
           detail: str) -> tuple[str, ...]:
    if resolved is None:
        return (f"no policy check is named {req.reason!r}: whether this grant resolves it is not known",)
    if resolved:
        return ()
    remedies = REMEDIES.get(req.reason, frozenset())
    if req.acting_for and beneficiary_resolved:
        return (f"{req.acting_for!r} now passes on its own, but {req.requester_id!r} acts for it within its own "
                f"ceiling, which still withholds ({detail}); that is a separate admin change to the agent",)
    if not grant.kinds & remedies:
        needs = f"; it needs a change to: {', '.join(sorted(remedies))}" if remedies else ""
        return (f"this grant changes nothing that lifts {req.reason!r}{needs}",)
    if req.reason == "consent" and grant.add_consent_purpose is not None and req.purpose is not None \
            and consent.normalise_purpose(grant.add_consent_purpose) != req.purpose:
        return (f"consent was recorded for {grant.add_consent_purpose.strip().lower()!r}, but the request's "
                f"searches state {req.purpose!r}",)
    return (f"the change does not cover every current chunk of the source ({detail})",)


def _most_demanding(session: Session, src: Source) -> ChunkPayload:
    """A payload standing for every current chunk of the source: the highest label (at least the source's floor
    now: policy.effective_label), personal if any is."""
    top, personal = session.execute(
        select(func.max(Chunk.label), func.max(case((Chunk.personal.is_(True), 1), else_=0)))
        .join(DocumentVersion, DocumentVersion.id == Chunk.version_id)
        .where(Chunk.source_id == src.id, DocumentVersion.status == "active", DocumentVersion.retracted_at.is_(None))
    ).one()
    return ChunkPayload(
        chunk_id="", source_id=src.id, document_id="", version_id="", read_groups=sources_svc.read_groups(src),
        label=src.floor if top is None else effective_label(int(top), src.floor), jurisdiction=src.jurisdiction,
        personal=bool(personal),
        entity_types=(), valid_from=0.0, valid_to=OPEN_END, retracted=False, committed=True,
    )


def _union(have: Sequence[str], add: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*have, *add]))
