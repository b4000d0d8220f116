"""Campaign lifecycle: create from a spec, edit a draft, approve, launch, pause, resume, cancel.

    draft -> approved -> scheduled -> running <-> paused -> completed
    cancelled from any state that is not final; completed and cancelled are final.

Every transition goes through `_transition`, which refuses an illegal one with Conflict (HTTP 409)
and writes the audit entry. The scheduler's own moves (scheduled -> running when a wave fires,
running -> completed when every wave is done) are conditional updates in scheduler/tick.py.

Pause and resume change the campaign's status only: which messages may be claimed is the
dispatcher's decision, so resuming (once or twice) never re-sends anything. Cancel also ends what
is still waiting, in set-based statements: planned messages become cancelled (one delivery event
each) and waves that have not fired are closed. Messages a worker already holds are left to it;
any that come back to `planned` later (an expired claim, a retry) are swept to cancelled by the
scheduler's tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlmodel import Session, col

from loa import audit
from loa.errors import Conflict, InvalidInput, NotFound
from loa.models import (
    Area,
    AuditEntry,
    Campaign,
    CampaignStatus,
    MessageStatus,
    RecipientDate,
    Segment,
    Wave,
    WaveKind,
    WaveStatus,
)
from loa.paging import DEFAULT_PAGE, Key, keyset_page
from loa.settings import Settings
from scheduler.outbox import end_planned_messages
from scheduler.spec import CampaignSpec, WaveSpec
from scheduler.triggers import Recurring, Relative, check_trigger, localize, trigger_of

FINAL_CAMPAIGN_STATUSES = frozenset({CampaignStatus.COMPLETED, CampaignStatus.CANCELLED})
CANCELLABLE = frozenset(set(CampaignStatus) - FINAL_CAMPAIGN_STATUSES)
# A wave in one of these has been (or is being) written into the outbox.
FIRED_WAVE_STATUSES = frozenset({WaveStatus.EXPANDING, WaveStatus.EXPANDED, WaveStatus.DONE})
UNFIRED_WAVE_STATUSES = frozenset({WaveStatus.PENDING, WaveStatus.SCHEDULED})


@dataclass(frozen=True)
class CancelResult:
    campaign: Campaign
    messages_cancelled: int  # planned messages that will now never be sent
    waves_closed: int  # waves that had not fired, now done


def _wave_label(index: int, wave: WaveSpec) -> str:
    return f"wave {index + 1} ({wave.name!r})"


def _check_loudspeakers(session: Session, spec: CampaignSpec, source: str) -> dict[int, str]:
    """Each loudspeaker wave's audio must be stored, and its areas must hold communes; return
    the sha256 each such wave (by index) plays."""
    # Imported here: broadcast/ reads waves and campaigns through the scheduler's models.
    from broadcast.items import count_communes, resolve_audio

    audio: dict[int, str] = {}
    for index, wave in enumerate(spec.waves):
        if wave.channel != "loudspeaker":
            continue
        label = f"{source}: {_wave_label(index, wave)}"
        assert wave.audio is not None
        audio[index] = resolve_audio(session, wave.audio, label).sha256
        if not count_communes(session, wave.audience.areas):
            raise InvalidInput(
                f"{label}, field audience.areas: no commune is under "
                f"{', '.join(wave.audience.areas)}; a loudspeaker wave plays in communes",
                field="audience.areas",
            )
    return audio


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


def _check_segments(session: Session, spec: CampaignSpec, source: str) -> None:
    """A wave's segment must exist when the campaign is created (it is read when the wave
    expands, so that edits made until then apply; deleting it is refused meanwhile)."""
    wanted = {wave.audience.segment for wave in spec.waves if wave.audience.segment}
    if not wanted:
        return
    known = set(session.scalars(select(col(Segment.name)).where(col(Segment.name).in_(wanted))))
    for index, wave in enumerate(spec.waves):
        if wave.audience.segment and wave.audience.segment not in known:
            saved = session.scalars(select(col(Segment.name)).order_by(col(Segment.name))).all()
            raise InvalidInput(
                f"{source}: {_wave_label(index, wave)}, field audience.segment: no segment named "
                f"{wave.audience.segment!r} (saved segments: {', '.join(saved[:20]) or 'none'}; "
                "create one with: loa segments create NAME --filter FILE.json)",
                field="audience.segment",
            )


def require_date_attribute(session: Session, attribute: str, where: str) -> None:
    """A relative wave's attribute must be a date some recipient has: a typo (`card_expiy`) would
    otherwise make a wave that never fires and never says why. `where` names the wave."""
    found = session.scalar(
        select(col(RecipientDate.recipient_id))
        .where(col(RecipientDate.attribute) == attribute)
        .limit(1)
    )
    if found is None:
        known = session.scalars(
            select(col(RecipientDate.attribute)).distinct().order_by(col(RecipientDate.attribute))
        ).all()
        raise InvalidInput(
            f"{where}, field relative.attribute: no recipient has a date in {attribute!r} "
            f"(date attributes on file: "
            f"{', '.join(known[:20]) or 'none; import recipients with a date column first'})",
            field="relative.attribute",
        )


def _check_spec(
    session: Session, spec: CampaignSpec, settings: Settings, source: str
) -> tuple[ZoneInfo, dict[int, str]]:
    """The spec against the data (areas, segments, audio, date attributes) and its triggers in
    its zone; the zone, and each loudspeaker wave's audio."""
    _check_areas(session, spec, source)
    audio = _check_loudspeakers(session, spec, source)
    _check_segments(session, spec, source)
    for index, wave in enumerate(spec.waves):
        if wave.relative is not None:
            require_date_attribute(
                session, wave.relative.attribute, f"{source}: {_wave_label(index, wave)}"
            )
    zone = ZoneInfo(spec.timezone or settings.default_timezone)
    for index, wave in enumerate(spec.waves):
        try:
            check_trigger(wave.trigger, zone)
        except InvalidInput as exc:
            raise InvalidInput(f"{source}: {_wave_label(index, wave)}, {exc.message}") from None
    return zone, audio


