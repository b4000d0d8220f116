"""Occurrences of recurring and relative waves.

A series wave never sends itself. When an occurrence falls due, the scheduler makes a child wave
for it (kind `once`, `parent_id` set, `occurrence` naming it) and fires that like any `at` wave.
The UNIQUE (parent_id, occurrence) key makes this idempotent, and the outbox key
(wave, recipient, channel) then means "at most once per occurrence":

- a recurring wave has one child per local date-time of its schedule; missed occurrences (the
  service was down) are still made, and expire when fired too late rather than going out late;
- a relative wave has one child per date of its attribute: everyone whose card expires on
  2026-05-15 is in that date's child, fired at (2026-05-15 - 7 days) 09:00. A recipient imported
  or changed later joins the child of their date when it fires, or, if it has fired less than
  LOA_LATE_AFTER_MINUTES ago, by a re-expansion; one whose date changes falls into the new
  date's child (and gets that reminder), and their message for the old date is cancelled at
  claim time (scheduler/dispatch.py).

Each occurrence's messages expire (`wave.expires_at`) when the next occurrence is due, and at the
latest LOA_OCCURRENCE_VALID_HOURS after their own time: a morning broadcast's SMS must not go out
in the evening, nor yesterday's reminder after a pause today.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, exists, select
from sqlmodel import Session, col

from loa.db import session_scope, upsert_insert
from loa.models import (
    Campaign,
    CampaignStatus,
    Recipient,
    RecipientDate,
    Wave,
    WaveKind,
    WaveStatus,
)
from loa.settings import Settings
from scheduler.triggers import Recurring, Relative, occurrence_key, trigger_of

log = logging.getLogger(__name__)

LIVE_CAMPAIGNS = (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.PAUSED)
WAVE = Wave.__table__  # type: ignore[attr-defined]


@dataclass
class SeriesReport:
    made: dict[int, list[str]] = field(default_factory=dict)  # parent id -> occurrences made
    reopened: list[int] = field(default_factory=list)  # occurrences re-expanded for newcomers
    finished: list[int] = field(default_factory=list)  # series with no occurrence left


def make_due_occurrences(engine: Engine, *, now: datetime, settings: Settings) -> SeriesReport:
    """Make the child waves of every series whose next occurrence is due."""
    report = SeriesReport()
    with session_scope(engine) as session:
        parents = session.execute(
            select(Wave, col(Campaign.timezone))
            .join(Campaign, col(Campaign.id) == col(Wave.campaign_id))
            .where(
                col(Wave.kind).in_([WaveKind.RECURRING, WaveKind.RELATIVE]),
                col(Wave.status) == WaveStatus.SCHEDULED,
                col(Wave.fire_at) <= now,
                col(Campaign.status).in_(LIVE_CAMPAIGNS),
            )
            .order_by(col(Wave.id))
        ).all()
        for parent, timezone in parents:
            trigger = trigger_of(parent.trigger)
            zone = ZoneInfo(timezone)
            if isinstance(trigger, Recurring):
                _recurring(
                    session, parent, trigger, zone, now=now, settings=settings, report=report
                )
            elif isinstance(trigger, Relative):
                _relative(session, parent, trigger, zone, now=now, settings=settings, report=report)
    for parent_id, made in report.made.items():
        log.info("wave %d: occurrence(s) %s made", parent_id, ", ".join(made))
    return report


def _child(
    parent: Wave,
    *,
    occurrence: str,
    local: datetime,
    fire_at: datetime,
    expires_at: datetime,
    audience: dict[str, Any],
) -> dict[str, Any]:
    return {
        "campaign_id": parent.campaign_id,
        "position": parent.position,
        "kind": WaveKind.ONCE.value,
        "parent_id": parent.id,
        "occurrence": occurrence,
        "name": parent.name,
        "channel": parent.channel,
        "message_class": parent.message_class,
        "trigger": {"at": local.isoformat(sep=" ", timespec="minutes")},
        "audience": audience,
        "template_id": parent.template_id,
        "body": parent.body,
        "options": parent.options,
        "status": WaveStatus.SCHEDULED.value,
        "fire_at": fire_at,
        "expires_at": expires_at,
        "expanded_count": 0,
    }


def _insert_children(session: Session, rows: list[dict[str, Any]]) -> list[str]:
    """Insert occurrences not made yet (another scheduler, or an earlier tick, may have made
    some); return the ones this call made."""
    if not rows:
        return []
    made = session.scalars(
        upsert_insert(session.connection(), WAVE)
        .on_conflict_do_nothing(index_elements=["parent_id", "occurrence"])
        .returning(WAVE.c.occurrence),
        rows,
    ).all()
    return [m for m in made if m is not None]


def _recurring(
    session: Session,
    parent: Wave,
    trigger: Recurring,
    zone: ZoneInfo,
    *,
    now: datetime,
    settings: Settings,
    report: SeriesReport,
) -> None:
    valid = timedelta(hours=settings.occurrence_valid_hours)
    rows = []
    fire: datetime | None = parent.fire_at
    while fire is not None and fire <= now:
        following = trigger.next_at_or_after(fire + timedelta(microseconds=1), zone)
        local = fire.astimezone(zone).replace(tzinfo=None)
        rows.append(
            _child(
                parent,
                occurrence=occurrence_key(local),
                local=local,
                fire_at=fire,
                expires_at=min(following, fire + valid) if following else fire + valid,
                audience=parent.audience,
            )
        )
        fire = following
    if made := _insert_children(session, rows):
        report.made[_id(parent)] = made
    if fire is None:
        parent.status = WaveStatus.DONE
        report.finished.append(_id(parent))
    else:
        parent.fire_at = fire


def _relative(
    session: Session,
    parent: Wave,
    trigger: Relative,
    zone: ZoneInfo,
    *,
    now: datetime,
    settings: Settings,
    report: SeriesReport,
) -> None:
    valid = timedelta(hours=settings.occurrence_valid_hours)
    due_through = trigger.last_date_due(now, zone)
    if trigger.until is not None:
        due_through = min(due_through, trigger.until)
    # Dates whose moment passed less than the lateness ago may still gain recipients (an import
    # this morning); later ones are closed.
    open_after = trigger.last_date_due(now - timedelta(minutes=settings.late_after_minutes), zone)
    covered = parent.covered_through or due_through
    dates = session.scalars(
        select(col(RecipientDate.value))
        .where(
            col(RecipientDate.attribute) == trigger.attribute,
            col(RecipientDate.value) > min(covered, open_after),
            col(RecipientDate.value) <= due_through,
        )
        .distinct()
        .order_by(col(RecipientDate.value))
    ).all()
    rows = []
    for value in dates:
        fire = trigger.fire_time(value, zone)
        rows.append(
            _child(
                parent,
                occurrence=value.isoformat(),
                local=fire.astimezone(zone).replace(tzinfo=None),
                fire_at=fire,
                expires_at=fire + valid,
                audience={
                    **parent.audience,
                    "date": {"attribute": trigger.attribute, "on": value.isoformat()},
                },
            )
        )
    if made := _insert_children(session, rows):
        report.made[_id(parent)] = made
    report.reopened += _reopen_for_newcomers(session, parent, trigger, after=open_after)
    parent.covered_through = max(covered, due_through)
    if trigger.until is not None and parent.covered_through >= trigger.until:
        parent.status = WaveStatus.DONE
        report.finished.append(_id(parent))


def _reopen_for_newcomers(
    session: Session, parent: Wave, trigger: Relative, *, after: date
) -> list[int]:
    """Occurrences fired within the lateness whose date gained or changed recipients since they
    were expanded go back to `expanding`; the tick then adds the newcomers (the outbox key keeps
    everyone already there from a second message)."""
    children = session.scalars(
        select(Wave).where(
            col(Wave.parent_id) == parent.id,
            col(Wave.occurrence) > after.isoformat(),
            col(Wave.status).in_([WaveStatus.EXPANDED, WaveStatus.DONE]),
        )
    ).all()
    reopened = []
    for child in children:
        assert child.occurrence is not None and child.expanded_at is not None
        changed = session.scalar(
            select(
                exists().where(
                    col(RecipientDate.attribute) == trigger.attribute,
                    col(RecipientDate.value) == date.fromisoformat(child.occurrence),
                    col(Recipient.id) == col(RecipientDate.recipient_id),
                    col(Recipient.updated_at) > child.expanded_at,
                )
            )
        )
        if changed:
            child.status = WaveStatus.EXPANDING
            reopened.append(_id(child))
    return reopened


def _id(wave: Wave) -> int:
    assert wave.id is not None
    return wave.id
