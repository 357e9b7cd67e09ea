"""memory.query_batching: concurrent searches' queries share forward passes; each caller gets its own vector."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from ingest.errors import EmbeddingError
from memory.query_batching import QueryBatcher

DIM = 8


class GatedEmbedder:
    """A test double: one-hot-ish vectors per text; records each pass; the first pass can be held open."""

    model_id = "gated@test"

    def __init__(self, *, hold_first: bool = False, poison: str | None = None, short: bool = False) -> None:
        self.passes: list[list[str]] = []
        self.threads: list[threading.Thread] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.poison, self.short = poison, short

    def vector(self, text: str) -> np.ndarray:
        v = np.zeros(DIM, dtype=np.float32)
        v[sum(map(ord, text)) % DIM] = 1.0
        v[-1] = len(text)
        return v

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.passes.append(list(texts))
        self.threads.append(threading.current_thread())
        self.entered.set()
        assert self.release.wait(10)
        if self.poison is not None and self.poison in texts:
            raise EmbeddingError("model failed on this input")
        rows = [self.vector(t) for t in texts]
        return np.stack(rows[:-1] if self.short and len(rows) > 1 else rows)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def queued(batcher: QueryBatcher, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(batcher._waiting) < n:  # the callers wait for the pass in flight
        assert time.monotonic() < deadline, "callers never queued"
        time.sleep(0.001)


def run_held(fake: GatedEmbedder, batcher: QueryBatcher, texts: list[str]) -> list[Any]:
    """texts[0] starts a pass that is held open; the rest queue behind it; then the pass is released."""
    with ThreadPoolExecutor(len(texts)) as pool:
        first = pool.submit(batcher.embed_query, texts[0])
        assert fake.entered.wait(10)
        rest = [pool.submit(batcher.embed_query, t) for t in texts[1:]]
        queued(batcher, len(texts) - 1)
        fake.release.set()
        futures = [first, *rest]
        return [f.exception(10) or f.result() for f in futures]


def test_a_lone_query_is_embedded_at_once_on_the_calling_thread_and_the_rest_is_delegated() -> None:
    fake = GatedEmbedder()
    batcher = QueryBatcher(fake, max_batch=8)
    try:
        assert np.array_equal(batcher.embed_query("alpha beta"), fake.vector("alpha beta"))
        assert fake.passes == [["alpha beta"]]
        assert fake.threads == [threading.current_thread()]  # no handoff to another thread
        assert batcher.model_id == "gated@test"
        assert batcher.count_tokens("a b c") == 3
    finally:
        batcher.close()


def held_batcher(texts: list[str], *, max_batch: int = 8, **fake: Any) -> tuple[GatedEmbedder, list[Any]]:
    """One pass at a time; texts[0]'s pass is held open while the rest queue (see run_held); then closed."""
    embedder = GatedEmbedder(hold_first=True, **fake)
    batcher = QueryBatcher(embedder, max_batch=max_batch, max_passes=1)
    try:
        return embedder, run_held(embedder, batcher, texts)
    finally:
        batcher.close()


def test_queries_waiting_during_a_pass_share_the_next_one_and_each_caller_gets_its_own_vector() -> None:
    texts = ["first", "q one", "q two two", "q three", "q four four four", "q five"]
    fake, results = held_batcher(texts)
    assert fake.passes[0] == ["first"]
    assert sorted(fake.passes[1]) == sorted(texts[1:])  # one pass for all five
    assert len(fake.passes) == 2
    for text, vector in zip(texts, results, strict=True):
        assert np.array_equal(vector, fake.vector(text))


def test_a_pass_takes_at_most_max_batch_queries() -> None:
    texts = ["first", "a", "bb", "ccc", "dddd", "eeeee"]
    fake, results = held_batcher(texts, max_batch=2)
    assert [len(p) for p in fake.passes] == [1, 2, 2, 1]
    assert all(np.array_equal(v, fake.vector(t)) for t, v in zip(texts, results, strict=True))


def test_a_failing_pass_is_retried_one_query_at_a_time_so_only_the_bad_query_fails() -> None:
    fake = GatedEmbedder(hold_first=True, poison="poison")
    batcher = QueryBatcher(fake, max_batch=8, max_passes=1)
    texts = ["first", "good one", "poison", "good two"]
    try:
        results = run_held(fake, batcher, texts)
        assert np.array_equal(batcher.embed_query("after"), fake.vector("after"))  # the batcher still serves
    finally:
        batcher.close()
    assert isinstance(results[2], EmbeddingError)
    for i in (0, 1, 3):
        assert np.array_equal(results[i], fake.vector(texts[i]))
    assert ["poison"] in fake.passes  # retried alone


def test_a_model_returning_the_wrong_number_of_vectors_fails_those_callers_not_the_worker() -> None:
    fake = GatedEmbedder(hold_first=True, short=True)
    batcher = QueryBatcher(fake, max_batch=8, max_passes=1)
    try:
        results = run_held(fake, batcher, ["first", "x", "y"])
        assert not any(isinstance(r, Exception) for r in results)  # retried one by one, each pass has 1 row
        fake.short = False
        assert np.array_equal(batcher.embed_query("later"), fake.vector("later"))
    finally:
        batcher.close()


