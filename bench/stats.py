"""Statistics on 10,000,000 delivery events: latency of GET /api/v1/stats, and the delivery log's
CSV export (rate and the server's memory), on PostgreSQL.

    python -m bench.stats [--url postgresql+psycopg://postgres@127.0.0.1:5432/loa_bench_stats]
        [--recipients 1000000] [--events 10000000] [--requests 200] [--reuse]

The data, seeded with set-based SQL (generate_series, INSERT ... SELECT) in minutes:
- one province of `--districts` districts and `--communes` communes in all;
- `--recipients` people over those communes (unevenly: some communes are three times others),
  on four carriers (Viettel half, Vinaphone, Mobifone, Vietnamobile);
- five campaigns as an office runs them: a province-wide launch day (everyone), a weekly
  reminder (four occurrences of a recurring wave), a daily card-expiry reminder (thirty
  occurrences of a relative wave), two target-group waves, two small ones; about 3,000,000
  messages, each in a final status or still pending (the newest waves), with error codes for
  the failures, the adapter of its carrier and its segments;
- their delivery events (an attempt and a status for each message sent, a delivery report for
  most, retries for some) up to exactly `--events`; and a month of loudspeaker plays in every
  commune (with their events).
The outbox rows are inserted with the rollup triggers in place: the triggers fill the rollup,
as they do in production. They are inserted in their final status, so the keys a message passes
through on its way (planned, claimed, sending), which dispatch leaves in the rollups at n = 0,
are added after (`_seed_zero_keys`), and those of the waves done deleted, as the tick does
(`--reuse --zero-keys` does both on a database seeded before). The event table's secondary
indexes are built after its load.

Then `loa serve --no-worker --no-scheduler` runs in a subprocess (the real app, one uvicorn
process) and this process asks typical questions over HTTP, one at a time, with an operator key:
by district for one campaign, by day, by error code, by carrier, and what the operator page
asks. Each is asked `--requests` times after a warm-up; p50 and p95 are reported. Last, the
whole delivery log (one row per message: the events are the messages' history) is downloaded as
CSV, and its rate and the server's peak resident memory (VmHWM) are reported.

`--reuse` skips the seeding and measures an already seeded database.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, text

from bench.common import LOA, recreate_database, worker_env
from loa.apikeys import Role, create_key
from loa.db import make_engine, read_only, session_scope
from loa.models import Campaign, Wave
from loa.settings import Settings
from stats.prune import prune_zero_keys
from stats.rollup import query_stats

T0 = datetime(2026, 5, 1, tzinfo=UTC)
CARRIERS = (
    "CASE WHEN h.u < 500 THEN 'Viettel' WHEN h.u < 750 THEN 'Vinaphone' "
    "WHEN h.u < 950 THEN 'Mobifone' ELSE 'Vietnamobile' END"
)
ADAPTERS = {
    "Viettel": "gateway:viettel",
    "Vinaphone": "gateway:vnpt",
    "Mobifone": "gateway:mobifone",
    "Vietnamobile": "twilio",
}
PRICES = (
    '{"*": {"viettel": {"*": 350}, "vinaphone": {"*": 370}, "mobifone": {"*": 360}, '
    '"*": {"*": 900}}}'
)


# --- seeding ------------------------------------------------------------------------------------


def _seed_areas(engine: Engine, districts: int, communes: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO area (code, name, level, parent_code, path) "
                "VALUES ('42', 'Tỉnh Hà Tĩnh', 'province', NULL, '/42/')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO area (code, name, level, parent_code, path) "
                "SELECT (400 + d)::text, 'Huyện ' || d, 'district', '42', "
                "'/42/' || (400 + d) || '/' "
                "FROM generate_series(1, :d) d"
            ),
            {"d": districts},
        )
        conn.execute(
            text(
                "INSERT INTO area (code, name, level, parent_code, path) "
                "SELECT (18000 + c)::text, 'Xã ' || c, 'commune', (400 + 1 + c % :d)::text, "
                "'/42/' || (400 + 1 + c % :d) || '/' || (18000 + c) || '/' "
                "FROM generate_series(1, :c) c"
            ),
            {"d": districts, "c": communes},
        )


def _seed_recipients(engine: Engine, n: int, communes: int) -> None:
    """Uneven communes: the commune of person i is picked through a square, so low numbers get
    more people (a town beside villages)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO recipient (phone, name, area_code, carrier, phone_converted, "
                "attributes, created_at, updated_at) "
                "SELECT '+8491' || lpad(i::text, 7, '0'), 'Nguyễn Văn ' || i, "
                "(18001 + floor(power(h.v, 2) * :c))::text, " + CARRIERS + ", false, '{}', :t, :t "
                "FROM generate_series(1::bigint, :n) i, "
                "LATERAL (SELECT (i * 2654435761) % 1000 AS u, "
                "((i * 40503) % 100003) / 100003.0 AS v) h"
            ),
            {"n": n, "c": communes, "t": T0},
        )


