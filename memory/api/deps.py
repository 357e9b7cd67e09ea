"""FastAPI dependencies: the container, a per-request transaction, the authenticated caller.

Authentication order: a request without a bearer key is refused 401 `missing_api_key` before its body is read
(memory.api.app.BearerRequiredMiddleware, on every route that depends on `get_token`). A key that is present
is checked in the request's transaction, after FastAPI has parsed the (JSON, size-limited) body; when the body
cannot be parsed, the invalid-request handler checks the key first (`refused_key`), so a wrong key is 401
whatever the body. A document upload reads its body itself, after the key, the rate and the stewardship
(memory.api.routes.sources), so a refused upload is never received."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from memory import principals
from memory.bootstrap import Container
from memory.db import transaction
from memory.errors import AuthError, ForbiddenError, RateLimitedError, ServiceError
from memory.jobs import JobRunner
from memory.policy import EffectivePrincipal

T = TypeVar("T")
bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer gm_<id>_<secret>`")


# Dependencies without I/O are `async def`: FastAPI runs a sync dependency on its thread pool, and each such
# hop is a thread handoff on every request. With get_who doing authentication too, an authenticated request
# makes 3 hops instead of 6: 7.8 -> 5.3 ms for a 422, and search p50 30.5 -> 28.7 ms at 100k chunks (2 cores).
async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def get_session(container: Annotated[Container, Depends(get_container)]) -> Iterator[Session]:
    """The request's session. Its transactions end in the thread-pool hop that began them (authentication in
    get_who, the endpoint's work in TransactionPerHop); this teardown commits whatever is left (nothing, on
    routes of that class) or rolls back on an error (scope="function": before the response is sent)."""
    with transaction(container.sessions) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ContainerDep = Annotated[Container, Depends(get_container)]


async def get_token(
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str | None:
    """The bearer token, or 401 `missing_api_key` when absent (BearerRequiredMiddleware already refused such a
    request before its body was read; this is the same rule where FastAPI runs the route). No I/O: the key
    itself is checked where the request's transaction is."""
    if creds is None or not creds.credentials:
        raise AuthError("missing API key", code="missing_api_key")
    return creds.credentials


TokenDep = Annotated[str | None, Depends(get_token)]


def authenticates(dependant: Dependant) -> bool:
    """Whether a route checks a bearer key (its dependencies include get_token)."""
    return any(d.call is get_token or authenticates(d) for d in dependant.dependencies)


def client_address(request: Request) -> str | None:
    """The caller's network address as the server saw it (behind a trusted proxy, uvicorn's forwarded one)."""
    return request.client.host if request.client else None


def authenticated(
    container: Container, session: Session, *, token: str | None, acting_for: str | None, client: str | None
) -> EffectivePrincipal:
    """principals.who_for_token, for a request from `client`: an address that has had too many keys refused is
    429 before its key is looked up (but for a key that authenticated lately), and a refused key (401) counts
    against its address and its key id (memory.rate_limits)."""
    limits = container.rate_limits
    key_id = principals.key_id_of(token)
    limits.refuse_failing_client(client, key_id, token)
    try:
        who = principals.who_for_token(session, token=token, acting_for=acting_for)
    except AuthError:
        session.rollback()  # (on SQLite the write lock is not held across a shared storage's round trip)
        limits.count_auth_failure(client, key_id)
        raise
    if key_id is not None and token is not None:
        limits.vouch(token)
    return who


def refused_key(container: Container, token: str, client: str | None, acting_for: str | None = None,
                ) -> ServiceError | None:
    """The refusal a bearer key gets (unknown, revoked, expired, inactive principal; an address with too many
    refused keys) or, with `acting_for`, its delegation (403 `delegation_not_allowed`), or None for a valid one."""
    with container.sessions() as session:
        try:
            authenticated(container, session, token=token, acting_for=acting_for, client=client)
        except (AuthError, ForbiddenError, RateLimitedError) as exc:
            return exc
    return None
ActingForHeader = Annotated[str | None, Header(
    description="User id this agent/service acts for (blank: refused, 422 `invalid_acting_for`)")]


# Routes whose requests count against the `ingest` rate limit; every other authenticated route but search (its
# own category, counted in `governed`) counts against `other` (memory.rate_limits).
_INGEST_ROUTES = frozenset({("POST", "/v1/sources/{source_id}/documents")})


