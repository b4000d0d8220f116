"""Slot capacity: which items of a commune's slot play, and which do not fit.

A slot (a commune, a local date, a start time) lasts LOA_BROADCAST_SLOT_MINUTES. Its items are
taken in order of priority (emergency, priority, normal), then of launch (the earlier approved
campaign first), then of item id; each takes its place if it still fits (its duration times its
repeats), else it is overflow. Greedy rather than stopping at the first misfit: a short item
after a long one still uses air time the long one could not, and a higher priority is always
placed before a lower one is even looked at. Overflow is returned, for the plan and the
playlist to report: nothing is dropped silently.

Pure functions over plain records; the queries that feed them are in broadcast/playlist.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from loa.models import BroadcastPriority

PRIORITY_RANK = {
    BroadcastPriority.EMERGENCY.value: 0,
    BroadcastPriority.PRIORITY.value: 1,
    BroadcastPriority.NORMAL.value: 2,
}


@dataclass(frozen=True)
class SlotEntry:
    """One item in one commune's slot. `item_id` None: an item a plan imagines (not launched)."""

    item_id: int | None
    commune: str
    local_date: date
    slot: str
    priority: str
    ranked_at: datetime
    duration_ms: int
    repeats: int

    @property
    def airtime_ms(self) -> int:
        return self.duration_ms * self.repeats

    def order_key(self) -> tuple[int, datetime, int]:
        # An imagined item was launched after every real one: it ranks last in its priority.
        return (PRIORITY_RANK[self.priority], self.ranked_at, self.item_id or 2**62)


@dataclass(frozen=True)
class Placed:
    entry: SlotEntry
    offset_ms: int  # from the slot's start


@dataclass(frozen=True)
class Fitted:
    placed: list[Placed]  # in the order they play, slot by slot
    overflow: list[SlotEntry]


def fit_slots(entries: Iterable[SlotEntry], capacity_ms: int) -> Fitted:
    """Place every entry in its commune's slot, or report it as overflow."""
    by_slot: dict[tuple[str, date, str], list[SlotEntry]] = {}
    for entry in entries:
        by_slot.setdefault((entry.commune, entry.local_date, entry.slot), []).append(entry)
    placed: list[Placed] = []
    overflow: list[SlotEntry] = []
    for key in sorted(by_slot):
        used = 0
        for entry in sorted(by_slot[key], key=SlotEntry.order_key):
            if used + entry.airtime_ms <= capacity_ms:
                placed.append(Placed(entry, used))
                used += entry.airtime_ms
            else:
                overflow.append(entry)
    return Fitted(placed, overflow)
