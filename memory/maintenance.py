"""Self-repair while the service runs: `vector_sync.repair` at start, on a timer, and on an admin's request.

A crash, or a vector-store call that fails after SQL committed, can leave an ingest pending, a version's vectors
unsynced, a source's access change narrowed, or a retraction or restore half done in the vectors (fail closed:
nothing is served that SQL would not serve, but something is not served that should be; the one exception a check
exists for: a retraction patch a Qdrant cluster applied on some shards only). Repair finishes or undoes each. It
used to run only at start, so a vector-store hiccup at run time left the affected source narrowed until a restart;
the API now also runs it every `repair_interval_s` (a daemon thread) and on `POST /v1/admin/repair`, and `memory
repair` runs it from the CLI. Each run that fixed anything is audited (`maintenance.repair`, with its counts).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from sqlalchemy.orm import Session, sessionmaker

from memory import audit
from memory.db import transaction
from memory.metrics import REPAIRED, UNINDEXED_POINTS
from memory.stores.base import VectorStore
from memory.vector_sync import repair

log = logging.getLogger(__name__)


def run_repair(
    factory: sessionmaker[Session], store: VectorStore, *, pending_grace_s: float, actor: str,
    acting_for: str | None = None,
) -> dict[str, int]:
    """One repair; counts of what it fixed (abandoned, synced, republished, retractions_resynced), audited when any
    is non-zero."""
    counts = repair(factory, store, pending_grace_s=pending_grace_s)
    for kind, n in counts.items():
        if n:
            REPAIRED.labels(kind=kind).inc(n)
    if any(counts.values()):
        with transaction(factory) as session:
            audit.append(session, audit.Write(action="maintenance.repair", target="vectors", details=dict(counts)),
                         principal_id=actor, acting_for=acting_for)
    return counts


def unindexed_points(stats: Mapping[str, int]) -> int:
    """The points of a `VectorStore.stats()` that no HNSW index covers."""
    return max(0, stats["points"] - stats["indexed_vectors"])


def watch_index(store: VectorStore, *, warn_above: int | None) -> int:
    """Points no HNSW index covers yet (gauge `memory_vector_points_unindexed`: points minus Qdrant's
    `indexed_vectors_count`), with a warning when more than `warn_above` (None: no warning). On the embedded store,
    what the API ingests piles up there (Qdrant Edge has no background optimizer) and every search scores those
    points exactly until `memory optimize`. Points a payload update moved out of an indexed segment (a retraction,
    an access change, the upgrade's stamp, which warns itself) are not seen: Qdrant still counts them indexed."""
    stats = store.stats()
    unindexed = unindexed_points(stats)
    UNINDEXED_POINTS.set(unindexed)
    if warn_above is not None and unindexed > warn_above:
        log.warning("vectors.unindexed points=%d of=%d: every search scores them exactly; run `memory optimize` "
                    "(embedded store: with the API stopped)", unindexed, stats["points"])
    return unindexed


class RepairLoop:
    """Runs `run_repair` every `interval_s` on a daemon thread until `stop()`; a failed run is logged and the
    next one tries again (repair is idempotent and safe beside live requests).

    `first`: one more job the thread runs once as it starts, before the first interval (the API's masked-twin
    backfill: memory.masked_twins.run; idempotent, a one-off after an upgrade, so not worth a scan every
    interval); a failure is logged and the loop goes on.

    `watch`: what the thread reads after the first job and after each run (the API's: the embedded store's index
    backlog, `Container.watch_index`); a failure is logged and the loop goes on."""

    def __init__(self, factory: sessionmaker[Session], store: VectorStore, *, interval_s: float,
                 pending_grace_s: float, first: Callable[[], object] | None = None,
                 watch: Callable[[], object] | None = None) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._factory, self._store, self._first = factory, store, first
        self._watch_fn = watch
        self._interval_s, self._grace_s = interval_s, pending_grace_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-repair", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def signal_stop(self) -> None:
        """Ask the loop to stop after the run in progress, without waiting (`stop` waits)."""
        self._stopped.set()

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop after the run in progress, if any (waits up to `timeout_s` for it); True once the loop ended."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def run_once(self) -> dict[str, int] | None:
        """One run; None if it failed (logged)."""
        try:
            return run_repair(self._factory, self._store, pending_grace_s=self._grace_s, actor="system")
        except Exception as exc:
            log.error("maintenance.repair_failed error=%s", type(exc).__name__)
            return None

    def _run(self) -> None:
        if self._first is not None:
            try:
                self._first()
            except Exception as exc:
                log.error("maintenance.first_run_failed error=%s", type(exc).__name__)
        self._watch()
        while not self._stopped.wait(self._interval_s):
            self.run_once()
            self._watch()

    def _watch(self) -> None:
        if self._watch_fn is None:
            return
        try:
            self._watch_fn()
        except Exception as exc:
            log.error("maintenance.watch_index_failed error=%s", type(exc).__name__)
