"""Conversions shared by both backends: vectors in, hits out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from memory.errors import VectorStoreError
from memory.stores.base import AccessFilter, Beam, ChunkPayload, Ranked, ScoredPoint
from memory.stores.filters import AllOf, access_plan


def as_floats(vector: Sequence[float] | np.ndarray, dim: int) -> list[float]:
    """A plain list of floats (numpy arrays included), checked against the store's dimension."""
    tolist = getattr(vector, "tolist", None)
    values: list[float] = tolist() if callable(tolist) else [float(x) for x in vector]
    if len(values) != dim:
        raise VectorStoreError(
            f"vector has {len(values)} dimensions, the store expects {dim}", code="vector_schema_mismatch"
        )
    return values


def scored(point_id: object, score: float, payload: Mapping[str, object] | None) -> ScoredPoint:
    """A hit from a backend's id (UUID or str), score and payload dict."""
    return ScoredPoint(id=str(point_id), score=float(score), payload=ChunkPayload.from_dict(dict(payload or {})))


T = TypeVar("T")


class BatchSearches(ABC):
    """`search_batch` and `rank_batch` of both backends: one engine batch (`_batch`, per backend), whose hits
    come back with their payloads or as ids and scores only."""

    def search_batch(
        self, vector: Sequence[float] | np.ndarray, filters: Sequence[AccessFilter], limit: int,
        beams: Sequence[Beam] | None = None,
    ) -> list[list[ScoredPoint]]:
        """Each filter's top `limit`, in order, as one engine batch (one request to a server)."""
        return self._batch(vector, filters, limit, beams, lambda h: scored(h.id, h.score, h.payload), True)

    def rank_batch(
        self, vector: Sequence[float] | np.ndarray, filters: Sequence[AccessFilter], limit: int,
        beams: Sequence[Beam] | None = None,
    ) -> list[list[Ranked]]:
        """search_batch's ids and scores, without reading a payload."""
        return self._batch(vector, filters, limit, beams, lambda h: Ranked(str(h.id), float(h.score)), False)

    @abstractmethod
    def _batch(
        self, vector: Sequence[float] | np.ndarray, filters: Sequence[AccessFilter], limit: int,
        beams: Sequence[Beam] | None, convert: Callable[[Any], T], with_payload: bool,
    ) -> list[list[T]]:
        """The batch's hits for each filter, in order, each made by `convert` from an engine hit."""


def in_request_order(point_ids: Sequence[str], found: Sequence[ScoredPoint]) -> list[ScoredPoint]:
    """`found` reordered as `point_ids` asked (duplicates once, missing ids skipped)."""
    by_id = {p.id: p for p in found}
    return [by_id[pid] for pid in dict.fromkeys(point_ids) if pid in by_id]


def batch_plans(
    filters: Sequence[AccessFilter], limit: int, beams: Sequence[Beam] | None
) -> list[tuple[int, AllOf, Beam]]:
    """The searches a batch runs: (filter index, its plan, its Beam) for each filter that can match anything
    (a filter that matches nothing, or limit <= 0, gets no search and an empty result)."""
    widths = batch_beams(beams, len(filters))
    plans = [access_plan(f) for f in filters]
    return [(i, p, widths[i]) for i, p in enumerate(plans) if p is not None and limit > 0]


def batch_beams(beams: Sequence[Beam] | None, n: int) -> list[Beam]:
    """One Beam per filter of a batch (None: all SERVE); a length mismatch is a caller bug, refused."""
    if beams is None:
        return [Beam.SERVE] * n
    if len(beams) != n:
        raise ValueError(f"search_batch got {len(beams)} beams for {n} filters")
    return list(beams)
