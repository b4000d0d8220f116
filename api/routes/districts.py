"""What a district culture centre reads and reports: the day's playlist (JSON, M3U8, XSPF) and
its plays; and the plays' history as CSV.

Access: a district key reads only the playlists of its own area and the areas under it, and
reports plays only for them (403 otherwise); the province's roles (admin, planner, approver,
operator) read every area, and only admin may report plays for an area (a correction on a
centre's behalf). The playlist has a strong ETag over its bytes: 304 on If-None-Match, so a
centre polling over a slow link downloads a playlist only when it changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from datetime import date, datetime
from typing import Annotated, Final

from fastapi import APIRouter, Body, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from sqlmodel import Session
from starlette.datastructures import State

from api.deps import (
    CallerDep,
    ClockDep,
    EngineDep,
    ReadSessionDep,
    SessionDep,
    SettingsDep,
    current_versions,
)
from api.idempotency import IdempotentRoute
from api.paging import After, Limit, Page
from api.readcache import AreaPaths, Versions
from broadcast.cache import PlaylistCache
from broadcast.formats import to_m3u8, to_xspf
from broadcast.playlist import Playlist, district_playlist, get_area
from broadcast.plays import (
    Play,
    PlayCounts,
    PlayReport,
    count_plays,
    export_plays_csv,
    list_plays,
    record_plays,
    utc_bounds,
)
from loa.apikeys import Caller, Role
from loa.clock import Clock
from loa.db import read_only, session_scope
from loa.errors import Forbidden, InvalidInput, UnsupportedMediaType
from loa.models import Area
from loa.paging import DEFAULT_PAGE
from loa.settings import Settings

router = APIRouter(tags=["districts"], route_class=IdempotentRoute)

# Area codes are digits in the national coding; letters, '-' and '_' are allowed for areas a
# province defines itself. Nothing that could be a path.
AreaCode = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,16}$", description="area code")]
DateQuery = Annotated[
    str, Query(pattern=r"^\d{4}-\d{2}-\d{2}$", description="local date, YYYY-MM-DD")
]
# Revalidate each time (cheap: 304); private: it is read with a key.
PLAYLIST_CACHE: Final = "private, no-cache"
PROVINCE_ROLES: Final = frozenset({Role.ADMIN, Role.PLANNER, Role.APPROVER, Role.OPERATOR})


def allowed_area(session: Session, caller: Caller, code: str, *, reporting: bool = False) -> Area:
    """The area, if the caller may read it (or, `reporting`, report plays for it); else 403."""
    area = get_area(session, code)
    own = _own_area(session, caller)
    check_access(caller, code, area.path, own.path if own else None, reporting=reporting)
    return area


def _own_area(session: Session, caller: Caller) -> Area | None:
    if caller.role == Role.DISTRICT and caller.area_code:
        return session.get(Area, caller.area_code)
    return None


def check_access(
    caller: Caller, code: str, path: str, own_path: str | None, *, reporting: bool = False
) -> None:
    """The access rule, on paths (the playlist routes check it from cached paths): 403 unless
    the caller may read the area `code` at `path` (or, `reporting`, report plays for it);
    `own_path` is a district key's own area's path."""
    if caller.role == Role.DISTRICT:
        if own_path is not None and path.startswith(own_path):
            return
        raise Forbidden(
            f"API key {caller.prefix} is for area {caller.area_code}; area {code} is not in it"
        )
    if reporting and caller.role != Role.ADMIN:
        raise Forbidden(
            f"API key {caller.prefix} has the role {caller.role}; plays are reported with the "
            "district's own key (or an admin key)"
        )
    if caller.role not in PROVINCE_ROLES:
        raise Forbidden(f"API key {caller.prefix} has the role {caller.role}")


def scoped_area(session: Session, caller: Caller, code: str | None) -> Area | None:
    """The area a read is limited to: `code`, if the caller may read it (allowed_area); when
    none is named, a district key's own area (a district key never reads beyond it) and, for the
    province's roles, None: everything."""
    if code is None and caller.role == Role.DISTRICT:
        if caller.area_code is None:
            raise Forbidden(f"API key {caller.prefix} is a district key without an area")
        code = caller.area_code
    return allowed_area(session, caller, code) if code is not None else None


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"date {value!r} is not a calendar date (YYYY-MM-DD, e.g. 2026-05-08)", field="date"
        ) from None