def _add_waves(
    session: Session, campaign_id: int, spec: CampaignSpec, audio: dict[int, str]
) -> None:
    for index, wave in enumerate(spec.waves):
        session.add(
            Wave(
                campaign_id=campaign_id,
                position=index,
                kind=_kind(wave),
                name=wave.name,
                channel=wave.channel,
                message_class=wave.message_class,
                trigger=wave.trigger,
                audience=wave.audience.model_dump(exclude_none=True),
                body=wave.template,
                options=_options(wave, spec, audio.get(index)),
                status=WaveStatus.PENDING,
            )
        )


def _stored_spec(spec: CampaignSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def create_campaign(
    session: Session,
    *,
    spec: CampaignSpec,
    actor: str,
    now: datetime,
    settings: Settings,
    source: str = "spec",
) -> Campaign:
    zone, audio = _check_spec(session, spec, settings, source)
    campaign = Campaign(
        name=spec.name,
        timezone=zone.key,
        status=CampaignStatus.DRAFT,
        spec=_stored_spec(spec),
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(campaign)
    session.flush()
    assert campaign.id is not None
    _add_waves(session, campaign.id, spec, audio)
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


def edit_campaign(
    session: Session,
    campaign_id: int,
    *,
    spec: CampaignSpec,
    actor: str,
    now: datetime,
    settings: Settings,
    source: str = "spec",
) -> Campaign:
    """Replace a draft's spec (its name, zone and waves, templates included), checked whole as at
    creation; the waves are made anew (new ids). Only a draft: what was approved is what is sent.
    The audit entry keeps both specs, and with four-eyes approval on, an editor may not approve
    the campaign either."""
    campaign = get_campaign(session, campaign_id, for_update=True)
    _refuse_unless(
        campaign,
        allowed_from={CampaignStatus.DRAFT},
        action="edit",
        hint=" (an approved campaign is sent as approved; cancel it and create another)",
    )
    zone, audio = _check_spec(session, spec, settings, source)
    before = {"name": campaign.name, "timezone": campaign.timezone, "spec": campaign.spec}
    # A draft's waves have nothing hanging from them yet: no occurrences, outbox rows or
    # broadcast items (launching makes those).
    session.execute(delete(Wave).where(col(Wave.campaign_id) == campaign_id))
    campaign.name, campaign.timezone, campaign.spec = spec.name, zone.key, _stored_spec(spec)
    campaign.updated_at = now
    _add_waves(session, campaign_id, spec, audio)
    audit.record(
        session,
        actor=actor,
        action="campaign.edit",
        entity="campaign",
        entity_id=campaign_id,
        now=now,
        before=before,
        after={"name": campaign.name, "timezone": campaign.timezone, "spec": campaign.spec},
    )
    return campaign


def _authors(session: Session, campaign: Campaign) -> set[str]:
    """Who wrote the campaign as it stands: its creator and everyone who edited it."""
    editors = session.scalars(
        select(col(AuditEntry.actor)).where(
            col(AuditEntry.entity) == "campaign",
            col(AuditEntry.entity_id) == str(campaign.id),
            col(AuditEntry.action) == "campaign.edit",
        )
    )
    return {campaign.created_by, *editors}


def _options(wave: WaveSpec, spec: CampaignSpec, audio: str | None) -> dict[str, Any]:
    if wave.channel == "loudspeaker":
        return {
            "audio": audio,
            "priority": wave.priority or "normal",
            "repeats": wave.repeats or 1,
        }
    return {
        "unaccent": wave.unaccent,
        "window": wave.window,
        "brandname": wave.brandname or spec.brandname,
    }


def _kind(wave: WaveSpec) -> WaveKind:
    if wave.channel == "loudspeaker":
        return WaveKind.BROADCAST
    if wave.recurring is not None:
        return WaveKind.RECURRING
    if wave.relative is not None:
        return WaveKind.RELATIVE
    return WaveKind.ONCE


def get_campaign(session: Session, campaign_id: int, *, for_update: bool = False) -> Campaign:
    campaign = session.get(Campaign, campaign_id, with_for_update=for_update)
    if campaign is None:
        raise NotFound(f"no campaign with id {campaign_id}")
    return campaign


def list_campaigns(
    session: Session,
    *,
    status: str | None = None,
    after: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> tuple[list[Campaign], str | None]:
    """One keyset page of campaigns, newest first (of one status, if given), and the cursor of
    the next page."""
    statement = select(Campaign)
    if status is not None:
        if status not in set(CampaignStatus):
            raise InvalidInput(
                f"status {status!r} is not one of {', '.join(CampaignStatus)}", field="status"
            )
        statement = statement.where(col(Campaign.status) == status)
    return keyset_page(
        session, statement, [Key(col(Campaign.id), descending=True)], after=after, limit=limit
    )


def page_waves(
    session: Session,
    campaign_id: int,
    *,
    occurrences: bool = False,
    after: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> tuple[list[Wave], str | None]:
    """One keyset page of a campaign's waves in the spec's order: the spec's own waves, and with
    `occurrences` also the ones the scheduler made of recurring and relative waves (after their
    parent). NotFound for an unknown campaign."""
    get_campaign(session, campaign_id)
    statement = select(Wave).where(col(Wave.campaign_id) == campaign_id)
    if not occurrences:
        statement = statement.where(col(Wave.parent_id).is_(None))
    order = [Key(col(Wave.position)), Key(col(Wave.id))]
    return keyset_page(session, statement, order, after=after, limit=limit)


def list_waves(session: Session, campaign_id: int) -> Sequence[Wave]:
    return session.scalars(
        select(Wave).where(col(Wave.campaign_id) == campaign_id).order_by(col(Wave.position))
    ).all()


def _refuse_unless(
    campaign: Campaign, *, allowed_from: set[CampaignStatus], action: str, hint: str = ""
) -> None:
    if campaign.status in allowed_from:
        return
    if campaign.status in FINAL_CAMPAIGN_STATUSES:
        raise Conflict(
            f"campaign {campaign.id} is {campaign.status}, which is final; {action} is not possible"
        )
    expected = " or ".join(sorted(allowed_from))
    raise Conflict(
        f"campaign {campaign.id} is {campaign.status}; {action} needs it to be {expected}{hint}"
    )


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
    details: dict[str, Any] | None = None,
) -> None:
    _refuse_unless(campaign, allowed_from=allowed_from, action=action, hint=hint)
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
        after={"status": to, **(details or {})},
    )


def approve_campaign(
    session: Session, campaign_id: int, *, actor: str, now: datetime, settings: Settings
) -> Campaign:
    """Approve a draft. With four-eyes approval on, the author may not approve their own."""
    campaign = get_campaign(session, campaign_id, for_update=True)
    allowed = {CampaignStatus.DRAFT}
    # The status first: approving a campaign that is past draft is refused for that reason.
    _refuse_unless(campaign, allowed_from=allowed, action="approve")
    if settings.four_eyes_approval and actor in _authors(session, campaign):
        wrote = "created" if actor == campaign.created_by else "edited"
        raise Conflict(
            f"campaign {campaign_id} was {wrote} by {actor}; four-eyes approval is on "
            "(LOA_FOUR_EYES_APPROVAL), so someone other than its author must approve it"
        )
    _require_sendable(session, campaign_id, action="approved", now=now, settings=settings)
    _transition(
        session,
        campaign,
        allowed_from=allowed,
        to=CampaignStatus.APPROVED,
        action="approve",
        actor=actor,
        now=now,
    )
    campaign.approved_by = actor
    return campaign


def _require_sendable(
    session: Session, campaign_id: int, *, action: str, now: datetime, settings: Settings
) -> None:
    # Imported here: the plan reads campaigns and waves through this module.
    from scheduler.plan import require_sendable

    require_sendable(session, campaign_id, action=action, now=now, settings=settings)


def launch_campaign(
    session: Session, campaign_id: int, *, actor: str, now: datetime, settings: Settings
) -> Campaign:
    """Schedule every wave: an `at` wave at its time (one whose time has passed refuses the
    launch), a recurring wave at its next occurrence (earlier ones are not made up), a relative
    wave from now on (recipients whose moment has passed already are not reminded late)."""
    campaign = get_campaign(session, campaign_id, for_update=True)
    allowed = {CampaignStatus.APPROVED}
    if not settings.require_approval:
        allowed.add(CampaignStatus.DRAFT)
    hint = (
        f" (run: loa campaign approve {campaign_id})"
        if campaign.status == CampaignStatus.DRAFT
        else ""
    )
    _refuse_unless(campaign, allowed_from=allowed, action="launch", hint=hint)
    # Again at launch: recipients imported since the approval may lack a variable.
    _require_sendable(session, campaign_id, action="launched", now=now, settings=settings)
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
    for wave in list_waves(session, campaign_id):
        if wave.kind == WaveKind.BROADCAST:
            from broadcast.items import write_items  # see _check_loudspeakers

            write_items(session, wave, zone, now=now, settings=settings)
        else:
            _schedule_wave(wave, zone, now=now)
    campaign.launched_at = now
    return campaign


def _schedule_wave(wave: Wave, zone: ZoneInfo, *, now: datetime) -> None:
    trigger = trigger_of(wave.trigger)
    passed = f"campaign {wave.campaign_id}: wave {wave.name!r}"
    hint = "change its time and create the campaign again"
    if isinstance(trigger, Recurring):
        fire_at = trigger.next_at_or_after(now, zone)
        if fire_at is None:
            raise Conflict(f"{passed}: its last occurrence ({trigger.end}) has passed; {hint}")
    elif isinstance(trigger, Relative):
        # The scheduler makes occurrences for dates after covered_through as they fall due.
        wave.covered_through = trigger.last_date_due(now, zone)
        if trigger.until is not None and wave.covered_through >= trigger.until:
            raise Conflict(f"{passed}: every date up to its end ({trigger.until}) is past; {hint}")
        fire_at = now
    else:
        fire_at = localize(trigger, zone)
        if fire_at < now:
            local = fire_at.astimezone(zone)
            raise Conflict(
                f"{passed} was due at {local:%Y-%m-%d %H:%M} ({zone.key}), which has passed; {hint}"
            )
    wave.fire_at = fire_at
    wave.status = WaveStatus.SCHEDULED


def pause_campaign(session: Session, campaign_id: int, *, actor: str, now: datetime) -> Campaign:
    """Stop sending: the dispatcher claims messages of running campaigns only."""
    campaign = get_campaign(session, campaign_id, for_update=True)
    hint = ""
    if campaign.status == CampaignStatus.PAUSED:
        hint = " (it is already paused)"
    elif campaign.status in (CampaignStatus.DRAFT, CampaignStatus.APPROVED):
        hint = " (nothing is scheduled yet: it has not been launched)"
    _transition(
        session,
        campaign,
        allowed_from={CampaignStatus.SCHEDULED, CampaignStatus.RUNNING},
        to=CampaignStatus.PAUSED,
        action="pause",
        actor=actor,
        now=now,
        hint=hint,
    )
    return campaign


def resume_campaign(session: Session, campaign_id: int, *, actor: str, now: datetime) -> Campaign:
    """Back to running if a wave has fired (or is due), else to scheduled. Changes only the status.

    A wave that is due counts as fired: the scheduler may be firing it at this very moment, and it
    moves only scheduled campaigns to running, so a campaign resumed to `scheduled` while its wave
    expands would otherwise stay scheduled with its messages in the outbox.
    """
    campaign = get_campaign(session, campaign_id, for_update=True)
    hint = ""
    if campaign.status in (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING):
        hint = " (it is not paused, so there is nothing to resume; nothing was changed)"
    _refuse_unless(campaign, allowed_from={CampaignStatus.PAUSED}, action="resume", hint=hint)
    fired = session.scalar(
        select(
            exists().where(
                col(Wave.campaign_id) == campaign_id,
                or_(
                    col(Wave.status).in_(FIRED_WAVE_STATUSES),
                    and_(col(Wave.status) == WaveStatus.SCHEDULED, col(Wave.fire_at) <= now),
                ),
            )
        )
    )
    _transition(
        session,
        campaign,
        allowed_from={CampaignStatus.PAUSED},
        to=CampaignStatus.RUNNING if fired else CampaignStatus.SCHEDULED,
        action="resume",
        actor=actor,
        now=now,
    )
    return campaign


def cancel_campaign(
    session: Session, campaign_id: int, *, actor: str, now: datetime
) -> CancelResult:
    """End a campaign for good: planned messages are cancelled, waves not fired yet are closed.

    Messages a worker has claimed or is sending are left to it: the provider may already have them.
    """
    campaign = get_campaign(session, campaign_id, for_update=True)
    _refuse_unless(campaign, allowed_from=set(CANCELLABLE), action="cancel")
    # Waves first, so that a tick arriving now finds nothing of this campaign to fire.
    waves_closed = session.execute(
        update(Wave)
        .where(col(Wave.campaign_id) == campaign_id, col(Wave.status).in_(UNFIRED_WAVE_STATUSES))
        .values(status=WaveStatus.DONE)
    ).rowcount  # type: ignore[attr-defined]
    messages_cancelled = cancel_planned_messages(session, campaign_id, now=now)

    _transition(
        session,
        campaign,
        allowed_from=set(CANCELLABLE),
        to=CampaignStatus.CANCELLED,
        action="cancel",
        actor=actor,
        now=now,
        details={"messages_cancelled": messages_cancelled, "waves_closed": waves_closed},
    )
    return CancelResult(campaign, messages_cancelled, waves_closed)


def cancel_planned_messages(session: Session, campaign_id: int, *, now: datetime) -> int:
    """Every planned message of the campaign becomes cancelled, with one event each (set-based).

    Used by cancel, and by the scheduler for messages that came back to `planned` afterwards (an
    expired claim, a retry, a late expansion chunk), so that every message reaches a final status.
    """
    return end_planned_messages(
        session,
        wave_ids=select(col(Wave.id)).where(col(Wave.campaign_id) == campaign_id),
        status=MessageStatus.CANCELLED,
        detail="campaign cancelled",
        now=now,
    )
