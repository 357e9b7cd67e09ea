"""`ServerVectorStore`: the scale-out backend on a Qdrant server or cluster, through qdrant-client.

Writes wait for the operation to be applied (`wait=True`) with `WriteOrdering.STRONG`, so with
`write_consistency_factor == replication_factor` a retraction is applied on every replica before it is
acknowledged; reads may ask for a read consistency (ALL, a quorum, or a replica count).

The same class runs against `QdrantClient(":memory:")` in tests. Local mode evaluates filters in Python,
ignores payload indexes and search params (and warns about them), and raises ValueError/KeyError where a
server answers 404: this class skips what local mode ignores and maps every failure to `VectorStoreError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from memory.errors import ServiceError, VectorStoreError, VectorStoreUnavailableError
from memory.stores.base import (
    F_COMMITTED,
    F_CURRENT,
    F_MASKED_TWIN,
    F_VALID_TO,
    FLOAT_FIELDS,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    OPEN_END,
    AccessFilter,
    Beam,
    PayloadPatch,
    ScoredPoint,
    Selector,
    VectorPoint,
)
from memory.stores.convert import BatchSearches, as_floats, batch_plans, in_request_order, scored
from memory.stores.filters import HasIds, access_plan, selector_plan
from memory.stores.filters_server import to_server_filter

logger = logging.getLogger(__name__)
T = TypeVar("T")

_UPSERT_BATCH = 256
_SCHEMA: dict[str, models.PayloadSchemaType] = {
    **{f: models.PayloadSchemaType.KEYWORD for f in KEYWORD_FIELDS},
    **{f: models.PayloadSchemaType.INTEGER for f in INTEGER_FIELDS},
    **{f: models.PayloadSchemaType.FLOAT for f in FLOAT_FIELDS},
}
_STRONG = models.WriteOrdering.STRONG


ReadConsistency = models.ReadConsistencyType | int


_UNAVAILABLE_STATUS = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class _Layout:
    shard_number: int
    replication_factor: int
    write_consistency_factor: int
    on_disk_payload: bool
    hnsw_m: int
    hnsw_ef_construct: int
    payload_m: int


class ServerVectorStore(BatchSearches):
    """A `VectorStore` on one Qdrant collection (server, cluster, or local mode for tests)."""

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        dim: int,
        *,
        shard_number: int = 1,
        replication_factor: int = 1,
        write_consistency_factor: int = 1,
        on_disk_payload: bool = True,
        read_consistency: str | ReadConsistency | None = None,
        hnsw_m: int = 16,
        hnsw_ef_construct: int = 128,
        payload_m: int = 16,
        hnsw_ef: int = 200,
        count_hnsw_ef: int = 100,
        wide_hnsw_ef: int = 800,
        acorn_max_selectivity: float | None = None,
        owns_client: bool = False,
    ) -> None:
        """Layout arguments apply when `ensure_collection()` creates the collection.

        `read_consistency`: None (server default: one replica), "all", "majority", "quorum", or a number of
        replicas (int or digit string). `acorn_max_selectivity`: as EdgeTuning's (the service passes both
        MEMORY_SEARCH_ACORN_MAX_SELECTIVITY); None, the default, leaves ACORN off (servers older than 1.16 reject
        it). `owns_client=True` makes `close()` close the client too.
        """
        self._client = client
        self._collection = collection
        self._dim = dim
        self._layout = _Layout(
            shard_number=shard_number,
            replication_factor=replication_factor,
            write_consistency_factor=write_consistency_factor,
            on_disk_payload=on_disk_payload,
            hnsw_m=hnsw_m,
            hnsw_ef_construct=hnsw_ef_construct,
            payload_m=payload_m,
        )
        self._read_consistency = _read_consistency(read_consistency)
        self._owns_client = owns_client
        options = client.init_options
        self._local = options.get("location") == ":memory:" or options.get("path") is not None
        # One parameter set per Beam (`count_hnsw_ef`: the narrower beam of searches only counted;
        # `wide_hnsw_ef`: the served search's second try, see Beam.WIDE).
        self._beam_params: dict[Beam, models.SearchParams | None] = dict.fromkeys(Beam)
        if not self._local:  # local mode warns about (and ignores) search params
            acorn = None
            if acorn_max_selectivity is not None:
                acorn = models.AcornSearchParams(enable=True, max_selectivity=acorn_max_selectivity)
            self._beam_params = {
                Beam.SERVE: models.SearchParams(hnsw_ef=hnsw_ef, acorn=acorn),
                Beam.COUNT: models.SearchParams(hnsw_ef=count_hnsw_ef, acorn=acorn),
                Beam.WIDE: models.SearchParams(hnsw_ef=wide_hnsw_ef, acorn=acorn),
            }

    @property
    def dim(self) -> int:
        return self._dim

    def ensure_collection(self) -> None:
        """Create the collection and its payload indexes if absent; else check that it matches.

        A present collection with another vector size or distance, named vectors, or a payload index of
        another type raises VectorStoreError(code="vector_schema_mismatch"). Missing payload indexes are
        created (an interrupted first start leaves a collection without them).
        """
        s = self._layout
        with self._backend("ensure_collection"):
            if not self._client.collection_exists(self._collection):
                try:
                    self._client.create_collection(
                        self._collection,
                        vectors_config=models.VectorParams(size=self._dim, distance=models.Distance.COSINE),
                        shard_number=s.shard_number,
                        replication_factor=s.replication_factor,
                        write_consistency_factor=s.write_consistency_factor,
                        on_disk_payload=s.on_disk_payload,
                        hnsw_config=models.HnswConfigDiff(
                            m=s.hnsw_m, ef_construct=s.hnsw_ef_construct, payload_m=s.payload_m
                        ),
                    )
                    logger.info("qdrant collection created name=%s dim=%d", self._collection, self._dim)
                except UnexpectedResponse as exc:
                    if exc.status_code != 409:  # 409: another API replica created it first
                        raise
            info = self._client.get_collection(self._collection)
            self._check_vectors(info.config.params.vectors)
            if not self._local:
                self._ensure_indexes(info.payload_schema)
            self._backfill_current()
            self._backfill_clear()

    def _backfill_current(self) -> None:
        """Points written before the derived `current` field existed get it once: 1 on committed versions still
        open-ended, 0 on the others."""
        self._backfill(F_CURRENT, [
            ([models.FieldCondition(key=F_COMMITTED, match=models.MatchValue(value=1)),
              models.FieldCondition(key=F_VALID_TO, range=models.Range(gte=OPEN_END))], 1),
            ([], 0),
        ])

    def _backfill_clear(self) -> None:
        """Points written before masked twins existed get `masked_twin` = 0 once (they are all clear points;
        a twin is always written with the field). Until then no filter admits them (fail closed)."""
        self._backfill(F_MASKED_TWIN, [([], 0)])

    def _backfill(self, field: str, values: list[tuple[list[Any], int]]) -> None:
        """Give `field` to the points lacking it, once: each (conditions, value) in order sets `value` on those
        of them that meet the conditions (the last, with none, on the rest). Idempotent (a cheap count on every
        later start); safe if replicas race: both write the same."""
        lacking = models.IsEmptyCondition(is_empty=models.PayloadField(key=field))
        n = self._client.count(self._collection, count_filter=models.Filter(must=[lacking]), exact=True).count
        if not n:
            return
        for conditions, value in values:
            self._client.set_payload(self._collection, {field: value},
                                     points=models.FilterSelector(filter=models.Filter(must=[lacking, *conditions])),
                                     wait=True, ordering=_STRONG)
        logger.warning("qdrant payload backfilled field=%s points=%d collection=%s", field, n, self._collection)

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        """Insert or replace points (idempotent by id); applied on return."""
        for start in range(0, len(points), _UPSERT_BATCH):
            batch = [
                models.PointStruct(id=p.id, vector=as_floats(p.vector, self._dim), payload=p.payload.to_dict())
                for p in points[start : start + _UPSERT_BATCH]
            ]
            with self._backend("upsert"):
                self._client.upsert(self._collection, batch, wait=True, ordering=_STRONG)

    def search(self, vector: Sequence[float] | np.ndarray, flt: AccessFilter, limit: int) -> list[ScoredPoint]:
        """Top `limit` points by cosine similarity among those matching `flt`, best first."""
        plan = access_plan(flt)
        if plan is None or limit <= 0:
            return []
        return self._query(vector, to_server_filter(plan), limit)

    def _batch(
        self, vector: Sequence[float] | np.ndarray, filters: Sequence[AccessFilter], limit: int,
        beams: Sequence[Beam] | None, convert: Callable[[models.ScoredPoint], T], with_payload: bool,
    ) -> list[list[T]]:
        """One round trip (query_batch_points); without payloads the responses are smaller."""
        live = batch_plans(filters, limit, beams)
        results: list[list[T]] = [[] for _ in filters]
        if not live:
            return results
        floats = as_floats(vector, self._dim)
        requests = [
            models.QueryRequest(query=floats, filter=to_server_filter(p), params=self._beam_params[beam],  # type: ignore[arg-type]
                                limit=limit, with_payload=with_payload, with_vector=False)
            for _, p, beam in live
        ]
        with self._backend("search"):
            responses = self._client.query_batch_points(
                self._collection, requests=requests, consistency=self._read_consistency
            )
            for (i, _, _), response in zip(live, responses, strict=True):
                results[i] = [convert(h) for h in response.points]
        return results

    def search_unfiltered(self, vector: Sequence[float] | np.ndarray, limit: int) -> list[ScoredPoint]:
        """Top `limit` without any filter (benchmarks' baselines, admin tooling)."""
        if limit <= 0:
            return []
        return self._query(vector, None, limit)

    def count(self, flt: AccessFilter | None = None) -> int:
        """Exact number of points, or of points matching `flt`."""
        server_filter = None
        if flt is not None:
            plan = access_plan(flt)
            if plan is None:
                return 0
            server_filter = to_server_filter(plan)
        with self._backend("count"):
            return int(self._client.count(self._collection, count_filter=server_filter, exact=True).count)

    def patch(self, selector: Selector, patch: PayloadPatch, *, durable: bool = True) -> None:
        """Overwrite payload fields on the selected points; applied on every replica on return."""
        fields = patch.to_dict()
        selected = self._points_selector(selector)
        if not fields:
            return
        with self._backend("patch"):
            self._client.set_payload(self._collection, fields, points=selected, wait=True, ordering=_STRONG)
        logger.info("qdrant patch applied collection=%s fields=%s", self._collection, sorted(fields))

    def delete(self, selector: Selector) -> None:
        """Delete the selected points; applied on return."""
        selected = self._points_selector(selector)
        with self._backend("delete"):
            self._client.delete(self._collection, points_selector=selected, wait=True, ordering=_STRONG)

    def retrieve(self, point_ids: Sequence[str]) -> list[ScoredPoint]:
        """Points by id, in the order asked, with score 0.0 (missing ids are skipped)."""
        if not point_ids:
            return []
        with self._backend("retrieve"):
            records = self._client.retrieve(
                self._collection,
                ids=list(point_ids),
                with_payload=True,
                with_vectors=False,
                consistency=self._read_consistency,
            )
            found = [scored(r.id, 0.0, r.payload) for r in records]
        return in_request_order(point_ids, found)

    def stats(self) -> dict[str, int]:
        """Points, vectors in HNSW-indexed segments, and segments, as the collection reports them (the server
        indexes in the background: its own optimizer closes the gap)."""
        with self._backend("info"):
            info = self._client.get_collection(self._collection)
        return {"points": int(info.points_count or 0), "indexed_vectors": int(info.indexed_vectors_count or 0),
                "segments": int(info.segments_count or 0)}

    def flush(self) -> None:
        """Nothing to do: every write waited until applied."""

    def close(self) -> None:
        """Close the client if this store owns it."""
        if self._owns_client:
            self._client.close()

    # -- internals -------------------------------------------------------------------------------------

    def _query(self, vector: Sequence[float] | np.ndarray, flt: models.Filter | None, limit: int) -> list[ScoredPoint]:
        with self._backend("search"):
            response = self._client.query_points(
                self._collection,
                query=as_floats(vector, self._dim),
                query_filter=flt,
                search_params=self._beam_params[Beam.SERVE],
                limit=limit,
                with_payload=True,
                with_vectors=False,
                consistency=self._read_consistency,
            )
            return [scored(h.id, h.score, h.payload) for h in response.points]

    def _points_selector(self, selector: Selector) -> models.FilterSelector:
        # Always a filter (ids become has_id): set_payload by id fails on a missing id (404 / KeyError).
        plan = selector_plan(selector)
        if isinstance(plan, HasIds):
            return models.FilterSelector(filter=models.Filter(must=[models.HasIdCondition(has_id=list(plan.ids))]))
        return models.FilterSelector(filter=to_server_filter(plan))

    def _check_vectors(self, vectors: object) -> None:
        if not isinstance(vectors, models.VectorParams):
            raise VectorStoreError(
                f"collection {self._collection!r} uses named vectors; expected one unnamed vector",
                code="vector_schema_mismatch",
            )
        if vectors.size != self._dim or vectors.distance != models.Distance.COSINE:
            raise VectorStoreError(
                f"collection {self._collection!r} has size={vectors.size} distance={vectors.distance}; "
                f"expected size={self._dim} distance=Cosine",
                code="vector_schema_mismatch",
            )

    def _ensure_indexes(self, existing: dict[str, models.PayloadIndexInfo]) -> None:
        for name, schema in _SCHEMA.items():
            info = existing.get(name)
            if info is None:
                self._client.create_payload_index(
                    self._collection, name, field_schema=schema, wait=True, ordering=_STRONG
                )
            elif info.data_type != schema:
                raise VectorStoreError(
                    f"collection {self._collection!r}: payload index {name!r} is {info.data_type}, expected {schema}",
                    code="vector_schema_mismatch",
                )

    @contextmanager
    def _backend(self, op: str) -> Iterator[None]:
        try:
            yield
        except ServiceError:
            raise
        except Exception as exc:
            # No answer (refused, reset, timed out) or the server's own "not now": the caller may retry.
            if isinstance(exc, ResponseHandlingException) or (
                isinstance(exc, UnexpectedResponse) and exc.status_code in _UNAVAILABLE_STATUS
            ):
                logger.warning("qdrant %s unavailable collection=%s error=%s", op, self._collection, type(exc).__name__)
                raise VectorStoreUnavailableError(
                    f"the vector store is unavailable ({op}); retry later", details={"op": op}
                ) from exc
            missing = (isinstance(exc, UnexpectedResponse) and exc.status_code == 404) or (
                isinstance(exc, ValueError) and "not found" in str(exc)
            )
            code = "vector_collection_missing" if missing else "vector_store_error"
            # The type only: the server's message can quote what it was given (payload values, ids).
            logger.error("qdrant %s failed collection=%s error=%s", op, self._collection, type(exc).__name__)
            raise VectorStoreError(
                f"qdrant {op} failed on collection {self._collection!r} ({type(exc).__name__})", code=code,
                details={"op": op},
            ) from exc


def _read_consistency(value: str | ReadConsistency | None) -> ReadConsistency | None:
    if value is None or isinstance(value, (int, models.ReadConsistencyType)):
        return value
    if value.isdigit():
        return int(value)
    try:
        return models.ReadConsistencyType(value.lower())
    except ValueError:
        raise VectorStoreError(
            f"read consistency {value!r} is not all, majority, quorum or a replica count", code="invalid_config"
        ) from None
