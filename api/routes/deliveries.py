"""The delivery log over HTTP: a keyset page of messages as JSON, or the whole filtered log as a
streamed CSV. For the office and operators (not district keys)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.deps import EngineDep, ReadSessionDep, require_roles
from loa.apikeys import Caller, Role
from loa.db import MAX_BIGINT, MAX_INTEGER
from stats.deliveries import MAX_PAGE, Delivery, DeliveryFilter, export_deliveries, list_deliveries

router = APIRouter(prefix="/api/v1", tags=["deliveries"])

Reader = Annotated[
    Caller, Depends(require_roles(Role.ADMIN, Role.PLANNER, Role.APPROVER, Role.OPERATOR))
]


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_after: int | None  # pass as ?after= for the next page; null at the end


def _filter(
    campaign_id: Annotated[int | None, Query(ge=1, le=MAX_INTEGER)] = None,
    wave_id: Annotated[int | None, Query(ge=1, le=MAX_INTEGER)] = None,
    channel: Annotated[str | None, Query(max_length=32)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    error_code: Annotated[str | None, Query(max_length=32)] = None,
    area: Annotated[
        str | None, Query(max_length=16, description="An area code; its sub-areas too.")
    ] = None,
    since: Annotated[
        datetime | None, Query(description="Last change at or after (ISO 8601 with zone).")
    ] = None,
    until: Annotated[datetime | None, Query(description="Last change before.")] = None,
) -> DeliveryFilter:
    return DeliveryFilter(
        campaign_id=campaign_id,
        wave_id=wave_id,
        channel=channel,
        status=status,
        error_code=error_code,
        area=area,
        since=since,
        until=until,
    )


FilterDep = Annotated[DeliveryFilter, Depends(_filter)]


@router.get("/deliveries")
def deliveries(
    _caller: Reader,
    session: ReadSessionDep,
    flt: FilterDep,
    after: Annotated[
        int, Query(ge=0, le=MAX_BIGINT, description="The next_after of the previous page.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> DeliveryPage:
    """Messages (one per wave x recipient x channel) with their current status, by id."""
    items, next_after = list_deliveries(session, flt, after=after, limit=limit)
    return DeliveryPage(items=items, next_after=next_after)


@router.get("/deliveries.csv", response_class=StreamingResponse)
def deliveries_csv(_caller: Reader, engine: EngineDep, flt: FilterDep) -> StreamingResponse:
    """The whole filtered log as CSV, streamed batch by batch (constant memory, any size)."""
    return StreamingResponse(
        (text.encode("utf-8") for text in export_deliveries(engine, flt)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="deliveries.csv"'},
    )