def _campaigns(engine: Engine) -> list[tuple[int, int, datetime, float]]:
    """The campaigns and waves (ORM rows: a few dozen); for each wave that sends: (wave id, share
    of the recipients in it in per mille, its time, share still pending)."""
    plan: list[tuple[str, list[tuple[str, str, int, list[datetime], float]]]] = [
        (
            "Tháng vận động BHXH toàn dân 2026",
            [
                ("Lễ ra quân", "info", 1000, [T0 + timedelta(days=7, hours=0.5)], 0.0),
                (
                    "Nhắc hằng tuần",
                    "info",
                    250,
                    [T0 + timedelta(days=7 * k + 8, hours=2) for k in range(4)],
                    0.0,
                ),
            ],
        ),
        (
            "Nhắc hạn thẻ BHYT",
            [
                (
                    "Thẻ sắp hết hạn",
                    "care",
                    10,
                    [T0 + timedelta(days=d, hours=2) for d in range(30)],
                    0.0,
                ),
            ],
        ),
        (
            "Nhóm đối tượng",
            [
                ("Nông dân", "info", 200, [T0 + timedelta(days=12, hours=1)], 0.0),
                ("Lao động tự do", "info", 200, [T0 + timedelta(days=14, hours=1)], 0.0),
            ],
        ),
        (
            "Quảng bá BHXH tự nguyện",
            [("QC tháng 5", "qc", 200, [T0 + timedelta(days=20, hours=3)], 0.05)],
        ),
        ("Thông báo mới", [("Hôm nay", "info", 100, [T0 + timedelta(days=29, hours=2)], 0.4)]),
    ]
    sending: list[tuple[int, int, datetime, float]] = []
    with session_scope(engine) as session:
        for name, waves in plan:
            campaign = Campaign(
                name=name,
                timezone="Asia/Ho_Chi_Minh",
                status="running",
                created_by="bench",
                created_at=T0,
                updated_at=T0,
            )
            session.add(campaign)
            session.flush()
            assert campaign.id is not None
            for position, (wave_name, cls, share, times, pending) in enumerate(waves):
                parent = Wave(
                    campaign_id=campaign.id,
                    position=position,
                    name=wave_name,
                    channel="sms",
                    message_class=cls,
                    kind="once" if len(times) == 1 else "recurring",
                    trigger={},
                    audience={},
                    status="expanded",
                    fire_at=times[0],
                )
                session.add(parent)
                session.flush()
                assert parent.id is not None
                if len(times) == 1:
                    sending.append((parent.id, share, times[0], pending))
                    continue
                for at in times:
                    child = Wave(
                        campaign_id=campaign.id,
                        position=position,
                        parent_id=parent.id,
                        occurrence=at.isoformat(),
                        name=wave_name,
                        channel="sms",
                        message_class=cls,
                        trigger={},
                        audience={},
                        status="done",
                        fire_at=at,
                    )
                    session.add(child)
                    session.flush()
                    assert child.id is not None
                    sending.append((child.id, share, at, pending))
        loudspeaker = Campaign(
            name="Phát thanh tháng 5",
            timezone="Asia/Ho_Chi_Minh",
            status="running",
            created_by="bench",
            created_at=T0,
            updated_at=T0,
        )
        session.add(loudspeaker)
        session.flush()
        assert loudspeaker.id is not None
        session.add(
            Wave(
                campaign_id=loudspeaker.id,
                position=0,
                name="Phát thanh sáng chiều",
                channel="loudspeaker",
                message_class="info",
                kind="broadcast",
                trigger={},
                audience={},
                status="expanded",
            )
        )
    return sending


