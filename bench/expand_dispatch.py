"""Benchmark: expanding one wave into the outbox, then dispatching it through the console channel.

    .venv/bin/python -m bench.expand_dispatch --recipients 200000 --runs 3 \
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/loa_bench]

Each run starts from a fresh database (SQLite file in a temp dir, or the PostgreSQL database named
in the URL, dropped and recreated), loads N recipients with one set-based statement, then times
`expand_wave` and a single `dispatch_once` loop until the outbox is drained. Prints medians and
the peak resident memory of the process (expansion should not grow with N).

Wall time on a shared machine is noisy, so each phase also reports CPU seconds: of this process,
and on PostgreSQL of the server backends serving it (read from /proc: the server runs on this
machine, and each backend is found by the application_name Loa gives its connections). Work the
database does on the benchmark's behalf (triggers, index updates) shows in the backends' CPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, text

from bench.common import recreate_database
from channels.registry import channel_lookup
from loa import schema
from loa.db import make_engine, session_scope
from loa.settings import Settings
from scheduler.dispatch import dispatch_once
from scheduler.lifecycle import approve_campaign, create_campaign, launch_campaign
from scheduler.spec import validate_spec
from scheduler.tick import run_tick

T0 = datetime(2026, 5, 8, 0, 0, tzinfo=UTC)


def _fresh_settings(url: str | None, tmp: Path, batch: int) -> Settings:
    if url is None:
        url = f"sqlite:///{tmp / 'bench.db'}"
    else:
        recreate_database(url)
    return Settings(
        database_url=url, data_dir=tmp, console_sink=Path("/dev/null"), worker_batch_size=batch
    )


def _load_recipients(engine, n: int) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO area (code, name, level, parent_code, path) VALUES "
                "('42', 'Hà Tĩnh', 'province', NULL, '/42/'), "
                "('18301', 'Xã A', 'commune', '42', '/42/18301/')"
            )
        )
        if engine.dialect.name == "postgresql":
            series, digits = "SELECT generate_series(1, :n) AS i", "lpad(i::text, 7, '0')"
        else:
            series = (
                "WITH RECURSIVE s(i) AS "
                "(SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) SELECT i FROM s"
            )
            digits = "printf('%07d', i)"
        conn.execute(
            text(
                "INSERT INTO recipient (phone, name, area_code, carrier, phone_converted, "
                f"attributes, created_at, updated_at) SELECT '+8491' || {digits}, "
                "'Nguyễn Văn ' || i, '18301', 'Viettel', false, '{}', :t, :t FROM ("
                + series
                + ") s"
            ),
            {"n": n, "t": T0},
        )


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _backend_cpu(engine: Engine) -> float:
    """CPU seconds used so far by the PostgreSQL backends of this process's connections (0 on
    SQLite, where the database works inside this process)."""
    if engine.dialect.name != "postgresql":
        return 0.0
    with engine.connect() as conn:
        pids = conn.scalars(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
            {"name": conn.scalar(text("SHOW application_name"))},
        ).all()
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a pooled connection closed meanwhile
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLOCK_TICKS


def _cpu(engine: Engine) -> tuple[float, float]:
    """(this process's CPU seconds, its database backends' CPU seconds) so far."""
    return time.process_time(), _backend_cpu(engine)


@dataclass
class Phase:
    wall: float
    cpu: float  # this process
    db_cpu: float  # its PostgreSQL backends


def _timed(engine: Engine, work: Callable[[], int]) -> tuple[int, Phase]:
    cpu0, db0 = _cpu(engine)
    started = time.perf_counter()
    result = work()
    wall = time.perf_counter() - started
    cpu1, db1 = _cpu(engine)
    return result, Phase(wall, cpu1 - cpu0, db1 - db0)


def one_run(url: str | None, n: int, batch: int, dispatch: bool) -> tuple[Phase, Phase | None]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = _fresh_settings(url, Path(tmp), batch)
        engine = make_engine(settings)
        schema.upgrade(engine)
        _load_recipients(engine, n)
        spec = validate_spec(
            {
                "name": "bench",
                "waves": [
                    {
                        "name": "w",
                        "channel": "sms",
                        "at": "2026-05-08 07:30",
                        "audience": {"areas": ["42"]},
                        "template": "BHXH: {{ name }} oi, thang 5.",
                    }
                ],
            },
            source="bench",
        )
        with session_scope(engine) as session:
            campaign = create_campaign(session, spec=spec, actor="bench", now=T0, settings=settings)
            assert campaign.id is not None
            approve_campaign(session, campaign.id, actor="bench", now=T0, settings=settings)
            launch_campaign(session, campaign.id, actor="bench", now=T0, settings=settings)
        fire = T0 + timedelta(hours=1)

        _cpu(engine)  # opens the pooled connection before the clock starts
        rows, expand = _timed(
            engine, lambda: run_tick(engine, now=fire, settings=settings).fired[1]
        )
        assert rows == n, rows
        print(f"  run: expand {_show(expand)}", flush=True)
        if not dispatch:
            engine.dispose()
            return expand, None

        lookup = channel_lookup(settings)

        def drain() -> int:
            sent = 0
            while claimed := dispatch_once(
                engine, worker_id="bench", clock=lambda: fire, settings=settings, channel_for=lookup
            ):
                sent += claimed
            return sent

        sent, dispatched = _timed(engine, drain)
        assert sent == n, sent
        print(f"  run: dispatch {_show(dispatched)}", flush=True)
        engine.dispose()
        return expand, dispatched


def _show(phase: Phase) -> str:
    return f"{phase.wall:.2f} s (CPU: process {phase.cpu:.2f} s, database {phase.db_cpu:.2f} s)"


def _median(phases: list[Phase]) -> Phase:
    return Phase(
        statistics.median(p.wall for p in phases),
        statistics.median(p.cpu for p in phases),
        statistics.median(p.db_cpu for p in phases),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--no-dispatch", action="store_true", help="time the expansion only")
    args = parser.parse_args()
    results = [
        one_run(args.database_url, args.recipients, args.batch, not args.no_dispatch)
        for _ in range(args.runs)
    ]
    expand = _median([r[0] for r in results])
    backend = "postgresql" if args.database_url else "sqlite"
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{backend}: {args.recipients} recipients, {args.runs} runs (median), batch {args.batch}")
    print(f"  expand   {_show(expand)}  {args.recipients / expand.wall:10.0f} rows/s")
    if not args.no_dispatch:
        dispatch = _median([r[1] for r in results if r[1] is not None])
        print(f"  dispatch {_show(dispatch)}  {args.recipients / dispatch.wall:10.0f} messages/s")
    print(f"  peak RSS {peak_mb:8.0f} MB")


if __name__ == "__main__":
    main()
