"""The service's error tree. Every error has a stable `code` and an HTTP `status`; the API maps them in
one place (memory/api/exception_handlers.py) and the CLI prints `code: message` and exits non-zero.

ServiceError
 ├── AuthError (401)                 missing/invalid/revoked/expired key; unknown or inactive principal
 ├── ForbiddenError (403)            authenticated but not allowed (role, delegation, steward of source)
 ├── NotFoundError (404)             unknown source / document / version / chunk / principal / request
 ├── ConflictError (409)             already exists; state does not allow the operation
 ├── ValidationFailedError (422)     well-formed request with invalid values
 ├── RateLimitedError (429)          the caller's request rate is over its limit: retry after Retry-After
 ├── PolicyError (422)               malformed policy rules
 ├── VectorStoreError (503)          vector backend failed or schema mismatch
 │    └── VectorStoreUnavailableError (503)  the Qdrant server cannot be reached or is overloaded: retry later
 ├── StoreLockedError (503)          the embedded store is owned by another process
 ├── ServiceStoppingError (503)      the process is shutting down (a background job cannot start)
 ├── DatabaseBusyError (503)         a lock wait timed out, or a deadlock / serialization conflict: retry
 └── DatabaseUnavailableError (503)  the SQL database cannot be reached or used: retry later

`retry_after_s`: the API's Retry-After header for errors worth retrying as they are (memory.db_errors).
"""

from __future__ import annotations


class ServiceError(Exception):
    code = "service_error"
    status = 500
    retry_after_s: int | None = None

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}


class AuthError(ServiceError):
    code = "unauthenticated"
    status = 401


class ForbiddenError(ServiceError):
    code = "forbidden"
    status = 403


class NotFoundError(ServiceError):
    code = "not_found"
    status = 404


class RequestTooLargeError(ServiceError):
    code = "request_too_large"
    status = 413


class ConflictError(ServiceError):
    code = "conflict"
    status = 409


class ValidationFailedError(ServiceError):
    code = "invalid_request"
    status = 422


class ServiceStoppingError(ServiceError):
    """The process is shutting down: the request would be cut short; send it to another replica or later."""

    code = "service_stopping"
    status = 503
    retry_after_s = 5


class RateLimitedError(ServiceError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after_s: int, details: dict[str, object] | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s


class PolicyError(ServiceError):
    code = "invalid_policy"
    status = 422


class VectorStoreError(ServiceError):
    code = "vector_store_error"
    status = 503


class VectorStoreUnavailableError(VectorStoreError):
    code = "vector_store_unavailable"
    retry_after_s = 5


class StoreLockedError(ServiceError):
    code = "store_locked"
    status = 503


class DatabaseBusyError(ServiceError):
    code = "database_busy"
    status = 503
    retry_after_s = 1


class DatabaseUnavailableError(ServiceError):
    code = "database_unavailable"
    status = 503
    retry_after_s = 5
