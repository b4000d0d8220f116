"""Delivery statistics over HTTP: grouped counts from the rollup as JSON, or the same as CSV.

The province's roles read every area; a district key reads its own area only (its communes):
without an area filter it gets its own area, and a filter outside it is refused (403).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel
from sqlmodel import Session

from api.deps import ReadSessionDep, SettingsDep, require_roles
from api.routes.districts import scoped_area
from loa.apikeys import Caller, Role
from loa.db import MAX_INTEGER
from loa.settings import Settings
from stats.rollup import GROUPS, StatsRow, query_stats, stats_csv

router = APIRouter(prefix="/api/v1", tags=["stats"])

Reader = Annotated[
    Caller,
    Depends(require_roles(Role.ADMIN, Role.PLANNER, Role.APPROVER, Role.OPERATOR, Role.DISTRICT)),
]


class StatsReport(BaseModel):
    group_by: list[str]
    timezone: str
    rows: list[StatsRow]


@dataclass(frozen=True)
class StatsParams:
    group_by: list[str]
    campaign_id: int | None
    wave_id: int | None
    channel: str | None
    area_code: str | None
    day_from: date | None
    day_to: date | None
    timezone: str | None


def _params(
    group_by: Annotated[
        str, Query(max_length=200, description=f"Comma-separated, any of: {', '.join(GROUPS)}.")
    ] = "",
    campaign_id: Annotated[int | None, Query(ge=1, le=MAX_INTEGER)] = None,
    wave_id: Annotated[
        int | None,
        Query(ge=1, le=MAX_INTEGER, description="A wave of the spec (with its occurrences)."),
    ] = None,
    channel: Annotated[str | None, Query(max_length=32)] = None,
    area_code: Annotated[
        str | None,
        Query(max_length=16, description="A province, district or commune: the communes under it."),
    ] = None,
    day_from: Annotated[date | None, Query(description="First local day, YYYY-MM-DD.")] = None,
    day_to: Annotated[date | None, Query(description="Last local day (included).")] = None,
    timezone: Annotated[
        str | None,
        Query(max_length=64, description="Days are local to it (default LOA_DEFAULT_TIMEZONE)."),
    ] = None,
) -> StatsParams:
    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    return StatsParams(groups, campaign_id, wave_id, channel, area_code, day_from, day_to, timezone)


ParamsDep = Annotated[StatsParams, Depends(_params)]


def _area_for(session: Session, caller: Caller, area_code: str | None) -> str | None:
    """The area filter the caller may use: a district key's own area when it gives none."""
    if caller.role != Role.DISTRICT:
        return area_code  # an unknown code is query_stats's 422, not allowed_area's 404
    area = scoped_area(session, caller, area_code)
    return area.code if area else None


def _report(
    session: Session, caller: Caller, params: StatsParams, settings: Settings
) -> StatsReport:
    zone = params.timezone or settings.default_timezone
    rows = query_stats(
        session,
        group_by=params.group_by,
        campaign_id=params.campaign_id,
        wave_id=params.wave_id,
        channel=params.channel,
        area_code=_area_for(session, caller, params.area_code),
        day_from=params.day_from,
        day_to=params.day_to,
        timezone=zone,
        prices=settings,
    )
    return StatsReport(group_by=list(dict.fromkeys(params.group_by)), timezone=zone, rows=rows)


@router.get("/stats")
def stats(
    caller: Reader, session: ReadSessionDep, settings: SettingsDep, params: ParamsDep
) -> StatsReport:
    """Messages by status (targeted, pending, sent, delivered, failed, ...), segments, cost,
    delivery rate and loudspeaker plays, grouped as asked. Read from the rollup: as fast with
    tens of millions of deliveries as with a few."""
    return _report(session, caller, params, settings)


@router.get("/stats.csv", response_class=Response)
def stats_as_csv(
    caller: Reader, session: ReadSessionDep, settings: SettingsDep, params: ParamsDep
) -> Response:
    """The same rows as CSV: the key's columns, then the measures."""
    report = _report(session, caller, params, settings)
    return Response(
        stats_csv(report.rows, report.group_by),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="stats.csv"'},
    )
