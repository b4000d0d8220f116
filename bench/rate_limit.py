"""Benchmark: accuracy of the shared rate limit with several worker processes.

    .venv/bin/python -m bench.rate_limit --rate 100 --processes 4 --seconds 60 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/loa_bench

P `loa worker` processes (simulated channel, 20 ms per call) share one limit of `rate` messages
per second (burst = rate unless --burst) for a wave larger than they can send in the time. Two
records of each message are read back from the database and reported separately:
- its `attempt` event, stamped with the instant the limiter let it go (the instant it counts);
- its `sent_at`, written when the provider's answer is recorded, after the 20 ms call.
For each: the mean rate over `seconds` from the first one, and the most in any 1-second window
(sliding, to the microsecond: instants less than a second apart), to compare with the burst; and
how long after the first the second comes.
"""

from __future__ import annotations

import argparse
import bisect
import subprocess
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import col

from bench.common import LOA, recreate_database, worker_env
from bench.dispatch_throughput import _prepare
from loa import schema
from loa.db import make_engine, session_scope
from loa.models import DeliveryEvent, OutboxMessage
from loa.settings import Settings

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND_US = 1_000_000


def _microseconds(instants: Sequence[datetime | None]) -> list[int]:
    # Whole microseconds, as stored: float seconds would blur instants exactly 1 s apart.
    return sorted((t - _EPOCH) // timedelta(microseconds=1) for t in instants if t is not None)


def most_in_one_second(times: list[int]) -> int:
    """The most instants (sorted, in microseconds) within less than one second of each other."""
    return max(
        (bisect.bisect_left(times, t + _SECOND_US) - i for i, t in enumerate(times)), default=0
    )


def _report(label: str, times: list[int], seconds: float, rate: float) -> str:
    if not times:
        return f"{label}: none"
    window = [t for t in times if t < times[0] + seconds * _SECOND_US]
    mean = len(window) / seconds
    return (
        f"{label}: mean {mean:.2f} msg/s ({(mean / rate - 1) * 100:+.2f}%), "
        f"most in any 1 s window {most_in_one_second(window)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--burst", type=int, default=0, help="default: one second's worth")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    url = args.database_url
    burst = args.burst or int(args.rate)
    recreate_database(url)
    n = int(args.rate * args.seconds * 2)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=url, data_dir=Path(tmp), window_info="always")
        engine = make_engine(settings)
        schema.upgrade(engine)
        _prepare(engine, settings, n)
        env = worker_env(url, tmp, LOA_SMS_RATE_PER_SECOND=str(args.rate), LOA_SMS_BURST=str(burst))
        workers = [subprocess.Popen([LOA, "worker"], env=env) for _ in range(args.processes)]
        # The window measured starts at the first message let go (start-up takes a few seconds
        # on a busy machine), and is cut from the record.
        first = select(func.min(col(DeliveryEvent.occurred_at))).where(
            col(DeliveryEvent.kind) == "attempt"
        )
        while True:
            time.sleep(0.2)
            with session_scope(engine) as session:
                if session.scalar(first) is not None:
                    break
        time.sleep(args.seconds + 1)
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=60)
        with session_scope(engine) as session:
            rows = session.execute(
                select(col(DeliveryEvent.occurred_at), col(OutboxMessage.sent_at))
                .join(OutboxMessage, col(OutboxMessage.id) == col(DeliveryEvent.message_id))
                .where(col(DeliveryEvent.kind) == "attempt")
            ).all()
        engine.dispose()
    attempts = _microseconds([let_go for let_go, _ in rows])
    sent = _microseconds([sent_at for _, sent_at in rows])
    lags = sorted(
        (sent_at - let_go) / timedelta(milliseconds=1)
        for let_go, sent_at in rows
        if sent_at is not None
    )
    lag = ", ".join(
        f"{name} {lags[min(int(q * len(lags)), len(lags) - 1)]:.0f} ms"
        for name, q in (("median", 0.5), ("p99", 0.99), ("max", 1.0))
    )
    print(
        f"rate {args.rate:g}/s, burst {burst}, {args.processes} processes, {args.seconds:g} s\n"
        f"  {_report('let go (attempt events)', attempts, args.seconds, args.rate)}\n"
        f"  {_report('recorded sent_at', sent, args.seconds, args.rate)}\n"
        f"  sent_at after the instant let go: {lag}"
    )


if __name__ == "__main__":
    main()
