"""Campaign lifecycle: create from a spec, approve, launch. Every transition is audited.

draft -> approved -> scheduled -> running -> completed. Pause, resume and cancel belong to the
scheduling-core work and are not built yet; the states exist so the schema need not change.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlmodel import Session, col

from loa import audit
from loa.errors import Conflict, InvalidInput, NotBuilt, NotFound
from loa.models import Area, Campaign, CampaignStatus, Wave, WaveStatus
from loa.settings import Settings
from scheduler.spec import CampaignSpec, WaveSpec
from scheduler.triggers import first_fire_time


def _wave_label(index: int, wave: WaveSpec) -> str:
    return f"wave {index + 1} ({wave.name!r})"


def _check_buildable(spec: CampaignSpec, source: str) -> None:
    """Refuse, at creation, what this version cannot send, instead of failing when it is due."""
    for index, wave in enumerate(spec.waves):
        label = f"{source}: {_wave_label(index, wave)}"
        if wave.channel != "sms":
            raise NotBuilt(f"{label}, field channel: loudspeaker waves are not built yet")
        if wave.at is None:
            raise NotBuilt(f"{label}: recurring and relative triggers are not built yet; use at")
        if wave.audience.segment is not None:
            raise NotBuilt(f"{label}, field audience.segment: saved segments are not built yet")


def _check_areas(session: Session, spec: CampaignSpec, source: str) -> None:
    wanted = {code for wave in spec.waves for code in wave.audience.areas}
    if not wanted:
        return
    known = set(session.scalars(select(col(Area.code)).where(col(Area.code).in_(wanted))))
    for index, wave in enumerate(spec.waves):
        missing = [code for code in wave.audience.areas if code not in known]
        if missing:
            raise InvalidInput(
                f"{source}: {_wave_label(index, wave)}, field audience.areas: unknown area code(s) "
                f"{', '.join(missing)} (load areas first: loa areas import FILE.csv)",
                field="audience.areas",
            )


def create_campaign(
    session: Session,
    *,
    spec: CampaignSpec,
    actor: str,
    now: datetime,
    settings: Settings,
    source: str = "spec",
) -> Campaign:
    _check_buildable(spec, source)
    _check_areas(session, spec, source)
    zone = ZoneInfo(spec.timezone or settings.default_timezone)
    for index, wave in enumerate(spec.waves):
        try:
            first_fire_time(wave.trigger, zone)
        except InvalidInput as exc:
            raise InvalidInput(
                f"{source}: {_wave_label(index, wave)}, field at: {exc.message}"
            ) from None

    campaign = Campaign(
        name=spec.name,
        timezone=zone.key,
        status=CampaignStatus.DRAFT,
        spec=spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(campaign)
    session.flush()
    assert campaign.id is not None
    for index, wave in enumerate(spec.waves):
        session.add(
            Wave(
                campaign_id=campaign.id,
                position=index,
                name=wave.name,
                channel=wave.channel,
                message_class=wave.message_class,
                trigger=wave.trigger,
                audience=wave.audience.model_dump(exclude_none=True),
                body=wave.template,
                options={"unaccent": wave.unaccent},
                status=WaveStatus.PENDING,
            )
        )
    audit.record(
        session,
        actor=actor,
        action="campaign.create",
        entity="campaign",
        entity_id=campaign.id,
        now=now,
        after={"name": campaign.name, "waves": len(spec.waves)},
    )
    return campaign


def get_campaign(session: Session, campaign_id: int, *, for_update: bool = False) -> Campaign:
    campaign = session.get(Campaign, campaign_id, with_for_update=for_update)
    if campaign is None:
        raise NotFound(f"no campaign with id {campaign_id}")
    return campaign


def _transition(
    session: Session,
    campaign: Campaign,
    *,
    allowed_from: set[CampaignStatus],
    to: CampaignStatus,
    action: str,
    actor: str,
    now: datetime,
    hint: str = "",
) -> None:
    if campaign.status not in allowed_from:
        expected = " or ".join(sorted(allowed_from))
        raise Conflict(
            f"campaign {campaign.id} is {campaign.status}; {action} needs it to be {expected}{hint}"
        )
    before = campaign.status
    campaign.status = to
    campaign.updated_at = now
    assert campaign.id is not None
    audit.record(
        session,
        actor=actor,
        action=f"campaign.{action}",
        entity="campaign",
        entity_id=campaign.id,
        now=now,
        before={"status": before},
        after={"status": to},
    )


def approve_campaign(session: Session, campaign_id: int, *, actor: str, now: datetime) -> Campaign:
    campaign = get_campaign(session, campaign_id, for_update=True)
    _transition(
        session,
        campaign,
        allowed_from={CampaignStatus.DRAFT},
        to=CampaignStatus.APPROVED,
        action="approve",
        actor=actor,
        now=now,
    )
    campaign.approved_by = actor
    return campaign


def launch_campaign(
    session: Session, campaign_id: int, *, actor: str, now: datetime, settings: Settings
) -> Campaign:
    """Schedule every wave at its fire time. A wave whose time has passed refuses the launch."""
    campaign = get_campaign(session, campaign_id, for_update=True)
    allowed = {CampaignStatus.APPROVED}
    if not settings.require_approval:
        allowed.add(CampaignStatus.DRAFT)
    hint = (
        f" (run: loa campaign approve {campaign_id})"
        if campaign.status == CampaignStatus.DRAFT
        else ""
    )
    _transition(
        session,
        campaign,
        allowed_from=allowed,
        to=CampaignStatus.SCHEDULED,
        action="launch",
        actor=actor,
        now=now,
        hint=hint,
    )
    zone = ZoneInfo(campaign.timezone)
    waves = session.scalars(
        select(Wave).where(col(Wave.campaign_id) == campaign_id).order_by(col(Wave.position))
    ).all()
    for wave in waves:
        fire_at = first_fire_time(wave.trigger, zone)
        if fire_at < now:
            local = fire_at.astimezone(zone)
            raise Conflict(
                f"campaign {campaign_id}: wave {wave.name!r} was due at {local:%Y-%m-%d %H:%M} "
                f"({zone.key}), which has passed; change its time and create the campaign again"
            )
        wave.fire_at = fire_at
        wave.status = WaveStatus.SCHEDULED
    campaign.launched_at = now
    return campaign
