"""Request-scoped dependencies: the settings, the engine, the clock, a database session per
request, and the caller behind the API key with the role checks (the one place auth lives)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlmodel import Session

from loa.apikeys import Caller, Role, verify_key
from loa.clock import Clock
from loa.db import read_only, session_scope
from loa.errors import Forbidden, NotAuthenticated
from loa.settings import Settings


# The three below only read the app's state: `async` so that FastAPI calls them in the event
# loop. A plain `def` dependency is run in the thread pool, a hand-off to a thread and back per
# dependency and request, which showed in the profile of the playlist pulls.
async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    with session_scope(engine) as session:
        yield session


def get_read_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    with session_scope(read_only(engine)) as session:
        yield session


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]
# "function": the unit of work commits before the answer leaves, so a client that was told "200"
# can rely on it, and its next request sees the change.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
# For GET routes that only read: on SQLite they run beside the writer instead of queueing for it.
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]

# auto_error=False: a missing key is answered by get_caller, in Loa's error shape. Declared as
# security schemes so that /docs offers to send a key.
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer loa_<prefix>_<secret>")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def get_caller(
    engine: EngineDep,
    clock: ClockDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_api_key_header)],
) -> Caller:
    presented = bearer.credentials if bearer is not None else header_key
    if not presented:
        raise NotAuthenticated(
            "no API key: send 'Authorization: Bearer <key>' (or 'X-API-Key: <key>'); "
            "an administrator creates keys with: loa apikey create --role ROLE"
        )
    # Its own short transaction, not the request's: the key's last-use stamp is kept when the
    # request fails, and the key row is never held locked for the length of a request.
    with session_scope(engine) as session:
        return verify_key(session, presented, now=clock())


CallerDep = Annotated[Caller, Depends(get_caller)]


def require_roles(*roles: Role) -> Callable[[Caller], Caller]:
    """A dependency: the caller, if its key has one of `roles`; else 403."""
    allowed = frozenset(roles)
    needed = " or ".join(roles)

    def caller_with_role(caller: CallerDep) -> Caller:
        if caller.role not in allowed:
            raise Forbidden(
                f"API key {caller.prefix} has the role {caller.role}; this needs {needed}"
            )
        return caller

    return caller_with_role
