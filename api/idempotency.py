"""`Idempotency-Key` on the API's POSTs: a retried request gets the first one's response (with
`Idempotent-Replayed: true`) and does nothing else. loa/idempotency.py keeps the keys; this
module is the HTTP side, in two parts:

- `IdempotentRoute`, the route class of the routers whose POSTs create or launch
  (`APIRouter(route_class=IdempotentRoute)`). It gives each POST a dependency that reads the
  header and claims the key before the route runs (a replay or a refusal ends the request
  there), and it stores the route's response once the route has returned it.
- `body_read`, for routes that stream their body (api/upload.py): such a body is not read
  before the route runs, so its SHA-256, taken while it streams, completes the fingerprint.

Where the key is held follows from where the route does its work, judged once from its
signature: a route that works in the request's session (SessionDep) has its response stored in
that same transaction, committed with the work or not at all. Any other route (imports, audio,
test sends: their work commits by itself or is a call to a provider) holds the key in a row
committed before the work and stores the response after it; a crash in between leaves the row,
and after LOA_IDEMPOTENCY_LOCK_SECONDS a retry does the work again. An import or an audio upload
done twice ends as done once (they are upserts, content-addressed); a test send done twice sends
its texts twice.

A request that fails (any error answer) keeps nothing: its work was rolled back or not done, and
a retry with the same key runs it afresh.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import Depends, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant
from fastapi.routing import APIRoute
from sqlalchemy import Engine
from sqlmodel import Session

from api.deps import CallerDep, ClockDep, EngineDep, SessionDep, SettingsDep, get_session
from loa import idempotency
from loa.idempotency import HEADER, Answered, Held, StoredResponse
from loa.settings import Settings

log = logging.getLogger(__name__)

REPLAYED_HEADER: Final = "Idempotent-Replayed"
_SCOPE_KEY: Final = "loa.idempotency"
# Expired keys are purged by the requests that use keys, at most this often per process.
PURGE_EVERY: Final = timedelta(minutes=1)
# Not replayed: recomputed for the stored body.
_UNSTORED_HEADERS: Final = frozenset({"content-length"})

KeyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        description=(
            "Makes the request safe to retry: a repeat with the same key gets the first "
            f"response (with {REPLAYED_HEADER}: true) and does nothing else; the same key with "
            "another request is a 422, a repeat while the first is still processed a 409. At "
            "most 255 printable ASCII characters (a UUID). Kept LOA_IDEMPOTENCY_TTL_HOURS "
            "(24 by default)."
        ),
        # Documented, checked by idempotency.parse_key (for a message that says what to do).
        json_schema_extra={"minLength": 1, "maxLength": idempotency.MAX_KEY_LENGTH},
    ),
]


class _Replay(Exception):
    def __init__(self, response: StoredResponse) -> None:
        super().__init__("replay")
        self.response = response


@dataclass
class _Claim:
    """A key this request holds until its response is stored."""

    engine: Engine
    settings: Settings
    api_key_id: int
    key: str
    target: str  # method, path and query, as fingerprinted
    fingerprint: str | None  # None until a streamed body has been read
    session: Session | None = None  # held in the request's transaction
    held: Held | None = None  # held in a row of its own
    answered: Answered | None = None  # answered before; the streamed body decides
    done: bool = False

    def store(self, response: Response, now: datetime) -> None:
        self.done = True
        assert self.fingerprint is not None, "a streamed body was never read (body_read)"
        stored = StoredResponse(
            response.status_code,
            {k: v for k, v in response.headers.items() if k not in _UNSTORED_HEADERS},
            bytes(response.body),
        )
        if self.session is not None:
            idempotency.complete_in(
                self.session,
                self.api_key_id,
                self.key,
                self.fingerprint,
                stored,
                now=now,
                ttl=timedelta(hours=self.settings.idempotency_ttl_hours),
            )
            return
        assert self.held is not None
        try:
            kept = idempotency.complete_apart(
                self.engine, self.api_key_id, self.key, self.held, self.fingerprint, stored
            )
        except Exception:
            # The work is done: the client gets its answer. The key stays claimed until the
            # lock period ends, when a retry would run the request again.
            log.exception(
                "the response to %s (%s %s) was not stored", self.target, HEADER, self.key
            )
            return
        if not kept:
            log.warning(
                "%s %s: %s outlived LOA_IDEMPOTENCY_LOCK_SECONDS and its key was taken over; "
                "its response is not kept",
                HEADER,
                self.key,
                self.target,
            )


def _target(request: Request) -> str:
    query = request.url.query
    return f"{request.method} {request.url.path}" + (f"?{query}" if query else "")


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


async def _purge_now_and_then(request: Request, engine: Engine, now: datetime) -> None:
    state = request.app.state
    last: datetime | None = getattr(state, "idempotency_purged_at", None)
    if last is not None and now - last < PURGE_EVERY:
        return
    state.idempotency_purged_at = now
    await run_in_threadpool(idempotency.purge_expired, engine, now=now)


def _claim_in_request() -> Callable[..., AsyncIterator[None]]:
    async def claim_idempotency_key(
        request: Request,
        caller: CallerDep,
        engine: EngineDep,
        session: SessionDep,
        settings: SettingsDep,
        clock: ClockDep,
        idempotency_key: KeyHeader = None,
    ) -> AsyncIterator[None]:
        if idempotency_key is None:
            yield
            return
        key = idempotency.parse_key(idempotency_key)
        now = clock()
        # Before the request's transaction begins: on SQLite the purge is a writer of its own.
        await _purge_now_and_then(request, engine, now)
        target = _target(request)
        request_fingerprint = idempotency.fingerprint(
            request.method, target, _sha256(await request.body())
        )
        stored = await run_in_threadpool(
            idempotency.claim_in,
            session,
            caller.key_id,
            key,
            request_fingerprint,
            now=now,
            lock_for=timedelta(seconds=settings.idempotency_lock_seconds),
        )
        if stored is not None:
            raise _Replay(stored)
        request.scope[_SCOPE_KEY] = _Claim(
            engine, settings, caller.key_id, key, target, request_fingerprint, session=session
        )
        yield

    return claim_idempotency_key


def _claim_apart(*, streamed: bool) -> Callable[..., AsyncIterator[None]]:
    async def claim_idempotency_key(
        request: Request,
        caller: CallerDep,
        engine: EngineDep,
        settings: SettingsDep,
        clock: ClockDep,
        idempotency_key: KeyHeader = None,
    ) -> AsyncIterator[None]:
        if idempotency_key is None:
            yield
            return
        key = idempotency.parse_key(idempotency_key)
        now = clock()
        await _purge_now_and_then(request, engine, now)
        target = _target(request)
        claim = _Claim(
            engine,
            settings,
            caller.key_id,
            key,
            target,
            None
            if streamed
            else idempotency.fingerprint(request.method, target, _sha256(await request.body())),
        )
        outcome = await run_in_threadpool(
            idempotency.claim_apart,
            engine,
            caller.key_id,
            key,
            claim.fingerprint,
            now=now,
            ttl=timedelta(hours=settings.idempotency_ttl_hours),
            lock_for=timedelta(seconds=settings.idempotency_lock_seconds),
        )
        if isinstance(outcome, StoredResponse):
            raise _Replay(outcome)
        if isinstance(outcome, Answered):
            claim.answered = outcome
        else:
            claim.held = outcome
        request.scope[_SCOPE_KEY] = claim
        try:
            yield
        finally:
            if claim.held is not None and not claim.done:
                # The request failed before its work was done: the key is free again.
                await run_in_threadpool(idempotency.release, engine, caller.key_id, key, claim.held)

    return claim_idempotency_key


async def body_read(request: Request, body_sha256: str) -> None:
    """A streamed body has been read: its SHA-256 completes the request's fingerprint. When the
    key was answered before, this replays that answer (the route stops here) or refuses the
    key."""
    claim: _Claim | None = request.scope.get(_SCOPE_KEY)
    if claim is None:
        return
    claim.fingerprint = idempotency.fingerprint(request.method, claim.target, body_sha256)
    if claim.answered is not None:
        raise _Replay(idempotency.judge_body(claim.answered, claim.fingerprint))


def _uses(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return any(d.call is call or _uses(d, call) for d in dependant.dependencies)


class IdempotentRoute(APIRoute):
    """A route class whose POSTs honour Idempotency-Key (see the module's docstring)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if "POST" in {m.upper() for m in kwargs.get("methods") or ()}:
            probe = get_dependant(path=path, call=endpoint)
            # A route without a body parameter that documents a body reads it as a stream.
            streamed = not probe.body_params and "requestBody" in (
                kwargs.get("openapi_extra") or {}
            )
            in_request = _uses(probe, get_session)
            assert not (streamed and in_request), (
                f"{path}: a streamed body in the request's session"
            )
            claim = _claim_in_request() if in_request else _claim_apart(streamed=streamed)
            kwargs["dependencies"] = [
                Depends(claim, scope="function"),
                *(kwargs.get("dependencies") or []),
            ]
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_idempotently(request: Request) -> Response:
            try:
                response = await handle(request)
            except _Replay as replay:
                stored = replay.response
                return Response(
                    stored.body,
                    status_code=stored.status_code,
                    headers={**stored.headers, REPLAYED_HEADER: "true"},
                )
            claim: _Claim | None = request.scope.get(_SCOPE_KEY)
            if claim is not None and hasattr(response, "body"):
                # Still inside the request's unit of work: the session commits after this.
                clock = request.app.state.clock
                await run_in_threadpool(claim.store, response, clock())
            return response

        return handle_idempotently
