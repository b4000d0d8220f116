from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select
from sqlmodel import col

from api.deps import SessionDep
from loa.models import Campaign
from scheduler.lifecycle import get_campaign
from stats.campaign import CampaignStats, campaign_stats

router = APIRouter(prefix="/api/v1/campaigns", tags=["campaigns"])


class CampaignPublic(BaseModel):
    id: int
    name: str
    status: str
    timezone: str
    created_by: str
    created_at: datetime
    launched_at: datetime | None
    completed_at: datetime | None


@router.get("")
def list_campaigns(session: SessionDep) -> list[CampaignPublic]:
    campaigns = session.scalars(select(Campaign).order_by(col(Campaign.id).desc()).limit(200))
    return [CampaignPublic.model_validate(c, from_attributes=True) for c in campaigns]


@router.get("/{campaign_id}")
def read_campaign(campaign_id: int, session: SessionDep) -> CampaignPublic:
    return CampaignPublic.model_validate(get_campaign(session, campaign_id), from_attributes=True)


@router.get("/{campaign_id}/stats")
def read_campaign_stats(campaign_id: int, session: SessionDep) -> CampaignStats:
    return campaign_stats(session, campaign_id)
