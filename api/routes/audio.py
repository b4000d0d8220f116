"""Loudspeaker audio over HTTP: add a file, list and describe the stored ones, and serve them.

POST takes the file as the raw body (`curl --data-binary @ban-tin.mp3 -H 'Content-Type:
audio/mpeg'`), streamed to a temporary file and refused with 413 past LOA_AUDIO_MAX_BYTES; its
name comes from `?filename=`. The MP3s are served for culture centres on slow links: immutable
(the name is the content's SHA-256), a strong ETag, 304 on If-None-Match, and byte ranges with
If-Range, so an interrupted download resumes where it stopped.

Reading needs an API key. A district key reads only the audio of its own area's playlists
(any day): the file, its record, and in the list; the province's roles read all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, MalformedRangeHeader

from api.deps import (
    CallerDep,
    ClockDep,
    EngineDep,
    ReadSessionDep,
    SettingsDep,
    require_roles,
)
from api.idempotency import IdempotentRoute
from api.paging import After, Limit, Page
from api.routes.districts import scoped_area
from api.upload import uploaded_file
from audio.ingest import AddResult, Source, add_audio
from audio.store import SHA256_PATTERN, asset_path, get_asset, list_assets
from broadcast.playlist import audio_in_area, audio_of_area
from loa.apikeys import Caller, Role
from loa.clock import Clock
from loa.db import session_scope
from loa.errors import Forbidden, NotFound, UnsupportedMediaType
from loa.models import Area, AudioAsset
from loa.paging import DEFAULT_PAGE
from loa.settings import Settings

router = APIRouter(prefix="/api/v1/audio", tags=["audio"], route_class=IdempotentRoute)

Uploader = Annotated[Caller, Depends(require_roles(Role.PLANNER, Role.ADMIN))]
Sha256 = Annotated[str, PathParam(pattern=SHA256_PATTERN, description="64 lowercase hex digits")]

# What the body may be declared as; the format itself is judged from the content.
AUDIO_TYPES: Final = frozenset(
    {
        "audio/wav",
        "audio/x-wav",
        "audio/wave",
        "audio/vnd.wave",
        "audio/mpeg",
        "audio/mp3",
        "audio/mp4",
        "audio/m4a",
        "audio/x-m4a",
        "audio/aac",
        "audio/x-aac",
        "audio/aacp",
        "audio/ogg",
        "audio/vorbis",
        "application/ogg",
        "audio/flac",
        "audio/x-flac",
        "application/octet-stream",
    }
)
# A year, and immutable: the same URL never names other bytes. Private: it is read with a key.
CACHE_CONTROL: Final = "private, max-age=31536000, immutable"


class AudioOut(BaseModel):
    sha256: str
    name: str
    url: str
    original_filename: str
    intro_filename: str | None
    outro_filename: str | None
    source_format: str
    bytes: int
    duration_ms: int
    sample_rate: int
    bitrate_kbps: int
    loudness_before_lufs: float
    loudness_after_lufs: float
    true_peak_dbtp: float
    created_by: str
    created_at: str


class AddedAudio(AudioOut):
    created: bool  # false: the same audio was already stored (this is its first record)
    trimmed_ms: int


def _out(asset: AudioAsset) -> dict[str, object]:
    record = asset.model_dump(mode="json")
    record["url"] = f"{router.prefix}/{asset.sha256}.mp3"
    return record


@router.post(
    "",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in AUDIO_TYPES},
        }
    },
)
async def add(
    request: Request,
    response: Response,
    caller: Uploader,
    engine: EngineDep,
    settings: SettingsDep,
    clock: ClockDep,
    filename: Annotated[
        str, Query(min_length=1, max_length=255, description="The file's name as recorded.")
    ],
    name: Annotated[str | None, Query(max_length=200, description="A name to list it by.")] = None,
    intro: Annotated[
        str | None,
        Query(pattern=SHA256_PATTERN, description="A stored asset played before it (its sha256)."),
    ] = None,
    outro: Annotated[
        str | None,
        Query(pattern=SHA256_PATTERN, description="A stored asset played after it (its sha256)."),
    ] = None,
) -> AddedAudio:
    """Add an audio file (WAV, MP3, M4A/AAC, OGG, FLAC) sent as the body: 201 when stored, 200
    when the same audio was already there; 422 with the reason when it cannot be broadcast."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in AUDIO_TYPES and not media_type.startswith(
        ("multipart/", "application/x-www-form-urlencoded")  # uploaded_file explains these
    ):
        raise UnsupportedMediaType(
            f"Content-Type {media_type or '(none)'} is not audio; send the file as the body with "
            "its type (audio/wav, audio/mpeg, audio/mp4, audio/aac, audio/ogg, audio/flac) or "
            "application/octet-stream"
        )
    display = Path(filename).name or "upload"
    # The jingles are stored assets, looked up before the body is read: an unknown one is a 404
    # that costs no upload.
    jingles = [
        await run_in_threadpool(_stored_source, engine, settings, sha) for sha in (intro, outro)
    ]
    async with uploaded_file(
        request,
        limit=settings.audio_max_bytes,
        display=display,
        setting="LOA_AUDIO_MAX_BYTES",
        hint="compress it (MP3, M4A, OGG or FLAC) or cut it",
    ) as path:
        result = await run_in_threadpool(
            _add, engine, path, display, name, jingles, settings, clock, caller.actor
        )
    if not result.created:
        response.status_code = 200
    return AddedAudio.model_validate(
        {**_out(result.asset), "created": result.created, "trimmed_ms": result.trimmed_ms}
    )


