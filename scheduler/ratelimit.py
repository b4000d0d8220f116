"""Rate limits shared by every worker: a token bucket per channel, kept in the database.

A loop takes tokens before it claims, in a short transaction of its own (the bucket's row is the
one point every loop of every process passes through), claims at most that many messages, and
gives back what it did not use. The bucket refills at `rate` tokens per second up to `burst`, so
no second ever sees more than `burst` messages leave, whatever the number of workers.
"""

from __future__ import annotations

import math
from datetime import datetime

from sqlalchemy import case, update
from sqlmodel import Session, col

from loa.db import upsert_insert
from loa.models import RateBucket


def take_tokens(
    session: Session, name: str, *, want: int, rate: float, burst: int, now: datetime
) -> int:
    """Up to `want` tokens from the bucket `name` (created full on first use); 0 when empty."""
    session.execute(
        upsert_insert(session.connection(), RateBucket.__table__)  # type: ignore[attr-defined]
        .values(name=name, tokens=float(burst), refilled_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    bucket = session.get(RateBucket, name, with_for_update=True, populate_existing=True)
    assert bucket is not None
    # A worker whose clock runs behind the last one's must not drain the bucket: no negative time.
    elapsed = max((now - bucket.refilled_at).total_seconds(), 0.0)
    tokens = min(float(burst), bucket.tokens + elapsed * rate)
    granted = min(want, math.floor(tokens))
    bucket.tokens = tokens - granted
    bucket.refilled_at = max(now, bucket.refilled_at)
    return granted


def give_back(session: Session, name: str, *, tokens: int, burst: int) -> None:
    """Return tokens taken but not used (fewer messages were due than the loop took)."""
    if tokens > 0:
        session.execute(
            update(RateBucket)
            .where(col(RateBucket.name) == name)
            .values(
                tokens=case(
                    (col(RateBucket.tokens) + tokens > burst, float(burst)),
                    else_=col(RateBucket.tokens) + tokens,
                )
            )
        )
