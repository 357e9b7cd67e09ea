"""The same service on the Qdrant *server* backend (qdrant-client, here against QdrantClient(":memory:"),
which speaks the server's API): upload, governed search, source access change, time travel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from qdrant_client import QdrantClient

from memory.bootstrap import EMBEDDING_DIM, Container
from memory.settings import Settings
from memory.stores.server import ServerVectorStore
from tests.conftest import make_api


@pytest.fixture
def server_api(tmp_path, db_url, fake_embedder, fake_classifier) -> Iterator[Any]:
    store = ServerVectorStore(QdrantClient(":memory:"), "memory_test", EMBEDDING_DIM, owns_client=True)
    store.ensure_collection()
    settings = Settings(data_dir=tmp_path, database_url=db_url, env="test")
    c = Container(settings, store=store, embedder=fake_embedder, classifier=fake_classifier)
    c.prepare_database()
    yield from make_api(c)
    c.close()


def test_governed_search_on_the_server_backend(server_api):
    api = server_api
    eu = api.principal("eu", groups=["g"], clearance="confidential", jurisdiction="EU")
    us = api.principal("us", groups=["g"], clearance="confidential", jurisdiction="US")
    api.source("s", read_groups=["g"], jurisdiction="EU")
    r = api.upload("s", "memo.txt", "Reimbursements: contact Ms Jane Doe at jane.doe@example.com about trains.")
    assert r.status_code == 201, r.text
    eu_hits = api.search(eu, "reimbursements trains").json()["hits"]
    us_hits = api.search(us, "reimbursements trains").json()["hits"]
    assert eu_hits and not eu_hits[0]["masked"] and "jane.doe@example.com" in eu_hits[0]["text"]
    assert us_hits and us_hits[0]["masked"] and "<EMAIL_ADDRESS>" in us_hits[0]["text"]

    # narrowing a source's read groups reaches the vectors before the change is acknowledged
    assert api.client.patch("/v1/sources/s", headers=api.admin, json={"read_groups": ["other"]}).status_code == 200
    assert api.search(eu, "reimbursements trains").json()["hits"] == []


@pytest.mark.parametrize("selectivity", [0.0, 0.25])
def test_both_backends_search_with_the_acorn_setting_they_are_given(tmp_path, monkeypatch, selectivity):
    """MEMORY_SEARCH_ACORN_MAX_SELECTIVITY reaches the embedded store and the server store alike (the server store
    turned ACORN on at 0.4 for every beam while the embedded one had it off: found by review)."""
    import qdrant_client

    # No server to reach here: no version check, no collection made.
    client = qdrant_client.QdrantClient
    monkeypatch.setattr(qdrant_client, "QdrantClient", lambda **kw: client(check_compatibility=False, **kw))
    monkeypatch.setattr(ServerVectorStore, "ensure_collection", lambda self: None)
    embedded = Container(Settings(data_dir=tmp_path / "e", search_acorn_max_selectivity=selectivity))
    scaled = Container(Settings(data_dir=tmp_path / "s", qdrant_url="http://127.0.0.1:9",
                                search_acorn_max_selectivity=selectivity))
    try:
        assert embedded.edge_tuning.acorn_max_selectivity == selectivity
        store: Any = scaled.store
        acorn = {beam: params.acorn for beam, params in store._beam_params.items()}
        if selectivity:
            assert all(a.enable and a.max_selectivity == selectivity for a in acorn.values()), acorn
        else:
            assert set(acorn.values()) == {None}, acorn  # the server's default: off
    finally:
        embedded.close()
        scaled.close()