def test_close_refuses_new_queries_and_still_embeds_waiting_ones() -> None:
    fake = GatedEmbedder(hold_first=True)
    batcher = QueryBatcher(fake, max_batch=8, max_passes=1)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(batcher.embed_query, "first")
        assert fake.entered.wait(10)
        second = pool.submit(batcher.embed_query, "second")
        queued(batcher, 1)
        batcher.close()
        fake.release.set()
        assert np.array_equal(first.result(10), fake.vector("first"))
        assert np.array_equal(second.result(10), fake.vector("second"))
    with pytest.raises(EmbeddingError):
        batcher.embed_query("too late")
    batcher.close()  # idempotent


def test_up_to_max_passes_run_side_by_side_before_queries_wait() -> None:
    fake = GatedEmbedder(hold_first=True)
    batcher = QueryBatcher(fake, max_batch=8, max_passes=2)
    with ThreadPoolExecutor(4) as pool:
        lone = [pool.submit(batcher.embed_query, t) for t in ("a", "b")]
        deadline = time.monotonic() + 10
        while len(fake.passes) < 2:  # both lone queries are in their own passes, at once
            assert time.monotonic() < deadline
            time.sleep(0.001)
        waiting = [pool.submit(batcher.embed_query, t) for t in ("c", "dd")]
        queued(batcher, 2)
        fake.release.set()
        results = [f.result(10) for f in lone + waiting]
    batcher.close()
    assert sorted(map(sorted, fake.passes)) == [["a"], ["b"], ["c", "dd"]]
    assert all(np.array_equal(v, fake.vector(t)) for t, v in zip(["a", "b", "c", "dd"], results, strict=True))


@pytest.mark.parametrize("kwargs", [{"max_batch": 0}, {"max_passes": 0}])
def test_max_batch_and_max_passes_must_be_positive(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        QueryBatcher(GatedEmbedder(), **kwargs)


def test_real_model_batched_vectors_equal_lone_ones(real_embedder: Any) -> None:
    """The real all-MiniLM-L6-v2: queries of different lengths embedded concurrently (so padded together)
    get the vector each gets alone, to float rounding."""
    texts = ["short", "salary of the HR employees?",
             "does vitamin D reduce the risk of cardiovascular disease in adults over sixty years of age",
             "may we share the EU customer dataset with our partner in the United States", "retention", "GDPR"]
    alone = {t: real_embedder.embed_query(t) for t in texts}
    batcher = QueryBatcher(real_embedder, max_batch=16)
    try:
        with ThreadPoolExecutor(len(texts)) as pool:
            got = list(pool.map(batcher.embed_query, texts * 3))
    finally:
        batcher.close()
    for t, v in zip(texts * 3, got, strict=True):
        assert v.shape == alone[t].shape
        assert np.allclose(v, alone[t], atol=1e-5)


def test_the_container_batches_search_queries_unless_configured_off(tmp_path: Any, db_url: str,
                                                                    fake_embedder: Any, fake_classifier: Any) -> None:
    from tests.conftest import make_container

    on = make_container(tmp_path / "on", db_url, embedder=fake_embedder, classifier=fake_classifier)
    try:
        assert isinstance(on.query_embedder, QueryBatcher)
        assert np.array_equal(on.query_embedder.embed_query("hello world"), fake_embedder.embed_query("hello world"))
    finally:
        on.close()
    with pytest.raises(EmbeddingError):
        on.query_embedder.embed_query("after close")
    off = make_container(tmp_path / "off", db_url, embedder=fake_embedder, classifier=fake_classifier,
                         search_embed_batch_max=1)
    try:
        assert off.query_embedder is fake_embedder
    finally:
        off.close()


def test_concurrent_api_searches_get_the_hits_of_sequential_ones(api: Any) -> None:
    """Through the API (real SQL, Qdrant Edge, parsing): searches sent at once, whose queries share passes,
    return what each returns alone, and the batch histogram is exported."""
    api.source("s", read_groups=["g"])
    reader = api.principal("reader-1", groups=["g"])
    for i, words in enumerate(["apples and pears", "boats and harbours", "tax forms and audits", "green tea"]):
        assert api.upload("s", f"d{i}.txt", f"Notes on {words}. " * 20).status_code == 201
    queries = ["apples", "harbours", "audits", "tea", "pears and boats", "forms"]

    def ids(q: str) -> list[str]:
        r = api.client.post("/v1/search", headers=reader, json={"query": q, "top_k": 3})
        assert r.status_code == 200, r.text
        return [h["citation"]["chunk_id"] for h in r.json()["hits"]]

    alone = {q: ids(q) for q in queries}
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(ids, queries * 2))
    assert together == [alone[q] for q in queries * 2]
    assert "memory_query_embed_batch_size_count" in api.client.get("/metrics").text
