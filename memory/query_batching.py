"""Query embeddings of concurrent searches, batched into one forward pass (leader/follower, like group commit).

Every search embeds its query, and the model's forward pass dominates a search's CPU time. On this 2-core
CPU one pass over 4 queries costs ~1.5x a pass over one (15.9 vs 10.9 ms), while 4 passes run side by side
contend for the same cores and the GIL. So a search that finds fewer than `max_passes` passes running embeds its
query at once, on its own thread, exactly as without batching (no handoff, no timer). Searches that arrive
while `max_passes` passes run wait; when a pass ends, its leader hands the waiting queries (up to
`max_batch`) to the first of them, which runs them as one pass on its thread and hands on in turn. Each
leader runs one pass, its own query included, so no search waits behind more than the passes in flight.
`max_passes` 2 keeps two lone searches concurrent on 2 cores (at 2 clients one pass at a time served fewer
requests/s than two side by side, docs/operations.md; batches only form at more clients).
scripts/bench_load.py measures throughput and latency under concurrent load with and without it.

A batched vector equals the same query embedded alone within float rounding (padding is masked out of the
mean pooling; measured max difference 2e-7). A pass that fails is retried one query at a time, so one bad
query fails only its own search.

Not the `batched` package: its batch generator sleeps `timeout_ms` whenever fewer than `batch_size` items
wait, which adds that delay to every lone search, and runs every pass on one extra thread (a handoff that
measured ~0.8 ms of HTTP p50 here at low load).
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import numpy as np

from ingest.errors import EmbeddingError
from memory.metrics import QUERY_EMBED_BATCH

log = logging.getLogger(__name__)


class BatchEmbedder(Protocol):
    """What the batcher needs of the model (ingest.embedders.Embedder has it)."""

    @property
    def model_id(self) -> str: ...

    def embed(self, texts: list[str]) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...


class _Caller:
    """One search's query: its outcome, and the batch it must lead if leadership is handed to it."""

    __slots__ = ("batch", "done", "error", "text", "vector")

    def __init__(self, text: str) -> None:
        self.text = text
        self.done = threading.Event()
        self.vector: np.ndarray | None = None
        self.error: BaseException | None = None
        self.batch: list[_Caller] | None = None

    def finish(self, vector: np.ndarray | None, error: BaseException | None) -> None:
        self.vector, self.error = vector, error
        self.done.set()

    def outcome(self) -> np.ndarray:
        if self.error is not None:
            raise self.error
        assert self.vector is not None
        return self.vector


class QueryBatcher:
    """A memory.search.QueryEmbedder whose embed_query calls, made from many threads, share forward passes."""

    def __init__(self, embedder: BatchEmbedder, *, max_batch: int = 16, max_passes: int = 2) -> None:
        if max_batch < 1 or max_passes < 1:
            raise ValueError("max_batch and max_passes must be positive")
        self._embedder = embedder
        self._max_batch, self._max_passes = max_batch, max_passes
        self._lock = threading.Lock()
        self._waiting: list[_Caller] = []
        self._passes = 0  # passes running (each one's leader will hand `_waiting` on)
        self._closed = False

    @property
    def model_id(self) -> str:
        return self._embedder.model_id

    def count_tokens(self, text: str) -> int:
        return self._embedder.count_tokens(text)

    def embed_query(self, text: str) -> np.ndarray:
        """One unit-length vector, as `embedder.embed_query` gives it."""
        me = _Caller(text)
        with self._lock:
            if self._closed:
                raise EmbeddingError("the query embedder is shut down")
            lead = self._passes < self._max_passes
            if lead:
                self._passes += 1
            else:
                self._waiting.append(me)
        if lead:
            self._lead([me])
        else:
            me.done.wait()
            if me.batch is not None:  # the last leader handed the waiting queries, this one first, to us
                self._lead(me.batch)
        return me.outcome()

    def close(self) -> None:
        """Refuse new queries (EmbeddingError); queries already waiting are still embedded. Idempotent."""
        with self._lock:
            self._closed = True

    def _lead(self, batch: list[_Caller]) -> None:
        try:
            self._pass(batch)
        finally:
            with self._lock:
                nxt = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                if not nxt:
                    self._passes -= 1
            if nxt:
                nxt[0].batch = nxt
                nxt[0].done.set()

    def _pass(self, batch: list[_Caller]) -> None:
        QUERY_EMBED_BATCH.observe(len(batch))
        try:
            vectors = self._embedder.embed([c.text for c in batch])
            if len(vectors) != len(batch):
                raise EmbeddingError(f"the model returned {len(vectors)} vectors for {len(batch)} queries")
        except Exception as exc:  # handed to the waiting searches, never swallowed
            if len(batch) == 1:
                batch[0].finish(None, exc)
                return
            log.warning("query_embed.batch_failed size=%d error=%s: retrying one by one", len(batch),
                        type(exc).__name__)
            for c in batch:
                self._pass([c])
            return
        except BaseException:  # interrupted: no search may wait for this pass forever
            for c in batch:
                c.finish(None, EmbeddingError("the embedding pass was interrupted"))
            raise
        for c, vector in zip(batch, vectors, strict=True):
            c.finish(vector, None)
