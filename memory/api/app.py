"""The FastAPI application factory. `create_app(settings)` for tests, `memory serve` for people."""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.security.utils import get_authorization_scheme_param
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memory import jobs, logging_setup
from memory.api import deps, exception_handlers
from memory.api.routes import (
    access,
    audit_routes,
    documents,
    health,
    maintenance,
    policy,
    principals,
    provenance,
    search,
    sources,
    usage_routes,
)
from memory.api.routes import jobs as job_routes
from memory.api.tracing_middleware import KNOWN_METHODS, TracingMiddleware
from memory.bootstrap import Container
from memory.errors import AuthError, RequestTooLargeError, ServiceError, ValidationFailedError
from memory.metrics import REQUEST_LATENCY
from memory.settings import Settings

log = logging.getLogger(__name__)
_ACCESS = logging.getLogger(logging_setup.ACCESS_LOGGER)
SHUTDOWN_WAIT_S = 30.0  # background jobs and the repair loop, after uvicorn's drain of open requests


def create_app(settings: Settings | None = None, *, container: Container | None = None, warm: bool = True) -> FastAPI:
    """Build the app. `container` injects collaborators (tests); `warm` loads models at startup."""
    settings = settings or (container.settings if container else Settings())
    container = container or Container(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(container.prepare_database)
        # Built and asked before the first request, so a storage that cannot be built (an unknown scheme) or that
        # refuses the service (a wrong password) stops the start instead of leaving every request unlimited.
        await run_in_threadpool(lambda: container.rate_limits.verify())
        if warm:
            await run_in_threadpool(container.warm)
        if settings.seed_demo:
            from memory.demo import seed_demo

            await run_in_threadpool(seed_demo, container)
        loop = None
        if warm and settings.repair_interval_s > 0:
            from memory.maintenance import RepairLoop

            loop = RepairLoop(container.sessions, container.store, interval_s=settings.repair_interval_s,
                              pending_grace_s=settings.ingest_pending_grace_s,
                              # The masked twins of personal chunks stored before them, as the API starts: on the
                              # embedded store only the API's process can write them while it runs.
                              first=partial(container.backfill_twins, actor="system")
                              if settings.backfill_twins_on_start else None,
                              watch=container.watch_index)
            loop.start()
        if settings.is_embedded_vectors:  # this process owns the data: no other can be running a job
            await run_in_threadpool(jobs.interrupt_all, container.sessions)
        app.state.jobs = jobs.JobRunner(container.sessions, stale_after_s=settings.job_stale_s)
        log.info("api.ready backend=%s", "edge" if settings.is_embedded_vectors else "server")
        try:
            yield
        finally:
            log.info("api.shutdown")
            # Before the stores close under them. A job still running past the wait (a step that cannot stop
            # half-way) keeps them open: the process exits with them unflushed, which the WAL and the relabel's
            # crash safety cover, rather than closing a store another thread is writing.
            # Jobs and the repair loop are told together and waited for against one deadline, within the api's
            # stop_grace_period (docker-compose.yml: 60 s = uvicorn's 20 s drain + these 30 s).
            deadline = time.monotonic() + SHUTDOWN_WAIT_S
            if loop is not None:
                loop.signal_stop()
            ended = await run_in_threadpool(app.state.jobs.stop, SHUTDOWN_WAIT_S)
            if loop is not None:
                ended = await run_in_threadpool(loop.stop, max(0.0, deadline - time.monotonic())) and ended
            if ended:
                await run_in_threadpool(container.close)
            else:
                log.warning("api.shutdown_without_close: a background job or repair run still runs")

    app = FastAPI(
        title="Governed enterprise memory",
        version="1.0.0",
        description="One governed retrieval API for every copilot: classified, versioned, access-filtered, "
        "cited and audited. Authenticate with `Authorization: Bearer <API key>`.",
        lifespan=lifespan,
    )
    app.state.container = container
    app.state.jobs = jobs.JobRunner(container.sessions, stale_after_s=settings.job_stale_s)
    exception_handlers.install(app)
    routers = [m.router for m in (health, principals, sources, documents, search, policy, provenance, audit_routes,
                                  access, usage_routes, maintenance, job_routes)] + [job_routes.requester_router]
    for router in routers:
        app.include_router(router)

    routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
    app.add_middleware(BearerRequiredMiddleware, api=app, routes=[r for r in routes if deps.authenticates(r.dependant)])
    app.add_middleware(BodyLimitMiddleware, api=app, json_limit=container.settings.max_request_bytes,
                       multipart_limit=container.settings.max_upload_bytes + _MULTIPART_OVERHEAD,
                       upload_routes=[r for r in routes if deps.takes_documents(r)])
    app.add_middleware(RequestContextMiddleware)  # outermost but for traces: it times and tags every answer
    if container.tracing.enabled:  # no span at all when traces are not exported
        app.add_middleware(TracingMiddleware, tracer=container.tracing.tracer)
    return app


# Room for the multipart envelope (boundaries, part headers, the external_key field) around a document.
_MULTIPART_OVERHEAD = 1024 * 1024


class BodyLimitMiddleware:
    """Refuses a request body larger than its limit, 413 `request_too_large`, before the app reads it: at once
    from a Content-Length that says so, else (a chunked body) as soon as the bytes received pass the limit.
    A multipart body sent to the upload route (POST /v1/sources/{id}/documents) gets the upload limit plus the
    envelope; every other body the JSON limit, whatever its Content-Type says (a multipart header on a JSON route
    would otherwise buy it the upload limit). Without it a 300 MB body with a made-up key was read, and held,
    before its 401.

    An answer sent before the request's body was read whole (this refusal, a missing key, an upload refused
    before its file: memory.api.routes.sources) says `Connection: close`: the server then closes the connection
    after it instead of reading and discarding the rest of the body to keep the connection alive (uvicorn does,
    up to the whole declared length)."""

    def __init__(self, app: ASGIApp, *, api: FastAPI, json_limit: int, multipart_limit: int,
                 upload_routes: list[APIRoute]) -> None:
        self.app, self.api = app, api
        self.json_limit, self.multipart_limit = json_limit, multipart_limit
        self.upload_routes = upload_routes  # deps.takes_documents

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        multipart = headers.get(b"content-type", b"").lower().startswith(b"multipart/")
        # Matched only for a multipart body: a JSON body gets the JSON limit on any route.
        upload = multipart and any(r.matches(scope)[0] is Match.FULL for r in self.upload_routes)
        limit = self.multipart_limit if upload else self.json_limit
        declared = headers.get(b"content-length", b"")
        length = int(declared) if declared.isdigit() else None
        # Whether a body is still to come: a declared length above 0, or a chunked one.
        unread = bool(length) or b"chunked" in headers.get(b"transfer-encoding", b"")

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start" and unread:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        if length is not None and length > limit:
            error = RequestTooLargeError(f"the request body is larger than {limit} bytes")
            await _answer(self.api, error, scope, receive, closing)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received, unread
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise RequestTooLargeError(f"the request body is larger than {limit} bytes")
            if message["type"] == "http.request" and not message.get("more_body", False):
                unread = False
            return message

        await self.app(scope, counted, closing)


class BearerRequiredMiddleware:
    """Refuses a request without a bearer key, 401 `missing_api_key`, before its body is read, on every route
    that authenticates (its dependencies include deps.get_token): FastAPI parses a JSON body before it runs
    dependencies, so a broken body would otherwise answer 422 before 401. The answer comes from the app's one
    ServiceError handler. A key that is present is checked by the route, in the request's transaction; other
    paths (health, metrics, docs, unknown routes) pass through untouched."""

    def __init__(self, app: ASGIApp, *, api: FastAPI, routes: list[APIRoute]) -> None:
        self.app = app
        self.api = api  # its exception handlers
        self.routes = routes  # the routes that authenticate (included as they are: no extra prefix)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bearer, repeated = _identity_headers(scope)
        if bearer and not repeated:  # the common path: one scan of the headers
            await self.app(scope, receive, send)
            return
        route = next((r for r in self.routes if r.matches(scope)[0] is Match.FULL), None)
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # the latency metric's route template
        if repeated:  # two keys or two users: which one a proxy or a log would read is anybody's guess
            error: ServiceError = ValidationFailedError(
                f"the {repeated} header is repeated: send it once", code="duplicate_header")
        else:
            error = AuthError("missing API key", code="missing_api_key")
        await _answer(self.api, error, scope, receive, send)


async def _answer(api: FastAPI, error: ServiceError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a request a middleware refuses through the app's one ServiceError handler (same body, code,
    headers and metrics as a route's refusal)."""
    response = api.exception_handlers[ServiceError](Request(scope, receive), error)
    if inspect.isawaitable(response):
        response = await response
    await response(scope, receive, send)


def _identity_headers(scope: Scope) -> tuple[bool, str | None]:
    """Whether the request carries a bearer key (as fastapi.security.HTTPBearer reads it: the first
    Authorization header, scheme bearer, non-blank), and the name of an identity header it repeats
    (Authorization, X-Acting-For), if any."""
    bearer, seen, repeated = False, set[bytes](), None
    for name, value in scope["headers"]:
        if name not in _IDENTITY_HEADERS:
            continue
        if name in seen:
            repeated = repeated or _IDENTITY_HEADERS[name]
            continue
        seen.add(name)
        if name == b"authorization":
            scheme, credentials = get_authorization_scheme_param(value.decode("latin-1"))
            bearer = scheme.lower() == "bearer" and bool(credentials)
    return bearer, repeated


_IDENTITY_HEADERS = {b"authorization": "Authorization", b"x-acting-for": "X-Acting-For"}




class RequestContextMiddleware:
    """Pure ASGI middleware: request id (X-Request-ID in and out, on every log line), latency by route template
    (bounded label values, e.g. /v1/documents/{document_id}/versions), and the access line (`api.access`, on
    logging_setup.ACCESS_LOGGER): method, route template, status and duration, never the path's ids or query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        token = logging_setup.request_id.set(rid)
        # For what runs after this middleware returned (Starlette's handler for `Exception`, outside every
        # middleware): its log line names the request (memory.api.exception_handlers).
        scope.setdefault("state", {})[logging_setup.REQUEST_ID_STATE] = rid
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = str(getattr(route, "path", "unmatched"))
            method = str(scope.get("method", ""))  # a client's free token: bounded as the span's (_OTHER)
            method = method if method in KNOWN_METHODS else "_OTHER"
            elapsed = time.perf_counter() - start
            REQUEST_LATENCY.labels(method, template, str(status)).observe(elapsed)
            _ACCESS.info("api.access method=%s route=%s status=%d ms=%.1f", method, template, status, elapsed * 1000)
            logging_setup.request_id.reset(token)
