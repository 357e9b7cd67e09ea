"""No request transaction crosses a thread-pool hop (memory.api.deps.TransactionPerHop): a burst of requests
larger than the thread pool, mixing dependency-based routes, writes and searches, is served without waiting
on itself. Before, a request held its transaction (a pooled connection; on SQLite the write lock) while it
waited for a thread, every thread waited for that lock or a connection, and the burst stalled until the
pool's timeout (45 concurrent requests on the 40-thread pool did it). Real SQL (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

from tests.conftest import make_api, make_container

THREADS = 3  # the API's thread pool, shrunk so that a small burst outnumbers it
BURST = 24


@pytest.fixture
def small_pool_api(tmp_path: Path, db_url: str, fake_embedder: Any, fake_classifier: Any) -> Iterator[Any]:
    # A short lock wait: a burst that waits on itself fails fast (503 database_busy) instead of stalling.
    c = make_container(tmp_path, db_url, embedder=fake_embedder, classifier=fake_classifier, db_lock_timeout_s=3)
    try:
        for api in make_api(c):

            def shrink() -> None:
                anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS

            api.client.portal.call(shrink)
            yield api
    finally:
        c.close()


def test_a_burst_larger_than_the_thread_pool_is_served_without_waiting_on_itself(small_pool_api: Any) -> None:
    api = small_pool_api
    bob = api.principal("bob", groups=["g"])
    api.source("s1", read_groups=["g"])
    assert api.upload("s1", "leave.md", "# Leave\n\nParental leave is twelve weeks at full pay.\n").status_code == 201

    def call(i: int) -> int:
        kind = i % 4
        if kind == 0:
            return int(api.client.get("/v1/principals/bob", headers=bob).status_code)
        if kind == 1:
            return int(api.client.patch("/v1/sources/s1", headers=api.admin,
                                        json={"name": f"Source {i}"}).status_code)
        if kind == 2:
            return int(api.search(bob, "parental leave").status_code)
        return int(api.client.get("/v1/sources", headers=api.admin).status_code)

    started = time.monotonic()
    with ThreadPoolExecutor(BURST) as pool:
        statuses = list(pool.map(call, range(BURST)))
    assert statuses == [200] * BURST, statuses
    assert time.monotonic() - started < 30
