"""OpenTelemetry traces (memory.tracing): off unless MEMORY_OTLP_ENDPOINT is set; when on, a server span per
request continuing the caller's traceparent (not its tracestate), a span per governed search with counts, timings
and its audit record's number, and never a query's text, a principal id, a key, a client address, a query string
or a method the HTTP conventions do not know. Through the API on the real SQL + Qdrant Edge + parsing (model
doubles); the OTLP/HTTP export against a local receiver that decodes what the real exporter sends, and a
shutdown bounded against one that never answers."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError

from memory import tracing
from memory.api.tracing_middleware import TracingMiddleware
from memory.settings import Settings
from tests.conftest import make_api, make_container

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
SECRET_QUERY = "zeppelin budget for the quarterly review"
DOC = "# Budget\n\nThe zeppelin budget for the quarterly review is approved by finance.\n"


@pytest.fixture
def traced(tmp_path: Path, db_url: str, fake_embedder: Any, fake_classifier: Any) -> Iterator[Any]:
    exporter = InMemorySpanExporter()
    t = tracing.with_processor(SimpleSpanProcessor(exporter), service_name="governed-memory", service_version="t")
    c = make_container(tmp_path, db_url, embedder=fake_embedder, classifier=fake_classifier, tracing=t)
    for api in make_api(c):
        api.exporter = exporter
        yield api
    c.close()
    t.shutdown()


def _every_value(spans: Any) -> str:
    """Every span's name, attributes and events, and its resource, as one text to search."""
    return json.dumps([json.loads(s.to_json()) for s in spans])


def test_traces_are_off_by_default(api: Any):
    assert not api.container.tracing.enabled
    assert not any(m.cls is TracingMiddleware for m in api.client.app.user_middleware)


