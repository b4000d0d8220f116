"""Request-scoped dependencies: the settings, the engine, the clock, a database session per
request, and the caller behind the API key with the role checks (the one place auth lives)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlmodel import Session

from api.readcache import Freshness, KeyCache, Versions
from loa.apikeys import Caller, Role, stamp_last_used, verify_key
from loa.clock import Clock
from loa.db import read_only, session_scope
from loa.errors import Forbidden, InvalidInput, NotAuthenticated
from loa.settings import Settings

log = logging.getLogger(__name__)
_VERSIONS = "loa.versions"  # the request's Versions, in its ASGI scope


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


async def current_versions(request: Request) -> Versions:
    """The data's versions for this request (api/readcache.py): the process's, when read less
    than LOA_CACHE_RECHECK_SECONDS ago, else read now; then the same for the whole request."""
    versions: Versions | None = request.scope.get(_VERSIONS)
    if versions is None:
        freshness: Freshness = request.app.state.freshness
        versions = await freshness.current(request.app.state.engine)
        request.scope[_VERSIONS] = versions
    return versions


async def get_caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_api_key_header)],
) -> Caller:
    """The caller, from the process's cache of verified keys when it has the key for the current
    generation of the key table (no query, no thread); else from the database, in a thread."""
    presented = bearer.credentials if bearer is not None else header_key
    if not presented:
        raise NotAuthenticated(
            "no API key: send 'Authorization: Bearer <key>' (or 'X-API-Key: <key>'); "
            "an administrator creates keys with: loa apikey create --role ROLE"
        )
    state = request.app.state
    now = state.clock()
    generation = (await current_versions(request)).keys
    keys: KeyCache = state.api_keys
    try:
        caller, stamp_due = keys.lookup(presented, now=now, generation=generation)
    except KeyError:
        return await run_in_threadpool(_verify, state.engine, keys, presented, now, generation)
    if stamp_due:
        _stamp_later(state.engine, caller.key_id, now)
    return caller


def _verify(
    engine: Engine, cache: KeyCache, presented: str, now: datetime, generation: int
) -> Caller:
    # Its own short transaction, not the request's: the key's last-use stamp is kept when the
    # request fails, and the key row is never held locked for the length of a request.
    with session_scope(engine) as session:
        caller = verify_key(session, presented, now=now)
    cache.remember(presented, caller, now=now, generation=generation)
    return caller


# The stamps being written: a reference keeps each task alive until it is done.
_stamping: set[asyncio.Future[None]] = set()


def _stamp_later(engine: Engine, key_id: int, now: datetime) -> None:
    """last_used_at, written in a thread after the request has its caller (it waits for none)."""

    def stamp() -> None:
        with session_scope(engine) as session:
            stamp_last_used(session, key_id, now=now)

    future = asyncio.get_running_loop().run_in_executor(None, stamp)
    _stamping.add(future)
    future.add_done_callback(_stamped)


def _stamped(future: asyncio.Future[None]) -> None:
    _stamping.discard(future)
    if not future.cancelled() and (error := future.exception()) is not None:
        # A hint for people, not worth failing anything for; said, so that it is not lost.
        log.warning("could not stamp an API key's last use: %s", error.__class__.__name__)


CallerDep = Annotated[Caller, Depends(get_caller)]


def require_roles(*roles: Role) -> Callable[[Caller], Awaitable[Caller]]:
    """A dependency: the caller, if its key has one of `roles`; else 403."""
    allowed = frozenset(roles)
    needed = " or ".join(roles)

    # async: pure memory, no hand-off to a thread.
    async def caller_with_role(caller: CallerDep) -> Caller:
        if caller.role not in allowed:
            raise Forbidden(
                f"API key {caller.prefix} has the role {caller.role}; this needs {needed}"
            )
        return caller

    return caller_with_role


async def refuse_nul_characters(request: Request) -> None:
    """A NUL character in a path or query parameter, or in a string of a JSON body: a 422 naming
    where. PostgreSQL's text cannot hold one (the query fails), and nothing Loa keeps (names,
    codes, numbers, texts) has one. Applied to every route (api/app.py)."""
    for name, value in (*request.path_params.items(), *request.query_params.multi_items()):
        if "\x00" in value:
            raise _nul(name)
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await request.body()  # a JSON route's body, already read and kept by FastAPI
        if b"\\u0000" not in body:  # a NUL in a JSON string is always written so
            return
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return  # not JSON (or nested past the parser): the route says so
        if (where := _nul_in(document)) is not None:
            raise _nul(where or "body")


def _nul(where: str) -> InvalidInput:
    return InvalidInput(f"{where}: contains a NUL character (\\u0000)", field=where)


def _nul_in(document: Any) -> str | None:
    """The path (a.0.b) of the first string with a NUL in a JSON document, or None. Walked with
    a list, not recursion: a document may be nested as deep as its parser allowed."""
    pending: list[tuple[str, Any]] = [("", document)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path
            continue
        if isinstance(value, dict):
            children: list[tuple[Any, Any]] = list(value.items())
        elif isinstance(value, list):
            children = list(enumerate(value))
        else:
            continue
        for key, child in reversed(children):  # first child first
            here = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return here
            pending.append((here, child))
    return None
