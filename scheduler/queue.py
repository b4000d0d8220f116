"""The due queue as operators watch it: per channel, how many messages are planned and due now in
running campaigns (what the workers have to claim), and since when the oldest has waited.

Asked on every /health and /metrics scrape, so each query is bounded and walks the dispatcher's
partial index ix_outbox_due (wave_id, due_at, id WHERE status = 'planned'): the count stops at
`limit` rows, and the oldest due time is the first entry of each active wave's range.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, literal, select, text
from sqlmodel import Session, col

from loa.models import PLANNED_ONLY, OutboxMessage, Wave
from loa.settings import Settings
from scheduler.gate import active_waves


@dataclass(frozen=True)
class ChannelQueue:
    due: int  # planned messages due now, counted up to the limit
    at_least: bool  # the count stopped at the limit: there are at least `due`
    oldest_due_at: datetime | None  # the due time of the message waiting longest

    def oldest_age_seconds(self, now: datetime) -> float:
        return max((now - self.oldest_due_at).total_seconds(), 0.0) if self.oldest_due_at else 0.0


def due_queue(
    session: Session, *, now: datetime, settings: Settings, limit: int
) -> dict[str, ChannelQueue]:
    """Per channel with active waves (a running campaign's expanding or expanded waves)."""
    wave_ids: dict[str, list[int]] = {}
    for wave in active_waves(session, settings):
        wave_ids.setdefault(wave.channel, []).append(wave.id)
    queues = {}
    for channel, ids in sorted(wave_ids.items()):
        # The predicate as the index's own text: with a bound value PostgreSQL could not prove
        # the partial index applies.
        due = (
            select(literal(1))
            .select_from(OutboxMessage)
            .where(
                col(OutboxMessage.wave_id).in_(ids),
                text(PLANNED_ONLY),
                col(OutboxMessage.due_at) <= now,
            )
            .limit(limit)
            .subquery()
        )
        count = session.scalar(select(func.count()).select_from(due)) or 0
        # Per wave, the head of its range in the index (ORDER BY ... LIMIT 1 is one descent);
        # then the earliest of those. The unqualified `status` is the outbox's: the innermost
        # query's table wins.
        head = (
            select(col(OutboxMessage.due_at))
            .where(
                col(OutboxMessage.wave_id) == col(Wave.id),
                text(PLANNED_ONLY),
                col(OutboxMessage.due_at) <= now,
            )
            .order_by(col(OutboxMessage.due_at))
            .limit(1)
            .correlate(Wave)
            .scalar_subquery()
        )
        oldest = session.scalar(select(func.min(head)).where(col(Wave.id).in_(ids)))
        queues[channel] = ChannelQueue(count, count >= limit, oldest)
    return queues