def test_a_search_is_traced_under_its_callers_trace_without_naming_anyone(traced: Any):
    api = traced
    reader = api.principal("reader-kim", groups=["g"], clearance="restricted")
    api.source("s1", read_groups=["g"])
    assert api.upload("s1", "budget.md", DOC).status_code == 201
    api.exporter.clear()

    r = api.search({**reader, "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}, SECRET_QUERY, top_k=3)
    assert r.status_code == 200, r.text
    spans = {s.name: s for s in api.exporter.get_finished_spans()}
    server, search = spans["POST /v1/search"], spans["memory.search"]
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == PARENT_ID and server.parent.is_remote
    assert search.parent.span_id == server.context.span_id
    assert server.attributes["http.route"] == "/v1/search"
    assert server.attributes["http.response.status_code"] == 200
    body = r.json()
    assert search.attributes["memory.search.hits"] == len(body["hits"]) >= 1
    assert search.attributes["memory.audit.seq"] == body["audit_seq"]  # the trace leads to the audit record
    assert search.attributes["memory.search.top_k"] == 3 and search.attributes["memory.search.embed_ms"] >= 0
    text = _every_value(spans.values())
    for secret in (SECRET_QUERY, "zeppelin", "reader-kim", reader["Authorization"].split()[1], "testclient"):
        assert secret not in text


def test_a_refusal_carries_its_error_code_and_no_query_string(traced: Any):
    api = traced
    api.principal("auditor-ann", roles=["auditor"])
    wrong = api.client.get("/v1/sources", headers={"Authorization": "Bearer gm_0123456789abcdef_wrongwrongwrongwrong"})
    assert wrong.status_code == 401
    r = api.client.get("/v1/audit", headers=api.admin, params={"principal_id": "auditor-ann", "limit": 5})
    assert r.status_code == 200, r.text
    spans = api.exporter.get_finished_spans()
    refused = next(s for s in spans if s.attributes.get("http.response.status_code") == 401)
    assert refused.name == "GET /v1/sources"
    assert refused.attributes["memory.error_code"] == wrong.json()["error"]["code"]
    assert "auditor-ann" not in _every_value(spans)  # the audit query's filter never reaches a span


def test_the_trace_id_is_on_the_requests_log_lines(traced: Any, caplog: pytest.LogCaptureFixture):
    from memory.logging_setup import _RequestIdFilter

    api = traced
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(_RequestIdFilter())
    api.client.get("/v1/sources", headers={"Authorization": "Bearer gm_0123456789abcdef_wrongwrongwrongwrong",
                                           "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    assert any(getattr(rec, "trace_id", None) == TRACE_ID for rec in caplog.records)


def test_the_callers_tracestate_is_not_exported(traced: Any):
    api = traced
    api.exporter.clear()
    r = api.client.get("/v1/sources", headers={**api.admin, "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                                               "tracestate": "vendor=opaque-caller-data"})
    assert r.status_code == 200, r.text
    (server,) = api.exporter.get_finished_spans()
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == PARENT_ID
    assert len(server.context.trace_state) == 0 and len(server.parent.trace_state) == 0
    assert "opaque-caller-data" not in _every_value([server])


@pytest.mark.parametrize("method", ["FOOBAR", "PROPFIND", "X" * 4000])
def test_a_method_the_conventions_do_not_know_is_other(traced: Any, method: str):
    api = traced
    api.exporter.clear()
    assert api.client.request(method, "/v1/sources", headers=api.admin).status_code == 405
    (server,) = api.exporter.get_finished_spans()
    assert server.name == "HTTP /v1/sources"
    assert server.attributes["http.request.method"] == "_OTHER"
    assert server.attributes["memory.error_code"] == "method_not_allowed"
    assert method not in _every_value([server])
    from prometheus_client import REGISTRY  # the latency metric bounds its method label the same way

    assert REGISTRY.get_sample_value("memory_http_request_seconds_count",
                                     {"method": method, "route": "/v1/sources", "status": "405"}) is None
    assert REGISTRY.get_sample_value("memory_http_request_seconds_count",
                                     {"method": "_OTHER", "route": "/v1/sources", "status": "405"})


def test_an_unexpected_error_is_coded_on_the_span_and_its_log_line_names_the_trace(
        traced: Any, caplog: pytest.LogCaptureFixture):
    from memory.logging_setup import _RequestIdFilter

    api = traced

    async def broken() -> None:
        raise RuntimeError("the values of a failed statement")

    api.client.app.add_api_route("/v1/broken", broken)
    client = TestClient(api.client.app, raise_server_exceptions=False)  # the 500, as a caller gets it
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(_RequestIdFilter())
    api.exporter.clear()

    r = client.get("/v1/broken", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                                          "X-Request-ID": "req-broken-1"})
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    (server,) = api.exporter.get_finished_spans()
    assert server.attributes["memory.error_code"] == "internal_error"
    assert server.attributes["error.type"] == "RuntimeError"
    assert server.attributes["http.response.status_code"] == 500
    assert "failed statement" not in _every_value([server])
    (line,) = [rec for rec in caplog.records if rec.getMessage().startswith("api.unhandled")]
    assert line.getMessage() == "api.unhandled error=RuntimeError"
    assert line.trace_id == TRACE_ID  # type: ignore[attr-defined]
    assert line.request_id == "req-broken-1"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("value", "kept"), [
    (None, None), ("", None), ("  ", None), ("http://otel-collector:4318", "http://otel-collector:4318"),
    ("https://otel.example.com/", "https://otel.example.com/"),
])
def test_the_collector_setting(value: str | None, kept: str | None):
    assert Settings(otlp_endpoint=value).otlp_endpoint == kept  # type: ignore[call-arg]


@pytest.mark.parametrize("value", ["otel-collector:4318", "ftp://c:4318", "http://c:4318/v1/traces", "http://c:4318?x=1"])
def test_a_collector_url_that_would_not_work_is_refused(value: str):
    with pytest.raises(ValidationError, match="otlp_endpoint"):
        Settings(otlp_endpoint=value)  # type: ignore[call-arg]


class _Receiver(BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.bodies.append((self.path, self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_spans_reach_an_otlp_http_collector():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        t = tracing.from_settings(f"http://127.0.0.1:{server.server_address[1]}")
        assert t.enabled
        with t.tracer.start_as_current_span("memory.search", attributes={"memory.search.hits": 3}):
            pass
        t.shutdown()  # flushes the batch
    finally:
        server.shutdown()
    ((path, body),) = _Receiver.bodies
    assert path == "/v1/traces"
    request = ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "governed-memory"
    (span,) = resource_spans.scope_spans[0].spans
    assert span.name == "memory.search"


def test_a_collector_that_is_down_costs_spans_not_requests(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    with HTTPServer(("127.0.0.1", 0), _Receiver) as probe:
        port = probe.server_address[1]  # closed once the block ends: nothing listens there
    t = tracing.from_settings(f"http://127.0.0.1:{port}")
    with t.tracer.start_as_current_span("memory.search"):
        pass  # the span ends at once: the export is the batch thread's
    t.shutdown()  # gives up after the export timeout, raises nothing


@pytest.mark.parametrize(("variables", "timeout"), [
    ({}, tracing.EXPORT_TIMEOUT_S), ({"OTEL_EXPORTER_OTLP_TIMEOUT": ""}, tracing.EXPORT_TIMEOUT_S),
    ({"OTEL_EXPORTER_OTLP_TIMEOUT": "20"}, None), ({"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2"}, None),
])
def test_the_export_timeout_is_ours_unless_an_otel_variable_sets_it(
        monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], timeout: float | None):
    for name in ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert tracing.export_timeout_s() == timeout  # None: the exporter reads the variable


def test_a_collector_that_never_answers_does_not_hold_the_shutdown(monkeypatch: pytest.MonkeyPatch):
    for name in ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    # Connections are taken (the kernel completes them into the backlog) and never read or answered.
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:
        t = tracing.otlp(f"http://127.0.0.1:{silent.getsockname()[1]}", service_name="governed-memory",
                         service_version="t", shutdown_timeout_s=1.0)
        for _ in range(600):  # more than one batch (512): the SDK alone would wait 10 s for each
            with t.tracer.start_as_current_span("memory.search"):
                pass
        start = time.monotonic()
        t.shutdown()  # the export under way waits for an answer (EXPORT_TIMEOUT_S); the shutdown does not
        assert time.monotonic() - start < 3