# A message's fate by a pseudo-random number u in [0, 1000) of its id: per mille.
STATUS = """CASE
    WHEN h.u >= 1000 - :pending THEN 'planned'
    WHEN h.u < 760 THEN 'delivered' WHEN h.u < 810 THEN 'sent' WHEN h.u < 840 THEN 'undelivered'
    WHEN h.u < 880 THEN 'failed' WHEN h.u < 905 THEN 'suppressed' WHEN h.u < 930 THEN 'expired'
    WHEN h.u < 945 THEN 'cancelled' WHEN h.u < 950 THEN 'unknown' ELSE 'delivered' END"""
ERROR = """CASE s.status
    WHEN 'undelivered' THEN (ARRAY['30003', '30005', '30006'])[1 + h.u % 3]
    WHEN 'failed' THEN (ARRAY['21211', '21610', '30007', 'template'])[1 + h.u % 4]
    WHEN 'suppressed' THEN (ARRAY[NULL, NULL, 'no_consent'])[1 + h.u % 3]
    WHEN 'cancelled' THEN (ARRAY[NULL, 'left_audience', 'date_changed'])[1 + h.u % 3]
    END"""
TRIED = "s.status IN ('delivered', 'sent', 'undelivered', 'failed', 'unknown')"


def _seed_outbox(engine: Engine, waves: list[tuple[int, int, datetime, float]], chunk: int) -> None:
    """Each wave's messages, a range of recipient ids per statement (so that each trigger run sums
    a chunk, as expansion does). A wave of share s per mille takes the people whose id falls in
    its s of every 1000 ids (offset by the wave, so that waves overlap differently)."""
    adapter = (
        "CASE r.carrier " + " ".join(f"WHEN '{c}' THEN '{a}'" for c, a in ADAPTERS.items()) + " END"
    )
    statement = text(
        "INSERT INTO outbox (wave_id, recipient_id, channel, status, due_at, attempts, adapter, "
        "error_code, segments, area_code, carrier, provider_id, created_at, updated_at, sent_at) "
        f"SELECT :wave, r.id, 'sms', s.status, :at, "
        f"CASE WHEN {TRIED} THEN 1 + (h.u % 10 = 0)::int ELSE 0 END, "
        f"CASE WHEN {TRIED} THEN {adapter} END, {ERROR}, "
        f"CASE WHEN {TRIED} THEN 1 + (h.u % 5 = 0)::int END, r.area_code, r.carrier, "
        f"CASE WHEN {TRIED} THEN 'p' || r.id || '-' || :wave END, :at, :at + interval '5 minutes', "
        f"CASE WHEN {TRIED} THEN :at + interval '1 minute' END "
        "FROM recipient r, "
        "LATERAL (SELECT ((r.id * 2654435761 + :wave * 7919) % 1000)::int AS u) h, "
        f"LATERAL (SELECT {STATUS} AS status) s "
        "WHERE r.id > :low AND r.id <= :high AND (r.id + :wave * 37) % 1000 < :share"
    )
    with engine.connect() as conn:
        last = conn.scalar(text("SELECT max(id) FROM recipient"))
    for wave_id, share, at, pending in waves:
        for low in range(0, last, chunk):
            with engine.begin() as conn:
                conn.execute(
                    statement,
                    {
                        "wave": wave_id,
                        "at": at,
                        "low": low,
                        "high": low + chunk,
                        "share": share,
                        "pending": int(pending * 1000),
                    },
                )


EVENT_COLUMNS = (
    "message_id, wave_id, channel, kind, status, adapter, provider_id, error_code, occurred_at"
)


