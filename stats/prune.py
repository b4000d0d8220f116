"""Rollup keys left at zero, deleted once their wave is done.

Every message passes through keys it does not stay in (planned, claimed, sending: migration 0011's
triggers move its count from key to key), and the triggers leave those keys at n = 0 rather than
delete them (a delete and a re-insert for each batch would cost dispatch more than the updates).
On the bench (bench/stats.py) they more than double stats_rollup: 148,434 rows with something
in them, 170,700 at zero. When the tick finds a wave done (nothing of it planned, claimed,
sending or unknown), its keys at zero in the per-wave rollups are deleted, by the wave's range of
their primary keys. stats_rollup_area has no wave in its key: its keys at zero (bounded by the
communes, carriers, adapters and classes: 16,000 of its 55,000 rows on the bench) are deleted
then too, all of them (a scan of that small table); a wave still sending writes those it needs
again.

A key deleted here that a late change needs again (a reconciled message sent again) is inserted
again by the triggers' upsert: deleting a zero never changes an answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, delete, text
from sqlmodel import Session

from loa.models import StatsRollup, StatsRollupArea, StatsRollupWave

TABLES = (StatsRollup.__table__, StatsRollupWave.__table__)  # type: ignore[attr-defined]
AREA = StatsRollupArea.__table__  # type: ignore[attr-defined]


def prune_zero_keys(session: Session, wave_ids: Sequence[int]) -> int:
    """Delete the keys of `wave_ids` (done waves) whose messages and segments are all zero, in the
    session's transaction; the number deleted. On PostgreSQL a key some transaction has locked
    (its trigger is adding to it) is skipped rather than waited for: this never waits for a
    worker, so it cannot deadlock with one, and a skipped key stays until it is zero again."""
    if not wave_ids:
        return 0
    ids = sorted(set(wave_ids))
    deleted = 0
    postgresql = session.get_bind().dialect.name == "postgresql"
    for table in (*TABLES, AREA):
        of_waves = table is not AREA
        if postgresql:
            statement = text(
                f"DELETE FROM {table.name} WHERE ctid = ANY(ARRAY("
                f"SELECT ctid FROM {table.name} WHERE n = 0 AND segments = 0 "
                f"{'AND wave_id = ANY(:ids) ' if of_waves else ''}FOR UPDATE SKIP LOCKED)) "
                "AND n = 0 AND segments = 0"
            )
            result = session.execute(statement, {"ids": ids} if of_waves else {})
        else:
            zero = and_(table.c.n == 0, table.c.segments == 0)
            if of_waves:
                zero = and_(zero, table.c.wave_id.in_(ids))
            result = session.execute(delete(table).where(zero))
        deleted += int(result.rowcount)  # type: ignore[attr-defined]
    return deleted
