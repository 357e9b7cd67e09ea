"""Backend-neutral filter plans: what an `AccessFilter` or a `Selector` means as payload conditions.

Both backends render the same plan (filters_edge.py, filters_server.py), so the policy's semantics live in
one place. A plan of `None` means "matches nothing": backends then skip the call instead of sending an
empty match list, which some engines read as "any" (fail closed).

Masked twins (memory.stores.base): every plan admits clear points by `masked_twin == 0` (a point lacking the
field matches nothing). A caller who reads nothing masked gets that one clause at the top level; for one who
reads some sources (or jurisdictions) masked, the source clause becomes three branches:

    (masked_twin == 0 AND key in full)
    OR (masked_twin == 0 AND personal == 0 AND key in non_personal + masked)
    OR (masked_twin == 1 AND key in masked)

so a personal chunk of a masked source is admitted as its twin only, and a chunk stored without a twin is not
admitted to a masked caller at all (fail closed: `memory backfill-twins`).
"""

from __future__ import annotations

from dataclasses import dataclass

from memory.errors import ValidationFailedError
from memory.stores.base import (
    F_COMMITTED,
    F_CURRENT,
    F_JURISDICTION,
    F_LABEL,
    F_MASKED_TWIN,
    F_PERSONAL,
    F_READ_GROUPS,
    F_RETRACTED,
    F_SOURCE_ID,
    F_VALID_FROM,
    F_VALID_TO,
    F_VERSION_ID,
    LABEL_MIN,
    AccessFilter,
    Selector,
    SourceScope,
)


@dataclass(frozen=True, slots=True)
class AnyValue:
    """The field (or one element of an array field) equals one of `values` (never empty)."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NoneOf:
    """The field (and every element of an array field) equals none of `values` (never empty): a nested
    must_not on both backends."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IntEquals:
    key: str
    value: int


@dataclass(frozen=True, slots=True)
class IntIn:
    """The integer field equals one of `values` (never empty). Cheaper for the engine than a range."""

    key: str
    values: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class InRange:
    """Numeric range; unset bounds are open."""

    key: str
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None


@dataclass(frozen=True, slots=True)
class HasIds:
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AllOf:
    clauses: tuple[Clause, ...]


@dataclass(frozen=True, slots=True)
class OneOf:
    """At least one clause holds (a `should` with at least one member; never empty)."""

    clauses: tuple[Clause, ...]


Clause = AnyValue | NoneOf | IntEquals | IntIn | InRange | HasIds | AllOf | OneOf


# A clear point (not a masked twin); a point lacking the field is neither.
CLEAR = IntEquals(F_MASKED_TWIN, 0)
TWIN = IntEquals(F_MASKED_TWIN, 1)
# What the withheld count ranks: a chunk without personal data by its clear point, one with by its twin.
COUNTED = OneOf((AllOf((CLEAR, IntEquals(F_PERSONAL, 0))), TWIN))


def access_plan(flt: AccessFilter) -> AllOf | None:
    """The conditions a point must meet to be visible under `flt`, or None if nothing can match."""
    if not flt.groups:
        return None
    if flt.source_ids is not None and not flt.source_ids:
        return None
    version: list[Clause] = (
        [IntEquals(F_CURRENT, 1)] if flt.latest
        else [IntEquals(F_COMMITTED, 1), InRange(F_VALID_FROM, lte=flt.as_of), InRange(F_VALID_TO, gt=flt.as_of)]
    )
    clauses: list[Clause] = [*version, IntEquals(F_RETRACTED, 0)]
    if flt.max_label is not None:
        if flt.max_label < LABEL_MIN:
            return None
        # Labels are the integers LABEL_MIN..; "label <= max" as the set of admitted labels.
        clauses.append(IntIn(F_LABEL, tuple(range(LABEL_MIN, flt.max_label + 1))))
    if flt.scope is not None:
        scoped = _scope_clauses(flt.scope, flt.source_ids)
        return None if scoped is None else AllOf((*clauses, *scoped))
    clauses.append(AnyValue(F_READ_GROUPS, tuple(sorted(flt.groups))))
    if flt.source_ids is not None:
        clauses.append(AnyValue(F_SOURCE_ID, tuple(sorted(flt.source_ids))))
    excluded = flt.excluded_sources if flt.source_ids is None else flt.excluded_sources & flt.source_ids
    if excluded:
        clauses.append(NoneOf(F_SOURCE_ID, tuple(sorted(excluded))))
    consent = _consent_clause(flt)
    if consent is not None:
        clauses.append(consent)
    if flt.grants is None:
        clauses.append(COUNTED)  # the withheld count: personal chunks through their twins only
        return AllOf(tuple(clauses))
    grant_clauses = _grants_clauses(flt)
    if grant_clauses is None:
        return None
    return AllOf((*clauses, *grant_clauses))


