"""Render a filter plan (filters.py) as a qdrant-edge `Filter`.

Flags are integers (0/1) because qdrant-edge 0.9.0 never matches boolean values; integer fields take
`RangeFloat` for ranges (it is the only numeric range type the binding exposes).
"""

from __future__ import annotations

import qdrant_edge as qe

from memory.stores.filters import AllOf, AnyValue, Clause, HasIds, InRange, IntEquals, IntIn, NoneOf, OneOf

EdgeCondition = qe.FieldCondition | qe.HasIdCondition | qe.Filter


def to_edge_filter(clause: Clause) -> qe.Filter:
    """A top-level edge Filter for `clause`."""
    if isinstance(clause, AllOf):
        return qe.Filter(must=[_condition(c) for c in clause.clauses])
    if isinstance(clause, OneOf):
        return qe.Filter(should=[_condition(c) for c in clause.clauses])
    if isinstance(clause, NoneOf):
        return qe.Filter(must_not=[qe.FieldCondition(clause.key, match=qe.MatchAny(list(clause.values)))])
    return qe.Filter(must=[_condition(clause)])


def _condition(clause: Clause) -> EdgeCondition:
    if isinstance(clause, AnyValue):
        return qe.FieldCondition(clause.key, match=qe.MatchAny(list(clause.values)))
    if isinstance(clause, IntEquals):
        return qe.FieldCondition(clause.key, match=qe.MatchValue(clause.value))
    if isinstance(clause, IntIn):
        return qe.FieldCondition(clause.key, match=qe.MatchAny(list(clause.values)))
    if isinstance(clause, InRange):
        return qe.FieldCondition(
            clause.key, range=qe.RangeFloat(gte=clause.gte, gt=clause.gt, lte=clause.lte, lt=clause.lt)
        )
    if isinstance(clause, HasIds):
        return qe.HasIdCondition(set(clause.ids))
    return to_edge_filter(clause)
