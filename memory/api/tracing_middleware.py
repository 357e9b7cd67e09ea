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

_PROPAGATOR = TraceContextTextMapPropagator()
# The caller's trace id and parent span id only. Its `tracestate` (vendors' data, written by a caller the service
# does not trust) is not read, so the spans exported never carry it; nor is baggage.
_CONTEXT_HEADER = b"traceparent"
# The methods the OpenTelemetry HTTP conventions know. Any other is `_OTHER` and its span is named `HTTP`: a
# method is whatever token the client sends, as free as a header, and as a name it would make names without end.
# Its text is not kept either (no `http.request.method_original`): the 404 or 405 it gets says enough.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
# Where the request's span context is left (scope["state"]) for what runs after the span ended (request_span).
_SPAN_CONTEXT = "memory.tracing.span_context"


class TracingMiddleware:
    def __init__(self, app: ASGIApp, *, tracer: trace.Tracer) -> None:
        self.app, self.tracer = app, tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []
                   if k == _CONTEXT_HEADER}
        method = str(scope.get("method", ""))
        known = method in KNOWN_METHODS
        name = method if known else "HTTP"
        status, started = 500, False

        async def send_traced(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        # An exception's message can hold anything (a SQL statement's values): only its type is recorded.
        with self.tracer.start_as_current_span(
            name, context=_PROPAGATOR.extract(carrier), kind=SpanKind.SERVER, record_exception=False,
            set_status_on_exception=False,
            attributes={"http.request.method": method if known else "_OTHER",
                        "url.scheme": str(scope.get("scheme", "http"))},
        ) as span:
            scope.setdefault("state", {})[_SPAN_CONTEXT] = span.get_span_context()
            try:
                await self.app(scope, receive, send_traced)
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__name__)
                if isinstance(exc, Exception) and not started:
                    # Starlette's ServerErrorMiddleware, outside this one, answers it 500 `internal_error`
                    # (memory.api.exception_handlers) once this span has ended: its code is recorded here.
                    span.set_attribute("memory.error_code", "internal_error")
                raise
            finally:
                template = getattr(scope.get("route"), "path", None)
                if template:
                    span.update_name(f"{name} {template}")
                    span.set_attribute("http.route", str(template))
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))


def request_span(scope: Scope) -> trace.Span:
    """The request's span while it runs. After it ended (Starlette runs the handler for `Exception` outside every
    middleware), a non-recording span with its trace and span ids, so that log lines still name the request's
    trace (memory.logging_setup). The invalid span when the request is not traced."""
    current = trace.get_current_span()
    if current.get_span_context().is_valid:
        return current
    context = (scope.get("state") or {}).get(_SPAN_CONTEXT)
    return trace.NonRecordingSpan(context) if isinstance(context, trace.SpanContext) else trace.INVALID_SPAN
