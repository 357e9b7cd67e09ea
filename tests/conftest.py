"""Shared fixtures: a database per test (SQLite, or PostgreSQL when MEMORY_TEST_DATABASE_URL is set),
fast deterministic test doubles for the models, the real models once per session, and API clients.

Tests that take the `db_url` fixture (directly or through `container` / `api`) are marked `postgres`
automatically, so scripts/test runs them a second time against PostgreSQL.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("SCARF_NO_ANALYTICS", "1")
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
# Parse in-process unless a test asks for the worker process (tests/ingest/test_ingest_workers.py and the CLI
# test do): a worker per test container would add seconds to every test that ingests.
os.environ.setdefault("MEMORY_PARSE_TIMEOUT_S", "0")

from classifiers.labels import LabelMap
from classifiers.types import Classification, Finding

PG_URL = os.environ.get("MEMORY_TEST_DATABASE_URL")
DIM = 384


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "db_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(autouse=True)
def _pandoc_heap_limit_put_back() -> Iterator[None]:
    """No test leaves pandoc's heap limit (GHCRTS, set around in-process parses) set behind it: every later
    program the test process starts would run under it (shellcheck refuses to)."""
    before = os.environ.get("GHCRTS")
    yield
    assert os.environ.get("GHCRTS") == before, "GHCRTS was left set: a parse's heap limit was not put back"


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for this test."""
    if not PG_URL:
        yield f"sqlite:///{tmp_path / 'memory.sqlite3'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = "t_" + uuid.uuid4().hex[:16]
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
            ), {"n": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


class FakeEmbedder:
    """Deterministic bag-of-words vectors: texts sharing words are similar. Fast; no model."""

    model_id = "fake-bow@test"
    dim = DIM

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(DIM, dtype=np.float32)
        for w in re.findall(r"[a-z0-9]+", text.lower()):
            h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "little")
            v[h % DIM] += 1.0
        if not v.any():
            v[0] = 1.0
        return v / np.linalg.norm(v)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, DIM), dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self._vec(text)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class FakeClassifier:
    """Finds emails, and 'Name Surname' after 'Mr'/'Ms'; IBAN-looking strings. Enough for policy tests."""

    version = "fake-classifier/1"
    label_map = LabelMap()
    _patterns = (
        ("EMAIL_ADDRESS", re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")),
        ("PERSON", re.compile(r"(?<=M[rs] )[A-Z][a-z]+ [A-Z][a-z]+")),
        ("IBAN_CODE", re.compile(r"\b[A-Z]{2}\d{2}(?: ?\d{4}){4,7}\b")),
    )

    def with_label_map(self, label_map: LabelMap) -> FakeClassifier:
        relabelled = copy.copy(self)
        relabelled.label_map = label_map
        return relabelled

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        out = []
        for t in texts:
            found = sorted(
                (Finding(name, m.start(), m.end(), 0.99, f"fake-{name.lower()}") for name, rx in self._patterns
                 for m in rx.finditer(t)), key=lambda f: f.start,
            )
            types = tuple(sorted({f.entity_type for f in found}))
            out.append(Classification(tuple(found), self.label_map.label_for(types), self.label_map.version,
                                      self.version, types))
        return out


@pytest.fixture(scope="session")
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture(scope="session")
def fake_classifier() -> FakeClassifier:
    return FakeClassifier()


@pytest.fixture(scope="session")
def real_embedder() -> Any:
    from ingest.embedders import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(num_threads=2)


@pytest.fixture(scope="session")
def real_classifier() -> Any:
    from classifiers.presidio import build_presidio_classifier

    return build_presidio_classifier()


def make_container(tmp_path: Path, db_url: str, *, embedder: Any, classifier: Any, tracing: Any = None,
                   **settings: Any) -> Any:
    from memory.bootstrap import Container
    from memory.settings import Settings

    # Rate limits off unless a test sets them (tests/memory/test_rate_limits.py): tests call faster than callers.
    settings = {"rate_limit_search": "", "rate_limit_ingest": "", "rate_limit_other": "", "rate_limit_principal": "",
                "rate_limit_auth_failures": "",
                **settings}
    s = Settings(data_dir=tmp_path / "data", database_url=db_url, env="test", **settings)  # type: ignore[call-arg]
    c = Container(s, embedder=embedder, classifier=classifier, tracing=tracing)
    c.prepare_database()
    return c


@pytest.fixture
def container(
    tmp_path: Path, db_url: str, fake_embedder: FakeEmbedder, fake_classifier: FakeClassifier
) -> Iterator[Any]:
    """Real SQL + real Qdrant Edge + real parsing; fake (fast) embedder and classifier."""
    c = make_container(tmp_path, db_url, embedder=fake_embedder, classifier=fake_classifier)
    yield c
    c.close()


@pytest.fixture
def real_container(tmp_path: Path, db_url: str, real_embedder: Any, real_classifier: Any) -> Iterator[Any]:
    """The whole real stack: SQL, Qdrant Edge, unstructured, Presidio + spaCy, all-MiniLM-L6-v2."""
    c = make_container(tmp_path, db_url, embedder=real_embedder, classifier=real_classifier)
    yield c
    c.close()


ADMIN_KEY = "gm_testadmin0000000_test-admin-key-0123456789"


class Api:
    """A TestClient plus helpers to create principals (returns their keys) and sources."""

    def __init__(self, client: Any, container: Any) -> None:
        self.client = client
        self.container = container
        self.admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def principal(self, pid: str, *, kind: str = "user", groups: Sequence[str] = (), clearance: str = "internal",
                  jurisdiction: str = "EU", roles: Sequence[str] = ("reader",), **extra: Any) -> dict[str, str]:
        r = self.client.post("/v1/principals", headers=self.admin, json={
            "id": pid, "kind": kind, "groups": list(groups), "clearance": clearance, "jurisdiction": jurisdiction,
            "roles": list(roles), **extra,
        })
        assert r.status_code == 201, r.text
        return {"Authorization": f"Bearer {r.json()['key']['api_key']}"}

    def source(self, sid: str, *, jurisdiction: str = "EU", read_groups: Sequence[str] = ("g",),
               floor: str = "public", steward: str = "admin") -> None:
        r = self.client.post("/v1/sources", headers=self.admin, json={
            "id": sid, "name": sid, "steward": steward, "jurisdiction": jurisdiction,
            "read_groups": list(read_groups), "floor": floor,
        })
        assert r.status_code == 201, r.text

    def upload(self, sid: str, name: str, content: bytes | str, headers: dict[str, str] | None = None) -> Any:
        data = content.encode() if isinstance(content, str) else content
        return self.client.post(f"/v1/sources/{sid}/documents", headers=headers or self.admin,
                                files={"file": (name, data)})

    def search(self, headers: dict[str, str], query: str, **body: Any) -> Any:
        return self.client.post("/v1/search", headers=headers, json={"query": query, **body})


def make_api(c: Any) -> Iterator[Api]:
    from fastapi.testclient import TestClient

    from memory.api.app import create_app
    from memory.bootstrap import ensure_admin

    ensure_admin(c.sessions, token=ADMIN_KEY)
    with TestClient(create_app(c.settings, container=c, warm=False)) as client:
        yield Api(client, c)


@pytest.fixture
def api(container: Any) -> Iterator[Api]:
    yield from make_api(container)


@pytest.fixture
def real_api(real_container: Any) -> Iterator[Api]:
    yield from make_api(real_container)


@contextmanager
def uvicorn_in_thread(app: Any, **options: Any) -> Iterator[int]:
    """The app served by a real uvicorn on a thread, on a free loopback port (yielded) until the block ends."""
    import threading

    import uvicorn

    config = {"host": "127.0.0.1", "port": 0, "log_level": "warning", "lifespan": "on", **options}
    server = uvicorn.Server(uvicorn.Config(app, **config))
    runner = threading.Thread(target=server.run, daemon=True)
    runner.start()
    try:
        while not server.started:
            assert runner.is_alive()
            threading.Event().wait(0.05)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        runner.join(15)


@pytest.fixture
def env(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, fake_embedder: Any, fake_classifier: Any
        ) -> Path:
    """A data directory and database for CLI commands run through `invoke` (this test's), with fast model doubles
    in the container the CLI builds for itself."""
    from memory.bootstrap import Container

    monkeypatch.setenv("MEMORY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEMORY_DATABASE_URL", db_url)
    monkeypatch.setenv("MEMORY_ENV", "test")
    real_init = Container.__init__

    def with_doubles(self: Any, settings: Any, **kw: Any) -> None:
        kw.setdefault("embedder", fake_embedder)
        kw.setdefault("classifier", fake_classifier)
        real_init(self, settings, **kw)

    monkeypatch.setattr(Container, "__init__", with_doubles)
    return tmp_path


def invoke(*args: str) -> Any:
    """A `memory` CLI command through typer's runner (the commands of every CLI module registered)."""
    from typer.testing import CliRunner

    from memory import cli, cli_access, cli_audit, cli_commands, cli_documents, cli_jobs  # noqa: F401  (registers)

    return CliRunner().invoke(cli.app, list(args))
