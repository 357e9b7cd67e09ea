"""Render a filter plan (filters.py) as a qdrant-client `models.Filter` (server and local mode alike)."""

from __future__ import annotations

from qdrant_client import models

from memory.stores.filters import AllOf, AnyValue, Clause, HasIds, InRange, IntEquals, IntIn, NoneOf, OneOf

ServerCondition = models.FieldCondition | models.HasIdCondition | models.Filter


def to_server_filter(clause: Clause) -> models.Filter:
    """A top-level qdrant-client Filter for `clause`."""
    if isinstance(clause, AllOf):
        return models.Filter(must=[_condition(c) for c in clause.clauses])
    if isinstance(clause, OneOf):
        return models.Filter(should=[_condition(c) for c in clause.clauses])
    if isinstance(clause, NoneOf):
        return models.Filter(
            must_not=[models.FieldCondition(key=clause.key, match=models.MatchAny(any=list(clause.values)))]
        )
    return models.Filter(must=[_condition(clause)])


def _condition(clause: Clause) -> ServerCondition:
    if isinstance(clause, AnyValue):
        return models.FieldCondition(key=clause.key, match=models.MatchAny(any=list(clause.values)))
    if isinstance(clause, IntEquals):
        return models.FieldCondition(key=clause.key, match=models.MatchValue(value=clause.value))
    if isinstance(clause, IntIn):
        return models.FieldCondition(key=clause.key, match=models.MatchAny(any=list(clause.values)))
    if isinstance(clause, InRange):
        return models.FieldCondition(
            key=clause.key, range=models.Range(gte=clause.gte, gt=clause.gt, lte=clause.lte, lt=clause.lt)
        )
    if isinstance(clause, HasIds):
        return models.HasIdCondition(has_id=list(clause.ids))
    return to_server_filter(clause)
