"""The service's error tree. Every error has a stable `code` and an HTTP `status`; the API maps them in
one place (memory/api/exception_handlers.py) and the CLI prints `code: message` and exits non-zero.

ServiceError
 ├── AuthError (401)                 missing/invalid/revoked/expired key; unknown or inactive principal
 ├── ForbiddenError (403)            authenticated but not allowed (role, delegation, steward of source)
 ├── NotFoundError (404)             unknown source / document / version / chunk / principal / request
 ├── ConflictError (409)             already exists; state does not allow the operation
 ├── ValidationFailedError (422)     well-formed request with invalid values
 ├── PolicyError (422)               malformed policy rules
 ├── VectorStoreError (503)          vector backend failed or schema mismatch
 └── StoreLockedError (503)          the embedded store is owned by another process
"""

from __future__ import annotations


class ServiceError(Exception):
    code = "service_error"
    status = 500

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


class ConflictError(ServiceError):
    code = "conflict"
    status = 409


class ValidationFailedError(ServiceError):
    code = "invalid_request"
    status = 422


class PolicyError(ServiceError):
    code = "invalid_policy"
    status = 422


class VectorStoreError(ServiceError):
    code = "vector_store_error"
    status = 503


class StoreLockedError(ServiceError):
    code = "store_locked"
    status = 503
