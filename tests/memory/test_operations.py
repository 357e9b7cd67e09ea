"""Operations: health, readiness, metrics, request ids, and logs that never carry document text or PII."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from memory.bootstrap import Container

SECRET_TEXT = "Contact Ms Ursula Quimby at ursula.quimby@example.com about the zeppelin budget."


def test_healthz_readyz_metrics(api):
    assert api.client.get("/healthz").json() == {"status": "ok"}
    r = api.client.get("/readyz")
    assert r.json()["checks"]["database"] == "ok"
    _ = api.container.store  # open the store: readiness follows it
    _ = api.container.pipeline
    r = api.client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready", r.text
    api.search(api.principal("r", groups=["g"]), "x")
    metrics = api.client.get("/metrics").text
    assert 'memory_http_request_seconds_count{method="POST",route="/v1/search"' in metrics
    assert "memory_errors_total" in metrics or "memory_search_hits_total" in metrics


def test_request_id_is_echoed_or_made(api):
    r = api.client.get("/healthz", headers={"X-Request-ID": "abc123"})
    assert r.headers["X-Request-ID"] == "abc123"
    assert len(api.client.get("/healthz").headers["X-Request-ID"]) == 32


def test_logs_never_contain_document_text_or_pii(api, caplog):
    caplog.set_level(logging.DEBUG)
    reader = api.principal("r", groups=["g"], clearance="restricted")
    api.source("s", read_groups=["g"])
    assert api.upload("s", "memo.txt", SECRET_TEXT).status_code == 201
    assert api.search(reader, "zeppelin budget").json()["hits"]
    api.upload("s", "empty.txt", "")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("Ursula", "Quimby", "ursula.quimby@example.com", "zeppelin"):
        assert secret not in logged


def test_prepare_database_is_safe_when_replicas_start_together(tmp_path, db_url):
    from memory.settings import Settings

    key = "gm_replica000000000_replica-admin-key-0123456789"
    settings = Settings(data_dir=tmp_path, database_url=db_url, env="test", bootstrap_admin_key=key)

    def start(_: int) -> None:
        c = Container(settings)
        try:
            c.prepare_database()
        finally:
            c.close()

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(start, range(3)))
    c = Container(settings)
    try:
        from memory import principals

        with c.sessions() as s:
            assert principals.authenticate(s, token=key).id == "admin"
    finally:
        c.close()


def test_search_beams_come_from_settings(tmp_path, monkeypatch):
    """MEMORY_SEARCH_*HNSW_EF reach the embedded store's beams (query-time parameters: no reindex)."""
    from memory.settings import Settings
    from memory.stores.base import Beam

    monkeypatch.setenv("MEMORY_SEARCH_HNSW_EF", "256")
    monkeypatch.setenv("MEMORY_SEARCH_COUNT_HNSW_EF", "64")
    monkeypatch.setenv("MEMORY_SEARCH_WIDE_HNSW_EF", "1024")
    c = Container(Settings(data_dir=tmp_path, env="test"))
    try:
        tuning = c.store._tuning  # type: ignore[attr-defined]
        assert (tuning.hnsw_ef, tuning.count_hnsw_ef, tuning.wide_hnsw_ef) == (256, 64, 1024)
        assert set(c.store._params) == set(Beam)  # type: ignore[attr-defined]
    finally:
        c.close()
