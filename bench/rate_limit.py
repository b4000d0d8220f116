"""Benchmark: accuracy of the shared rate limit with several worker processes.

    .venv/bin/python -m bench.rate_limit --rate 100 --processes 4 --seconds 60 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/loa_bench

P `loa worker` processes (simulated channel, 20 ms per call) share one bucket of `rate` messages
per second (burst = rate) for a wave larger than they can send in the time. Reported from the
database's record of when each message was sent: the mean rate over the whole run, and the most
messages sent in any 1-second window (sliding, to the millisecond), which must not exceed the burst.
"""

from __future__ import annotations

import argparse
import bisect
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import select
from sqlmodel import col

from bench.common import LOA, recreate_database, worker_env
from bench.dispatch_throughput import _prepare
from loa import schema
from loa.db import make_engine, session_scope
from loa.models import OutboxMessage
from loa.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    url = args.database_url
    recreate_database(url)
    n = int(args.rate * args.seconds * 2)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=url, data_dir=Path(tmp), window_info="always")
        engine = make_engine(settings)
        schema.upgrade(engine)
        _prepare(engine, settings, n)
        env = worker_env(
            url,
            tmp,
            LOA_SMS_RATE_PER_SECOND=str(args.rate),
            LOA_SMS_BURST=str(int(args.rate)),
        )
        workers = [subprocess.Popen([LOA, "worker"], env=env) for _ in range(args.processes)]
        time.sleep(args.seconds + 3)  # + start-up; the window measured is cut from the record
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=60)
        with session_scope(engine) as session:
            times = session.scalars(
                select(col(OutboxMessage.sent_at)).where(col(OutboxMessage.sent_at).is_not(None))
            ).all()
        sent = sorted(t.timestamp() for t in times if t is not None)
        engine.dispose()
    # The steady part: from the first send, for the requested number of seconds.
    start = sent[0]
    window = [t for t in sent if t < start + args.seconds]
    mean = len(window) / args.seconds

    def most_in_one_second(times: list[float]) -> int:
        return max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))

    # A full bucket lets `burst` go at once and the refill adds `rate` in the same second: the
    # first second may see burst + rate. After it, sends follow the refill.
    steady = [t for t in window if t >= start + 1.0]
    print(
        f"rate {args.rate:g}/s, burst {int(args.rate)}, {args.processes} processes, "
        f"{args.seconds:g} s: mean {mean:.1f} msg/s ({(mean / args.rate - 1) * 100:+.1f}%); "
        f"most in any 1 s window: {most_in_one_second(window)} overall, "
        f"{most_in_one_second(steady)} after the first second"
    )


if __name__ == "__main__":
    main()