def _scope_clauses(scope: SourceScope, source_ids: frozenset[str] | None) -> tuple[Clause, ...] | None:
    """The scope's source clauses (`_served`), within `source_ids` when set; None when no source is admitted."""
    full = scope.full
    masked = scope.masked - full
    non_personal = scope.non_personal - full - masked
    if source_ids is not None:
        full, non_personal, masked = full & source_ids, non_personal & source_ids, masked & source_ids
    return _served(F_SOURCE_ID, full, non_personal, masked)


def _served(key: str, full: set[str] | frozenset[str], non_personal: set[str] | frozenset[str],
            masked: set[str] | frozenset[str]) -> tuple[Clause, ...] | None:
    """The clauses (all must hold) admitting a point by `key` (source id or jurisdiction): its clear point when
    `key` is in full, or in non_personal or masked and it has no personal data; its masked twin when `key` is
    in masked. None when all three are empty. Without masked keys: CLEAR and the clear branch alone, the shape
    (and cost) of a filter before twins plus one indexed integer clause."""
    if not masked:
        clear = _full_or_non_personal(key, full, non_personal)
        return None if clear is None else (CLEAR, clear)
    if not full and set(non_personal) <= set(masked):
        # Every admitted key is read masked (the withheld count's scope, a caller abroad): the same points as
        # the two branches below with the key factored out, which the engine checks ~0.15 ms faster a search
        # at 100k points (docs/performance.md).
        return AnyValue(key, tuple(sorted(masked))), COUNTED
    options: list[Clause] = []
    if full:
        options.append(AllOf((CLEAR, AnyValue(key, tuple(sorted(full))))))
    either = tuple(sorted(set(non_personal) | set(masked)))
    options.append(AllOf((CLEAR, IntEquals(F_PERSONAL, 0), AnyValue(key, either))))
    options.append(AllOf((TWIN, AnyValue(key, tuple(sorted(masked))))))
    return (OneOf(tuple(options)),)


def _full_or_non_personal(key: str, full: set[str] | frozenset[str], non_personal: set[str] | frozenset[str]
                          ) -> Clause | None:
    """`key` in full, OR (`key` in non_personal AND personal == 0); None when both are empty."""
    options: list[Clause] = []
    if full:
        options.append(AnyValue(key, tuple(sorted(full))))
    if non_personal:
        options.append(AllOf((AnyValue(key, tuple(sorted(non_personal))), IntEquals(F_PERSONAL, 0))))
    if not options:
        return None
    return options[0] if len(options) == 1 else OneOf(tuple(options))


def _consent_clause(flt: AccessFilter) -> Clause | None:
    """personal == 0 OR source_id not in the blocked set; None (no clause at all) when nothing is blocked, the
    common case, so searches of a memory without consent-gated sources pay nothing for it."""
    blocked = flt.consent_blocked_sources
    if flt.source_ids is not None:
        blocked = blocked & flt.source_ids  # other sources are excluded anyway
        if blocked and blocked == flt.source_ids:
            return IntEquals(F_PERSONAL, 0)  # every searched source is blocked
    if not blocked:
        return None
    return OneOf((IntEquals(F_PERSONAL, 0), NoneOf(F_SOURCE_ID, tuple(sorted(blocked)))))


def _grants_clauses(flt: AccessFilter) -> tuple[Clause, ...] | None:
    grants = flt.grants or ()
    allow = {g.data_jurisdiction for g in grants if g.personal_ok and not g.masked}
    # A jurisdiction granted in full needs no other branch: `matches()` takes any admitting grant.
    masked = {g.data_jurisdiction for g in grants if g.personal_ok and g.masked} - allow
    non_personal_only = {g.data_jurisdiction for g in grants if not g.personal_ok} - allow - masked
    return _served(F_JURISDICTION, allow, non_personal_only, masked)


def selector_plan(selector: Selector) -> Clause:
    """The points a selector names. Exactly one of its three fields must be set (non-empty)."""
    chosen = [bool(selector.version_ids), selector.source_id is not None, bool(selector.point_ids)]
    if sum(chosen) != 1:
        raise ValidationFailedError(
            "a selector names exactly one of version_ids, source_id, point_ids", code="invalid_selector"
        )
    if selector.version_ids:
        return AnyValue(F_VERSION_ID, tuple(selector.version_ids))
    if selector.source_id is not None:
        return AnyValue(F_SOURCE_ID, (selector.source_id,))
    return HasIds(tuple(selector.point_ids))
