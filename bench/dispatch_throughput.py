"""Benchmark: dispatch throughput of `loa worker` processes through the simulated channel.

    .venv/bin/python -m bench.dispatch_throughput --recipients 100000 --processes 1 2 4 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/loa_bench

For each process count: a fresh database, N recipients, one wave expanded into the outbox, then P
real `loa worker` processes (LOA_SMS_CHANNEL=simulated: 20 ms per call) drain it. The provider
takes as many calls at once as a process has messages in flight (loops x batch) unless
--provider-concurrency says otherwise: with no rate limit, the dispatcher is what is measured,
not a cap on the provider (100 calls at once of 20 ms cannot exceed 5,000 messages/s).
Throughput is measured from the database's own record: messages sent divided by the time from
the first attempt event to the last message marked sent, so process start-up does not count.
Every attempt and result is committed before it counts (delivery events).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select, text
from sqlmodel import col

from bench.common import LOA, recreate_database, worker_env
from loa import schema
from loa.db import make_engine, session_scope
from loa.models import IN_FLIGHT_ONLY, PLANNED_ONLY, DeliveryEvent, OutboxMessage
from loa.settings import Settings
from scheduler.lifecycle import approve_campaign, create_campaign, launch_campaign
from scheduler.spec import validate_spec
from scheduler.tick import run_tick


def _prepare(engine: Engine, settings: Settings, n: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO area (code, name, level, parent_code, path) VALUES "
                "('42', 'Hà Tĩnh', 'province', NULL, '/42/'), "
                "('18301', 'Xã A', 'commune', '42', '/42/18301/')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO recipient (phone, name, area_code, carrier, phone_converted, "
                "attributes, created_at, updated_at) SELECT '+8491' || lpad(i::text, 7, '0'), "
                "'Nguyễn Văn ' || i, '18301', 'Viettel', false, '{}', now(), now() "
                "FROM generate_series(1, :n) AS i"
            ),
            {"n": n},
        )
    zone = ZoneInfo("Asia/Ho_Chi_Minh")
    fire = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    spec = validate_spec(
        {
            "name": "bench",
            "waves": [
                {
                    "name": "w",
                    "channel": "sms",
                    "at": fire.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
                    "audience": {"areas": ["42"]},
                    "template": "BHXH: {{ name }} oi, thang 5.",
                }
            ],
        },
        source="bench",
    )
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        campaign = create_campaign(session, spec=spec, actor="bench", now=now, settings=settings)
        assert campaign.id is not None
        approve_campaign(session, campaign.id, actor="bench", now=now, settings=settings)
        launch_campaign(session, campaign.id, actor="bench", now=now, settings=settings)
    assert run_tick(engine, now=fire, settings=settings).fired == {1: n}
    time.sleep(max(0.0, (fire - datetime.now(UTC)).total_seconds()))


def one_run(
    url: str, n: int, processes: int, loops: int, batch: int, provider_concurrency: int
) -> float:
    recreate_database(url)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=url, data_dir=Path(tmp), window_info="always")
        engine = make_engine(settings)
        schema.upgrade(engine)
        _prepare(engine, settings, n)
        env = worker_env(
            url,
            tmp,
            LOA_SIMULATED_LATENCY_MS="20",
            LOA_SIMULATED_CONCURRENCY=str(provider_concurrency),
            LOA_WORKER_LOOPS=str(loops),
            LOA_WORKER_BATCH_SIZE=str(batch),
        )
        workers = [subprocess.Popen([LOA, "worker"], env=env) for _ in range(processes)]
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                # Cheap while the workers run (the partial indexes of planned and in-flight
                # rows): counting 100,000 rows five times a second took CPU from them.
                with engine.connect() as conn:
                    busy = conn.scalar(
                        text(
                            f"SELECT EXISTS (SELECT 1 FROM outbox WHERE {PLANNED_ONLY}) "
                            f"OR EXISTS (SELECT 1 FROM outbox WHERE {IN_FLIGHT_ONLY})"
                        )
                    )
                if not busy:
                    break
                time.sleep(0.2)
            else:
                raise SystemExit("gave up: messages still planned or in flight after 600 s")
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                w.wait(timeout=60)
        with session_scope(engine) as session:
            sent = session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(col(OutboxMessage.status) == "sent")
            )
            first = session.scalar(select(func.min(col(DeliveryEvent.occurred_at))))
            last = session.scalar(select(func.max(col(OutboxMessage.sent_at))))
        engine.dispose()
    assert sent == n, f"{sent} of {n} sent"
    assert first is not None and last is not None
    return float(n / (last - first).total_seconds())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--loops", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--provider-concurrency", type=int, default=None, help="calls at once (loops x batch)"
    )
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    concurrency = args.provider_concurrency or args.loops * args.batch
    for processes in args.processes:
        rates = sorted(
            one_run(
                args.database_url,
                args.recipients,
                processes,
                args.loops,
                args.batch,
                concurrency,
            )
            for _ in range(args.runs)
        )
        print(
            f"{processes} process(es) x {args.loops} loops, batch {args.batch}, "
            f"provider {concurrency} calls at once, "
            f"{args.recipients} messages: median {rates[len(rates) // 2]:,.0f} msg/s "
            f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})",
            flush=True,
        )


if __name__ == "__main__":
    main()
