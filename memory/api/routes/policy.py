"""Admin policy: jurisdiction transfer rules and the entity->label map (both versioned)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from memory import policy_store
from memory.api import schemas
from memory.api.deps import SessionDep, TransactionPerHop, role
from memory.policy import EffectivePrincipal

router = APIRouter(prefix="/v1/policy", tags=["policy"], responses=schemas.ERRORS, route_class=TransactionPerHop)
AdminDep = Annotated[EffectivePrincipal, role("admin")]


@router.get("/jurisdictions", response_model=schemas.TransferRulesOut)
def get_jurisdictions(session: SessionDep, who: AdminDep) -> schemas.TransferRulesOut:
    rules = policy_store.transfer_rules(session)
    return schemas.TransferRulesOut(version=rules.version, rules=rules.to_json())


@router.put("/jurisdictions", response_model=schemas.TransferRulesOut)
def put_jurisdictions(body: schemas.TransferRulesIn, session: SessionDep, who: AdminDep) -> schemas.TransferRulesOut:
    """Replace the rule set with a new version (unlisted pairs are denied). Applies to the next search. 409
    `concurrent_update` if another change of the rules commits first."""
    rules = policy_store.put_transfer_rules(
        session, rules=[r.model_dump() for r in body.rules], actor=who.principal_id, acting_for=who.acting_for
    )
    return schemas.TransferRulesOut(version=rules.version, rules=rules.to_json())


def _label_out(session: SessionDep) -> schemas.LabelMapOut:
    lm, version = policy_store.label_map(session)
    body = lm.to_json()
    return schemas.LabelMapOut(
        version=version, label_map_version=lm.version, mapping=body["mapping"],  # type: ignore[arg-type]
        unmapped=str(body["unmapped"]), personal_types=body["personal_types"],  # type: ignore[arg-type]
    )


@router.get("/labels", response_model=schemas.LabelMapOut)
def get_labels(session: SessionDep, who: AdminDep) -> schemas.LabelMapOut:
    return _label_out(session)


@router.put("/labels", response_model=schemas.LabelMapOut)
def put_labels(body: schemas.LabelMapIn, session: SessionDep, who: AdminDep) -> schemas.LabelMapOut:
    """New entity->label map version; applies to the next ingest of new bytes in every process, this API
    included (a document labelled under the map this replaces, not yet committed, is refused: 409
    `label_map_changed`, send it again). Chunks already stored keep their labels until an admin relabels them
    (`POST /v1/admin/relabel`); ingesting the same bytes again does not (only an older pipeline generation
    reprocesses them: docs/operations.md). 409 `concurrent_update` if another change of the map commits first."""
    payload = body.model_dump(exclude_none=True)
    policy_store.put_label_map(session, body=payload, actor=who.principal_id, acting_for=who.acting_for)
    return _label_out(session)