def public_base_url(request: Request, settings: Settings) -> str:
    # LOA_PUBLIC_URL when set (behind a proxy the request's own URL is the proxy's inside one).
    return settings.public_url or str(request.base_url)


# Each format: how the playlist becomes bytes, and their media type.
FORMATS: Final[dict[str, tuple[Callable[[Playlist], bytes], str]]] = {
    "json": (lambda p: p.model_dump_json().encode(), "application/json"),
    "m3u8": (lambda p: to_m3u8(p).encode(), "audio/x-mpegurl; charset=utf-8"),
    "xspf": (to_xspf, "application/xspf+xml"),
}


async def _serve(
    request: Request,
    caller: Caller,
    settings: Settings,
    clock: Clock,
    code: str,
    day: str,
    fmt: str,
) -> Response:
    """The playlist in `fmt`, with its strong ETag; 304 when the client has it. A warm pull is
    answered from memory in the event loop: the area paths the access rule compares and the
    body (api/readcache.py, broadcast/cache.py), for the data's current versions. Anything
    missing is read in one thread, in one read-only transaction."""
    versions = await current_versions(request)
    state = request.app.state
    now = clock()
    base_url = public_base_url(request, settings)
    areas: AreaPaths = state.areas
    cache: PlaylistCache = state.playlists
    path = areas.get(code, versions.areas)
    own_path = (
        areas.get(caller.area_code, versions.areas)
        if caller.role == Role.DISTRICT and caller.area_code
        else None
    )
    found: tuple[bytes, str] | None = None
    if path is not None and (own_path is not None or caller.role != Role.DISTRICT):
        check_access(caller, code, path, own_path)
        found = cache.peek(_key(fmt, code, _day(day), base_url, versions), now)
    if found is None:
        found = await run_in_threadpool(
            _from_database, state, settings, caller, code, day, fmt, base_url, versions, now
        )
    body, etag = found
    headers = {"ETag": etag, "Cache-Control": PLAYLIST_CACHE}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=FORMATS[fmt][1], headers=headers)


def _from_database(
    state: State,
    settings: Settings,
    caller: Caller,
    code: str,
    day: str,
    fmt: str,
    base_url: str,
    versions: Versions,
    now: datetime,
) -> tuple[bytes, str]:
    """What _serve did not find in memory, read and kept in the app's area paths and playlist
    cache. The transaction begins after `versions` was read, so what it reads is at least that
    new: kept under those versions, it is replaced when they move."""
    areas: AreaPaths = state.areas
    cache: PlaylistCache = state.playlists
    with session_scope(read_only(state.engine)) as session:
        area = get_area(session, code)
        own = _own_area(session, caller)
        check_access(caller, code, area.path, own.path if own else None)
        areas.remember(versions.areas, {a.code: a.path for a in (area, own) if a is not None})
        local_day = _day(day)
        serialise = FORMATS[fmt][0]

        def make() -> tuple[bytes, str]:
            playlist = district_playlist(
                session, area.code, local_day, settings=settings, base_url=base_url
            )
            body = serialise(playlist)
            return body, f'"{hashlib.sha256(body).hexdigest()}"'

        return cache.get(_key(fmt, area.code, local_day, base_url, versions), now, make)


def _key(fmt: str, code: str, day: date, base_url: str, versions: Versions) -> Hashable:
    # Not the key table's generation: a revoked key does not change a playlist.
    return (fmt, code, day, base_url, versions.broadcast, versions.areas)


def _matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/ is ignored, * matches."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


