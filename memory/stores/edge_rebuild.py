"""Rebuild an embedded vector store under the current tuning (`memory rebuild-index`).

Index parameters are fixed when a segment is built, and `optimize()` rebuilds only the segments it sees as
unoptimised: a changed full-scan threshold is not one of those, so a store built under older tuning keeps
it (docs/operations.md, Embedded). A rebuild copies every point (id, vector, payload) into a new shard
created with the current tuning, builds its index, checks the copy, and swaps directories:

    <path>                      the live shard
    <path>.rebuild              the new shard while it is built (an interrupted run's leftover is discarded)
    <path>.old-<UTC timestamp>  the previous shard, kept as the rollback copy unless `keep_old=False`

Nothing is ever written to the live shard. If anything fails before the swap, the live shard is untouched and
the partial copy is removed. The swap is two renames in one directory; `recover()` (run by
`EdgeVectorStore.open`) finishes a swap interrupted between them, so the store never opens empty.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from memory.errors import VectorStoreError
from memory.stores.edge_config import CONFIG_FILE, EdgeTuning

if TYPE_CHECKING:
    from memory.stores.edge import EdgeVectorStore

logger = logging.getLogger(__name__)

MARKER = "REBUILT.json"  # written into the new shard once it is complete and checked


@dataclass(frozen=True)
class RebuildReport:
    points: int
    seconds: float
    path: Path
    previous: Path | None  # the rollback copy, or None when it was deleted
    # Full-scan thresholds (in points) the segments' indexes were built with, before and after.
    thresholds_before: tuple[int, ...]
    thresholds_after: tuple[int, ...]


def staging_path(path: Path) -> Path:
    return path.with_name(path.name + ".rebuild")


def built_thresholds(path: Path) -> tuple[int, ...]:
    """The full-scan threshold, in points, each indexed segment of the shard at `path` was built with (read
    from the engine's own segment files; empty when there is no indexed segment or the layout is unknown)."""
    found = []
    for cfg in sorted((path / "segments").glob("*/vector_index/hnsw_config.json")):
        try:
            value = json.loads(cfg.read_text()).get("full_scan_threshold")
        except (OSError, ValueError):
            continue
        if isinstance(value, int):
            found.append(value)
    return tuple(found)


def threshold_points(tuning: EdgeTuning, dim: int) -> int:
    """The engine's full-scan threshold in points for `tuning` (KB of float32 vectors of `dim`)."""
    return int(tuning.full_scan_threshold_kb * 1024 / (dim * 4))


def recover(path: Path) -> bool:
    """Finish a rebuild interrupted between its two renames: the live shard is gone and the complete,
    checked copy waits under <path>.rebuild. True if it was moved into place."""
    staged = staging_path(path)
    if (path / CONFIG_FILE).exists() or not (staged / MARKER).exists():
        return False
    if path.exists():  # an empty directory left by the interrupted swap
        path.rmdir()
    staged.rename(path)
    (path / MARKER).unlink()
    _fsync_dir(path.parent)
    logger.warning("edge rebuild recovered: the rebuilt shard was moved into place path=%s", path)
    return True


def rebuild(store: EdgeVectorStore, *, tuning: EdgeTuning, keep_old: bool = True, batch: int = 1_000) -> RebuildReport:
    """Rebuild `store`'s shard under `tuning` and swap it in. `store` is closed on return (open the new one
    with `EdgeVectorStore.open`); the process must own the store (the API stopped)."""
    from memory.stores.edge import EdgeVectorStore

    started = time.perf_counter()
    path, dim = store.path, store.dim
    staged = staging_path(path)
    if staged.exists():
        logger.warning("edge rebuild discards an interrupted run's copy path=%s", staged)
        shutil.rmtree(staged)
    before = built_thresholds(path)
    expected = store.stats()["points"]
    target = EdgeVectorStore.open(staged, dim, tuning=tuning)
    try:
        copied, sample = 0, []
        for points in store.export_batches(batch):
            target.import_batch(points)
            copied += len(points)
            sample += [str(points[0].id), str(points[-1].id)]  # spread over the whole store
        _check_copy(store, target, expected=expected, copied=copied, sample=sample[:: max(1, len(sample) // 64)])
        target.optimize()
    except BaseException:
        target.close()
        shutil.rmtree(staged, ignore_errors=True)
        raise
    target.close()
    (staged / MARKER).write_text(json.dumps({"points": copied, "at": datetime.now(UTC).isoformat()}))
    store.close()
    previous = path.with_name(f"{path.name}.old-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}")
    path.rename(previous)
    staged.rename(path)
    (path / MARKER).unlink()
    _fsync_dir(path.parent)
    if not keep_old:
        shutil.rmtree(previous)
    report = RebuildReport(
        points=copied, seconds=time.perf_counter() - started, path=path, previous=previous if keep_old else None,
        thresholds_before=before, thresholds_after=built_thresholds(path),
    )
    logger.info("edge rebuild done points=%d seconds=%.1f kept_old=%s", copied, report.seconds, keep_old)
    return report


def _check_copy(
    source: EdgeVectorStore, target: EdgeVectorStore, *, expected: int, copied: int, sample: list[str]
) -> None:
    """Every point copied, and a spread sample of them identical (payload, and vector to float precision)."""
    counted = target.stats()["points"]
    if not expected == copied == counted:
        raise VectorStoreError(
            f"rebuild copied {copied} points, the store holds {expected}, the copy counts {counted}",
            code="rebuild_incomplete",
        )
    if not source.same_points(target, sample):
        raise VectorStoreError("the rebuilt copy differs from the store on sampled points", code="rebuild_mismatch")


def _fsync_dir(directory: Path) -> None:
    """Make the renames in `directory` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
