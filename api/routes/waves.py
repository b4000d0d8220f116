"""A campaign's waves over HTTP: preview a wave's text for sample recipients, and send it to test
numbers. The same service functions as `loa campaign preview` and `loa campaign test-send`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ClockDep, EngineDep, SessionDep, SettingsDep, require_roles
from api.idempotency import IdempotentRoute
from api.params import Id
from channels.registry import channel_for
from loa.apikeys import Caller, Role
from scheduler.preview import SendTestReport, WavePreview, preview_wave, send_test

router = APIRouter(
    prefix="/api/v1/campaigns/{campaign_id}/waves", tags=["waves"], route_class=IdempotentRoute
)

Reader = Annotated[
    Caller, Depends(require_roles(Role.ADMIN, Role.PLANNER, Role.APPROVER, Role.OPERATOR))
]
# A test send costs money and reaches phones: those who write campaigns.
Planner = Annotated[Caller, Depends(require_roles(Role.PLANNER, Role.ADMIN))]


class SendTestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is a 422 naming it

    to: list[str] = Field(min_length=1, description="Test numbers, as people write them.")
    variables: dict[str, Any] | None = Field(
        default=None,
        description="Template variables; without them, the wave's first recipient's data.",
    )


@router.post("/{wave_id}/preview")
def preview(
    campaign_id: Id,
    wave_id: Id,
    _caller: Reader,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    sample: Annotated[int, Query(ge=1, le=100)] = 5,
) -> WavePreview:
    """The wave's text for `sample` recipients it would send to, with segments and cost.
    Writes nothing."""
    return preview_wave(
        session, campaign_id, wave_id, sample=sample, now=clock(), settings=settings
    )


@router.post("/{wave_id}/test-send")
def test_send(
    campaign_id: Id,
    wave_id: Id,
    body: SendTestRequest,
    caller: Planner,
    engine: EngineDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> SendTestReport:
    """Send the wave's text to test numbers through the SMS channel; the audience and the
    outbox are not touched, the audit log has the send."""
    return send_test(
        engine,
        campaign_id,
        wave_id,
        to=body.to,
        variables=body.variables,
        actor=caller.actor,
        now=clock(),
        settings=settings,
        channel_for=lambda name: channel_for(name, settings),
    )
