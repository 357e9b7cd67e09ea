"""The FastAPI application factory. `create_app(settings)` for tests, `memory serve` for people."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from memory import logging_setup
from memory.api import exception_handlers
from memory.api.routes import documents, health, policy, principals, search, sources
from memory.bootstrap import Container
from memory.metrics import REQUEST_LATENCY
from memory.settings import Settings

log = logging.getLogger(__name__)
OPTIONAL_ROUTERS = ("provenance", "audit_routes", "access", "usage_routes")


def create_app(settings: Settings | None = None, *, container: Container | None = None, warm: bool = True) -> FastAPI:
    """Build the app. `container` injects collaborators (tests); `warm` loads models at startup."""
    settings = settings or (container.settings if container else Settings())
    container = container or Container(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(container.prepare_database)
        if warm:
            await run_in_threadpool(container.warm)
        if settings.seed_demo:
            from memory.demo import seed_demo

            await run_in_threadpool(seed_demo, container)
        log.info("api.ready backend=%s", "edge" if settings.is_embedded_vectors else "server")
        try:
            yield
        finally:
            log.info("api.shutdown")
            await run_in_threadpool(container.close)

    app = FastAPI(
        title="Governed enterprise memory",
        version="1.0.0",
        description="One governed retrieval API for every copilot: classified, versioned, access-filtered, "
        "cited and audited. Authenticate with `Authorization: Bearer <API key>`.",
        lifespan=lifespan,
    )
    app.state.container = container
    exception_handlers.install(app)
    for module in (health, principals, sources, documents, search, policy):
        app.include_router(module.router)
    _include_optional(app)

    @app.middleware("http")
    async def request_context(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        token = logging_setup.request_id.set(rid)
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-ID"] = rid
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            REQUEST_LATENCY.labels(request.method, template, str(status)).observe(time.perf_counter() - start)
            logging_setup.request_id.reset(token)

    return app


def _include_optional(app: FastAPI) -> None:
    """Routers of the provenance/audit/recourse/usage modules (present as they are built)."""
    import importlib

    for name in OPTIONAL_ROUTERS:
        try:
            module = importlib.import_module(f"memory.api.routes.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"memory.api.routes.{name}":
                raise
            continue
        app.include_router(module.router)
