"""Operations on SQLite and PostgreSQL: heartbeats written and seen, the scheduler leader shown,
stale and stopped processes not counted, the due queue's depth and age with a FakeClock, /metrics
parsed with prometheus_client's own parser, its token, and JSON log lines carrying the ids."""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import Engine, select
from sqlmodel import col

from api.app import create_app
from channels.base import Capabilities, Channel, Outcome, OutgoingMessage, SendResult
from channels.console import ConsoleChannel
from loa.db import session_scope
from loa.logs import configure_logging
from loa.models import OutboxMessage, Worker, WorkerKind
from loa.settings import Settings
from scheduler.dispatch import dispatch_once
from scheduler.heartbeat import Heartbeat
from scheduler.leader import leadership_for
from scheduler.lifecycle import pause_campaign
from scheduler.service import DispatchWorker, SchedulerService
from scheduler.tick import run_tick
from tests.builders import add_areas, add_recipient, launch
from tests.clirun import LOA, loa_env
from tests.conftest import FakeClock

FIRE_AT = datetime(2026, 5, 8, 0, 30, tzinfo=UTC)  # 07:30 in Hà Tĩnh: the info window is open
PHONES = ("+84912000001", "+84912000002", "+84912000003")
WAVE = {
    "name": "Lễ ra quân",
    "channel": "sms",
    "class": "info",
    "at": "2026-05-08 07:30",
    "audience": {"areas": ["42"]},
    "template": "BHXH: {{ name }} oi, thang 5 la Thang van dong BHXH toan dan.",
}


@pytest.fixture
def ops_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"heartbeat_seconds": 10, "heartbeat_stale_seconds": 60})


def _heartbeat(engine: Engine, clock: FakeClock, worker_id: str, kind: WorkerKind) -> Heartbeat:
    return Heartbeat(
        engine,
        worker_id=worker_id,
        kind=kind,
        clock=clock,
        every_seconds=10,
        forget_after_days=7,
    )


def _row(engine: Engine, worker_id: str) -> Worker | None:
    with session_scope(engine) as session:
        return session.get(Worker, worker_id)