def _add(
    engine: Engine,
    path: Path,
    display: str,
    name: str | None,
    jingles: list[Source | None],
    settings: Settings,
    clock: Clock,
    actor: str,
) -> AddResult:
    return add_audio(
        engine,
        Source(path, display),
        settings=settings,
        actor=actor,
        now=clock(),
        name=name,
        intro=jingles[0],
        outro=jingles[1],
    )


def _stored_source(engine: Engine, settings: Settings, sha256: str | None) -> Source | None:
    if sha256 is None:
        return None
    with session_scope(engine) as session:
        asset = get_asset(session, sha256)
    path = asset_path(settings.data_dir, asset.sha256)
    if not path.is_file():
        raise NotFound(f"audio {sha256} is recorded but its file is missing from the store")
    return Source(path, asset.original_filename)


@router.get("")
def list_audio(
    caller: CallerDep, session: ReadSessionDep, after: After = None, limit: Limit = DEFAULT_PAGE
) -> Page[AudioOut]:
    """Stored audio, newest first; for a district key, the audio of its own area's playlists."""
    only = None
    if caller.role == Role.DISTRICT:
        only = audio_of_area(_own_area(session, caller).path)
    assets, next_after = list_assets(session, after=after, limit=limit, only=only)
    return Page(items=[AudioOut.model_validate(_out(a)) for a in assets], next_after=next_after)


class AudioFileResponse(FileResponse):
    """Starlette's FileResponse (byte ranges, 416, If-Range against the ETag), except that a
    Range header it cannot use is ignored and the whole file sent, as RFC 9110 (14.2) asks,
    where Starlette answers 400 (an unknown unit, `bytes=5-2`, text)."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []  # Starlette sends the whole file for no ranges


# HEAD: a client about to resume asks the size and ETag first. Two routes, not one with two
# methods: the OpenAPI description needs an operation id of its own for each.
@router.get("/{sha256}.mp3", response_class=FileResponse, responses={206: {}, 304: {}, 416: {}})
@router.head("/{sha256}.mp3", response_class=FileResponse, responses={206: {}, 304: {}, 416: {}})
def serve_file(
    request: Request,
    caller: CallerDep,
    session: ReadSessionDep,
    settings: SettingsDep,
    sha256: Sha256,
) -> Response:
    """The MP3. Strong ETag (its SHA-256), 304 on If-None-Match, Range/If-Range, immutable."""
    asset = get_asset(session, sha256)
    _may_read(session, caller, asset.sha256)
    path = asset_path(settings.data_dir, asset.sha256)
    if not path.is_file():
        raise NotFound(f"audio {sha256} is recorded but its file is missing from the store")
    etag = f'"{asset.sha256}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={**headers, "Accept-Ranges": "bytes"})
    return AudioFileResponse(path, media_type="audio/mpeg", headers=headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/ is ignored, * matches."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


@router.get("/{sha256}")
def show(caller: CallerDep, session: ReadSessionDep, sha256: Sha256) -> AudioOut:
    """One stored file's record: loudness before and after, true peak, duration, size."""
    asset = get_asset(session, sha256)
    _may_read(session, caller, asset.sha256)
    return AudioOut.model_validate(_out(asset))


def _own_area(session: Session, caller: Caller) -> Area:
    area = scoped_area(session, caller, None)
    assert area is not None  # a district key's own area (only district keys come here)
    return area


def _may_read(session: Session, caller: Caller, sha256: str) -> None:
    """A district key reads the audio of its own area's playlists only (403 otherwise)."""
    if caller.role != Role.DISTRICT:
        return
    if not audio_in_area(session, sha256, _own_area(session, caller).path):
        raise Forbidden(
            f"API key {caller.prefix} is for area {caller.area_code}; audio {sha256[:12]}... "
            "is in none of its playlists"
        )
