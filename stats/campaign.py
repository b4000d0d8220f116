"""Counts by status for one campaign and each of its waves (a recurring or relative wave with
all its occurrences together).

Counts come from the statistics rollup without areas (stats_rollup_wave, kept by database
triggers with every change of a message): a few rows per wave, where grouping the outbox read
every message of the campaign. Its rows on channel 'loudspeaker' are plays, not messages, and
are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlmodel import Session, col

from loa.models import Campaign, MessageStatus, StatsRollupWave, Wave
from scheduler.lifecycle import get_campaign
from stats.rollup import LOUDSPEAKER


def _zero() -> dict[str, int]:
    return {status.value: 0 for status in MessageStatus}


class WaveStats(BaseModel):
    wave_id: int
    name: str
    channel: str
    kind: str  # once | recurring | relative
    status: str
    fire_at: datetime | None  # a series: when its next occurrence is due
    occurrences: int  # occurrences made so far (1 for a wave that has fired once)
    total: int
    by_status: dict[str, int]


class CampaignStats(BaseModel):
    campaign_id: int
    name: str
    status: str
    timezone: str
    total: int
    by_status: dict[str, int]
    waves: list[WaveStats]


def campaign_stats(session: Session, campaign_id: int) -> CampaignStats:
    return campaigns_stats(session, [get_campaign(session, campaign_id)])[0]


def campaigns_stats(session: Session, campaigns: Sequence[Campaign]) -> list[CampaignStats]:
    """The stats of each of `campaigns`, in their order: two queries whatever their number (their
    waves, and the rollup rows of those waves)."""
    ids = [c.id for c in campaigns]
    all_waves = session.scalars(
        select(Wave)
        .where(col(Wave.campaign_id).in_(ids))
        .order_by(col(Wave.campaign_id), col(Wave.position))
    ).all()
    # An occurrence counts under the wave of the spec it belongs to.
    spec_wave: dict[int, int] = {w.id: w.parent_id or w.id for w in all_waves if w.id is not None}
    occurrences: dict[int, int] = {}
    for wave in all_waves:
        if wave.parent_id is not None:
            occurrences[wave.parent_id] = occurrences.get(wave.parent_id, 0) + 1
    counts = session.execute(
        select(
            col(StatsRollupWave.wave_id), col(StatsRollupWave.status), func.sum(StatsRollupWave.n)
        )
        .where(
            col(StatsRollupWave.wave_id).in_(list(spec_wave)),
            col(StatsRollupWave.channel) != LOUDSPEAKER,
        )
        .group_by(col(StatsRollupWave.wave_id), col(StatsRollupWave.status))
    ).all()
    per_wave: dict[int, dict[str, int]] = {
        w.id: _zero() for w in all_waves if w.id is not None and w.parent_id is None
    }
    for wave_id, status, n in counts:
        per_wave[spec_wave[wave_id]][status] += int(n)  # PostgreSQL sums bigints as numeric
    waves_of: dict[int, list[WaveStats]] = {}
    for wave in all_waves:
        if wave.id is None or wave.parent_id is not None:
            continue
        by_status = per_wave[wave.id]
        waves_of.setdefault(wave.campaign_id, []).append(
            WaveStats(
                wave_id=wave.id,
                name=wave.name,
                channel=wave.channel,
                kind=wave.kind,
                status=wave.status,
                fire_at=wave.fire_at,
                occurrences=occurrences.get(wave.id, int(wave.expanded_at is not None)),
                total=sum(by_status.values()),
                by_status=by_status,
            )
        )
    return [_campaign(campaign, waves_of.get(campaign.id or 0, [])) for campaign in campaigns]


def _campaign(campaign: Campaign, waves: list[WaveStats]) -> CampaignStats:
    assert campaign.id is not None
    totals = _zero()
    for wave in waves:
        for status, n in wave.by_status.items():
            totals[status] += n
    return CampaignStats(
        campaign_id=campaign.id,
        name=campaign.name,
        status=campaign.status,
        timezone=campaign.timezone,
        total=sum(totals.values()),
        by_status=totals,
        waves=waves,
    )
