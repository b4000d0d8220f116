"""The figures the operator page shows, gathered for one caller: campaign progress, delivery per
area and failures by reason. Plain data; the words and the drawing are the templates'.

Scope follows the API's: the province's roles (admin, planner, approver, operator) see every
campaign and every district; a district key sees only figures and the playlist of its own area,
per commune, and no campaign list (the campaigns API refuses it too)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlmodel import Session, col

from loa.apikeys import Caller, Role
from loa.errors import Forbidden
from loa.models import Area, Campaign, MessageStatus
from loa.settings import Settings
from stats.campaign import campaigns_stats
from stats.rollup import query_stats

RECENT_CAMPAIGNS: Final = 20

# How a progress bar groups message statuses, in drawing order (left to right).
OUTCOMES: Final[Mapping[str, tuple[MessageStatus, ...]]] = {
    "delivered": (MessageStatus.DELIVERED,),
    "sent": (MessageStatus.SENT,),
    "failed": (MessageStatus.FAILED, MessageStatus.UNDELIVERED),
    "set_aside": (MessageStatus.SUPPRESSED, MessageStatus.EXPIRED, MessageStatus.CANCELLED),
    "unknown": (MessageStatus.UNKNOWN,),
    "pending": (MessageStatus.PLANNED, MessageStatus.CLAIMED, MessageStatus.SENDING),
}


@dataclass(frozen=True)
class Segment:
    outcome: str
    count: int
    x: float  # percent of the bar's width
    width: float


@dataclass(frozen=True)
class Progress:
    total: int
    settled: int  # no longer waiting to be sent
    counts: dict[str, int]  # per outcome
    segments: list[Segment]  # the drawn ones (count > 0)

    @property
    def ratio(self) -> float | None:
        return self.settled / self.total if self.total else None


def progress(by_status: Mapping[str, int]) -> Progress:
    counts = {
        name: sum(by_status.get(s, 0) for s in statuses) for name, statuses in OUTCOMES.items()
    }
    total = sum(counts.values())
    segments, x = [], 0.0
    for name, count in counts.items():
        if count and name != "pending":
            width = 100 * count / total
            segments.append(Segment(name, count, round(x, 3), round(width, 3)))
            x += width
    return Progress(total, total - counts["pending"], counts, segments)


@dataclass(frozen=True)
class WaveProgress:
    id: int
    name: str
    channel: str
    status: str
    progress: Progress


@dataclass(frozen=True)
class CampaignProgress:
    id: int
    name: str
    status: str
    progress: Progress
    waves: list[WaveProgress]


def recent_campaigns(session: Session, limit: int = RECENT_CAMPAIGNS) -> list[CampaignProgress]:
    """The most recent campaigns, newest first, with their counts by status (stats/campaign.py,
    the same figures as GET /api/v1/campaigns/{id}/stats)."""
    campaigns = session.scalars(select(Campaign).order_by(col(Campaign.id).desc()).limit(limit))
    return [
        CampaignProgress(
            id=stats.campaign_id,
            name=stats.name,
            status=stats.status,
            progress=progress(stats.by_status),
            waves=[
                WaveProgress(w.wave_id, w.name, w.channel, w.status, progress(w.by_status))
                for w in stats.waves
            ],
        )
        for stats in campaigns_stats(session, list(campaigns))
    ]


@dataclass(frozen=True)
class AreaFigures:
    code: str | None
    name: str | None
    targeted: int
    sent: int  # a provider took it: sent, delivered or undelivered (stats/rollup.py)
    delivered: int
    failed: int
    delivery_rate: float | None


@dataclass(frozen=True)
class FailureFigures:
    code: str | None
    failed: int  # failed or undelivered
    set_aside: int  # not sent for this reason: suppressed (no consent), expired, cancelled


def _text(value: str | int | None) -> str | None:
    return None if value is None else str(value)


def _scope(caller: Caller) -> tuple[str, str | None]:
    """Which area level the caller's figures are grouped by, and the area they are limited to
    (as GET /api/v1/stats holds a district key to its own area)."""
    if caller.role != Role.DISTRICT:
        return "district", None
    if caller.area_code is None:
        raise Forbidden(f"API key {caller.prefix} is a district key without an area")
    return "commune", caller.area_code


def area_figures(
    session: Session, caller: Caller, *, settings: Settings, campaign_id: int | None
) -> list[AreaFigures]:
    level, area = _scope(caller)
    rows = query_stats(
        session,
        group_by=[level],
        campaign_id=campaign_id,
        area_code=area,
        timezone=settings.default_timezone,
        prices=settings,
    )
    figures = [
        AreaFigures(
            code=_text(row.key.get(level)),
            name=_text(row.key.get(f"{level}_name")),
            targeted=row.targeted,
            sent=row.sent,
            delivered=row.delivered,
            failed=row.failed,
            delivery_rate=row.delivery_rate,
        )
        for row in rows
        if row.targeted
    ]
    # By code, the areas without one (communes with no district above them) last.
    return sorted(figures, key=lambda f: (f.code is None, f.code or ""))


def failure_figures(
    session: Session, caller: Caller, *, settings: Settings, campaign_id: int | None
) -> list[FailureFigures]:
    _, area = _scope(caller)
    rows = query_stats(
        session,
        group_by=["error_code"],
        campaign_id=campaign_id,
        area_code=area,
        timezone=settings.default_timezone,
        prices=settings,
    )
    failures = []
    for row in rows:
        code = row.key.get("error_code")
        # Without a code, a message set aside was on the suppression list: no failure's reason.
        set_aside = row.suppressed + row.expired + row.cancelled if code is not None else 0
        if row.failed or set_aside:
            failures.append(FailureFigures(_text(code), row.failed, set_aside))
    return sorted(failures, key=lambda f: (-(f.failed + f.set_aside), f.code or ""))


def local_zone(settings: Settings) -> ZoneInfo:
    """The office's time zone: the page's "today" (the playlist's day) and its clock."""
    return ZoneInfo(settings.default_timezone)


def district_areas(session: Session) -> list[Area]:
    """The areas at district level, to offer in the playlist's area box (any code is accepted:
    after the 2025 reform a centre may serve another grouping)."""
    return list(
        session.scalars(select(Area).where(col(Area.level) == "district").order_by(col(Area.code)))
    )
