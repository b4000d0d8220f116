"""A campaign's waves over HTTP: read them, preview a wave's text for sample recipients, and send
it to test numbers. The same service functions as `loa campaign show`, `preview`, `test-send`.

Templates are not a resource of their own: each wave carries its template text (`template`), as
the campaign spec writes it. What an approver approves is then exactly what is sent: a shared
template edited after the approval would change approved campaigns behind the approver's back.
So templates are read here, with their wave, and written with the campaign's spec. (The
`template` table of the first schema is not used.)
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api.deps import ClockDep, EngineDep, ReadSessionDep, SessionDep, SettingsDep, require_roles
from api.paging import After, Limit, Page
from channels.registry import channel_for
from loa.apikeys import Caller, Role
from loa.models import Wave
from loa.paging import DEFAULT_PAGE
from scheduler.lifecycle import page_waves
from scheduler.preview import SendTestReport, WavePreview, preview_wave, send_test

router = APIRouter(prefix="/api/v1/campaigns/{campaign_id}/waves", tags=["waves"])

Reader = Annotated[
    Caller, Depends(require_roles(Role.ADMIN, Role.PLANNER, Role.APPROVER, Role.OPERATOR))
]
# A test send costs money and reaches phones: those who write campaigns.
Planner = Annotated[Caller, Depends(require_roles(Role.PLANNER, Role.ADMIN))]


class SendTestRequest(BaseModel):
    to: list[str] = Field(min_length=1, description="Test numbers, as people write them.")
    variables: dict[str, Any] | None = Field(
        default=None,
        description="Template variables; without them, the wave's first recipient's data.",
    )


class WavePublic(BaseModel):
    id: int
    position: int  # the wave's place in the spec, from 0 (an occurrence has its parent's)
    kind: str  # once | recurring | relative | broadcast
    parent_id: int | None  # the recurring or relative wave an occurrence was made of
    occurrence: str | None
    name: str
    channel: str
    message_class: str = Field(serialization_alias="class")
    trigger: dict[str, Any]
    audience: dict[str, Any]
    template: str | None  # the SMS text the wave renders; null for a loudspeaker wave
    options: dict[str, Any]  # unaccent, window, brandname; audio, priority, repeats
    status: str
    fire_at: datetime | None
    expires_at: datetime | None
    covered_through: date | None
    expanded_at: datetime | None
    expanded_count: int


def _public(wave: Wave) -> WavePublic:
    fields = wave.model_dump()
    fields["template"] = fields.pop("body")
    return WavePublic.model_validate(fields)


@router.get("")
def read_waves(
    campaign_id: int,
    _caller: Reader,
    session: ReadSessionDep,
    occurrences: Annotated[
        bool, Query(description="Also the occurrences made of recurring and relative waves.")
    ] = False,
    after: After = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[WavePublic]:
    """The campaign's waves in the spec's order, each with its template text."""
    rows, next_after = page_waves(
        session, campaign_id, occurrences=occurrences, after=after, limit=limit
    )
    return Page(items=[_public(w) for w in rows], next_after=next_after)


@router.post("/{wave_id}/preview")
def preview(
    campaign_id: int,
    wave_id: int,
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
    campaign_id: int,
    wave_id: int,
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
