"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from memory.api.deps import ContainerDep, TransactionPerHop

router = APIRouter(tags=["operations"], route_class=TransactionPerHop)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(container: ContainerDep) -> JSONResponse:
    """Readiness: database reachable, vector store open, models loaded; and the rate limit storage's state, which
    does not decide readiness."""
    checks: dict[str, str] = {}
    try:
        with container.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # report, don't raise: readiness must answer
        checks["database"] = f"error: {type(exc).__name__}"
    if "store" in container.__dict__:
        try:
            container.store.count()
            checks["vector_store"] = "ok"
        except Exception as exc:
            checks["vector_store"] = f"error: {type(exc).__name__}"
    else:
        checks["vector_store"] = "not loaded"
    checks["models"] = "ok" if "pipeline" in container.__dict__ else "not loaded"
    ready = all(v == "ok" for v in checks.values())
    # Reported, not required: requests are served unlimited while the rate storage is down (memory.rate_limits),
    # and taking every replica out of the balancer for it would be the outage the limits exist to prevent.
    if "rate_limits" in container.__dict__:
        checks["rate_limits"] = container.rate_limits.state()
    return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks},
                        status_code=200 if ready else 503)


@router.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
