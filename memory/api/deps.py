"""FastAPI dependencies: the container, a per-request transaction, the authenticated caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from memory import principals
from memory.bootstrap import Container
from memory.db import transaction
from memory.models import Principal
from memory.policy import EffectivePrincipal

bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer gm_<id>_<secret>`")


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def get_session(container: Annotated[Container, Depends(get_container)]) -> Iterator[Session]:
    """One transaction per request, committed before the response is sent (scope="function")."""
    with transaction(container.sessions) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ContainerDep = Annotated[Container, Depends(get_container)]


def get_caller(
    session: SessionDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    return principals.authenticate(session, token=creds.credentials if creds else None)


CallerDep = Annotated[Principal, Depends(get_caller)]


def get_who(
    session: SessionDep,
    caller: CallerDep,
    x_acting_for: Annotated[str | None, Header(description="User id this agent/service acts for")] = None,
) -> EffectivePrincipal:
    return principals.resolve_effective(session, caller=caller, acting_for=x_acting_for)


WhoDep = Annotated[EffectivePrincipal, Depends(get_who)]


def role(name: str):  # type: ignore[no-untyped-def]
    """Dependency factory: the effective principal, required to hold `name` (admin holds every role)."""

    def _dep(who: WhoDep) -> EffectivePrincipal:
        principals.require_role(who, name)
        return who

    return Depends(_dep)
