"""Configuration of the embedded Qdrant Edge shard: tuning knobs, shard config, payload schema, open errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import qdrant_edge as qe

from memory.errors import ServiceError, StoreLockedError, VectorStoreError
from memory.stores.base import FLOAT_FIELDS, INTEGER_FIELDS, KEYWORD_FIELDS

CONFIG_FILE = "edge_config.json"  # written by EdgeShard.create; its presence means "load, don't create"
PAYLOAD_SCHEMA: dict[str, qe.PayloadSchemaType] = {
    **{f: qe.PayloadSchemaType.Keyword for f in KEYWORD_FIELDS},
    **{f: qe.PayloadSchemaType.Integer for f in INTEGER_FIELDS},
    **{f: qe.PayloadSchemaType.Float for f in FLOAT_FIELDS},
}


@dataclass(frozen=True, slots=True)
class EdgeTuning:
    """Index and search knobs (defaults measured by scripts/bench_vector_filter.py).

    `full_scan_threshold_kb`: when the planner estimates that the points matching a filter hold fewer
    KB of vectors than this, it scores exactly those points (via the payload indexes) instead of walking
    the HNSW graph; that is exact, and cheap at selective filters where graph search loses recall. The index
    build also adds payload-specific graph links for every indexed value held by at least that many KB of
    vectors, so it is fixed when a segment is built (a store keeps the value its segments were built with until
    `memory rebuild-index`: memory.stores.edge_rebuild).
    `hnsw_ef`: beam width of graph search for served hits (Beam.SERVE). `count_hnsw_ef`: the narrower beam
    of searches whose hits are only counted (Beam.COUNT: the withheld counts). `wide_hnsw_ef`: the served
    search's second try after a detected miss (Beam.WIDE). The three are query-time parameters (the service
    sets them from MEMORY_SEARCH_*HNSW_EF). `acorn_max_selectivity`: below
    this estimated selectivity the graph search also explores 2-hop neighbours (ACORN), which keeps recall up
    for mid-selective filters.
    """

    hnsw_m: int = 16
    hnsw_ef_construct: int = 128
    payload_m: int = 16
    # Qdrant's own default. Three 100k-chunk stores built by scripts/bench_query.py (--data-dir) from the same
    # data, then searched interleaved in one process (an ad-hoc comparison): at 20,000 KB (~13k points) a
    # filter admitting 8.5k points scored them exactly in 7.4 ms (svc-reporting) and the 10% tier in 4.7 ms;
    # at 10,000 KB both walk the graph (3.6 and 2.4 ms) with recall@10 1.0 at 50/10/1/0.1%, while broad
    # filters stay within +-0.3 ms. At 4,000 KB the extra payload links slowed every broad search by ~15%
    # (unfiltered 2.90 -> 3.36 ms).
    full_scan_threshold_kb: int = 10_000
    indexing_threshold_kb: int = 10_000
    hnsw_ef: int = 200
    # The withheld-count search (scripts/bench_query.py, `withheld-candidates:*`, 100k points): recall@10 of
    # the realistic callers' readable sets >= 0.976 at ef 100 (>= 0.964 at 64), ~1.7 ms vs ~2.7 ms at ef 200.
    count_hnsw_ef: int = 100
    # The served search's second try (Beam.WIDE), taken only when the first missed a servable hit that the
    # count search found: at 100k points ~6 ms, and it lifted the fragmented-filter caller "dev" of
    # scripts/bench_query.py from recall@10 0.969 (some queries 0.0) to 0.999.
    wide_hnsw_ef: int = 800
    # ACORN off by default: at 100k points it cost 12.6 ms vs 2.95 ms at a 50% filter, with recall@10 still
    # 1.0 at every tested selectivity (scripts/bench_query.py); selective filters take the exact path anyway.
    acorn_max_selectivity: float = 0.0


def shard_config(dim: int, tuning: EdgeTuning) -> qe.EdgeConfig:
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
        hnsw_config=qe.HnswIndexConfig(
            m=tuning.hnsw_m,
            ef_construct=tuning.hnsw_ef_construct,
            full_scan_threshold=tuning.full_scan_threshold_kb,
            payload_m=tuning.payload_m,
        ),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=tuning.indexing_threshold_kb),
        wal_enabled=True,
    )


def open_error(path: Path, dim: int, exc: Exception) -> ServiceError:
    text = str(exc)
    if "WouldBlock" in text or "lock" in text.lower():
        return StoreLockedError(
            f"the vector store at {path} is already open (by another process, or earlier in this one); "
            "one process owns an embedded store: stop the other `memory serve` or give this one its own data dir",
            details={"path": str(path)},
        )
    if "vector" in text.lower() and ("size" in text.lower() or "dim" in text.lower()):
        return VectorStoreError(
            f"the vector store at {path} does not match dim={dim}: {text}",
            code="vector_schema_mismatch",
            details={"path": str(path)},
        )
    return VectorStoreError(f"cannot open the vector store at {path}: {text}", details={"path": str(path)})
