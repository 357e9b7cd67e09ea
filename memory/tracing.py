"""OpenTelemetry traces: a server span per API request (its caller's `traceparent` continued) and a span per
governed search, exported over OTLP/HTTP to the collector MEMORY_OTLP_ENDPOINT names. Off by default: then no
span is made at all (the middleware is not installed, the search uses a no-op tracer).

What a span may carry is decided here, not by an instrumentation library's defaults: the route template, the
method, the status, the stable error code, counts, timings and the search's audit record number (which links a
trace to the audit trail, where the principal is named). Never a URL's query string (it can hold principal ids
and document names), a client address, a header, a principal id, a query's text or a hit's text. The standard
OTEL_* variables tune the SDK and its exporter (OTEL_TRACES_SAMPLER, OTEL_EXPORTER_OTLP_HEADERS for a collector
that wants a token, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_* for the batch queue).

A collector that takes connections and never answers holds neither a request nor the shutdown: each export gives
up after EXPORT_TIMEOUT_S, and the shutdown after SHUTDOWN_TIMEOUT_S (the SDK's own would wait up to 10 s an
export and 30 s in all)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

log = logging.getLogger(__name__)

INSTRUMENTATION = "governed-memory"
TRACES_PATH = "/v1/traces"  # OTLP/HTTP's path under the collector's base URL
# An export's time, its retries included, unless OTEL_EXPORTER_OTLP_TRACES_TIMEOUT or OTEL_EXPORTER_OTLP_TIMEOUT
# says otherwise (in seconds: the Python SDK reads them so, the OTLP specification says milliseconds). A collector
# on the same network answers in milliseconds; the SDK's default is 10 s.
EXPORT_TIMEOUT_S = 5.0
# The longest Tracing.shutdown waits for the queue to be exported before it drops the rest. The API's shutdown
# fits in its stop_grace_period with it (docker-compose.yml: 60 s = uvicorn's 20 s drain + 30 s for the jobs +
# this).
SHUTDOWN_TIMEOUT_S = 5.0
_TIMEOUT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")


@dataclass
class Tracing:
    """The process's tracer and, when traces are exported, the SDK provider behind it (flushed on shutdown)."""

    tracer: trace.Tracer = field(default_factory=trace.NoOpTracer)
    provider: TracerProvider | None = None

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def shutdown(self) -> None:
        """Export what is queued and stop, within the processor's shutdown timeout (SHUTDOWN_TIMEOUT_S for the
        OTLP exporter); spans after this are dropped."""
        if self.provider is not None:
            self.provider.shutdown()


def disabled() -> Tracing:
    return Tracing()


def with_processor(processor: SpanProcessor, *, service_name: str, service_version: str) -> Tracing:
    """Traces through an SDK provider with `processor` (tests: an in-memory exporter behind a simple processor)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME over these defaults.
    resource = Resource.create({"service.name": service_name, "service.version": service_version})
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER (default: parent, else on)
    provider.add_span_processor(processor)
    return Tracing(tracer=provider.get_tracer(INSTRUMENTATION, service_version), provider=provider)


def otlp(endpoint: str, *, service_name: str, service_version: str,
         shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S) -> Tracing:
    """Traces batched and exported over OTLP/HTTP (protobuf) to `endpoint` (the collector's base URL, e.g.
    http://otel-collector:4318). A collector that is down costs dropped spans, never a request: the batch
    processor exports on its own thread and drops what its queue cannot hold."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + TRACES_PATH, timeout=export_timeout_s())
    return with_processor(_bounded_batches(exporter, shutdown_timeout_s=shutdown_timeout_s),
                          service_name=service_name, service_version=service_version)


def export_timeout_s() -> float | None:
    """EXPORT_TIMEOUT_S, or None when an OTEL_* variable sets the timeout (the exporter then reads it)."""
    return None if any(os.environ.get(name) for name in _TIMEOUT_VARIABLES) else EXPORT_TIMEOUT_S


def _bounded_batches(exporter: SpanExporter, *, shutdown_timeout_s: float) -> BatchSpanProcessor:
    """A batch processor whose shutdown waits at most `shutdown_timeout_s` for the queue to be exported."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    class BoundedBatchSpanProcessor(BatchSpanProcessor):
        # The SDK's (1.45) shutdown waits up to 30 s for its export thread, whatever OTEL_BSP_EXPORT_TIMEOUT says
        # (unused), and its force_flush ignores its timeout; the batching underneath takes a timeout, which this
        # passes. Past it, no further batch is exported and the exporter is shut down, which ends its retries;
        # an export under way ends within the export timeout, on the processor's own (daemon) thread.
        def shutdown(self) -> None:
            self._batch_processor.shutdown(timeout_millis=int(shutdown_timeout_s * 1000))

    return BoundedBatchSpanProcessor(exporter)


def service_version() -> str:
    try:
        return metadata.version(INSTRUMENTATION)
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def from_settings(endpoint: str | None) -> Tracing:
    if not endpoint:
        return disabled()
    log.info("tracing.enabled exporter=otlp_http")
    return otlp(endpoint, service_name=INSTRUMENTATION, service_version=service_version())


def search_attributes(result: Any) -> dict[str, Any]:
    """A governed search's span attributes (memory.search.SearchResult): counts, flags, timings and the audit
    record's number; nothing that names a person or repeats text."""
    attrs: dict[str, Any] = {
        "memory.search.hits": len(result.hits),
        "memory.search.masked_hits": sum(1 for h in result.hits if h.masked),
        "memory.search.withheld": sum(w.count for w in result.withheld),
        "memory.search.withheld_reasons": sorted({w.reason for w in result.withheld}),
        "memory.search.recall_repaired": bool(result.recall_repaired),
        "memory.search.refilled": int(result.refilled),
        "memory.search.withheld_counted": bool(result.rules_applied.get("withheld_counted")),
        "memory.audit.seq": int(result.audit_seq),
    }
    for step, ms in result.timings_ms.items():
        attrs[f"memory.search.{step}_ms"] = round(float(ms), 3)
    return attrs