def _seed_events(engine: Engine, total: int) -> None:
    """The messages' histories, then plays, then retries (an attempt and a `planned` status, with
    a rate-limit code) for the first messages, to make exactly `total` events. Secondary indexes
    are dropped for the load and built after: one sort each instead of ten million insertions."""
    history = [
        # Every message tried: its attempt.
        (
            "attempt",
            "'sending'",
            "o.status IN ('delivered', 'sent', 'undelivered', 'failed', 'unknown')",
            "NULL",
            "o.created_at",
        ),
        # Its outcome from the provider (or the set-aside reason) with the code.
        (
            "status",
            "CASE WHEN o.status IN ('delivered', 'undelivered') THEN 'sent' ELSE o.status END",
            "o.status <> 'planned'",
            "CASE WHEN o.status = 'undelivered' THEN NULL ELSE o.error_code END",
            "o.created_at + interval '1 minute'",
        ),
        # The delivery report.
        (
            "status",
            "o.status",
            "o.status IN ('delivered', 'undelivered')",
            "o.error_code",
            "o.updated_at",
        ),
    ]
    with engine.begin() as conn:
        conn.execute(
            text(
                "DROP INDEX ix_delivery_event_message, ix_delivery_event_wave_time, "
                "ix_delivery_event_provider_id"
            )
        )
        for kind, status, where, code, at in history:
            conn.execute(
                text(
                    f"INSERT INTO delivery_event ({EVENT_COLUMNS}) "
                    f"SELECT o.id, o.wave_id, 'sms', '{kind}', "
                    f"{status}, o.adapter, o.provider_id, {code}, {at} FROM outbox o WHERE {where}"
                )
            )
        conn.execute(
            text(
                f"INSERT INTO delivery_event ({EVENT_COLUMNS.replace('provider_id, ', '')}) "
                "SELECT NULL, p.wave_id, 'loudspeaker', 'play', p.result, NULL, NULL, "
                "p.started_at FROM broadcast_play p"
            )
        )
        have = conn.scalar(text("SELECT count(*) FROM delivery_event"))
        missing = total - have
        if missing < 0:
            raise SystemExit(f"{have} events before retries: ask for more than that with --events")
        # Retries: a 20429 status and its attempt for the first messages tried (each adds two).
        conn.execute(
            text(
                f"INSERT INTO delivery_event ({EVENT_COLUMNS}) "
                "SELECT o.id, o.wave_id, 'sms', x.kind, x.status, "
                "o.adapter, NULL, x.code, o.created_at - interval '1 minute' * x.n "
                "FROM (SELECT * FROM outbox WHERE adapter IS NOT NULL ORDER BY id LIMIT :pairs) o, "
                "LATERAL (VALUES ('attempt', 'sending', NULL, 2), "
                "('status', 'planned', '20429', 1)) "
                "AS x(kind, status, code, n)"
            ),
            {"pairs": missing // 2},
        )
        if missing % 2:
            conn.execute(
                text(
                    f"INSERT INTO delivery_event ({EVENT_COLUMNS}) "
                    "SELECT id, wave_id, 'sms', 'attempt', 'sending', adapter, NULL, NULL, "
                    "created_at FROM outbox WHERE adapter IS NOT NULL ORDER BY id DESC LIMIT 1"
                )
            )
        conn.execute(
            text("CREATE INDEX ix_delivery_event_message ON delivery_event (message_id, id)")
        )
        conn.execute(
            text(
                "CREATE INDEX ix_delivery_event_wave_time ON delivery_event (wave_id, occurred_at)"
            )
        )
        conn.execute(
            text("CREATE INDEX ix_delivery_event_provider_id ON delivery_event (provider_id)")
        )


def _seed_plays(engine: Engine) -> None:
    """A month of plays in every commune, two slots a day: most played, some skipped or failed.
    One broadcast item per slot stands for the wave's items (the plays name it; nothing else
    reads items here)."""
    with engine.begin() as conn:
        wave_id = conn.scalar(text("SELECT id FROM wave WHERE kind = 'broadcast'"))
        conn.execute(
            text(
                "INSERT INTO broadcast_play (item_id, wave_id, commune_code, started_at, ended_at, "
                "result, reported_by, received_at) "
                "SELECT s.n, :wave, a.code, s.at, s.at + interval '3 minutes', "
                "CASE WHEN (s.n + a.code::int) % 20 = 0 THEN 'skipped' "
                "WHEN (s.n + a.code::int) % 50 = 1 THEN 'failed' ELSE 'played' END, "
                "'district', s.at "
                "FROM area a, LATERAL (SELECT n, :t + interval '1 day' * (n / 2) "
                "+ CASE WHEN n % 2 = 0 THEN interval '-1 hour' "
                "ELSE interval '10 hours 30 minutes' END AS at "
                "FROM generate_series(0, 59) n) s WHERE a.level = 'commune'"
            ),
            {"wave": wave_id, "t": T0},
        )


# The keys a message passes through on its way to a final status: planned and claimed (no adapter
# yet), sending (its adapter). Dispatch leaves them at n = 0 once the wave is done, and they stay.
ZERO_KEYS = (
    "LATERAL (VALUES ('', 'planned'), ('', 'claimed'), (r.adapter, 'sending')) "
    "AS z(adapter, status)"
)


def _seed_zero_keys(engine: Engine) -> int:
    """What dispatch leaves behind in the rollups and the outbox inserts of this seed do not: for
    each wave, commune, carrier and hour with a message that was tried, its planned, claimed and
    sending keys at zero. No answer changes (they count nothing); the rollups read grow by them.
    Returns the rows added to stats_rollup."""
    tried = "r.channel = 'sms' AND r.adapter <> '' AND r.error_code = ''"
    added = 0
    with engine.begin() as conn:
        for table, key in (
            ("stats_rollup", "wave_id, channel, area_code, carrier, hour"),
            ("stats_rollup_wave", "wave_id, channel, carrier, hour"),
            ("stats_rollup_area", "area_code, channel, carrier, message_class"),
        ):
            columns = f"{key}, adapter, status, error_code, n, segments"
            result = conn.execute(
                text(
                    f"INSERT INTO {table} ({columns}) "
                    f"SELECT DISTINCT {', '.join('r.' + k for k in key.split(', '))}, z.adapter, "
                    f"z.status, '', 0, 0 FROM {table} r, {ZERO_KEYS} WHERE {tried} "
                    "ON CONFLICT DO NOTHING"
                )
            )
            added = result.rowcount if table == "stats_rollup" else added
    return added


def _prune_done_waves(engine: Engine) -> int:
    """What the tick does when it finds a wave done (stats/prune.py): its keys at zero deleted.
    The waves with messages still pending keep theirs. Returns the rows deleted."""
    with session_scope(engine) as session:
        done = session.scalars(
            text(
                "SELECT w.id FROM wave w WHERE NOT EXISTS (SELECT 1 FROM outbox o "
                "WHERE o.wave_id = w.id AND o.status IN ('planned', 'claimed', 'sending', "
                "'unknown'))"
            )
        ).all()
        return prune_zero_keys(session, list(done))


def seed(engine: Engine, args: argparse.Namespace) -> None:
    steps: list[tuple[str, Callable[[], object]]] = [
        ("areas", lambda: _seed_areas(engine, args.districts, args.communes)),
        ("recipients", lambda: _seed_recipients(engine, args.recipients, args.communes)),
        (
            "outbox (rollup by the triggers)",
            lambda: _seed_outbox(engine, _campaigns(engine), args.chunk),
        ),
        ("plays", lambda: _seed_plays(engine)),
        ("the keys dispatch leaves at zero", lambda: _seed_zero_keys(engine)),
        ("those of the waves done deleted, as the tick does", lambda: _prune_done_waves(engine)),
        ("delivery events", lambda: _seed_events(engine, args.events)),
    ]
    for name, step in steps:
        started = time.perf_counter()
        step()
        print(f"  seeded {name} in {time.perf_counter() - started:.0f} s", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def sizes(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table: int(conn.scalar(text(f"SELECT count(*) FROM {table}")))
            for table in (
                "recipient",
                "outbox",
                "delivery_event",
                "broadcast_play",
                "stats_rollup",
                "stats_rollup_area",
                "area",
            )
        }


# --- measuring ------------------------------------------------------------------------------


def _questions(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        biggest = conn.scalar(text("SELECT id FROM campaign ORDER BY id LIMIT 1"))
        district = conn.scalar(
            text("SELECT code FROM area WHERE level = 'district' ORDER BY code LIMIT 1")
        )
    return {
        "by district, one campaign": {"group_by": "district", "campaign_id": biggest},
        "by day": {"group_by": "day"},
        "by error code": {"group_by": "error_code"},
        "by carrier": {"group_by": "carrier"},
        "by campaign and wave": {"group_by": "campaign,wave"},
        "by district and channel": {"group_by": "district,channel"},
        "one district by commune and day, 7 days": {
            "group_by": "commune,day",
            "area_code": district,
            "day_from": "2026-05-08",
            "day_to": "2026-05-14",
        },
    }


def ask(
    base: str, headers: dict[str, str], params: dict[str, Any], requests: int
) -> tuple[list[float], int]:
    """Latencies of `requests` sequential GET /api/v1/stats (after five to warm up); rows."""
    latencies = []
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        for i in range(requests + 5):
            started = time.perf_counter()
            response = client.get("/api/v1/stats", params=params)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"{params}: {response.status_code} {response.text[:300]}")
            if i >= 5:
                latencies.append(elapsed)
    return latencies, len(response.json()["rows"])


def _in_process(engine: Engine, params: dict[str, Any], times: int = 20) -> float:
    """The median milliseconds of query_stats itself for the same question, in this process: the
    server's share of a request without HTTP, the key check and JSON."""
    settings = Settings(database_url=str(engine.url), sms_prices=json.loads(PRICES))
    arguments: dict[str, Any] = {
        "group_by": params["group_by"].split(","),
        "campaign_id": params.get("campaign_id"),
        "area_code": params.get("area_code"),
        "day_from": date.fromisoformat(params["day_from"]) if "day_from" in params else None,
        "day_to": date.fromisoformat(params["day_to"]) if "day_to" in params else None,
    }
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        with session_scope(read_only(engine)) as session:
            query_stats(session, timezone="Asia/Ho_Chi_Minh", prices=settings, **arguments)
        spent.append(time.perf_counter() - started)
    return statistics.median(spent) * 1000


def _rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def export(base: str, headers: dict[str, str], server: int) -> str:
    """Download the whole delivery log as CSV; its rows, rate and the server's memory."""
    before = _rss_kb(server, "VmRSS")
    rows = size = 0
    samples = []
    started = last = time.perf_counter()
    with (
        httpx.Client(base_url=base, headers=headers, timeout=600) as client,
        client.stream("GET", "/api/v1/deliveries.csv") as response,
    ):
        response.raise_for_status()
        for chunk in response.iter_bytes():
            rows += chunk.count(b"\n")
            size += len(chunk)
            if time.perf_counter() - last > 5:
                last = time.perf_counter()
                samples.append(_rss_kb(server, "VmRSS") // 1024)
    wall = time.perf_counter() - started
    peak = _rss_kb(server, "VmHWM")
    return (
        f"deliveries.csv: {rows - 1:,} rows, {size / 2**20:,.0f} MiB in {wall:.0f} s = "
        f"{(rows - 1) / wall:,.0f} rows/s; server RSS {before // 1024} MB before, every 5 s "
        f"during {samples}, peak (VmHWM) {peak // 1024} MB"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [LOA, "serve", "--no-worker", "--no-scheduler", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("loa serve did not answer /health")


def measure(engine: Engine, url: str, tmp: str, requests: int, with_export: bool) -> None:
    with session_scope(engine) as session:
        key = create_key(
            session, role=Role.OPERATOR, actor="bench", now=datetime.now(UTC), name="bench"
        ).key
    headers = {"Authorization": f"Bearer {key}"}
    env = worker_env(url, tmp, LOA_LOG_LEVEL="WARNING", LOA_SMS_PRICES=PRICES)
    port = _free_port()
    server = _serve(env, port)
    base = f"http://127.0.0.1:{port}"
    try:
        for name, params in _questions(engine).items():
            latencies, rows = ask(base, headers, params, requests)
            latencies.sort()
            p50 = statistics.median(latencies) * 1000
            p95 = latencies[int(len(latencies) * 0.95) - 1] * 1000
            alone = _in_process(engine, params)
            print(
                f"  {name:42s} {rows:5d} rows  p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  "
                f"max {latencies[-1] * 1000:6.1f} ms  query alone {alone:5.1f} ms  "
                f"(load average {os.getloadavg()[0]:.1f})",
                flush=True,
            )
        if with_export:
            print("  " + export(base, headers, server.pid), flush=True)
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=30)
        if b"Traceback" in errors:
            print(errors.decode()[-3000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/loa_bench_stats"
    )
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--districts", type=int, default=12)
    parser.add_argument("--communes", type=int, default=500)
    parser.add_argument("--chunk", type=int, default=20_000, help="recipient ids per outbox insert")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--reuse", action="store_true", help="measure an already seeded database")
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument(
        "--zero-keys",
        action="store_true",
        help="with --reuse: add the keys dispatch leaves at zero to a database seeded without them",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = worker_env(args.url, tmp)
        if not args.reuse:
            recreate_database(args.url)
            subprocess.run([LOA, "db", "upgrade"], env=env, check=True, capture_output=True)
        engine = make_engine(Settings(database_url=args.url, data_dir=Path(tmp)))
        if not args.reuse:
            started = time.perf_counter()
            seed(engine, args)
            print(f"seeded in {time.perf_counter() - started:.0f} s", flush=True)
        elif args.zero_keys:
            print(f"added {_seed_zero_keys(engine):,} keys at zero to stats_rollup", flush=True)
            print(f"deleted {_prune_done_waves(engine):,} of the waves done", flush=True)
        print("rows: " + ", ".join(f"{t} {n:,}" for t, n in sizes(engine).items()), flush=True)
        measure(engine, args.url, tmp, args.requests, not args.no_export)
        engine.dispose()


if __name__ == "__main__":
    main()
