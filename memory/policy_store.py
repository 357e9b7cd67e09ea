"""Versioned admin policy in SQL: jurisdiction transfer rules and the entity->label map.

Each PUT writes a new version (never edits one); `as_of` picks the version in force at that instant (the
history). Searches always run under the rules in force now: time travel picks document versions, never an
older and possibly looser policy.
"""

from __future__ import annotations

import sys
import time
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from classifiers.errors import InvalidLabelMapError
from classifiers.labels import LabelMap
from memory import audit
from memory.clock import utcnow
from memory.errors import ConflictError, PolicyError
from memory.models import PolicyVersion
from memory.policy import DEFAULT_TRANSFER_RULES, Transfer, TransferRules, normalise_jurisdiction

JURISDICTIONS = "jurisdictions"
LABELS = "labels"


def _latest(session: Session, kind: str, as_of: float | None) -> PolicyVersion | None:
    q = select(PolicyVersion).where(PolicyVersion.kind == kind)
    if as_of is not None:
        q = q.where(PolicyVersion.effective_from <= as_of)
    return session.execute(q.order_by(PolicyVersion.version.desc()).limit(1)).scalar_one_or_none()


# Every search that plans without the policy cache runs this: built once (Core, on the table), as_of as a bind
# parameter. Parsed on every read: nothing is kept by row id, which SQL hands out again after a rollback (SQLite's
# INTEGER PRIMARY KEY reuses the highest id; a restored PostgreSQL repeats its sequence), so rules a rolled-back
# transaction read could otherwise be served under a committed version's id. The plan's cache
# (memory.policy_cache) keeps the parsed rules under the policy epoch's random token instead.
_P = cast(Table, PolicyVersion.__table__)
_RULES_IN_FORCE = (
    select(_P.c.version, _P.c.body).where(_P.c.kind == JURISDICTIONS, _P.c.effective_from <= bindparam("as_of"))
    .order_by(_P.c.version.desc()).limit(1)
)


def transfer_rules(session: Session, *, as_of: float | None = None) -> TransferRules:
    """Rules in force at `as_of` (default now). No rules at all -> every pair denied. Read from SQL every time
    (a change by any replica applies to the next search)."""
    at = sys.float_info.max if as_of is None else as_of
    row = session.execute(_RULES_IN_FORCE, {"as_of": at}).one_or_none()
    if row is None:
        return TransferRules()
    return TransferRules.from_json(row.body["rules"], version=row.version)


_RULES_VERSION = select(func.max(_P.c.version)).where(_P.c.kind == JURISDICTIONS)


def rules_version(session: Session) -> int:
    """The version of the transfer rules in force now (0: none), one index read: whether a search's rules are
    still the ones in force (memory.search)."""
    return int(session.execute(_RULES_VERSION).scalar_one() or 0)


def label_map(session: Session) -> tuple[LabelMap, int]:
    row = _latest(session, LABELS, None)
    if row is None:
        return LabelMap(), 0
    return LabelMap.from_json(row.body), row.version


def _put(
    session: Session, kind: str, body: dict[str, Any], actor: str, effective_from: float | None = None,
    acting_for: str | None = None,
) -> PolicyVersion:
    current = _latest(session, kind, None)
    row = PolicyVersion(
        kind=kind, version=(current.version + 1) if current else 1, body=body, created_at=utcnow(),
        created_by=actor, effective_from=time.time() if effective_from is None else effective_from,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # PostgreSQL: another change of this kind took the same version number
        raise ConflictError(f"the {kind} policy was changed concurrently; retry", code="concurrent_update") from exc
    audit.append(session, audit.Write(action=f"policy.{kind}", target=f"{kind}@v{row.version}", details=body),
                 principal_id=actor, acting_for=acting_for)
    return row


def put_transfer_rules(
    session: Session, *, rules: list[dict[str, Any]], actor: str, acting_for: str | None = None
) -> TransferRules:
    parsed = TransferRules.from_json(rules)  # validates; raises PolicyError
    row = _put(session, JURISDICTIONS, {"rules": parsed.to_json()}, actor, acting_for=acting_for)
    return TransferRules(rules=parsed.rules, version=row.version)


def set_transfer_rule(
    session: Session, *, data: str, caller: str, rule: str, actor: str, acting_for: str | None = None
) -> TransferRules:
    """A new rules version equal to the one in force, except for the (data, caller) pair."""
    current = transfer_rules(session)
    pair = (normalise_jurisdiction(data), normalise_jurisdiction(caller))
    rules = [r for r in current.to_json() if (r["data"], r["caller"]) != pair]
    rules.append({"data": pair[0], "caller": pair[1], "rule": Transfer.parse(rule).slug})
    return put_transfer_rules(session, rules=rules, actor=actor, acting_for=acting_for)


def put_label_map(
    session: Session, *, body: dict[str, Any], actor: str, acting_for: str | None = None
) -> tuple[LabelMap, int]:
    try:
        parsed = LabelMap.from_json(body)
    except InvalidLabelMapError as exc:
        raise PolicyError(str(exc), code="invalid_label_map") from exc
    row = _put(session, LABELS, parsed.to_json(), actor, acting_for=acting_for)
    return parsed, row.version


def seed_defaults(session: Session, *, actor: str = "system") -> None:
    """First start: the default transfer rules and label map, as version 1 of each."""
    # Effective since the epoch, so time-travel queries before the first start still have rules.
    if _latest(session, JURISDICTIONS, None) is None:
        _put(session, JURISDICTIONS, {"rules": TransferRules.from_json(DEFAULT_TRANSFER_RULES).to_json()}, actor, 0.0)
    if _latest(session, LABELS, None) is None:
        _put(session, LABELS, LabelMap().to_json(), actor, 0.0)
