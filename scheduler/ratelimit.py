"""Rate limits shared by every worker: a schedule of grants per channel, kept in the database.

What is limited is the instant a message is *let go*: the instant of the grant that allowed it.
A loop asks for tokens in a short transaction of its own (the bucket's row is the one point every
loop of every process passes through) and gets a `Grant`: a count and the instant `at` those
messages may go, now or a little later. It waits until `at` by its own clock, claims at most that
many messages, gives back what it did not use, and writes their `attempt` events with
`occurred_at = at` before it calls the provider. The attempt events are therefore the record of
exactly what the limiter counted: counting them by `occurred_at` measures the limiter itself.
The alternative, taking the tokens in the transaction that writes the attempt events, would hold
the bucket's lock across that write (serialising every loop's bookkeeping on one row) and would
have to hand claimed messages back when the bucket is empty. What the provider sees comes a few
milliseconds after `at` (the claim, the attempt events, the call), by how much varies with load;
`outbox.sent_at`, written after the call, is later still.

Three rules place a grant at the earliest instant that satisfies all of them:
- window: the grants of any interval shorter than one second add up to at most `burst`. The row
  keeps the grants of the last second ([instant in microseconds, count], oldest first), and a
  grant is placed no earlier than the moment enough of them have left its trailing second;
- mean: a token bucket of `burst` tokens refilled at `rate` per second, so that the grants of any
  span of T seconds let at most `burst + rate * T` go, and the long-run mean is `rate` even when
  `burst` is larger (the window alone would allow `burst` every second);
- pace: a grant is at most a tenth of `burst` (`slice_size`), and the next one comes no sooner
  than its messages take at `burst` per second, so a second's messages are spread over it
  rather than let go in one lump. With burst = rate the grants come like a clock: a slice every
  tenth of a second, each placed one second after the slice it replaces in the window.
A give-back counts as if the grant had been smaller (its tokens return to the bucket, its count
in the window shrinks). Tokens of a grant never used and never given back (a worker that died
while waiting) stay counted: the limiter errs on the side of sending less.

The grants form one timeline that only moves forward: a grant is never placed before the latest
one, and the bucket refills from the latest grant's instant. A worker whose clock is behind
therefore gains nothing from time already counted: the earliest instant it could be given lies
ahead of its own clock, and it is given a grant only if that is at most `horizon` ahead (it waits
for it). The guarantees hold on this timeline; in real time they hold to within the difference
between the workers' clocks, so keep the machines synchronised (NTP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, update
from sqlmodel import Session, col

from loa.db import upsert_insert
from loa.models import RateBucket

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_SECOND_US = 1_000_000


@dataclass(frozen=True)
class Grant:
    """`count` messages may be let go at `at`; with count 0, `at` is the earliest instant a grant
    could be made (further away than the asker was willing to wait)."""

    count: int
    at: datetime


def slice_size(burst: int) -> int:
    """The most one grant lets go: a tenth of a second's worth at the burst, at least one."""
    return max(1, math.ceil(burst / 10))


def _us(instant: datetime) -> int:
    return (instant - _EPOCH) // _MICROSECOND


def _instant(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _earliest(
    bucket: RateBucket, n: int, *, rate: float, burst: int, now_us: int
) -> tuple[int, float]:
    """The earliest instant (microseconds) at which `n` may go, and the bucket's tokens then."""
    last_us = _us(bucket.refilled_at)
    at = max(now_us, last_us)  # the timeline never goes back
    grants = bucket.grants
    if grants:
        # Pace: the previous grant's messages take count / burst seconds.
        prev_us, prev_count = grants[-1]
        at = max(at, prev_us + math.ceil(prev_count * _SECOND_US / burst))
    # Window: the oldest grants must have left the trailing second (an instant exactly one
    # second older no longer counts: the window is the open interval (at - 1 s, at]).
    in_window = sum(count for _, count in grants)
    for granted_us, count in grants:
        if in_window + n <= burst:
            break
        in_window -= count
        at = max(at, granted_us + _SECOND_US)
    # Mean: the bucket must hold n tokens.
    tokens = min(float(burst), bucket.tokens + (at - last_us) * rate / _SECOND_US)
    if tokens < n - 1e-9:
        at = max(at, last_us + math.ceil((n - bucket.tokens) * _SECOND_US / rate))
        tokens = float(n)
    return at, tokens


def take_tokens(
    session: Session,
    name: str,
    *,
    want: int,
    rate: float,
    burst: int,
    now: datetime,
    horizon: float,
) -> Grant:
    """Up to `want` tokens (at most a slice) from the bucket `name`, created full on first use.

    The grant's instant is the earliest the rules allow; it is made only if that is at most
    `horizon` seconds after `now`, otherwise the count is 0 and nothing changes."""
    session.execute(
        upsert_insert(session.connection(), RateBucket.__table__)  # type: ignore[attr-defined]
        .values(name=name, tokens=float(burst), refilled_at=now, grants=[])
        .on_conflict_do_nothing(index_elements=["name"])
    )
    bucket = session.get(RateBucket, name, with_for_update=True, populate_existing=True)
    assert bucket is not None
    n = min(want, slice_size(burst))
    if n <= 0:
        return Grant(0, now)
    now_us = _us(now)
    at, tokens = _earliest(bucket, n, rate=rate, burst=burst, now_us=now_us)
    if at - now_us > horizon * _SECOND_US:
        return Grant(0, _instant(at))
    bucket.tokens = max(tokens - n, 0.0)
    bucket.refilled_at = _instant(at)
    # Grants one second older than this one can no longer share a window with any later grant.
    bucket.grants = [[u, c] for u, c in bucket.grants if u > at - _SECOND_US] + [[at, n]]
    return Grant(n, _instant(at))


def give_back(session: Session, name: str, *, grant: Grant, unused: int, burst: int) -> None:
    """Return the part of `grant` that was not used (fewer messages were due than granted): to the
    bucket, and off the grant's entry in the window, so that only messages let go are counted."""
    if unused <= 0:
        return
    # The tokens first, in one statement: it takes the row's write lock before the row is read
    # (SQLite would otherwise read first and could fail to upgrade its snapshot to a write).
    session.execute(
        update(RateBucket)
        .where(col(RateBucket.name) == name)
        .values(
            tokens=case(
                (col(RateBucket.tokens) + unused > burst, float(burst)),
                else_=col(RateBucket.tokens) + unused,
            )
        )
    )
    bucket = session.get(RateBucket, name, populate_existing=True)
    if bucket is None:
        return
    at_us = _us(grant.at)
    # An entry already out of the window (a grant more than a second old) needs no correction.
    bucket.grants = [
        [u, c - unused if u == at_us else c]
        for u, c in bucket.grants
        if not (u == at_us and c <= unused)
    ]