@router.get(
    "/api/v1/districts/{code}/playlist",
    response_model=Playlist,
    responses={304: {"description": "unchanged since the ETag given"}},
)
async def playlist_json(
    request: Request,
    caller: CallerDep,
    settings: SettingsDep,
    clock: ClockDep,
    code: AreaCode,
    date: DateQuery,
) -> Response:
    """The day's playlist of the communes under the area: items in play order, and the
    overflow (what does not fit its slot)."""
    return await _serve(request, caller, settings, clock, code, date, "json")


@router.get("/api/v1/districts/{code}/playlist.m3u8", responses={304: {}})
async def playlist_m3u8(
    request: Request,
    caller: CallerDep,
    settings: SettingsDep,
    clock: ClockDep,
    code: AreaCode,
    date: DateQuery,
) -> Response:
    """The same playlist as extended M3U (UTF-8)."""
    return await _serve(request, caller, settings, clock, code, date, "m3u8")


@router.get("/api/v1/districts/{code}/playlist.xspf", responses={304: {}})
async def playlist_xspf(
    request: Request,
    caller: CallerDep,
    settings: SettingsDep,
    clock: ClockDep,
    code: AreaCode,
    date: DateQuery,
) -> Response:
    """The same playlist as XSPF 1."""
    return await _serve(request, caller, settings, clock, code, date, "xspf")


class PlaysAnswer(BaseModel):
    received: int
    stored: int
    duplicates: int  # reported before (or twice here): stored once


@router.post("/api/v1/districts/{code}/plays")
def report_plays(
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    clock: ClockDep,
    code: AreaCode,
    plays: Annotated[list[PlayReport], Body(max_length=10_000)],
) -> PlaysAnswer:
    """Report plays: a JSON list of {item, commune, started_at, ended_at, result}. Checked
    whole; one bad entry refuses the report (422 naming it), and nothing is stored."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type {media_type or '(none)'}: send the plays as application/json"
        )
    area = allowed_area(session, caller, code, reporting=True)
    stored = record_plays(session, area, plays, actor=caller.actor, now=clock())
    return PlaysAnswer(received=stored.received, stored=stored.stored, duplicates=stored.duplicates)


@router.get("/api/v1/districts/{code}/plays")
def play_counts(
    caller: CallerDep,
    session: ReadSessionDep,
    code: AreaCode,
    since: Annotated[date | None, Query(alias="from")] = None,
    until: Annotated[date | None, Query(alias="to")] = None,
) -> PlayCounts:
    """Reported plays per commune under the area and in all, by result (dates in UTC,
    `to` inclusive)."""
    area = allowed_area(session, caller, code)
    start, end = utc_bounds(since, until)
    return count_plays(session, area, since=start, until=end)


@router.get("/api/v1/plays")
def plays_page(
    caller: CallerDep,
    session: ReadSessionDep,
    district: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,16}$")] = None,
    since: Annotated[date | None, Query(alias="from")] = None,
    until: Annotated[date | None, Query(alias="to")] = None,
    after: After = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[Play]:
    """Reported plays (of the district, and between the dates, when given) in order of start,
    a page at a time: what plays.csv exports whole. A district key gets its own area's."""
    area = scoped_area(session, caller, district)
    start, end = utc_bounds(since, until)
    plays, next_after = list_plays(
        session,
        area_path=area.path if area else None,
        since=start,
        until=end,
        after=after,
        limit=limit,
    )
    return Page(items=plays, next_after=next_after)


@router.get("/api/v1/plays.csv", response_class=StreamingResponse)
def plays_csv(
    caller: CallerDep,
    session: ReadSessionDep,
    engine: EngineDep,
    district: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,16}$")] = None,
    since: Annotated[date | None, Query(alias="from")] = None,
    until: Annotated[date | None, Query(alias="to")] = None,
) -> StreamingResponse:
    """Every reported play (of the district, and between the dates, when given) as CSV, in
    order of start. A district key gets its own area's plays whatever `district` it omits."""
    area = scoped_area(session, caller, district)
    start, end = utc_bounds(since, until)
    name = f"plays-{district or 'all'}.csv"
    return StreamingResponse(
        export_plays_csv(engine, area_path=area.path if area else None, since=start, until=end),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
