"""Plan before you send: what each wave of a campaign would do, computed from the data as it is
now, without writing anything.

Per wave: the recipients targeted, those left out and why (opted out, on the do-not-contact list,
number marked invalid, suppressed by hand, advertising without recorded consent, already messaged
by this wave), those who will wait
for their class's frequency cap, the template variables some recipients lack, the SMS segments
and what they cost, and when the first and the last message would leave at the channel's rate
inside the wave's send window. A recurring wave is planned over its occurrences still to come; a
relative wave over the recipients whose date's moment is still ahead.

Segments come from rendering the template for a spread sample of the audience (all of it when it
is small), because they depend on each recipient's name and attributes. Cost is per carrier: the
recipients to send to are counted by carrier (as estimated at import) and each count priced by
scheduler/pricing.py.

A wave the plan refuses (`refusals`) may not be approved or launched (`require_sendable`): a
template variable some recipient to send to lacks (counted over the whole audience in SQL, with the
first recipients named), a template that does not parse or fails for sampled recipients, a text
longer than one SMS may be, a channel that is unknown or not configured, and an advert that breaks
Decree 91/2020 (templates/content_rules.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy import ColumnElement, and_, exists, func, not_, or_, select
from sqlmodel import Session, col

from audience.resolve import audience_condition, lacks_attribute
from audience.segments import mask_phone, resolve_audience
from broadcast.plan import BroadcastPlan, plan_broadcast
from channels.registry import check_channel, primary_sms_adapter
from loa.errors import InvalidInput, LoaError
from loa.models import (
    Consent,
    OutboxMessage,
    Recipient,
    RecipientDate,
    Suppression,
    Wave,
    WaveKind,
    WaveStatus,
)
from loa.settings import Settings
from scheduler.caps import COUNTED
from scheduler.gate import wave_window
from scheduler.lifecycle import get_campaign, list_waves, require_date_attribute
from scheduler.policy import cap_for, needs_consent
from scheduler.pricing import segment_price
from scheduler.triggers import Recurring, Relative, localize, trigger_of
from scheduler.windows import SendWindow, next_open, window_closes
from templates.content_rules import advert_problems, length_problem
from templates.encoding import count_sms
from templates.render import (
    TemplateProblem,
    VariableMissing,
    check_template,
    render,
    template_variables,
)

# Suppression reasons as the plan reports them.
_REASONS = {
    "opt_out": "opted_out",
    "do_not_contact": "do_not_contact",
    "invalid": "invalid_number",
    "manual": "suppressed_manual",
}
# Variables every recipient has (dispatch puts them in the context).
_ALWAYS_THERE = frozenset({"name", "phone"})


class ContentRefused(InvalidInput):
    """A campaign whose plan refuses a wave: the message names each wave and each reason."""

    code = "content_refused"


class Excluded(BaseModel):
    """Recipients of the audience who will not get this wave's message, by reason."""

    opted_out: int = 0
    do_not_contact: int = 0
    invalid_number: int = 0
    suppressed_manual: int = 0
    no_consent: int = 0  # advertising (qc) to someone without recorded consent, not suppressed
    duplicate: int = 0  # already have this wave's message (a wave that has fired)


class RecipientRef(BaseModel):
    id: int
    phone: str  # masked, as in a segment's sample (audience/segments.py: mask_phone)


class MissingVariable(BaseModel):
    """A template variable that recipients to send to lack: how many, and the first of them."""

    variable: str
    count: int
    recipients: list[RecipientRef]  # the first LOA_PLAN_NAME_MISSING by id


class CarrierCost(BaseModel):
    carrier: str  # as estimated from the number's prefix at import; "unknown" when none
    messages: int
    segments: int  # the sample's mean segments per message, times messages
    price_per_segment: float | None
    cost: float | None


class Segments(BaseModel):
    encoding: str  # GSM-7, UCS-2, or "mixed" when recipients' texts differ
    per_message_min: int
    per_message_max: int
    per_message_mean: float
    characters_max: int  # the longest sampled text, in characters
    total: int  # over every message to send; estimated from the sample unless `exact`
    sampled: int  # recipients whose text was rendered
    exact: bool


