"""The composition root: builds engine, sessions, vector store, embedder, classifier and pipeline from
settings. The API lifespan and the CLI both use it. Nothing heavy is built at import time; models and the
vector store are built on first use so a CLI command that needs neither stays fast."""

from __future__ import annotations

import logging
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from memory import migrate, policy_store, tracing
from memory.db import make_engine, make_sessionmaker, transaction
from memory.errors import ConflictError, NotFoundError
from memory.settings import Settings
from memory.tracing import Tracing

if TYPE_CHECKING:
    from collections.abc import Callable

    from ingest.embedders import Embedder
    from ingest.pipeline import IngestPipeline
    from memory.policy_cache import PolicyReads
    from memory.rate_limits import RateLimits
    from memory.relabel import RelabelReport
    from memory.search import QueryEmbedder
    from memory.stores.base import VectorStore
    from memory.stores.edge_config import EdgeTuning

log = logging.getLogger(__name__)
EMBEDDING_DIM = 384
PREPARE_LOCK_KEY = 7_354_001  # pg advisory lock id for migrations + seeding


class Container:
    """Holds the process's heavy collaborators. Pass overrides (test doubles) as keyword arguments."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: VectorStore | None = None,
        embedder: Embedder | None = None,
        classifier: Any | None = None,
        engine: Engine | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self._tracing_override = tracing
        self._store_override = store
        self._embedder_override = embedder
        self._classifier_override = classifier
        self._engine_override = engine

    @cached_property
    def engine(self) -> Engine:
        if self._engine_override is not None:
            return self._engine_override
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        return make_engine(self.settings.sqlalchemy_url, lock_timeout_s=self.settings.db_lock_timeout_s)

    @cached_property
    def tracing(self) -> Tracing:
        """Traces (memory.tracing): exported when MEMORY_OTLP_ENDPOINT is set, else a no-op tracer."""
        if self._tracing_override is not None:
            return self._tracing_override
        return tracing.from_settings(self.settings.otlp_endpoint)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine)

    @property
    def edge_tuning(self) -> EdgeTuning:
        """The embedded store's tuning: index defaults, search beams from the settings."""
        from memory.stores.edge_config import EdgeTuning

        s = self.settings
        return EdgeTuning(hnsw_ef=s.search_hnsw_ef, count_hnsw_ef=s.search_count_hnsw_ef,
                          wide_hnsw_ef=s.search_wide_hnsw_ef, acorn_max_selectivity=s.search_acorn_max_selectivity)

    @cached_property
    def store(self) -> VectorStore:
        if self._store_override is not None:
            return self._store_override
        s = self.settings
        if s.is_embedded_vectors:
            from memory.stores.edge import EdgeVectorStore

            return EdgeVectorStore.open(s.edge_path, EMBEDDING_DIM, tuning=self.edge_tuning)
        from qdrant_client import QdrantClient

        from memory.stores.server import ServerVectorStore

        client = QdrantClient(
            url=s.qdrant_url, api_key=s.qdrant_api_key.get_secret_value() if s.qdrant_api_key else None, timeout=30
        )
        server = ServerVectorStore(
            client, collection=s.qdrant_collection, dim=EMBEDDING_DIM, shard_number=s.qdrant_shards,
            replication_factor=s.qdrant_replicas, write_consistency_factor=s.qdrant_write_consistency,
            read_consistency=s.qdrant_read_consistency, hnsw_ef=s.search_hnsw_ef,
            count_hnsw_ef=s.search_count_hnsw_ef, wide_hnsw_ef=s.search_wide_hnsw_ef,
            acorn_max_selectivity=s.search_acorn_max_selectivity or None, owns_client=True,
        )
        server.ensure_collection()
        return server

    @cached_property
    def embedder(self) -> Embedder:
        if self._embedder_override is not None:
            return self._embedder_override
        from ingest.embedders import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(
            batch_size=self.settings.embed_batch_size, num_threads=self.settings.torch_threads
        )

    @cached_property
    def query_embedder(self) -> QueryEmbedder:
        """What searches embed their queries with: `embedder`, behind a QueryBatcher so that concurrent searches
        share forward passes (unless `search_embed_batch_max` is 1)."""
        if self.settings.search_embed_batch_max <= 1:
            return self.embedder
        from memory.query_batching import QueryBatcher

        return QueryBatcher(self.embedder, max_batch=self.settings.search_embed_batch_max,
                            max_passes=self.settings.search_embed_passes)

    @cached_property
    def policy_reads(self) -> PolicyReads:
        """The search plans' policy reads, kept while the policy epoch holds (one per process and database)."""
        from memory.policy_cache import PolicyReads

        return PolicyReads(self.settings.search_policy_cache_size, postgresql=self.engine.dialect.name == "postgresql")

    @cached_property
    def classifier(self) -> Any:
        if self._classifier_override is not None:
            return self._classifier_override
        from classifiers.presidio import build_presidio_classifier

        with self.sessions() as session:
            label_map, _ = policy_store.label_map(session)
        return build_presidio_classifier(spacy_model=self.settings.spacy_model, label_map=label_map)

    def ingest_pipeline(self) -> IngestPipeline:
        """The pipeline for an ingest starting now: it labels with the label map in force in SQL, so an admin's
        change (PUT /v1/policy/labels) applies to the next ingest in every process, without a restart. Read once
        an ingest (one indexed read); when the map is not the one `pipeline` started with, `pipeline`
        relabelled (a shallow copy sharing its models and parse worker: nothing is loaded again)."""
        with self.sessions() as session:
            label_map, _ = policy_store.label_map(session)
        if self.pipeline.label_map.version == label_map.version:
            return self.pipeline
        return self.pipeline.with_label_map(label_map)

    @cached_property
    def pipeline(self) -> IngestPipeline:
        from ingest.pipeline import IngestPipeline
        from ingest.workers import make_parser
        from memory.embedding_cache import SqlEmbeddingCache

        parser = make_parser(
            timeout_s=self.settings.parse_timeout_s, pandoc_max_heap_mb=self.settings.pandoc_max_heap_mb
        )
        parser.start()  # the parse worker (if any) loads unstructured while the models below load
        return IngestPipeline(
            self.classifier, self.embedder, SqlEmbeddingCache(self.sessions),
            max_bytes=self.settings.max_upload_bytes, max_tokens=self.settings.chunk_max_tokens,
            max_chunks=self.settings.max_document_chunks, parser=parser,
        )

    def prepare_database(self) -> None:
        """Migrate to head, seed default policy, create the bootstrap admin if configured.

        On PostgreSQL an advisory lock makes this safe when several replicas start at once."""
        postgres = self.engine.dialect.name == "postgresql"
        with self.engine.connect() as lock:
            if postgres:
                # Replicas queue behind the one migrating however long it takes: db_lock_timeout_s bounds the
                # lock waits of requests, not this one.
                lock.execute(text("SET lock_timeout = 0"))
                lock.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PREPARE_LOCK_KEY})
                lock.execute(text("RESET lock_timeout"))
                lock.commit()
            try:
                migrate.upgrade(self.engine)
                with transaction(self.sessions) as session:
                    policy_store.seed_defaults(session)
                key = self.settings.bootstrap_admin_key
                if key is not None:
                    ensure_admin(self.sessions, token=key.get_secret_value())
            finally:
                if postgres:
                    lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PREPARE_LOCK_KEY})
                    lock.commit()

    def warm(self) -> None:
        """Load models and open the store now (server start), not on the first request."""
        _ = self.store
        _ = self.embedder
        _ = self.query_embedder
        _ = self.pipeline
        self.pipeline.wait_ready()  # a parse worker has loaded its libraries (and no longer competes for CPU)
        from memory.maintenance import run_repair

        run_repair(self.sessions, self.store, pending_grace_s=self.settings.ingest_pending_grace_s, actor="system")
        self.watch_index()

    def watch_index(self, *, warn: bool = True) -> int | None:
        """Embedded store: the vector points no HNSW index covers, gauged and warned about past
        `unindexed_warn_points` (memory.maintenance.watch_index). None on a Qdrant server, which indexes in the
        background (and leaves small segments unindexed by design)."""
        if not self.settings.is_embedded_vectors:
            return None
        from memory.maintenance import watch_index

        return watch_index(self.store, warn_above=self.settings.unindexed_warn_points if warn else None)

    def backfill_twins(self, *, actor: str, batch: int = 256) -> dict[str, int]:
        """Store the masked twins personal chunks lack (memory.masked_twins.run: audited, gauged)."""
        from memory import masked_twins
        from memory.embedding_cache import SqlEmbeddingCache

        return masked_twins.run(self.sessions, self.store, self.embedder, SqlEmbeddingCache(self.sessions),
                                actor=actor, batch=batch)

    def relabel(self, *, actor: str, acting_for: str | None = None, source_id: str | None = None,
                dry_run: bool = False, on_batch: Callable[[RelabelReport], None] | None = None) -> dict[str, object]:
        """Stored chunks brought to the label map and floors in force (memory.relabel), then the masked twins of
        the chunks that became personal stored (`twins_stored`, and `twins_lacking`: personal chunks still
        without one, None on a dry run)."""
        from memory.relabel import relabel

        try:
            report = relabel(self.sessions, self.store, actor=actor, acting_for=acting_for, source_id=source_id,
                             dry_run=dry_run, on_batch=on_batch)
        except Exception as exc:
            # The batches that committed may have made chunks personal: their twins all the same (not after a
            # refusal before any batch: an unknown source, a bad argument; nor for a job told to stop, which must
            # stop now: those chunks are served to nobody who reads them masked until the API's next start or the
            # next relabel stores their twins, fail closed).
            from memory.jobs import Stopped

            if not dry_run and not isinstance(exc, NotFoundError | ValueError | Stopped):
                try:
                    self.backfill_twins(actor=actor)
                except Exception as exc:
                    log.error("relabel.backfill_failed error=%s", type(exc).__name__)
            raise
        out = report.as_dict()
        moved = report.points_patched
        if self.settings.is_embedded_vectors and moved > self.settings.unindexed_warn_points:
            # Qdrant counts such points indexed still (the index gauge cannot see them): say it here.
            log.warning("vectors.moved points=%d: the relabel moved them out of their indexed segments; every search "
                        "scores them exactly until `memory optimize` (with the API stopped)", moved)
        twins = None if dry_run else self.backfill_twins(actor=actor)
        out["twins_stored"] = twins["stored"] if twins else 0
        out["twins_lacking"] = twins["lacking"] if twins else None
        return out

    @cached_property
    def rate_limits(self) -> RateLimits:
        """Per-caller request rates (memory.rate_limits), counted in this process or the storage configured."""
        from memory.rate_limits import RateLimits

        s = self.settings
        return RateLimits({"search": s.rate_limit_search, "ingest": s.rate_limit_ingest,
                           "other": s.rate_limit_other, "principal": s.rate_limit_principal,
                           "auth_failures": s.rate_limit_auth_failures},
                          storage_uri=s.rate_limit_storage)

    def relabel_work(self, *, actor: str, acting_for: str | None = None, source_id: str | None = None,
                     dry_run: bool = False) -> Callable[[Callable[[dict[str, Any]], None]], dict[str, object]]:
        """`relabel` as a background job's work (memory.jobs): its progress after each batch is the report so far
        with `versions_total`, the versions it examines."""
        from memory.relabel import versions_to_examine

        def work(progress: Callable[[dict[str, Any]], None]) -> dict[str, object]:
            with self.sessions() as session:
                total = versions_to_examine(session, source_id)
            progress({"versions": 0, "versions_total": total})
            return self.relabel(actor=actor, acting_for=acting_for, source_id=source_id, dry_run=dry_run,
                                on_batch=lambda report: progress({**report.as_dict(), "versions_total": total}))

        return work

    def note_ingest(self) -> None:
        """After an API upload stored points: gauge the index backlog (`watch_index`), so that what the API ingests
        is seen as it piles up rather than at the next repair run; the warning stays with the repair runs (once
        every interval, not once an upload). Best effort: the upload has committed, and a failed read must not
        fail it."""
        try:
            self.watch_index(warn=False)
        except Exception as exc:
            log.warning("vectors.watch_index_failed error=%s", type(exc).__name__)

    def close(self) -> None:
        batcher = self.__dict__.get("query_embedder")
        if batcher is not None and batcher is not self.__dict__.get("embedder"):
            batcher.close()  # refuses new queries; those waiting are still embedded
        if "pipeline" in self.__dict__:
            self.pipeline.close()  # stops the parse worker process
        if "store" in self.__dict__:
            self.store.close()
        if "engine" in self.__dict__ and self._engine_override is None:
            self.engine.dispose()
        if "tracing" in self.__dict__ and self._tracing_override is None:
            self.tracing.shutdown()  # the spans still queued go to the collector


def ensure_admin(factory: sessionmaker[Session], *, token: str, principal_id: str = "admin") -> None:
    """Idempotently create the bootstrap admin with a known key (dev/demo and first deployment)."""
    from memory import principals
    from memory.models import Principal

    with transaction(factory) as session:
        if session.get(Principal, principal_id) is None:
            principals.create_principal(session, spec=principals.NewPrincipal(
                id=principal_id, kind="user", groups=("admins",), clearance="restricted", jurisdiction="EU",
                roles=("admin", "steward", "auditor", "reader"), display_name="Bootstrap admin",
            ), actor="system")
        try:
            principals.authenticate(session, token=token)
        except Exception:
            try:
                principals.issue_key(session, principal_id=principal_id, actor="system", token=token,
                                     description="bootstrap")
            except ConflictError:
                log.warning("bootstrap.key_conflict principal=%s", principal_id)
