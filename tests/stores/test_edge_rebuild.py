"""`memory.stores.edge_rebuild` on real Qdrant Edge shards: the index is rebuilt under new tuning with every
point unchanged, a failure leaves the live store as it was, and an interrupted swap is finished on open."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from pathlib import Path

import numpy as np
import pytest

from memory.errors import VectorStoreError
from memory.stores import edge_rebuild
from memory.stores.base import OPEN_END, AccessFilter, ChunkPayload, JurisdictionGrant, VectorPoint
from memory.stores.edge import EdgeVectorStore
from memory.stores.edge_config import EdgeTuning

DIM = 8
# Tiny thresholds so a 1,200-point shard of 8-d vectors gets an HNSW index: 32 bytes a vector, so 20 KB is a
# full-scan threshold of 640 points and 10 KB of 320.
OLD = EdgeTuning(full_scan_threshold_kb=20, indexing_threshold_kb=1)
NEW = dataclasses.replace(OLD, full_scan_threshold_kb=10)
N = 1_200


def _points(n: int = N, seed: int = 7) -> list[VectorPoint]:
    rng = np.random.default_rng(seed)
    return [
        VectorPoint(
            id=str(uuid.UUID(int=int(rng.integers(1, 2**62)))),
            vector=rng.normal(size=DIM).tolist(),
            payload=ChunkPayload(
                chunk_id=f"c{i}", source_id=f"s{i % 5}", document_id=f"d{i % 40}", version_id=f"v{i % 40}",
                read_groups=(f"g{i % 3}",), label=i % 4, jurisdiction=("EU", "US")[i % 2], personal=bool(i % 2),
                entity_types=("PERSON",) if i % 2 else (), valid_from=100.0, valid_to=OPEN_END,
                retracted=False, committed=True,
            ),
        )
        for i in range(n)
    ]


def _snapshot(store: EdgeVectorStore) -> dict[str, tuple[dict[str, object], list[float]]]:
    return {
        str(r.id): (dict(r.payload), [round(x, 6) for x in r.vector])
        for batch in store.export_batches(300) for r in batch
    }


@pytest.fixture
def built(tmp_path: Path) -> Path:
    """A shard indexed under OLD's full-scan threshold, closed."""
    path = tmp_path / "qdrant-edge"
    store = EdgeVectorStore.open(path, DIM, tuning=OLD)
    store.upsert(_points())
    store.optimize()
    store.close()
    assert edge_rebuild.built_thresholds(path) == (640,)
    return path


def test_rebuild_applies_the_new_tuning_and_keeps_every_point(built: Path) -> None:
    store = EdgeVectorStore.open(built, DIM, tuning=NEW)
    before = _snapshot(store)
    flt = AccessFilter(groups=frozenset({"g1"}), max_label=2, grants=(JurisdictionGrant("EU", True),), as_of=150.0)
    query = [0.3, -1.0, 0.2, 0.5, 0.0, 1.0, -0.4, 0.1]
    hits_before = [(h.id, round(h.score, 5)) for h in store.search(query, flt, 10)]

    report = edge_rebuild.rebuild(store, tuning=NEW)

    assert report.points == N and report.path == built
    assert report.thresholds_before == (640,) and report.thresholds_after == (320,)
    assert report.previous is not None and report.previous.is_dir()
    assert not edge_rebuild.staging_path(built).exists()
    rebuilt = EdgeVectorStore.open(built, DIM, tuning=NEW)
    try:
        assert _snapshot(rebuilt) == before
        assert rebuilt.stats()["indexed_vectors"] == N
        assert [(h.id, round(h.score, 5)) for h in rebuilt.search(query, flt, 10)] == hits_before
    finally:
        rebuilt.close()
    # The rollback copy is the old shard, whole.
    old = EdgeVectorStore.open(report.previous, DIM, tuning=OLD)
    try:
        assert _snapshot(old) == before
    finally:
        old.close()


def test_drop_old_deletes_the_previous_shard(built: Path) -> None:
    report = edge_rebuild.rebuild(EdgeVectorStore.open(built, DIM, tuning=NEW), tuning=NEW, keep_old=False)
    assert report.previous is None
    assert [p.name for p in built.parent.iterdir()] == [built.name]


def test_a_failed_copy_leaves_the_live_store_untouched(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = EdgeVectorStore.open(built, DIM, tuning=NEW)
    before = _snapshot(store)
    calls = {"n": 0}
    real = EdgeVectorStore.import_batch

    def failing(self: EdgeVectorStore, records: list) -> None:  # type: ignore[type-arg]
        calls["n"] += 1
        if calls["n"] == 2:
            raise VectorStoreError("disk full", code="vector_store_error")
        real(self, records)

    monkeypatch.setattr(EdgeVectorStore, "import_batch", failing)
    with pytest.raises(VectorStoreError, match="disk full"):
        edge_rebuild.rebuild(store, tuning=NEW, batch=500)
    store.close()
    assert [p.name for p in built.parent.iterdir()] == [built.name]  # no partial copy, no swap
    again = EdgeVectorStore.open(built, DIM, tuning=OLD)
    try:
        assert _snapshot(again) == before
        assert edge_rebuild.built_thresholds(built) == (640,)
    finally:
        again.close()


def test_a_copy_that_differs_is_never_swapped_in(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = EdgeVectorStore.open(built, DIM, tuning=NEW)
    monkeypatch.setattr(EdgeVectorStore, "same_points", lambda self, other, ids: False)
    with pytest.raises(VectorStoreError) as exc:
        edge_rebuild.rebuild(store, tuning=NEW)
    assert exc.value.code == "rebuild_mismatch"
    store.close()
    assert [p.name for p in built.parent.iterdir()] == [built.name]


def test_an_interrupted_run_s_leftover_copy_is_discarded(built: Path) -> None:
    leftover = edge_rebuild.staging_path(built)
    (leftover / "segments").mkdir(parents=True)
    (leftover / "junk").write_text("half a copy")
    report = edge_rebuild.rebuild(EdgeVectorStore.open(built, DIM, tuning=NEW), tuning=NEW, keep_old=False)
    assert report.points == N and not leftover.exists()


def test_open_finishes_a_swap_interrupted_between_its_renames(built: Path) -> None:
    store = EdgeVectorStore.open(built, DIM, tuning=NEW)
    before = _snapshot(store)
    report = edge_rebuild.rebuild(store, tuning=NEW)
    # Put the state back to "live renamed away, checked copy still staged" (what a crash there leaves).
    staged = edge_rebuild.staging_path(built)
    built.rename(staged)
    (staged / edge_rebuild.MARKER).write_text("{}")
    recovered = EdgeVectorStore.open(built, DIM, tuning=NEW)
    try:
        assert _snapshot(recovered) == before
        assert not staged.exists() and not (built / edge_rebuild.MARKER).exists()
    finally:
        recovered.close()
    assert report.previous is not None and report.previous.exists()


def test_a_staged_copy_without_its_marker_is_never_recovered(tmp_path: Path) -> None:
    path = tmp_path / "qdrant-edge"
    edge_rebuild.staging_path(path).mkdir()
    assert edge_rebuild.recover(path) is False
    assert not path.exists()


def test_open_warns_when_the_index_was_built_under_another_threshold(
    built: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="memory.stores.edge"):
        EdgeVectorStore.open(built, DIM, tuning=NEW).close()
    assert any("rebuild-index" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="memory.stores.edge"):
        EdgeVectorStore.open(built, DIM, tuning=OLD).close()
    assert not any("rebuild-index" in r.getMessage() for r in caplog.records)
