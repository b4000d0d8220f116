"""Campaigns over HTTP: create from a spec, edit a draft, the lifecycle verbs, and reading. Each
route calls the same lifecycle function as the CLI, with the API key's actor, the app's clock and
the settings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel

from api.deps import ClockDep, ReadSessionDep, SessionDep, SettingsDep, require_roles
from api.idempotency import IdempotentRoute
from api.paging import After, Limit, Page
from api.params import Id
from loa.apikeys import Caller, Role
from loa.errors import InvalidInput
from loa.models import Campaign
from loa.paging import DEFAULT_PAGE
from scheduler.lifecycle import (
    approve_campaign,
    cancel_campaign,
    create_campaign,
    edit_campaign,
    get_campaign,
    launch_campaign,
    list_campaigns,
    pause_campaign,
    resume_campaign,
)
from scheduler.plan import CampaignPlan, plan_campaign
from scheduler.spec import CampaignSpec, validate_spec
from stats.campaign import CampaignStats, campaign_stats

router = APIRouter(prefix="/api/v1/campaigns", tags=["campaigns"], route_class=IdempotentRoute)

# Who may do what (district keys: none of it; they get their own area's playlists).
Reader = Annotated[
    Caller, Depends(require_roles(Role.ADMIN, Role.PLANNER, Role.APPROVER, Role.OPERATOR))
]
Planner = Annotated[Caller, Depends(require_roles(Role.PLANNER, Role.ADMIN))]
Approver = Annotated[Caller, Depends(require_roles(Role.APPROVER, Role.ADMIN))]

SOURCE = "request body"


class CampaignPublic(BaseModel):
    id: int
    name: str
    status: str
    timezone: str
    created_by: str
    approved_by: str | None
    created_at: datetime
    updated_at: datetime
    launched_at: datetime | None
    completed_at: datetime | None


class CancelledCampaign(CampaignPublic):
    messages_cancelled: int  # planned messages that will now never be sent
    waves_closed: int  # waves that had not fired


def _public(campaign: Campaign) -> CampaignPublic:
    return CampaignPublic.model_validate(campaign, from_attributes=True)


def _spec(raw: Any) -> CampaignSpec:
    if isinstance(raw, bytes):  # FastAPI passes a body that is not declared as JSON through raw
        raise InvalidInput(f"{SOURCE}: send the spec as JSON, with Content-Type: application/json")
    return validate_spec(raw, source=SOURCE)


@router.post("", status_code=201)
def create(
    caller: Planner,
    raw: Annotated[Any, Body(description="A campaign spec: the YAML spec's shape, as JSON.")],
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
) -> CampaignPublic:
    """Create a draft campaign. The spec is validated whole; errors name the wave and field."""
    campaign = create_campaign(
        session,
        spec=_spec(raw),
        actor=caller.actor,
        now=clock(),
        settings=settings,
        source=SOURCE,
    )
    return _public(campaign)


@router.put("/{campaign_id}")
def edit(
    campaign_id: Id,
    caller: Planner,
    raw: Annotated[Any, Body(description="The whole new spec, as for creating.")],
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
) -> CampaignPublic:
    """Replace a draft's spec (name, waves and their templates), validated whole; 409 once it
    is approved (what was approved is what is sent)."""
    campaign = edit_campaign(
        session,
        campaign_id,
        spec=_spec(raw),
        actor=caller.actor,
        now=clock(),
        settings=settings,
        source=SOURCE,
    )
    return _public(campaign)


@router.post("/{campaign_id}/approve")
def approve(
    campaign_id: Id, caller: Approver, session: SessionDep, clock: ClockDep, settings: SettingsDep
) -> CampaignPublic:
    """Approve a draft (with four-eyes approval on, by another key than the author's)."""
    return _public(
        approve_campaign(session, campaign_id, actor=caller.actor, now=clock(), settings=settings)
    )


@router.post("/{campaign_id}/launch")
def launch(
    campaign_id: Id, caller: Approver, session: SessionDep, clock: ClockDep, settings: SettingsDep
) -> CampaignPublic:
    """Schedule an approved campaign's waves; the scheduler fires each at its time."""
    return _public(
        launch_campaign(session, campaign_id, actor=caller.actor, now=clock(), settings=settings)
    )


@router.post("/{campaign_id}/pause")
def pause(
    campaign_id: Id, caller: Approver, session: SessionDep, clock: ClockDep
) -> CampaignPublic:
    """Stop sending until resumed; takes effect at every worker's next claim."""
    return _public(pause_campaign(session, campaign_id, actor=caller.actor, now=clock()))


@router.post("/{campaign_id}/resume")
def resume(
    campaign_id: Id, caller: Approver, session: SessionDep, clock: ClockDep
) -> CampaignPublic:
    """Continue a paused campaign (nothing already sent is sent again)."""
    return _public(resume_campaign(session, campaign_id, actor=caller.actor, now=clock()))


@router.post("/{campaign_id}/cancel")
def cancel(
    campaign_id: Id, caller: Approver, session: SessionDep, clock: ClockDep
) -> CancelledCampaign:
    """End the campaign for good: messages not yet sent are cancelled, unfired waves closed."""
    result = cancel_campaign(session, campaign_id, actor=caller.actor, now=clock())
    return CancelledCampaign(
        **_public(result.campaign).model_dump(),
        messages_cancelled=result.messages_cancelled,
        waves_closed=result.waves_closed,
    )


@router.post("/{campaign_id}/plan")
def plan(
    campaign_id: Id, _caller: Reader, session: SessionDep, settings: SettingsDep, clock: ClockDep
) -> CampaignPlan:
    """What each wave would send, from the data as it is now. Writes nothing."""
    return plan_campaign(session, campaign_id, now=clock(), settings=settings)


@router.get("")
def read_campaigns(
    _caller: Reader,
    session: ReadSessionDep,
    status: Annotated[str | None, Query(max_length=16)] = None,
    after: After = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[CampaignPublic]:
    """Campaigns, newest first; `status` filters."""
    rows, next_after = list_campaigns(session, status=status, after=after, limit=limit)
    return Page(items=[_public(c) for c in rows], next_after=next_after)


@router.get("/{campaign_id}")
def read_campaign(campaign_id: Id, _caller: Reader, session: SessionDep) -> CampaignPublic:
    return _public(get_campaign(session, campaign_id))


@router.get("/{campaign_id}/stats")
def read_campaign_stats(campaign_id: Id, _caller: Reader, session: SessionDep) -> CampaignStats:
    return campaign_stats(session, campaign_id)
