"""Saved segments over HTTP: create, replace, read, delete, and count (a saved segment, or a
filter given in the request) with a sample. The same service functions as `loa segments`.
Planners and administrators write; operators, approvers and planners read and count."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api.deps import ClockDep, ReadSessionDep, SessionDep, SettingsDep, require_roles
from api.paging import After, Limit, Page
from audience.segments import (
    SegmentCount,
    check_against_data,
    count_filter,
    count_segment,
    create_segment,
    delete_segment,
    get_segment,
    list_segments,
    local_today,
    parse_filter,
    update_segment,
    waves_using,
)
from loa.apikeys import Caller, Role
from loa.models import Segment
from loa.paging import DEFAULT_PAGE

router = APIRouter(prefix="/api/v1/segments", tags=["segments"])

Reader = Annotated[
    Caller, Depends(require_roles(Role.ADMIN, Role.PLANNER, Role.APPROVER, Role.OPERATOR))
]
Writer = Annotated[Caller, Depends(require_roles(Role.PLANNER, Role.ADMIN))]
SOURCE = "request body"
Sample = Annotated[int, Query(ge=0, le=1000, description="Matching recipients to list.")]


class SegmentIn(BaseModel):
    name: str
    description: str | None = Field(default=None, max_length=1000)
    # Validated by audience/segments.py, which names the field of each problem.
    filter: Any


class SegmentReplace(BaseModel):
    description: str | None = Field(default=None, max_length=1000)
    filter: Any


class CountIn(BaseModel):
    filter: Any
    sample: int = Field(default=10, ge=0, le=1000)


class WaveUse(BaseModel):
    campaign_id: int
    wave_id: int
    wave: str


class SegmentPublic(BaseModel):
    name: str
    description: str | None
    filter: dict[str, Any]
    created_by: str
    created_at: datetime
    updated_at: datetime


class SegmentDetail(SegmentPublic):
    waves_not_yet_expanded: list[WaveUse]


class SampleOut(BaseModel):
    id: int
    phone: str  # partly masked
    name: str | None
    area_code: str | None


class CountOut(BaseModel):
    count: int
    as_of: date  # the local date "within the next N days" counted from
    sample: list[SampleOut]


def _public(segment: Segment) -> SegmentPublic:
    return SegmentPublic.model_validate(segment, from_attributes=True)


def _count_out(counted: SegmentCount) -> CountOut:
    return CountOut(
        count=counted.count,
        as_of=counted.as_of,
        sample=[SampleOut(**vars(r)) for r in counted.sample],
    )


@router.post("", status_code=201)
def create(body: SegmentIn, caller: Writer, session: SessionDep, clock: ClockDep) -> SegmentPublic:
    """Save a segment; 409 if the name is taken, 422 naming the field of a bad filter."""
    segment = create_segment(
        session,
        name=body.name,
        raw_filter=body.filter,
        description=body.description,
        actor=caller.actor,
        now=clock(),
        source=SOURCE,
    )
    return _public(segment)


@router.get("")
def list_all(
    _caller: Reader, session: ReadSessionDep, after: After = None, limit: Limit = DEFAULT_PAGE
) -> Page[SegmentPublic]:
    """Saved segments by name."""
    rows, next_after = list_segments(session, after=after, limit=limit)
    return Page(items=[_public(s) for s in rows], next_after=next_after)


@router.post("/count")
def count_adhoc(
    body: CountIn, _caller: Reader, session: SessionDep, clock: ClockDep, settings: SettingsDep
) -> CountOut:
    """Count a filter that is not saved (to try one out before saving it)."""
    flt = parse_filter(body.filter, source=SOURCE)
    check_against_data(session, flt, source=SOURCE)
    today = local_today(clock(), settings.default_timezone)
    return _count_out(count_filter(session, flt, today=today, sample=body.sample))


@router.get("/{name}")
def read(name: str, _caller: Reader, session: SessionDep) -> SegmentDetail:
    segment = get_segment(session, name)
    uses = [WaveUse(campaign_id=c, wave_id=w, wave=n) for c, w, n in waves_using(session, name)]
    return SegmentDetail(**_public(segment).model_dump(), waves_not_yet_expanded=uses)


@router.put("/{name}")
def replace(
    name: str, body: SegmentReplace, caller: Writer, session: SessionDep, clock: ClockDep
) -> SegmentPublic:
    """Replace the filter; waves not yet expanded follow it."""
    segment = update_segment(
        session,
        name,
        raw_filter=body.filter,
        description=body.description,
        actor=caller.actor,
        now=clock(),
        source=SOURCE,
    )
    return _public(segment)


@router.delete("/{name}", status_code=204)
def delete(name: str, caller: Writer, session: SessionDep, clock: ClockDep) -> None:
    """Delete; 409 while a wave not yet expanded uses the segment."""
    delete_segment(session, name, actor=caller.actor, now=clock())


@router.get("/{name}/count")
def count_saved(
    name: str,
    _caller: Reader,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    sample: Sample = 10,
) -> CountOut:
    today = local_today(clock(), settings.default_timezone)
    return _count_out(count_segment(session, name, today=today, sample=sample))
