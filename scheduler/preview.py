"""Preview and test send: what a wave's text looks like for a few of its recipients, with its
segments and cost, and the same text sent to a few staff numbers to see it on a phone.

Neither touches the wave's audience or outbox. A test send goes straight to the channel adapter
with message ids below zero (outbox ids are positive, so a channel's record of a test message is
never taken for a real one), and is written to the audit log: once before the adapter is called
(the numbers and the text) and once after (each number's outcome), so that a send whose result
is lost in a crash still left a trace.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy import Engine, select
from sqlmodel import Session, col

from audience.phones import normalize_phone
from audience.segments import mask_phone
from channels.base import Channel, OutgoingMessage
from channels.registry import primary_sms_adapter
from loa import audit
from loa.db import session_scope
from loa.errors import InvalidInput, NotFound
from loa.models import Suppression, Wave
from loa.settings import Settings
from scheduler.lifecycle import get_campaign, list_waves
from scheduler.plan import (
    ChannelCheck,
    RecipientRef,
    SampledRecipient,
    recipient_context,
    sample_recipients,
    static_refusals,
    wave_audience,
)
from scheduler.pricing import segment_price
from templates.content_rules import length_problem
from templates.encoding import count_sms
from templates.render import TemplateProblem, render


class PreviewMessage(BaseModel):
    recipient: RecipientRef | None  # None when rendered with given variables
    carrier: str | None
    text: str | None  # None when the template fails for this recipient (see `error`)
    error: str | None
    encoding: str | None
    segments: int | None
    characters: int | None
    price_per_segment: float | None
    cost: float | None


class WavePreview(BaseModel):
    wave_id: int
    name: str
    channel: str
    message_class: str
    brandname: str | None
    unaccent: bool
    currency: str
    messages: list[PreviewMessage]
    refusals: list[str]  # as the plan gives them for the content (see scheduler/plan.py)


class SendTestResult(BaseModel):
    to: str  # E.164
    outcome: str  # accepted | transient | permanent | ambiguous
    provider_id: str | None
    error_code: str | None
    detail: str | None


class SendTestReport(BaseModel):
    wave_id: int
    rendered_for: RecipientRef | None  # the sampled recipient whose data filled the template
    text: str
    encoding: str
    segments: int
    characters: int
    results: list[SendTestResult]
    refusals: list[str]  # the wave's content refusals: a test send is allowed, but is told


def _wave_of(session: Session, campaign_id: int, wave_id: int) -> Wave:
    get_campaign(session, campaign_id)
    wave = session.get(Wave, wave_id)
    if wave is None or wave.campaign_id != campaign_id:
        waves = ", ".join(
            f"{w.id} ({w.name!r})" for w in list_waves(session, campaign_id) if w.parent_id is None
        )
        raise NotFound(f"campaign {campaign_id} has no wave {wave_id} (its waves: {waves})")
    if wave.channel != "sms" or not wave.body:
        raise InvalidInput(f"wave {wave_id} ({wave.name!r}) is not an SMS wave: nothing to render")
    return wave


def _preview_message(wave: Wave, recipient: SampledRecipient, settings: Settings) -> PreviewMessage:
    assert wave.body is not None
    ref = RecipientRef(id=recipient.id, phone=mask_phone(recipient.phone))
    unaccent = bool((wave.options or {}).get("unaccent"))
    try:
        text = render(wave.body, recipient_context(recipient), unaccent=unaccent)
    except TemplateProblem as exc:
        return PreviewMessage(
            recipient=ref,
            carrier=recipient.carrier,
            text=None,
            error=exc.message,
            encoding=None,
            segments=None,
            characters=None,
            price_per_segment=None,
            cost=None,
        )
    counted = count_sms(text)
    price = segment_price(
        settings,
        adapter=primary_sms_adapter(settings),
        carrier=recipient.carrier,
        message_class=wave.message_class,
    )
    return PreviewMessage(
        recipient=ref,
        carrier=recipient.carrier,
        text=text,
        error=None,
        encoding=counted.encoding,
        segments=counted.segments,
        characters=counted.characters,
        price_per_segment=price,
        cost=round(counted.segments * price, 2) if price is not None else None,
    )


def preview_wave(
    session: Session,
    campaign_id: int,
    wave_id: int,
    *,
    sample: int,
    now: datetime,
    settings: Settings,
    channels: ChannelCheck | None = None,
) -> WavePreview:
    """The wave's text for up to `sample` of the recipients it would send to (spread over the
    audience, as the plan samples), each with its encoding, segments and cost. Writes nothing."""
    if sample < 1:
        raise InvalidInput(f"sample must be at least 1, not {sample}", field="sample")
    wave = _wave_of(session, campaign_id, wave_id)
    assert wave.id is not None
    zone = ZoneInfo(get_campaign(session, campaign_id).timezone)
    audience = wave_audience(session, wave, zone, now=now)
    recipients = sample_recipients(session, wave, audience, settings=settings, size=sample)
    messages = [_preview_message(wave, r, settings) for r in recipients]
    refusals = static_refusals(wave, settings, channels or ChannelCheck(settings))
    lengths = [m.characters for m in messages if m.characters is not None]
    too_long = sum(1 for n in lengths if n > settings.sms_max_characters)
    if lengths and (
        problem := length_problem(
            max(lengths), how_many=too_long, of=len(messages), settings=settings
        )
    ):
        refusals.append(problem)
    options = wave.options or {}
    return WavePreview(
        wave_id=wave.id,
        name=wave.name,
        channel=wave.channel,
        message_class=wave.message_class,
        brandname=options.get("brandname") or settings.sms_brandname or None,
        unaccent=bool(options.get("unaccent")),
        currency=settings.currency,
        messages=messages,
        refusals=refusals,
    )


def preview_campaign(
    session: Session, campaign_id: int, *, sample: int, now: datetime, settings: Settings
) -> list[WavePreview]:
    """Every SMS wave of the campaign (not the occurrences of a series: they share its text)."""
    channels = ChannelCheck(settings)
    return [
        preview_wave(
            session, campaign_id, w.id, sample=sample, now=now, settings=settings, channels=channels
        )
        for w in list_waves(session, campaign_id)
        if w.parent_id is None and w.channel == "sms" and w.body and w.id is not None
    ]


def _test_numbers(session: Session, to: list[str], settings: Settings) -> list[str]:
    """The numbers as E.164, each once; refused whole for a bad or suppressed one."""
    numbers: list[str] = []
    for raw in to:
        try:
            phone = normalize_phone(raw).e164
        except InvalidInput as exc:
            raise InvalidInput(f"test number {raw!r}: {exc.message}", field="to") from None
        if phone not in numbers:
            numbers.append(phone)
    if not numbers:
        raise InvalidInput("give at least one test number", field="to")
    if len(numbers) > settings.test_send_max_numbers:
        raise InvalidInput(
            f"{len(numbers)} test numbers; a test send goes to at most "
            f"{settings.test_send_max_numbers} (LOA_TEST_SEND_MAX_NUMBERS)",
            field="to",
        )
    suppressed = session.execute(
        select(col(Suppression.phone), col(Suppression.reason)).where(
            col(Suppression.phone).in_(numbers)
        )
    ).all()
    if suppressed:
        listed = ", ".join(f"{p} ({r})" for p, r in suppressed)
        raise InvalidInput(
            f"test number(s) on the suppression list, which no message may reach: {listed}",
            field="to",
        )
    return numbers


def send_test(
    engine: Engine,
    campaign_id: int,
    wave_id: int,
    *,
    to: list[str],
    variables: dict[str, Any] | None,
    actor: str,
    now: datetime,
    settings: Settings,
    channel_for: Callable[[str], Channel],
) -> SendTestReport:
    """Send the wave's text to test numbers through the wave's channel. The text is rendered
    with `variables` when given, else with the data of the first recipient the wave would send
    to. The wave's audience and outbox are not touched; the audit log has the send."""
    with session_scope(engine) as session:
        wave = _wave_of(session, campaign_id, wave_id)
        assert wave.id is not None and wave.body is not None
        numbers = _test_numbers(session, to, settings)
        rendered_for: RecipientRef | None = None
        if variables is None:
            zone = ZoneInfo(get_campaign(session, campaign_id).timezone)
            audience = wave_audience(session, wave, zone, now=now)
            found = sample_recipients(
                session, wave, audience, settings=settings, size=1, spread=False
            )
            if not found:
                raise InvalidInput(
                    f"wave {wave_id} ({wave.name!r}) has no recipient to take the template's "
                    "data from: give the variables instead (--var NAME=VALUE)",
                    field="variables",
                )
            context = recipient_context(found[0])
            rendered_for = RecipientRef(id=found[0].id, phone=mask_phone(found[0].phone))
        else:
            context = {"name": "", **variables}
        unaccent = bool((wave.options or {}).get("unaccent"))
        text = render(wave.body, context, unaccent=unaccent)
        counted = count_sms(text)
        refusals = static_refusals(wave, settings, ChannelCheck(settings))
        if problem := length_problem(counted.characters, how_many=1, of=1, settings=settings):
            # Refused: the provider would refuse it too (Twilio: error 21617).
            raise InvalidInput(f"wave {wave_id} ({wave.name!r}): {problem}")
        channel = channel_for(wave.channel)
        audit.record(
            session,
            actor=actor,
            action="wave.test_send",
            entity="wave",
            entity_id=wave.id,
            now=now,
            after={
                "to": numbers,
                "text": text,
                "rendered_for": rendered_for.id if rendered_for else "variables",
            },
        )
        # Committed before the adapter is called: a send must never go unrecorded.
    messages = [
        OutgoingMessage(message_id=-(i + 1), wave_id=wave_id, to=phone, body=text)
        for i, phone in enumerate(numbers)
    ]
    sent = {r.message_id: r for r in channel.send_batch(messages, now=now)}
    results = [
        SendTestResult(
            to=m.to,
            outcome=str(sent[m.message_id].outcome),
            provider_id=sent[m.message_id].provider_id,
            error_code=sent[m.message_id].error_code,
            detail=sent[m.message_id].detail,
        )
        if m.message_id in sent
        else SendTestResult(
            to=m.to, outcome="ambiguous", provider_id=None, error_code=None, detail="no result"
        )
        for m in messages
    ]
    with session_scope(engine) as session:
        audit.record(
            session,
            actor=actor,
            action="wave.test_send_result",
            entity="wave",
            entity_id=wave_id,
            now=now,
            after={"results": [r.model_dump() for r in results]},
        )
    return SendTestReport(
        wave_id=wave_id,
        rendered_for=rendered_for,
        text=text,
        encoding=counted.encoding,
        segments=counted.segments,
        characters=counted.characters,
        results=results,
        refusals=refusals,
    )
