"""The one place where errors become HTTP responses: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security.utils import get_authorization_scheme_param
from opentelemetry import trace
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from classifiers.errors import ClassifierError
from ingest.errors import IngestError
from memory import db_errors, logging_setup, principals
from memory.api import deps, tracing_middleware
from memory.errors import ServiceError
from memory.metrics import ERRORS

log = logging.getLogger(__name__)


def _body(code: str, message: str, details: object | None = None) -> dict[str, object]:
    ERRORS.labels(code=code).inc()
    trace.get_current_span().set_attribute("memory.error_code", code)  # the request's span, if traced
    return {"error": {"code": code, "message": message, "details": details or {}}}


async def _refused_key(request: Request) -> ServiceError | None:
    """For a request whose body or parameters were invalid, on a route that checks a bearer key: the key's
    refusal, or its X-Acting-For's (one header naming a user), if it has one. Only on this error path (a missing
    key never gets here: BearerRequiredMiddleware; a blank or repeated header keeps its own 422)."""
    route = request.scope.get("route")
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    if not isinstance(route, APIRoute) or not deps.authenticates(route.dependant) or scheme.lower() != "bearer":
        return None
    if not token:
        return None
    acting_for = request.headers.getlist("x-acting-for")
    named = acting_for[0] if len(acting_for) == 1 and acting_for[0].strip() else None
    return await run_in_threadpool(deps.refused_key, request.app.state.container, token, deps.client_address(request),
                                   named)


def _log_refusal(request: Request, exc: ServiceError) -> None:
    """A refused request (401, 403) as one structured line a SIEM can alert on: the route template (not the
    path: no ids), the code, and the key id when the bearer token is well formed (never the secret)."""
    route = request.scope.get("route")
    _, token = get_authorization_scheme_param(request.headers.get("authorization"))
    log.warning("api.refused status=%d code=%s method=%s route=%s key_id=%s acting_for_header=%s", exc.status,
                exc.code, request.method, route.path if isinstance(route, APIRoute) else "-",
                principals.key_id_of(token) or "-", "x-acting-for" in request.headers)


def _service_response(exc: ServiceError) -> JSONResponse:
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    return JSONResponse(_body(exc.code, exc.message, exc.details), status_code=exc.status, headers=headers or None)


async def _invalid_request(request: Request, message: str, errors: Sequence[Mapping[str, object]]) -> JSONResponse:
    """422 invalid_request, unless the request's key is refused: a wrong key is 401 whatever the body
    (FastAPI parsed the body before the route could check the key)."""
    refused = await _refused_key(request)
    if refused is not None:
        _log_refusal(request, refused)
        return _service_response(refused)
    return JSONResponse(_body("invalid_request", message, {"errors": errors}), status_code=422)


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> JSONResponse:
        if exc.status in (401, 403):
            _log_refusal(request, exc)
        return _service_response(exc)

    @app.exception_handler(IngestError)
    async def _ingest(_: Request, exc: IngestError) -> JSONResponse:
        return JSONResponse(_body(exc.code, exc.message), status_code=exc.http_status)

    @app.exception_handler(ClassifierError)
    async def _classifier(_: Request, exc: ClassifierError) -> JSONResponse:
        return JSONResponse(_body(exc.code, str(exc)), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return await _invalid_request(request, "request body or parameters are invalid", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, ServiceError):
            # FastAPI reports any failure while reading the body as 400: a chunked body past its limit
            # (memory.api.app.BodyLimitMiddleware) is that failure.
            return _service_response(exc.__cause__)
        if exc.status_code == 400:  # a body FastAPI could not even parse (not UTF-8, broken multipart)
            errors = [{"loc": ["body"], "msg": str(exc.detail), "type": "body_unparsable"}]
            return await _invalid_request(request, "the request body could not be parsed", errors)
        code = {404: "route_not_found", 405: "method_not_allowed"}.get(exc.status_code, f"http_{exc.status_code}")
        return JSONResponse(_body(code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette runs this handler outside every middleware, after the request's span ended (the middleware
        # recorded the code on it): the line is logged back in the request's trace, so it carries the trace id.
        rid = (request.scope.get("state") or {}).get(logging_setup.REQUEST_ID_STATE, "-")
        token = logging_setup.request_id.set(rid)  # reset by its middleware before this runs
        try:
            with trace.use_span(tracing_middleware.request_span(request.scope), record_exception=False):
                log.exception("api.unhandled error=%s", type(exc).__name__)
        finally:
            logging_setup.request_id.reset(token)
        return JSONResponse(_body("internal_error", "internal error"), status_code=500)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeoutError)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        mapped = db_errors.retryable(exc)
        if mapped is None:
            return await _unexpected(request, exc)
        # The driver's error class only: a database error's text carries SQL, never worth a log line here.
        orig = getattr(exc, "orig", None) or exc
        log.warning("api.database_error code=%s reason=%s error=%s", mapped.code, mapped.details.get("reason"),
                    type(orig).__name__)
        return _service_response(mapped)