class WavePlan(BaseModel):
    wave_id: int
    name: str
    channel: str
    message_class: str
    kind: str
    occurrences: int  # still to come (1 for an `at` wave not fired yet)
    targeted: int  # in the audience, over all occurrences still to come
    excluded: Excluded
    capped: int  # will wait for their class's frequency cap (delayed, not dropped)
    to_send: int  # messages that will go out, over all occurrences still to come
    missing_variables: dict[str, int]  # template variable -> recipients to send to who lack it
    missing: list[MissingVariable]  # the same, with the first recipients named
    segments: Segments | None
    price_per_segment: float | None  # when every carrier pays the same
    cost: float | None
    cost_by_carrier: list[CarrierCost]
    first_send_at: datetime | None  # UTC
    last_send_at: datetime | None  # UTC, at the channel's rate
    refusals: list[str]  # why the wave may not be approved or launched; empty when it may
    notes: list[str]
    # A loudspeaker wave: its slots, communes and overflow (broadcast/plan.py); None for SMS.
    broadcast: BroadcastPlan | None = None


class CampaignPlan(BaseModel):
    campaign_id: int
    name: str
    status: str
    timezone: str
    planned_at: datetime
    currency: str
    waves: list[WavePlan]
    to_send: int
    segments: int
    cost: float | None
    refused: bool  # some wave has refusals: the campaign may not be approved or launched


def plan_campaign(
    session: Session, campaign_id: int, *, now: datetime, settings: Settings
) -> CampaignPlan:
    """The plan of every wave of the campaign (a series counts its occurrences together)."""
    campaign = get_campaign(session, campaign_id)
    zone = ZoneInfo(campaign.timezone)
    channels = ChannelCheck(settings)
    waves = [
        _plan_wave(session, wave, zone, now=now, settings=settings, channels=channels)
        for wave in list_waves(session, campaign_id)
        if wave.parent_id is None
    ]
    costs = [w.cost for w in waves if w.to_send and w.broadcast is None]
    assert campaign.id is not None
    return CampaignPlan(
        campaign_id=campaign.id,
        name=campaign.name,
        status=campaign.status,
        timezone=zone.key,
        planned_at=now,
        currency=settings.currency,
        waves=waves,
        to_send=sum(w.to_send for w in waves),
        segments=sum(w.segments.total for w in waves if w.segments),
        cost=None if None in costs else sum(c or 0 for c in costs),
        refused=any(w.refusals for w in waves),
    )


def require_sendable(
    session: Session, campaign_id: int, *, action: str, now: datetime, settings: Settings
) -> None:
    """Refuse `action` (approve, launch) while the plan refuses a wave of the campaign; the
    error names every such wave and every reason."""
    plan = plan_campaign(session, campaign_id, now=now, settings=settings)
    if not plan.refused:
        return
    reasons = "; ".join(
        f"wave {w.wave_id} ({w.name!r}): " + "; ".join(w.refusals) for w in plan.waves if w.refusals
    )
    raise ContentRefused(
        f"campaign {campaign_id} cannot be {action}: {reasons} "
        f"(fix the spec or the data, then see: loa campaign plan {campaign_id})"
    )


