"""A server span per HTTP request (memory.tracing), continuing the caller's W3C `traceparent`; installed only
when traces are exported. The span is named by method and route template and carries only the method, the
route, the scheme, the status and, for a refusal, its stable error code (memory.api.exception_handlers): no URL,
query string, header or client address. opentelemetry-instrumentation-asgi records those by default (`http.target`
with the query, `http.url`, `client.address`), which this service keeps out of its telemetry."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_PROPAGATOR = TraceContextTextMapPropagator()  # traceparent + tracestate only: no baggage is taken in
_CONTEXT_HEADERS = (b"traceparent", b"tracestate")


class TracingMiddleware:
    def __init__(self, app: ASGIApp, *, tracer: trace.Tracer) -> None:
        self.app, self.tracer = app, tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []
                   if k in _CONTEXT_HEADERS}
        method = str(scope.get("method", ""))
        status = 500

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # An exception's message can hold anything (a SQL statement's values): only its type is recorded.
        with self.tracer.start_as_current_span(
            method, context=_PROPAGATOR.extract(carrier), kind=SpanKind.SERVER, record_exception=False,
            set_status_on_exception=False,
            attributes={"http.request.method": method, "url.scheme": str(scope.get("scheme", "http"))},
        ) as span:
            try:
                await self.app(scope, receive, send_traced)
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__name__)
                raise
            finally:
                template = getattr(scope.get("route"), "path", None)
                if template:
                    span.update_name(f"{method} {template}")
                    span.set_attribute("http.route", str(template))
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
