"""The rate limits on a real shared storage: a redis-server started here (scripts/test installs Debian's package in
CI). Replicas share one count per caller; the API counts there; a storage that stops or hangs serves requests
unlimited within a bounded wait, says so on /readyz, is left alone for a while and is used again once back."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from memory import rate_limits
from memory.errors import RateLimitedError
from memory.rate_limits import RateLimits
from tests.conftest import make_api, make_container


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throwaway redis-server on loopback, no persistence."""

    def __init__(self, workdir: Path, *args: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            why = "redis-server is not installed (apt-get install redis-server; scripts/test does it as root)"
            if os.environ.get("CI"):
                pytest.fail(why)
            pytest.skip(why)
        self.binary, self.workdir, self.port = binary, workdir, _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.AuthenticationError:  # up, and guarded by a password
                return
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.proc = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def url(server: RedisServer) -> str:
    if server.proc is None:
        server.start()
    redis.Redis.from_url(server.url).flushdb()
    return server.url


def test_replicas_share_one_count_per_caller(url: str):
    replica_a = RateLimits({"search": "3/hour", "auth_failures": "2/hour"}, storage_uri=url)
    replica_b = RateLimits({"search": "3/hour", "auth_failures": "2/hour"}, storage_uri=url)
    replica_a.check("search", "copilot", "alice")
    replica_b.check("search", "copilot", "alice")
    replica_a.check("search", "copilot", "alice")
    with pytest.raises(RateLimitedError) as err:
        replica_b.check("search", "copilot", "alice")
    assert err.value.details["limit"] == "3 per 1 hour" and err.value.retry_after_s >= 1
    replica_b.check("search", "copilot", "bob")  # another caller: its own count
    replica_a.count_auth_failure("10.1.2.3")
    replica_b.count_auth_failure("10.1.2.3")
    with pytest.raises(RateLimitedError):  # replica a has refused a key itself, so it tests the shared count
        replica_a.refuse_failing_client("10.1.2.3")
    assert replica_a.state() == replica_b.state() == "ok"


def test_the_api_counts_in_the_shared_storage(url: str, tmp_path: Path, db_url: str, fake_embedder: Any,
                                             fake_classifier: Any):
    c = make_container(tmp_path, db_url, embedder=fake_embedder, classifier=fake_classifier,
                       rate_limit_search="2/hour", rate_limit_storage=url)
    try:
        for api in make_api(c):
            reader = api.principal("r1", groups=["g"])
            api.source("s1", read_groups=["g"])
            assert [api.search(reader, "travel").status_code for _ in range(3)] == [200, 200, 429]
            assert api.client.get("/readyz").json()["checks"]["rate_limits"] == "ok"
    finally:
        c.close()
    other_replica = RateLimits({"search": "2/hour"}, storage_uri=url)
    with pytest.raises(RateLimitedError):  # the count is in Redis, not in the API's process
        other_replica.check("search", "r1", None)


def test_a_storage_that_stops_serves_unlimited_then_counts_again(server: RedisServer, url: str, monkeypatch):
    monkeypatch.setattr(rate_limits, "RETRY_AFTER_FAILURE_S", 0.5)
    limits = RateLimits({"search": "2/hour"}, storage_uri=url)
    limits.check("search", "p", None)
    server.stop()
    t = time.perf_counter()
    for _ in range(5):
        limits.check("search", "p", None)  # served: a limit guards capacity, not data
    assert time.perf_counter() - t < 2
    assert limits.state().startswith("unavailable: ")
    server.start()  # back, empty (no persistence)
    time.sleep(0.6)
    limits.check("search", "p", None)
    limits.check("search", "p", None)
    with pytest.raises(RateLimitedError):
        limits.check("search", "p", None)


def test_a_cluster_down_at_start_is_an_outage_not_a_bad_setting(tmp_path: Path, monkeypatch):
    """A Redis cluster client connects as it is built: with the cluster down the service still starts, serves
    unlimited and says so; once a (one-node) cluster answers, the next try builds the client and counts there."""
    monkeypatch.setattr(rate_limits, "RETRY_AFTER_FAILURE_S", 0.3)
    # The cluster bus port named: by default it is the port + 10000, past 65535 for a high ephemeral port.
    node = RedisServer(tmp_path, "--cluster-enabled", "yes", "--cluster-port", str(_free_port()),
                       "--cluster-config-file", str(tmp_path / "nodes.conf"))
    uri = f"redis+cluster://127.0.0.1:{node.port}"
    limits = RateLimits({"search": "2/hour"}, storage_uri=uri)  # nothing listens yet
    limits.verify()  # not reachable: logged, not a configuration error
    for _ in range(4):
        limits.check("search", "p", None)  # served: a limit guards capacity, not data
    assert limits.state().startswith("unavailable: ")
    node.start()
    try:
        redis.Redis(port=node.port).execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        deadline = time.monotonic() + 15
        while redis.Redis(port=node.port).execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok") < 0:
            assert time.monotonic() < deadline, "the one-node cluster did not come up"
            time.sleep(0.1)
        time.sleep(0.4)  # past the wait after the last failure
        limits.check("search", "p", None)
        limits.check("search", "p", None)
        with pytest.raises(RateLimitedError):
            limits.check("search", "p", None)
    finally:
        node.stop()


def test_a_hung_storage_costs_one_bounded_wait_then_is_left_alone(monkeypatch):
    """A server that accepts connections and never answers (a hung Redis, a black-holed route): the first request
    waits at most the storage timeout, the next ones do not wait at all while the storage is left alone."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        limits = RateLimits({"search": "2/hour"}, storage_uri=f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        t = time.perf_counter()
        limits.check("search", "p", None)
        first = time.perf_counter() - t
        assert first < rate_limits.STORAGE_TIMEOUT_S * 3, first
        t = time.perf_counter()
        for _ in range(20):
            limits.check("search", "p", None)
        assert time.perf_counter() - t < 0.1  # left alone: no wait
        assert limits.state() == "unavailable: TimeoutError (requests not limited)"
    finally:
        stop.set()
        acceptor.join()
        for conn in held:
            conn.close()
        listener.close()


def test_a_storage_that_refuses_the_service_stops_the_start(tmp_path: Path, monkeypatch):
    """A wrong password would otherwise leave every request unlimited for good, with the service looking healthy:
    it is invalid_settings at start (the API's and `memory serve`'s). An unreachable one only fails open."""
    from typer.testing import CliRunner

    from memory.cli import app
    from memory.errors import ValidationFailedError

    guarded = RedisServer(tmp_path, "--requirepass", "right-password")
    guarded.start()
    try:
        base = f"127.0.0.1:{guarded.port}/0"
        RateLimits({"search": "1/second"}, storage_uri=f"redis://:right-password@{base}").verify()
        for wrong in (f"redis://:wrong-password@{base}", f"redis://{base}"):
            with pytest.raises(ValidationFailedError) as err:
                RateLimits({"search": "1/second"}, storage_uri=wrong).verify()
            assert err.value.code == "invalid_settings" and "password" not in err.value.message.replace(
                "check the credentials", "")
        monkeypatch.setenv("MEMORY_RATE_LIMIT_STORAGE", f"redis://:wrong-password@{base}")
        r = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path / "d")])
        assert r.exit_code == 2 and "invalid_settings" in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and "wrong-password" not in r.output
    finally:
        guarded.stop()
    unreachable = RateLimits({"search": "1/hour"}, storage_uri=f"redis://127.0.0.1:{_free_port()}/0")
    unreachable.verify()  # fails open, says so
    assert unreachable.state().startswith("unavailable: ")
