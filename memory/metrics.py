"""Prometheus metrics (registered once per process on the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUEST_LATENCY = Histogram(
    "memory_http_request_seconds", "HTTP request latency by route template", ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2, 5, 10),
)
ERRORS = Counter("memory_errors_total", "Errors returned, by stable error code", ["code"])
RATE_LIMITED = Counter("memory_rate_limited_total", "Requests refused for their caller's rate, by category "
                       "(`principal`: a principal's total over all its calls)", ["category"])
RATE_LIMIT_ERRORS = Counter("memory_rate_limit_errors_total",
                            "Requests served unlimited because the rate limit storage failed")
SEARCH_HITS = Counter("memory_search_hits_total", "Hits served by search", ["masked"])
SEARCH_WITHHELD = Counter("memory_search_withheld_total", "Hits withheld by search", ["reason"])
SEARCH_RECALL_REPAIRS = Counter(
    "memory_search_recall_repairs_total",
    "Searches whose served search missed a hit the caller may see and was run again with a wider beam",
)
SEARCH_REFILLED = Counter(
    "memory_search_refilled_hits_total",
    "Hits the vectors' payload admitted and SQL did not (dropped at render: a change caught mid-way, a patch a "
    "shard missed) whose top_k slots a search filled again; a steady rate means vectors to repair",
)
POLICY_READS = Counter(
    "memory_search_policy_reads_total",
    "Search plans by where their policy reads came from: cache (the policy epoch unchanged) or sql "
    "(memory.policy_cache)",
    ["source"],
)
QUERY_EMBED_BATCH = Histogram(
    "memory_query_embed_batch_size", "Search queries embedded together in one forward pass (memory.query_batching)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
INGEST_DOCUMENTS = Counter("memory_ingest_documents_total", "Documents ingested, by outcome", ["status"])
INGEST_CHUNKS = Counter("memory_ingest_chunks_total", "Chunks stored by ingestion")
INGEST_SECONDS = Histogram("memory_ingest_seconds", "Wall time per ingested document",
                           buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
REPAIRED = Counter(
    "memory_repaired_total",
    "What repair fixed (memory.maintenance), by kind: abandoned (ingests left pending), synced (versions' vectors "
    "copied from SQL), republished (sources' access changes left narrowed), retractions_resynced (versions whose "
    "vectors did not carry SQL's retraction or restore)",
    ["kind"],
)
UNINDEXED_POINTS = Gauge(
    "memory_vector_points_unindexed",
    "Vector points no HNSW index covers yet (points minus indexed vectors), scored exactly by every search until "
    "`memory optimize` (embedded store), as the API's repair thread last read them",
)
CHUNKS_WITHOUT_TWIN = Gauge(
    "memory_personal_chunks_without_twin",
    "Chunks with personal data that have no masked twin (not served to callers who read them masked), as the "
    "last masked-twin backfill left them",
)