def _health(client: TestClient) -> dict[str, Any]:
    response = client.get("/health")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics answer, parsed by prometheus_client: (name, labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _metric(client: TestClient, name: str, **labels: str) -> float | None:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return _samples(response.text).get((name, tuple(sorted(labels.items()))))


def _people(engine: Engine, clock: FakeClock, phones: Sequence[str] = PHONES) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        for phone in phones:
            add_recipient(session, phone, now=clock())


def _fire(engine: Engine, settings: Settings, clock: FakeClock) -> int:
    """A running campaign whose one wave fired at FIRE_AT: its messages are planned, due then."""
    campaign_id = launch(engine, {"name": "Tháng vận động", "waves": [WAVE]}, settings, clock())
    clock.now = FIRE_AT
    run_tick(engine, now=FIRE_AT, settings=settings)
    return campaign_id


# --- heartbeats -------------------------------------------------------------------------------


def test_a_heartbeat_is_written_at_most_every_n_seconds_and_seen_until_stale(
    engine: Engine, ops_settings: Settings, clock: FakeClock
) -> None:
    beat = _heartbeat(engine, clock, "host-a:101:abcdef", WorkerKind.WORKER)
    started = clock()
    assert beat.beat() is True
    row = _row(engine, "host-a:101:abcdef")
    assert row is not None
    assert (row.kind, row.seen_at, row.started_at, row.stopped_at) == (
        "worker",
        started,
        started,
        None,
    )

    clock.advance(seconds=9)
    assert beat.beat() is False  # within the 10 s: nothing written
    assert _row(engine, "host-a:101:abcdef").seen_at == started  # type: ignore[union-attr]
    clock.advance(seconds=1)
    assert beat.beat() is True
    assert _row(engine, "host-a:101:abcdef").seen_at == clock()  # type: ignore[union-attr]

    with TestClient(create_app(ops_settings, engine, clock=clock)) as client:
        workers = _health(client)["workers"]
        assert workers["by_kind"]["worker"] == 1
        assert [w["id"] for w in workers["list"] if w["kind"] == "worker"] == ["host-a:101:abcdef"]
        # 60 s after the last beat it still counts; a moment later it does not.
        clock.advance(seconds=60)
        assert _health(client)["workers"]["by_kind"]["worker"] == 1
        clock.advance(seconds=1)
        health = _health(client)
        assert health["workers"]["by_kind"]["worker"] == 0
        assert health["status"] == "degraded"
        assert any("no dispatch worker" in p for p in health["problems"])
        assert _metric(client, "loa_processes_seen", kind="worker") == 0

        # Beating again brings it back; stopping takes it out at once.
        assert beat.beat() is True
        assert _metric(client, "loa_processes_seen", kind="worker") == 1
        beat.stop()
        assert _row(engine, "host-a:101:abcdef").stopped_at == clock()  # type: ignore[union-attr]
        assert _health(client)["workers"]["by_kind"]["worker"] == 0


def test_rows_of_long_gone_processes_are_forgotten_when_a_process_starts(
    engine: Engine, clock: FakeClock
) -> None:
    _heartbeat(engine, clock, "old:1:aaaaaa", WorkerKind.WORKER).beat()
    clock.advance(days=7, seconds=1)
    _heartbeat(engine, clock, "new:2:bbbbbb", WorkerKind.WORKER).beat()
    assert _row(engine, "old:1:aaaaaa") is None
    assert _row(engine, "new:2:bbbbbb") is not None


def test_the_leader_is_shown_with_its_standby_and_none_when_not_seen(
    engine: Engine, ops_settings: Settings, clock: FakeClock
) -> None:
    """Two real schedulers (the advisory lock on PostgreSQL, the file lock on SQLite): the one
    that leads is shown; after it stops, the other; when no leader beats, `none` and degraded."""
    first = SchedulerService(engine, ops_settings, clock, leadership_for(engine))
    second = SchedulerService(engine, ops_settings, clock, leadership_for(engine))
    stopped = False
    try:
        first.tick()
        second.tick()
        with TestClient(create_app(ops_settings, engine, clock=clock)) as client:
            health = _health(client)
            assert health["scheduler"]["leader"]["id"] == first.heartbeat.worker_id
            assert health["scheduler"]["standbys"] == 1
            assert health["workers"]["by_kind"]["scheduler"] == 2
            assert not any("scheduler" in p for p in health["problems"])
            assert _metric(client, "loa_scheduler_leader_present") == 1

            first.shutdown()
            stopped = True
            clock.advance(seconds=1)
            second.tick()  # takes the lock, and beats at once as the leader
            health = _health(client)
            assert health["scheduler"]["leader"]["id"] == second.heartbeat.worker_id
            assert health["scheduler"]["standbys"] == 0
            assert health["scheduler"]["leader"]["seen_at"] == clock().isoformat()

            clock.advance(seconds=61)  # the leader's process hangs: no tick, no beat
            health = _health(client)
            assert health["scheduler"]["leader"] == "none"
            assert health["status"] == "degraded"
            assert any("no scheduler leader" in p for p in health["problems"])
            assert _metric(client, "loa_scheduler_leader_present") == 0
    finally:
        if not stopped:
            first.shutdown()
        second.shutdown()


def test_a_new_leader_clears_the_flag_a_dead_leader_left(engine: Engine, clock: FakeClock) -> None:
    dead = _heartbeat(engine, clock, "host-a:1:aaaaaa", WorkerKind.SCHEDULER)
    dead.beat(is_leader=True)  # then its machine vanishes: its row still says leader
    clock.advance(seconds=15)
    new = _heartbeat(engine, clock, "host-b:2:bbbbbb", WorkerKind.SCHEDULER)
    assert new.beat(is_leader=False) is True
    assert new.beat(is_leader=True) is True  # a change of leadership is written at once
    with session_scope(engine) as session:
        flags = dict(session.execute(select(col(Worker.id), col(Worker.is_leader))).all())
    assert flags == {"host-a:1:aaaaaa": False, "host-b:2:bbbbbb": True}


def test_a_worker_process_beats_from_its_loop_and_says_when_it_stops(
    engine: Engine, ops_settings: Settings, clock: FakeClock
) -> None:
    console = ConsoleChannel(ops_settings.console_sink)
    worker = DispatchWorker(engine, ops_settings, clock, lambda _: console)
    worker.start()
    try:
        seen = threading.Event()
        for _ in range(200):  # the loop's first turn beats; a bounded wait for it
            if _row(engine, worker.worker_id) is not None:
                seen.set()
                break
            threading.Event().wait(0.05)
        assert seen.is_set()
    finally:
        worker.stop()
    row = _row(engine, worker.worker_id)
    assert row is not None
    assert (row.kind, row.stopped_at) == ("worker", clock())


def test_the_api_process_of_loa_serve_is_seen(
    engine: Engine, ops_settings: Settings, clock: FakeClock
) -> None:
    with TestClient(create_app(ops_settings, engine, clock=clock)) as client:
        for _ in range(200):
            if _health(client)["workers"]["by_kind"]["serve"] == 1:
                break
            threading.Event().wait(0.05)
        serve = [w for w in _health(client)["workers"]["list"] if w["kind"] == "serve"]
        assert len(serve) == 1
    with session_scope(engine) as session:
        row = session.get(Worker, serve[0]["id"])
        assert row is not None and row.stopped_at is not None


# --- the due queue ----------------------------------------------------------------------------


def test_queue_depth_and_oldest_age_per_channel(
    engine: Engine, ops_settings: Settings, clock: FakeClock
) -> None:
    _people(engine, clock)
    with TestClient(create_app(ops_settings, engine, clock=clock)) as client:
        assert _health(client)["queue"] == {}  # nothing running
        campaign_id = _fire(engine, ops_settings, clock)
        clock.advance(seconds=90)
        assert _health(client)["queue"] == {
            "sms": {
                "due": 3,
                "at_least": False,
                "oldest_due_at": FIRE_AT.isoformat(),
                "oldest_age_seconds": 90.0,
            }
        }
        assert _metric(client, "loa_queue_due_messages", channel="sms") == 3
        assert _metric(client, "loa_queue_oldest_due_age_seconds", channel="sms") == 90

        # One is sent: two left, the oldest still waiting since FIRE_AT.
        one = ops_settings.model_copy(update={"worker_batch_size": 1})
        console = ConsoleChannel(ops_settings.console_sink)
        dispatch_once(
            engine, worker_id="w", clock=clock, settings=one, channel_for=lambda _: console
        )
        assert _health(client)["queue"]["sms"]["due"] == 2

        # Counting stops at the limit: "at least".
        limited = ops_settings.model_copy(update={"queue_count_limit": 1})
        with TestClient(create_app(limited, engine, clock=clock)) as capped:
            assert _health(capped)["queue"]["sms"] | {"oldest_age_seconds": 0} == {
                "due": 1,
                "at_least": True,
                "oldest_due_at": FIRE_AT.isoformat(),
                "oldest_age_seconds": 0,
            }

        # A paused campaign's messages are not waiting for a worker.
        with session_scope(engine) as session:
            pause_campaign(session, campaign_id, actor="approver", now=clock())
        assert _health(client)["queue"] == {}
        assert _metric(client, "loa_queue_due_messages", channel="sms") is None


def test_messages_not_yet_due_are_not_in_the_queue(
    engine: Engine, ops_settings: Settings, clock: FakeClock
) -> None:
    _people(engine, clock)
    _fire(engine, ops_settings, clock)
    with session_scope(engine) as session:
        # One retry waits for its backoff: planned, but due in five minutes.
        first = session.scalars(select(OutboxMessage).order_by(col(OutboxMessage.id))).first()
        assert first is not None
        first.due_at = FIRE_AT + timedelta(minutes=5)
    clock.advance(seconds=30)
    with TestClient(create_app(ops_settings, engine, clock=clock)) as client:
        assert _health(client)["queue"]["sms"]["due"] == 2
        clock.advance(minutes=5)
        queue = _health(client)["queue"]["sms"]
        assert (queue["due"], queue["oldest_age_seconds"]) == (3, 330.0)


# --- /metrics ---------------------------------------------------------------------------------


def test_http_requests_are_counted_by_route_template(
    engine: Engine, ops_settings: Settings, clock: FakeClock
) -> None:
    route = "/api/v1/campaigns/{campaign_id}"
    with TestClient(create_app(ops_settings, engine, clock=clock)) as client:
        labels = {"method": "GET", "route": route, "status": "401"}
        before = _metric(client, "loa_http_requests_total", **labels) or 0
        unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
        before_unmatched = _metric(client, "loa_http_requests_total", **unmatched) or 0
        for n in (1, 2, 3):
            assert client.get(f"/api/v1/campaigns/{n}").status_code == 401
        assert client.get("/no/such/path/12345").status_code == 404
        text = client.get("/metrics").text
        samples = _samples(text)
        assert samples[("loa_http_requests_total", tuple(sorted(labels.items())))] == before + 3
        assert (
            samples[("loa_http_requests_total", tuple(sorted(unmatched.items())))]
            == before_unmatched + 1
        )
        assert "/api/v1/campaigns/1" not in text and "/no/such/path" not in text
        count = ("loa_http_request_duration_seconds_count", (("method", "GET"), ("route", route)))
        assert samples[count] >= 3
        assert samples[("loa_database_up", ())] == 1


def test_metrics_needs_the_token_when_one_is_set(
    engine: Engine, ops_settings: Settings, clock: FakeClock
) -> None:
    guarded = ops_settings.model_copy(update={"metrics_token": SecretStr("s3cret-scrape-token")})
    with TestClient(create_app(guarded, engine, clock=clock)) as client:
        missing = client.get("/metrics")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "unauthenticated"
        assert "LOA_METRICS_TOKEN" in missing.json()["error"]["message"]
        assert "s3cret" not in missing.text
        wrong = client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape-tokeN"})
        assert wrong.status_code == 401
        right = client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape-token"})
        assert right.status_code == 200
        assert right.headers["content-type"].startswith("text/plain")
        assert ("loa_database_up", ()) in _samples(right.text)
        # /health stays open for the load balancer, and tells nothing of the token.
        health = client.get("/health")
        assert health.status_code == 200
        assert "s3cret" not in health.text
    with TestClient(create_app(ops_settings, engine, clock=clock)) as client:
        assert client.get("/metrics").status_code == 200  # unset: open


class Scripted:
    """Answers by the number's last digit: 1 accepted, 2 permanent (21211), 3 transient (20429)."""

    name = "scripted"
    capabilities = Capabilities(
        max_batch=None, status_callbacks=False, lookup=False, max_body_chars=1600
    )

    def send_batch(self, messages: Sequence[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        answers = {
            "1": (Outcome.ACCEPTED, None),
            "2": (Outcome.PERMANENT, "21211"),
            "3": (Outcome.TRANSIENT, "20429"),
        }
        return [
            SendResult(
                m.message_id,
                answers[m.to[-1]][0],
                provider_id=f"p-{m.to}" if m.to.endswith("1") else None,
                error_code=answers[m.to[-1]][1],
            )
            for m in messages
        ]


def test_send_attempts_and_errors_are_counted_by_adapter(
    engine: Engine, ops_settings: Settings, clock: FakeClock
) -> None:
    _people(engine, clock)
    _fire(engine, ops_settings, clock)
    adapter: Channel = Scripted()
    with TestClient(create_app(ops_settings, engine, clock=clock)) as client:

        def value(name: str, **labels: str) -> float:
            return _metric(client, name, **labels) or 0

        before = {
            "accepted": value("loa_send_attempts_total", adapter="scripted", result="accepted"),
            "permanent": value("loa_send_attempts_total", adapter="scripted", result="permanent"),
            "transient": value("loa_send_attempts_total", adapter="scripted", result="transient"),
            "21211": value("loa_send_errors_total", adapter="scripted", error_code="21211"),
            "20429": value("loa_send_errors_total", adapter="scripted", error_code="20429"),
        }
        dispatch_once(
            engine, worker_id="w", clock=clock, settings=ops_settings, channel_for=lambda _: adapter
        )
        after = {
            "accepted": value("loa_send_attempts_total", adapter="scripted", result="accepted"),
            "permanent": value("loa_send_attempts_total", adapter="scripted", result="permanent"),
            "transient": value("loa_send_attempts_total", adapter="scripted", result="transient"),
            "21211": value("loa_send_errors_total", adapter="scripted", error_code="21211"),
            "20429": value("loa_send_errors_total", adapter="scripted", error_code="20429"),
        }
        assert {k: after[k] - before[k] for k in before} == dict.fromkeys(before, 1)
        help_text = client.get("/metrics").text
        assert "# HELP loa_send_attempts_total Send attempts recorded by this process's" in (
            help_text
        )
        # The whole cluster's figures, from the statistics rollup: one sent, one failed with
        # its code, one waiting for its retry.
        measures = {
            m: value("loa_messages", channel="sms", measure=m)
            for m in ("targeted", "sent", "failed", "pending", "delivered")
        }
        assert measures == {"targeted": 3, "sent": 1, "failed": 1, "pending": 1, "delivered": 0}
        assert value("loa_message_errors", channel="sms", error_code="21211") == 1
        assert value("loa_loudspeaker_plays") == 0


# --- JSON logs --------------------------------------------------------------------------------


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """The root logger is put back as pytest had it after the test configures it."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        yield
    finally:
        root.handlers[:], root.level = saved


@pytest.fixture
def json_log(restored_logging: None) -> io.StringIO:
    """The root logger as `loa` configures it with LOA_LOG_FORMAT=json, writing to a buffer."""
    stream = io.StringIO()
    configure_logging(Settings(log_format="json", log_level="DEBUG"), stream=stream)
    return stream


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_log_lines_carry_the_ids_of_messages_waves_and_workers(
    engine: Engine, ops_settings: Settings, clock: FakeClock, json_log: io.StringIO
) -> None:
    _people(engine, clock, ("+84912000001", "+84912000002"))
    campaign_id = _fire(engine, ops_settings, clock)
    adapter: Channel = Scripted()
    dispatch_once(
        engine,
        worker_id="host-a:7:abcdef/0",
        clock=clock,
        settings=ops_settings,
        channel_for=lambda _: adapter,
    )
    with session_scope(engine) as session:
        ids = dict(
            session.execute(
                select(col(OutboxMessage.id), col(OutboxMessage.wave_id)).order_by(
                    col(OutboxMessage.id)
                )
            ).all()
        )
    wave_id = next(iter(ids.values()))

    lines = _lines(json_log)
    for line in lines:
        assert {"timestamp", "level", "logger", "message"} <= set(line)
        datetime.fromisoformat(line["timestamp"])
    fired = next(line for line in lines if "fired" in line["message"])
    assert (fired["logger"], fired["level"]) == ("scheduler.tick", "INFO")
    assert (fired["wave_id"], fired["campaign_id"]) == (wave_id, campaign_id)
    batch = next(line for line in lines if line["message"].startswith("sent a batch"))
    assert (batch["worker_id"], batch["adapter"], batch["wave_ids"]) == (
        "host-a:7:abcdef/0",
        "scripted",
        [wave_id],
    )
    assert batch["outcomes"] == {"accepted": 1, "permanent": 1}
    per_message = {
        line["message_id"]: line
        for line in lines
        if line["logger"] == "scheduler.dispatch" and "message_id" in line
    }
    assert set(per_message) == set(ids)
    failed = next(line for line in per_message.values() if line["outcome"] == "permanent")
    assert (failed["wave_id"], failed["error_code"], failed["level"]) == (
        wave_id,
        "21211",
        "DEBUG",
    )


def test_text_is_the_default_log_format(restored_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(Settings(), stream=stream)
    logging.getLogger("scheduler.tick").info("wave %d fired", 7, extra={"wave_id": 7})
    line = stream.getvalue().strip()
    assert line.endswith("INFO scheduler.tick: wave 7 fired")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


# --- the database gone ------------------------------------------------------------------------


def test_without_the_database_health_is_503_and_metrics_says_so(tmp_path: Any) -> None:
    from loa.db import make_engine

    # Nothing listens on port 1: every connection is refused at once.
    settings = Settings(database_url="postgresql+psycopg://loa@127.0.0.1:1/loa", data_dir=tmp_path)
    engine = make_engine(settings)
    client = TestClient(create_app(settings, engine))  # no lifespan: nothing to beat
    health = client.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "error"
    assert health.json()["database"]["status"] == "error"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    samples = _samples(metrics.text)
    assert samples[("loa_database_up", ())] == 0
    assert not any(name.startswith("loa_queue") for name, _ in samples)
    engine.dispose()


# --- `loa worker` as a user runs it --------------------------------------------------------


def test_loa_worker_beats_logs_json_and_serves_its_own_metrics(
    db_url: str, tmp_path: Path, engine: Engine
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = loa_env(db_url, tmp_path, LOA_LOG_FORMAT="json", LOA_METRICS_TOKEN="worker-scrape-token")
    worker = subprocess.Popen(
        [LOA, "worker", "--metrics-port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        answer = None
        for _ in range(300):  # a bounded wait for the process to start listening
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            try:
                answer = httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                threading.Event().wait(0.1)
        assert answer is not None and answer.status_code == 401
        scraped = httpx.get(url, headers={"Authorization": "Bearer worker-scrape-token"})
        assert scraped.status_code == 200
        families = {f.name for f in text_string_to_metric_families(scraped.text)}
        assert {"loa_send_attempts", "loa_send_errors", "process_cpu_seconds"} <= families
        with session_scope(engine) as session:
            rows = session.scalars(select(Worker)).all()
        assert [(w.kind, w.stopped_at) for w in rows] == [("worker", None)]
    finally:
        worker.terminate()
        _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr
    with session_scope(engine) as session:
        row = session.scalars(select(Worker)).one()
    assert row.stopped_at is not None
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    started = [line for line in lines if "dispatch loop" in line["message"]]
    assert started and started[0]["worker_id"].startswith(row.id + "/")
    assert started[0]["level"] == "INFO" and started[0]["logger"] == "scheduler.service"