def takes_documents(route: object) -> bool:
    """Whether `route` is one that takes a document upload (multipart): the `ingest` rate limit's, and the one
    the upload body limit applies to (memory.api.app.BodyLimitMiddleware)."""
    return isinstance(route, APIRoute) and any((m, route.path) in _INGEST_ROUTES for m in route.methods or ())


def rate_category(request: Request) -> str:
    return "ingest" if takes_documents(request.scope.get("route")) else "other"


def get_who(request: Request, session: SessionDep, token: TokenDep,
            x_acting_for: ActingForHeader = None) -> EffectivePrincipal:
    """Authenticate and apply X-Acting-For in one dependency (one thread-pool hop, not two), then count the
    request against its caller's rate limit (429 `rate_limited`). A present but blank header is refused
    (`invalid_acting_for`), never read as absent. The authentication's transaction ends in this hop
    (TransactionPerHop says why)."""
    container: Container = request.app.state.container
    who = authenticated(container, session, token=token, acting_for=x_acting_for, client=client_address(request))
    session.commit()
    container.rate_limits.check(rate_category(request), who.principal_id, who.acting_for)
    return who


WhoDep = Annotated[EffectivePrincipal, Depends(get_who)]


def job_runner(request: Request) -> JobRunner:
    """The process's background job runner (memory.jobs), made with the app."""
    runner: JobRunner = request.app.state.jobs
    return runner


def role(name: str, *alternatives: str):  # type: ignore[no-untyped-def]
    """Dependency factory: the effective principal, required to hold `name` or one of `alternatives` (admin
    holds every role)."""

    async def _dep(who: WhoDep) -> EffectivePrincipal:  # no I/O: runs on the event loop
        principals.require_role(who, name, *alternatives)
        return who

    return Depends(_dep)


@contextmanager
def governed(
    container: Container, *, token: str | None, acting_for: str | None, role: str,
    prepare: Callable[[Session, EffectivePrincipal], T], client: str | None = None,
) -> Iterator[tuple[Session, EffectivePrincipal, T]]:
    """The request's transaction, its authenticated caller (X-Acting-For applied, `role` required) and what
    `prepare` read for it, for an endpoint that runs all its work in ONE thread-pool hop: the search endpoint,
    called by every copilot on every turn (each dependency hop costs ~0.6 ms on 2 cores). The authentication
    and `prepare`'s reads (the search's policy) are committed before the work starts, so SQLite's write lock is
    not held while a query embeds or the vectors are searched, nor while the caller's rate is counted (a shared
    rate storage is a network round trip away). Counted as every authenticated request is, whatever its answer:
    a search refused for its role or its values (403, 422) counts too, and over the limit it is 429 first."""
    with transaction(container.sessions) as session:
        who = authenticated(container, session, token=token, acting_for=acting_for, client=client)
        refused: ServiceError | None = None
        try:
            principals.require_role(who, role)
            prepared = prepare(session, who)
        except ServiceError as exc:
            refused = exc
        session.commit()
        container.rate_limits.check("search", who.principal_id, who.acting_for)
        if refused is not None:
            raise refused
        yield session, who, prepared


class TransactionPerHop(APIRoute):
    """A route whose sync endpoint ends its request transaction (`session`) before it returns: committed, or
    rolled back when it raises.

    FastAPI runs each sync dependency, the endpoint and the session's teardown in separate thread-pool hops.
    A transaction left open from one hop to the next holds a pooled connection (and on SQLite the write lock:
    every transaction begins IMMEDIATE) while its request waits for a free thread; under a burst, every
    thread then waits for that lock or a connection, and nothing moves until the pool's 30 s timeout (45
    concurrent requests did it). So no transaction crosses a hop: authentication commits in get_who, the
    endpoint's work commits here, and the teardown has nothing left to commit. (The search endpoint does all
    of its work in one hop: memory.api.routes.search.)"""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, ending_its_transaction(endpoint), **kwargs)


def ending_its_transaction(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """A sync endpoint or dependency with a `session` parameter, wrapped to end that session's transaction before
    it returns (committed; rolled back when it raises): no transaction crosses a thread-pool hop."""
    if inspect.iscoroutinefunction(endpoint) or "session" not in inspect.signature(endpoint).parameters:
        return endpoint

    @functools.wraps(endpoint)  # FastAPI reads the parameters and their annotations through __wrapped__
    def run(*args: Any, **kwargs: Any) -> Any:
        session = kwargs.get("session")
        try:
            result = endpoint(*args, **kwargs)
        except BaseException:
            if isinstance(session, Session):
                session.rollback()
            raise
        if isinstance(session, Session):
            session.commit()
        return result

    return run