class ChannelCheck:
    """Whether each channel a wave names can be sent through with these settings: the registry
    checks its adapter's configuration (an unknown one, one not configured) without building
    it, once per plan."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._seen: dict[str, str | None] = {}

    def problem(self, channel: str) -> str | None:
        if channel not in self._seen:
            try:
                check_channel(channel, self._settings)
                self._seen[channel] = None
            except LoaError as exc:
                self._seen[channel] = f"channel {channel!r} cannot send: {exc.message}"
        return self._seen[channel]


@dataclass(frozen=True)
class _Moments:
    """When a wave's messages fall due: each occurrence still to come. `each_targets_all`: every
    occurrence goes to the whole audience (at, recurring); else each recipient has their own
    occurrence (relative), and `last_count` is how many the last one has."""

    times: list[datetime]
    each_targets_all: bool
    last_count: int = 0


def _moments(
    session: Session,
    wave: Wave,
    zone: ZoneInfo,
    audience: ColumnElement[bool],
    *,
    now: datetime,
    notes: list[str],
) -> tuple[ColumnElement[bool], _Moments]:
    """The audience condition of one occurrence (for a relative wave: everyone whose moment is
    still ahead) and the moments still to come."""
    trigger = trigger_of(wave.trigger)
    if isinstance(trigger, Relative):
        require_date_attribute(session, trigger.attribute, f"wave {wave.name!r}")
        after = trigger.last_date_due(now, zone)
        if wave.covered_through is not None:
            after = max(after, wave.covered_through)
        dated = [
            col(RecipientDate.attribute) == trigger.attribute,
            col(RecipientDate.value) > after,
        ]
        if trigger.until is not None:
            dated.append(col(RecipientDate.value) <= trigger.until)
        per_date = session.execute(
            select(col(RecipientDate.value), func.count())
            .join(Recipient, col(Recipient.id) == col(RecipientDate.recipient_id))
            .where(*dated, audience)
            .group_by(col(RecipientDate.value))
            .order_by(col(RecipientDate.value))
        ).all()
        condition = and_(
            audience,
            exists(select(1).where(col(RecipientDate.recipient_id) == col(Recipient.id), *dated)),
        )
        times = [trigger.fire_time(value, zone) for value, _ in per_date]
        return condition, _Moments(times, False, per_date[-1][1] if per_date else 0)
    if isinstance(trigger, Recurring):
        times = []
        start = max(now, wave.fire_at) if wave.fire_at else now
        while (fire := trigger.next_at_or_after(start, zone)) is not None:
            times.append(fire)
            start = fire + timedelta(microseconds=1)
        return audience, _Moments(times, True)
    fire = wave.fire_at or localize(trigger, zone)
    if wave.status == WaveStatus.DONE:
        return audience, _Moments([], True)
    if fire < now and wave.expanded_at is None:
        notes.append("its time has passed: launching it now is refused")
    return audience, _Moments([max(fire, now)], True)


def _plan_wave(
    session: Session,
    wave: Wave,
    zone: ZoneInfo,
    *,
    now: datetime,
    settings: Settings,
    channels: ChannelCheck,
) -> WavePlan:
    assert wave.id is not None
    if wave.kind == WaveKind.BROADCAST:
        return _plan_broadcast_wave(session, wave, zone, now=now, settings=settings)
    notes: list[str] = []
    refusals = static_refusals(wave, settings, channels)
    if wave.audience.get("segment") and wave.kind != WaveKind.ONCE:
        notes.append(
            f"segment {wave.audience['segment']!r} is counted as of today; each occurrence "
            "evaluates it (and any 'within N days') on its own date"
        )
    condition = wave_audience(session, wave, zone, now=now)
    audience, moments = _moments(session, wave, zone, condition, now=now, notes=notes)
    occurrences = len(moments.times)
    factor = occurrences if moments.each_targets_all else 1
    in_audience = _count(session, audience)
    excluded = _excluded(session, wave, audience, settings)
    left_out = sum(excluded.model_dump().values())
    targeted = in_audience * factor
    to_send = (in_audience - left_out) * factor if occurrences else 0
    first_due = moments.times[0] if moments.times else now
    capped = _capped(session, wave, audience, first_due, settings)
    if capped:
        notes.append(
            f"{capped} recipient(s) already had their cap of {wave.message_class} messages "
            "in its period before the first send: theirs wait, they are not dropped"
        )
    template_ok = not refusals or wave.body is None or _parses(wave.body)
    segments = (
        _segments(session, wave, audience, in_audience, to_send, settings, notes, refusals)
        if template_ok
        else None
    )
    missing = _missing_variables(session, wave, audience, settings) if template_ok else []
    for m in missing:
        named = ", ".join(f"{r.phone} (id {r.id})" for r in m.recipients)
        more = f" and {m.count - len(m.recipients)} more" if m.count > len(m.recipients) else ""
        refusals.append(
            f"template variable {m.variable!r} is missing for {m.count} recipient(s) to send to: "
            f"{named}{more}"
        )
    by_carrier = _cost_by_carrier(session, wave, audience, factor, segments, settings)
    costs = [c.cost for c in by_carrier]
    cost = None if not by_carrier or None in costs else round(sum(c or 0 for c in costs), 2)
    prices = {c.price_per_segment for c in by_carrier}
    price = prices.pop() if len(prices) == 1 else None
    if segments is not None and None in costs:
        unpriced = ", ".join(c.carrier for c in by_carrier if c.cost is None)
        notes.append(
            f"no price per segment set for {unpriced} (LOA_SMS_PRICES, "
            "LOA_SMS_PRICE_PER_SEGMENT): cost not estimated"
        )
    window = wave_window(wave, settings)
    first = last = None
    if to_send:
        first = next_open(moments.times[0], window, zone)
        last_count = to_send // factor if moments.each_targets_all else moments.last_count
        if not settings.sms_rate_per_second:
            notes.append(
                "no rate limit set (LOA_SMS_RATE_PER_SECOND): the last send time assumes the "
                "messages of an occurrence all leave at its first moment"
            )
        last = finish_time(
            moments.times[-1], last_count, settings.sms_rate_per_second, window, zone
        )
    return WavePlan(
        wave_id=wave.id,
        name=wave.name,
        channel=wave.channel,
        message_class=wave.message_class,
        kind=wave.kind,
        occurrences=occurrences,
        targeted=targeted,
        excluded=_scaled(excluded, factor),
        capped=capped,
        to_send=to_send,
        missing_variables={m.variable: m.count for m in missing},
        missing=missing,
        segments=segments,
        price_per_segment=price,
        cost=cost,
        cost_by_carrier=by_carrier,
        first_send_at=first,
        last_send_at=last,
        refusals=refusals,
        notes=notes,
    )


def _plan_broadcast_wave(
    session: Session, wave: Wave, zone: ZoneInfo, *, now: datetime, settings: Settings
) -> WavePlan:
    """A loudspeaker wave in the plan's shape: occurrences are its slots, targeted its
    (slot, commune) pairs, to_send those that fit; the overflow is in `broadcast` and a note."""
    assert wave.id is not None
    broadcast, refusals = plan_broadcast(session, wave, zone, now=now, settings=settings)
    notes = []
    if broadcast.overflow:
        first = broadcast.overflow_slots[0]
        notes.append(
            f"{broadcast.overflow} (slot, commune) pair(s) do not fit their "
            f"{settings.broadcast_slot_minutes}-minute slot (LOA_BROADCAST_SLOT_MINUTES) and "
            f"will not play, e.g. {first.date} {first.slot} in {', '.join(first.communes[:5])}"
        )
    return WavePlan(
        wave_id=wave.id,
        name=wave.name,
        channel=wave.channel,
        message_class=wave.message_class,
        kind=wave.kind,
        occurrences=broadcast.slots,
        targeted=broadcast.slots * broadcast.communes,
        excluded=Excluded(),
        capped=0,
        to_send=broadcast.to_play,
        missing_variables={},
        missing=[],
        segments=None,
        price_per_segment=None,
        cost=None,
        cost_by_carrier=[],
        first_send_at=broadcast.first_at,
        last_send_at=broadcast.last_until,
        refusals=refusals,
        notes=notes,
        broadcast=broadcast,
    )


def _parses(body: str) -> bool:
    try:
        check_template(body)
    except TemplateProblem:
        return False
    return True


def static_refusals(wave: Wave, settings: Settings, channels: ChannelCheck) -> list[str]:
    """What refuses the wave whoever its recipients are: its channel, its template's syntax, the
    content rules of its class."""
    refusals = []
    if problem := channels.problem(wave.channel):
        refusals.append(problem)
    if wave.body is not None:
        try:
            check_template(wave.body)
        except TemplateProblem as exc:
            refusals.append(exc.message)
        refusals.extend(
            advert_problems(
                wave.body,
                message_class=wave.message_class,
                brandname=(wave.options or {}).get("brandname"),
                settings=settings,
            )
        )
    return refusals


def _as_of(wave: Wave, zone: ZoneInfo, *, now: datetime) -> date:
    """The local date a segment is evaluated at when the wave expands: the date of its time (for
    an `at` wave not yet launched, the time in its trigger); today for a series."""
    if wave.kind != WaveKind.ONCE:  # each occurrence has its own date: counted as of today
        return now.astimezone(zone).date()
    if wave.fire_at is not None:
        moment = wave.fire_at
    else:
        trigger = trigger_of(wave.trigger)
        moment = localize(trigger, zone) if isinstance(trigger, datetime) else now
    return max(now, moment).astimezone(zone).date()


def _count(session: Session, condition: ColumnElement[bool]) -> int:
    return session.scalar(select(func.count()).select_from(Recipient).where(condition)) or 0


def _relative_audience(
    session: Session,
    wave: Wave,
    trigger: Relative,
    zone: ZoneInfo,
    audience: ColumnElement[bool],
    *,
    now: datetime,
) -> tuple[ColumnElement[bool], list[datetime]]:
    """Recipients whose date's moment is still ahead (after now, and after what the wave has
    covered already), with the moment of each."""
    after = trigger.last_date_due(now, zone)
    if wave.covered_through is not None:
        after = max(after, wave.covered_through)
    dated = [
        col(RecipientDate.recipient_id) == col(Recipient.id),
        col(RecipientDate.attribute) == trigger.attribute,
        col(RecipientDate.value) > after,
    ]
    if trigger.until is not None:
        dated.append(col(RecipientDate.value) <= trigger.until)
    condition = and_(audience, exists(select(1).where(*dated)))
    per_date = session.execute(
        select(col(RecipientDate.value), func.count())
        .join(Recipient, col(Recipient.id) == col(RecipientDate.recipient_id))
        .where(*dated[1:], audience)
        .group_by(col(RecipientDate.value))
        .order_by(col(RecipientDate.value))
    ).all()
    fires = [trigger.fire_time(value, zone) for value, n in per_date for _ in range(n)]
    return condition, fires


def _blocked(wave: Wave, settings: Settings) -> ColumnElement[bool]:
    """Recipients this wave's messages do not go to: suppressed, or (advertising, with consent
    required) without recorded consent."""
    if not needs_consent(wave.message_class, settings):
        return _suppressed()
    return or_(_suppressed(), _unconsented())


def _suppressed() -> ColumnElement[bool]:
    return exists(select(1).where(col(Suppression.phone) == col(Recipient.phone)))


def _unconsented() -> ColumnElement[bool]:
    return not_(exists(select(1).where(col(Consent.phone) == col(Recipient.phone))))


def _excluded(
    session: Session, wave: Wave, audience: ColumnElement[bool], settings: Settings
) -> Excluded:
    """For one occurrence: suppressed recipients by reason, those left out for lack of consent
    (counted once: a suppressed person is counted under the suppression's reason), and those
    this wave already has."""
    excluded = Excluded()
    for reason, n in session.execute(
        select(col(Suppression.reason), func.count())
        .join(Recipient, col(Recipient.phone) == col(Suppression.phone))
        .where(audience)
        .group_by(col(Suppression.reason))
    ):
        field = _REASONS.get(reason, "suppressed_manual")
        setattr(excluded, field, getattr(excluded, field) + n)
    if needs_consent(wave.message_class, settings):
        excluded.no_consent = _count(session, and_(audience, not_(_suppressed()), _unconsented()))
    if wave.expanded_at is not None:
        blocked = _blocked(wave, settings)
        excluded.duplicate = _count(session, and_(audience, not_(blocked), _in_outbox(wave)))
    return excluded


def _in_outbox(wave: Wave) -> ColumnElement[bool]:
    """Recipients who already have this wave's message."""
    return exists(
        select(1).where(
            col(OutboxMessage.recipient_id) == col(Recipient.id),
            col(OutboxMessage.wave_id) == wave.id,
        )
    )


def _scaled(excluded: Excluded, factor: int) -> Excluded:
    return Excluded(**{k: v * factor for k, v in excluded.model_dump().items()})


def _capped(
    session: Session,
    wave: Wave,
    audience: ColumnElement[bool],
    first_send: datetime,
    settings: Settings,
) -> int:
    """Recipients who already have as many messages of the class in the cap's period before the
    first send as the cap allows (from the messages sent so far)."""
    cap = cap_for(wave.message_class, settings)
    if cap is None:
        return 0
    counted_at = func.coalesce(col(OutboxMessage.sent_at), col(OutboxMessage.updated_at))
    heavy = (
        select(col(OutboxMessage.recipient_id))
        .join(Wave, col(Wave.id) == col(OutboxMessage.wave_id))
        .where(
            col(Wave.message_class) == wave.message_class,
            col(OutboxMessage.status).in_(COUNTED),
            counted_at > first_send - cap.period,
        )
        .group_by(col(OutboxMessage.recipient_id))
        .having(func.count() >= cap.count)
    )
    return _count(session, and_(audience, col(Recipient.id).in_(heavy)))


def _missing_variables(
    session: Session, wave: Wave, audience: ColumnElement[bool], settings: Settings
) -> list[MissingVariable]:
    """Recipients to send to (in the audience, not suppressed, with consent where needed) without
    an attribute the template reads: with them the wave would fail for those people at send
    time. Two set-based statements per variable over the whole audience (a count, and the first
    recipients by id), never a rendering per recipient. A variable read only inside an
    `{% if %}` counts as read: the check cannot tell which branch a recipient takes."""
    if not wave.body:
        return []
    dialect = session.get_bind().dialect.name
    sendable = and_(audience, not_(_blocked(wave, settings)))
    missing = []
    for variable in sorted(template_variables(wave.body) - _ALWAYS_THERE):
        lacking = and_(sendable, lacks_attribute(variable, dialect))
        count = _count(session, lacking)
        if not count:
            continue
        first = session.execute(
            select(col(Recipient.id), col(Recipient.phone))
            .where(lacking)
            .order_by(col(Recipient.id))
            .limit(settings.plan_name_missing)
        ).all()
        missing.append(
            MissingVariable(
                variable=variable,
                count=count,
                recipients=[RecipientRef(id=i, phone=mask_phone(p)) for i, p in first],
            )
        )
    return missing


def _cost_by_carrier(
    session: Session,
    wave: Wave,
    audience: ColumnElement[bool],
    factor: int,
    segments: Segments | None,
    settings: Settings,
) -> list[CarrierCost]:
    """Messages to send by the recipient's carrier, priced per segment for that carrier (the
    sample's mean segments per message: texts differ by name, not by carrier)."""
    if segments is None:
        return []
    sendable = and_(audience, not_(_blocked(wave, settings)))
    if wave.expanded_at is not None:
        sendable = and_(sendable, not_(_in_outbox(wave)))
    rows = session.execute(
        select(col(Recipient.carrier), func.count())
        .where(sendable)
        .group_by(col(Recipient.carrier))
    ).all()
    out = []
    # By name, no carrier last (the databases order NULL differently).
    for carrier, n in sorted(rows, key=lambda row: (row[0] is None, row[0] or "")):
        messages = n * factor
        count = round(segments.per_message_mean * messages)
        price = segment_price(
            settings,
            adapter=primary_sms_adapter(settings),
            carrier=carrier,
            message_class=wave.message_class,
        )
        out.append(
            CarrierCost(
                carrier=carrier or "unknown",
                messages=messages,
                segments=count,
                price_per_segment=price,
                cost=round(count * price, 2) if price is not None else None,
            )
        )
    return out


@dataclass(frozen=True)
class SampledRecipient:
    id: int
    name: str | None
    phone: str  # E.164
    carrier: str | None
    attributes: dict[str, Any]


def wave_audience(
    session: Session, wave: Wave, zone: ZoneInfo, *, now: datetime
) -> ColumnElement[bool]:
    """The wave's audience as a condition on recipients, its segment read as of the wave's date."""
    resolved = resolve_audience(session, wave.audience, as_of=_as_of(wave, zone, now=now))
    return audience_condition(resolved, dialect=session.get_bind().dialect.name)


def recipient_context(recipient: SampledRecipient) -> dict[str, Any]:
    """What a template sees for a recipient, as dispatch gives it."""
    return {**recipient.attributes, "name": recipient.name or "", "phone": recipient.phone}


def sample_recipients(
    session: Session,
    wave: Wave,
    audience: ColumnElement[bool],
    *,
    settings: Settings,
    size: int,
    spread: bool = True,
) -> list[SampledRecipient]:
    """Up to `size` recipients the wave would send to, spread over the id range (every k-th),
    not the first ones: people imported together tend to look alike. `spread=False`: the first
    ones by id."""
    sendable = and_(audience, not_(_blocked(wave, settings)))
    step = max(1, _count(session, sendable) // size) if spread and size else 1
    every_kth = [col(Recipient.id) % step == 0] if step > 1 else []
    rows = session.execute(
        select(
            col(Recipient.id),
            col(Recipient.name),
            col(Recipient.phone),
            col(Recipient.carrier),
            col(Recipient.attributes),
        )
        .where(sendable, *every_kth)
        .order_by(col(Recipient.id))
        .limit(size)
    ).all()
    return [SampledRecipient(i, n, p, c, a or {}) for i, n, p, c, a in rows]


def _segments(
    session: Session,
    wave: Wave,
    audience: ColumnElement[bool],
    audience_size: int,
    to_send: int,
    settings: Settings,
    notes: list[str],
    refusals: list[str],
) -> Segments | None:
    if wave.channel != "sms" or not wave.body or not audience_size:
        return None
    rows = sample_recipients(
        session, wave, audience, settings=settings, size=settings.plan_sample_size
    )
    step = max(1, audience_size // settings.plan_sample_size)
    unaccent = bool((wave.options or {}).get("unaccent"))
    counts = []
    failures: dict[tuple[str, bool], int] = {}
    for row in rows:
        context = recipient_context(row)
        try:
            counts.append(count_sms(render(wave.body, context, unaccent=unaccent)))
        except TemplateProblem as exc:
            key = (exc.message, isinstance(exc, VariableMissing))
            failures[key] = failures.get(key, 0) + 1
    for (message, missing), n in failures.items():
        line = f"the template fails for {n} of {len(rows)} sampled recipient(s): {message}"
        # A missing variable is refused from the count over the whole audience instead.
        (notes if missing else refusals).append(line)
    if not counts:
        return None
    longest = max(c.characters for c in counts)
    too_long = sum(1 for c in counts if c.characters > settings.sms_max_characters)
    if problem := length_problem(longest, how_many=too_long, of=len(rows), settings=settings):
        refusals.append(problem)
    per_message = [c.segments for c in counts]
    mean = sum(per_message) / len(per_message)
    encodings = {c.encoding for c in counts}
    exact = step == 1 and audience_size <= settings.plan_sample_size and not failures
    return Segments(
        encoding=encodings.pop() if len(encodings) == 1 else "mixed",
        per_message_min=min(per_message),
        per_message_max=max(per_message),
        per_message_mean=round(mean, 3),
        characters_max=longest,
        total=round(mean * to_send),
        sampled=len(rows),
        exact=exact,
    )


def finish_time(
    start: datetime, count: int, rate: float, window: SendWindow | None, zone: ZoneInfo
) -> datetime:
    """When the last of `count` messages leaves, sending `rate` a second from `start` while the
    window is open (and waiting for its next opening when it closes). No rate: all at once, at
    the first moment the window allows."""
    at, left = next_open(start, window, zone), float(count)
    if not rate or count <= 0:
        return at
    while True:
        closes = window_closes(at, window, zone)
        if closes is None or (closes - at).total_seconds() * rate >= left:
            return at + timedelta(seconds=left / rate)
        left -= (closes - at).total_seconds() * rate
        at = next_open(closes, window, zone)
