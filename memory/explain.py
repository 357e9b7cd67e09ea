"""Explain a policy decision: would principal P (acting for U) see chunk C at time T, and why (auditors).

The access payload is rebuilt from SQL, the source of truth; the vector payload the search actually
filters on is read too, and every field where the two disagree is reported (a disagreement is a sync
problem to repair, and the vector side is what a search would have applied). Source read groups,
jurisdiction and consent purposes are not versioned: they are the current ones, which the result says.
`purpose` is the one a search would state: the consent check passes for a chunk with personal data of a
source that requires consent only when the source's data subjects consented to it (memory.consent).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from classifiers.types import Label
from memory import audit, consent, policy, policy_store, principals
from memory.errors import ForbiddenError, NotFoundError, ValidationFailedError
from memory.models import REACHABLE_STATUSES, Chunk, DocumentVersion, Source
from memory.policy import Decision, RuleCheck
from memory.sources import read_groups
from memory.stores.base import ChunkPayload, VectorStore

PAYLOAD_FIELDS = ("read_groups", "label", "jurisdiction", "personal", "valid_from", "valid_to", "retracted",
                  "committed", "source_id", "document_id", "version_id")


@dataclass(frozen=True)
class Explanation:
    principal_id: str
    acting_for: str | None
    chunk_id: str
    as_of: float
    purpose: str | None
    decision: Decision
    effective_principal: dict[str, Any]
    transfer_rules_version: int
    transfer_mode: str | None  # the rule for (data jurisdiction, every caller jurisdiction)
    payload: dict[str, object]  # as rebuilt from SQL
    vector_payload: dict[str, object] | None  # as the vector store holds it (None: point missing)
    payload_disagreements: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def withheld_reason(self) -> str | None:
        return self.decision.withheld_reason


def payload_from_sql(chunk: Chunk, version: DocumentVersion, source: Source) -> ChunkPayload:
    """The access payload SQL says this chunk's point should carry; its label as the policy applies it, at least
    the source's floor now (policy.effective_label)."""
    return ChunkPayload(
        chunk_id=chunk.id, source_id=chunk.source_id, document_id=chunk.document_id, version_id=version.id,
        read_groups=read_groups(source), label=policy.effective_label(chunk.label, source.floor),
        jurisdiction=source.jurisdiction,
        personal=chunk.personal, entity_types=tuple(chunk.entity_types), valid_from=version.valid_from,
        valid_to=version.valid_to, retracted=version.retracted_at is not None,
        committed=version.status in REACHABLE_STATUSES,
    )


def _disagreements(sql: ChunkPayload, vec: ChunkPayload | None) -> list[str]:
    if vec is None:
        return ["point_missing"]
    out = []
    for name in PAYLOAD_FIELDS:
        a, b = getattr(sql, name), getattr(vec, name)
        if name == "read_groups":
            a, b = sorted(a), sorted(b)
        if isinstance(a, float) and isinstance(b, float):
            # Epoch floats may come back from the vector store's JSON one ulp off: a microsecond is equal.
            if abs(a - b) > 1e-6:
                out.append(name)
            continue
        if a != b:
            out.append(name)
    return out


def _refused(check: RuleCheck) -> Decision:
    return Decision(visible=False, masked=False, checks=(check,))


def explain_access(
    session: Session,
    store: VectorStore,
    *,
    principal_id: str,
    chunk_id: str,
    acting_for: str | None = None,
    as_of: float | None = None,
    purpose: str | None = None,
) -> Explanation:
    """Every rule check deciding whether `principal_id` (acting for `acting_for`) sees `chunk_id` at `as_of`,
    in a search for `purpose`."""
    now = time.time()
    at = now if as_of is None else as_of
    if at > now + 1:
        raise ValidationFailedError("as_of is in the future", code="as_of_in_future")
    purpose = consent.normalise_purpose(purpose) if purpose is not None else None
    row = session.execute(
        select(Chunk, DocumentVersion, Source)
        .join(DocumentVersion, DocumentVersion.id == Chunk.version_id)
        .join(Source, Source.id == Chunk.source_id)
        .where(Chunk.id == chunk_id)
    ).first()
    if row is None:
        raise NotFoundError(f"chunk {chunk_id!r} not found", code="chunk_not_found")
    chunk, version, source = row
    caller = principals.get_principal(session, principal_id=principal_id)
    sql_payload = payload_from_sql(chunk, version, source)
    found = store.retrieve([chunk.point_id])
    vec_payload = found[0].payload if found else None
    rules = policy_store.transfer_rules(session)  # as the search decides: the rules in force now
    notes = ["transfer rules, source read groups, jurisdiction and consent purposes are the current ones: "
             "as_of chooses the document version only, as in a search"]
    blocked = frozenset({source.id}) if consent.blocks(source, purpose) else frozenset()
    decision: Decision
    who: policy.EffectivePrincipal | None = None
    if not caller.active:
        decision = _refused(RuleCheck("active", False, f"principal {caller.id!r} is inactive"))
    else:
        try:
            who = principals.resolve_effective(session, caller=caller, acting_for=acting_for)
        except ForbiddenError as exc:
            decision = _refused(RuleCheck("delegation", False, exc.message))
        else:
            decision = policy.explain(who, rules, sql_payload, as_of=at, consent_blocked=blocked, purpose=purpose)
    if source.floor > chunk.label:
        notes.append(f"the source's floor {Label(source.floor).slug} is above the chunk's stored label "
                     f"{Label(chunk.label).slug} (a relabel has not reached it yet): the floor applies")
    disagreements = _disagreements(sql_payload, vec_payload)
    if disagreements:
        notes.append("the vector payload disagrees with SQL on: " + ", ".join(disagreements))
    if chunk.personal and (chunk.masked_point_id is None or not store.retrieve([chunk.masked_point_id])):
        # Served masked only through its masked twin (memory.stores.base): none, so never to a masked caller.
        notes.append("the chunk has no masked twin: callers who read it masked are not served it until "
                     "`memory backfill-twins` stores one")
    return Explanation(
        principal_id=caller.id,
        acting_for=acting_for,
        chunk_id=chunk.id,
        as_of=at,
        purpose=purpose,
        decision=decision,
        effective_principal={} if who is None else {
            "principal_id": who.principal_id, "acting_for": who.acting_for, "groups": sorted(who.groups),
            "clearance": who.clearance.slug, "jurisdictions": list(who.jurisdictions), "roles": sorted(who.roles),
        },
        transfer_rules_version=rules.version,
        transfer_mode=rules.mode_for(source.jurisdiction, who.jurisdictions).slug if who else None,
        payload=sql_payload.to_dict(),
        vector_payload=vec_payload.to_dict() if vec_payload else None,
        payload_disagreements=disagreements,
        notes=notes,
    )


def record_explain(session: Session, result: Explanation, *, principal_id: str | None,
                   acting_for: str | None = None) -> None:
    """The explain's own audit record (API and CLI alike): whose access was explained for which chunk, and
    where the chunk lives, so that the audit's source and document filters find it."""
    audit.append(session, audit.Read(action="policy.explain", target=result.chunk_id, details={
        "principal_id": result.principal_id, "acting_for": result.acting_for, "as_of": result.as_of,
        "purpose": result.purpose, "visible": result.decision.visible,
    }), principal_id=principal_id, acting_for=acting_for, source_id=str(result.payload["source_id"]),
        document_id=str(result.payload["document_id"]))
