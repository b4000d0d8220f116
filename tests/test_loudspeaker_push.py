"""The loudspeaker push adapter against real HTTP receivers on loopback that check every request
with `verify_push`, as a controller integration would: signatures, replays, retries, endpoint
inheritance, the endpoints file, emergency fan-out, and `loa loudspeaker ping`."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from channels.base import Outcome
from channels.loudspeaker_config import (
    Endpoint,
    EndpointConfig,
    area_chain,
    load_endpoints,
    parse_endpoints,
)
from channels.loudspeaker_push import (
    RetryPolicy,
    encode_body,
    parse_playlist,
    push,
    push_emergency,
    push_playlist,
    retry_after_seconds,
)
from channels.loudspeaker_signature import (
    REQUEST_ID_HEADER,
    MemoryNonceStore,
    PushRejected,
    PushReplayed,
    sign_push,
    verify_push,
)
from loa.db import session_scope
from loa.errors import InvalidInput
from tests.builders import add_areas
from tests.clirun import loa_env, run_loa

SECRET = "s3cret-for-district-436-xxxxxxxx"
SHA = "ab" * 32


# --- a receiver, as a controller vendor's integration would write it -----------------------------


@dataclass
class Seen:
    headers: dict[str, str]
    body: bytes
    verdict: str  # accepted, duplicate, rejected: <reason>, or scripted <status>


@dataclass
class Receiver:
    secret: str
    url: str = ""
    # Answers to give, in order, to requests that verify (then the push is accepted).
    script: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    nonces: MemoryNonceStore = field(default_factory=MemoryNonceStore)
    delay: float = 0.0  # seconds each request is held (for the concurrency bound)
    in_flight: list[int] | None = None  # shared [current, highest] across receivers
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The receiver's clock, which the timestamps are checked against (a test may inject one).
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            request_id = verify_push(
                headers, body, self.secret, self.now(), self.nonces, timedelta(minutes=5)
            )
        except PushReplayed:
            self.seen.append(Seen(headers, body, "duplicate"))
            return 200, {}, b'{"status":"duplicate"}'
        except PushRejected as exc:
            self.seen.append(Seen(headers, body, f"rejected: {exc.reason}"))
            return 401, {}, json.dumps({"error": exc.reason}).encode()
        with self.lock:
            scripted = self.script.pop(0) if self.script else None
        if scripted is not None:
            status, extra, reason = scripted
            if status >= 500 or status in (408, 429):
                self.nonces.release(request_id)  # not acted on: the retry must be taken
            self.seen.append(Seen(headers, body, f"scripted {status}"))
            return status, extra, json.dumps({"error": reason}).encode()
        self.seen.append(Seen(headers, body, "accepted"))
        self.accepted.append(json.loads(body))
        return 200, {}, b'{"status":"accepted"}'


def _serve(receiver: Receiver) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            counter = receiver.in_flight
            if counter is not None:
                with receiver.lock:
                    counter[0] += 1
                    counter[1] = max(counter[1], counter[0])
            try:
                if receiver.delay:
                    time.sleep(receiver.delay)
                status, extra, answer = receiver.handle(dict(self.headers.items()), body)
            finally:
                if counter is not None:
                    with receiver.lock:
                        counter[0] -= 1
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/push"
    return server


Serve = Callable[..., Receiver]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Starts receivers on loopback; all are stopped at the end of the test."""
    servers: list[ThreadingHTTPServer] = []

    def start(secret: str = SECRET, **kwargs: Any) -> Receiver:
        receiver = Receiver(secret, **kwargs)
        servers.append(_serve(receiver))
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def endpoint(receiver: Receiver, area: str = "436", secret: str | None = None) -> Endpoint:
    return Endpoint(area, receiver.url, secret or receiver.secret, 5.0, {"X-Vendor-Tenant": "t1"})


def config(*pairs: tuple[str, Receiver]) -> EndpointConfig:
    return EndpointConfig({a: endpoint(r, a) for a, r in pairs}, source="test")


class Sleeps:
    """The injected sleep: records what it was asked to wait, waits for nothing."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def now() -> datetime:
    return datetime.now(UTC)


POLICY = RetryPolicy(max_attempts=4, base_seconds=1.0, max_seconds=30.0)


def item(
    item_id: str = "b-1", communes: tuple[str, ...] = ("18301",), priority: str = "normal"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "commune_codes": list(communes),
        "start_local": "06:00",
        "priority": priority,
        "audio_url": f"http://loa.example.vn/api/v1/audio/{SHA}.mp3",
        "sha256": SHA,
        "bytes": 480_000,
        "duration_ms": 60_000,
        "valid_until": "2026-05-08T23:59:59+07:00",
    }


def playlist(district: str = "436") -> dict[str, Any]:
    return {"district": district, "date": "2026-05-08", "items": [item(), item("b-2")]}


def run_push(target: Endpoint, body: bytes, **kwargs: Any) -> Any:
    async def go() -> Any:
        async with httpx.AsyncClient() as client:
            return await push(target, body, client=client, clock=kwargs.pop("clock", now), **kwargs)

    return asyncio.run(go())


# --- signature and replay ------------------------------------------------------------------------


def test_a_good_push_is_accepted_with_its_items(serve: Serve) -> None:
    receiver = serve()
    sleeps = Sleeps()
    result = asyncio.run(
        push_playlist(
            config(("42", receiver)),
            ["42", "436"],
            playlist(),
            policy=POLICY,
            clock=now,
            sleep=sleeps,
        )
    )
    assert result.outcome is Outcome.ACCEPTED and result.attempts == 1 and sleeps.waits == []
    assert result.area_code == "42"  # the province's endpoint, inherited by district 436
    [got] = receiver.accepted
    assert got["area"] == "436" and got["date"] == "2026-05-08" and got["emergency"] is False
    assert [i["id"] for i in got["items"]] == ["b-1", "b-2"]
    # Fields the adapter does not know travel as they came.
    assert got["items"][0]["start_local"] == "06:00" and got["items"][0]["sha256"] == SHA
    assert receiver.seen[0].headers["X-Vendor-Tenant"] == "t1"
    assert receiver.seen[0].headers[REQUEST_ID_HEADER] == result.request_id


def test_a_tampered_body_is_refused(serve: Serve) -> None:
    receiver = serve()
    body = encode_body({"area": "436", "items": []})
    headers = sign_push(SECRET, body, request_id="0" * 32, now=now())
    answer = httpx.post(receiver.url, content=body.replace(b"436", b"437"), headers=headers)
    assert answer.status_code == 401
    assert "signature does not match" in answer.json()["error"]
    assert receiver.accepted == []


def test_a_wrong_secret_is_refused_and_not_retried(serve: Serve) -> None:
    receiver = serve()
    sleeps = Sleeps()
    result = run_push(
        endpoint(receiver, secret="another-secret-of-enough-length"),
        encode_body({"items": []}),
        policy=POLICY,
        sleep=sleeps,
    )
    assert result.outcome is Outcome.PERMANENT and result.attempts == 1
    assert result.status_code == 401 and "signature does not match" in (result.reason or "")
    assert sleeps.waits == [] and receiver.accepted == []


def test_an_old_timestamp_is_refused(serve: Serve) -> None:
    receiver = serve()
    ten_minutes_ago = now() - timedelta(minutes=10)
    result = run_push(
        endpoint(receiver), encode_body({"items": []}), policy=POLICY, clock=lambda: ten_minutes_ago
    )
    assert result.outcome is Outcome.PERMANENT
    assert "s old (tolerance 300 s)" in (result.reason or "") and receiver.accepted == []


def test_a_replayed_request_is_not_acted_on_again(serve: Serve) -> None:
    receiver = serve()
    result = run_push(endpoint(receiver), encode_body({"items": [1]}), policy=POLICY)
    assert result.accepted
    captured = receiver.seen[0]
    replay = httpx.post(receiver.url, content=captured.body, headers=captured.headers)
    assert replay.json() == {"status": "duplicate"}
    assert receiver.seen[1].verdict == "duplicate" and len(receiver.accepted) == 1


def test_verify_push_checks_each_part() -> None:
    store = MemoryNonceStore()
    at = datetime(2026, 5, 8, 6, 0, tzinfo=UTC)
    body = b'{"items":[]}'
    headers = sign_push(SECRET, body, request_id="a" * 32, now=at)
    lowered = {k.lower(): v for k, v in headers.items()}  # names are case-insensitive
    assert verify_push(lowered, body, SECRET, at + timedelta(seconds=299), store) == "a" * 32
    with pytest.raises(PushReplayed):
        verify_push(headers, body, SECRET, at, store)
    store.release("a" * 32)
    assert verify_push(headers, body, SECRET, at, store) == "a" * 32
    with pytest.raises(PushRejected, match="in the future"):
        verify_push(headers, body, SECRET, at - timedelta(minutes=6), MemoryNonceStore())
    with pytest.raises(PushRejected, match="missing header X-Loa-Signature"):
        verify_push(
            {k: v for k, v in headers.items() if "Signature" not in k}, body, SECRET, at, store
        )
    forged_id = {**headers, REQUEST_ID_HEADER: "b" * 32}  # a new id on an old signature
    with pytest.raises(PushRejected, match="signature does not match"):
        verify_push(forged_id, body, SECRET, at, MemoryNonceStore())
    # While a secret changes, a request may carry two signatures; one matching is enough.
    rotated = sign_push("the-new-secret-0123456789", body, request_id="c" * 32, now=at)
    both = {**rotated, "X-Loa-Signature": f"{rotated['X-Loa-Signature']}, v1=00"}
    assert verify_push(both, body, "the-new-secret-0123456789", at, store) == "c" * 32


# --- retries ---------------------------------------------------------------------------------


def test_503_is_retried_with_the_same_request_id_until_accepted(
    serve: Serve,
) -> None:
    receiver = serve(script=[(503, {}, "busy"), (503, {}, "busy")])
    sleeps = Sleeps()
    result = run_push(
        endpoint(receiver),
        encode_body({"items": []}),
        policy=POLICY,
        sleep=sleeps,
        rng=random.Random(7),
    )
    assert result.outcome is Outcome.ACCEPTED and result.attempts == 3
    assert [s.verdict for s in receiver.seen] == ["scripted 503", "scripted 503", "accepted"]
    ids = {s.headers[REQUEST_ID_HEADER] for s in receiver.seen}
    assert ids == {result.request_id}
    assert [s.headers["X-Loa-Attempt"] for s in receiver.seen] == ["1", "2", "3"]
    # Backoff doubles, half of it jitter: 0.5-1 s, then 1-2 s.
    assert len(sleeps.waits) == 2
    assert 0.5 <= sleeps.waits[0] <= 1.0 and 1.0 <= sleeps.waits[1] <= 2.0
    assert result.waits == tuple(sleeps.waits)


def test_429_waits_as_long_as_retry_after_says(serve: Serve) -> None:
    receiver = serve(script=[(429, {"Retry-After": "7"}, "slow down")])
    sleeps = Sleeps()
    result = run_push(endpoint(receiver), encode_body({"items": []}), policy=POLICY, sleep=sleeps)
    assert result.accepted and result.attempts == 2 and sleeps.waits == [7.0]


def test_a_retry_after_beyond_the_limit_ends_the_push(serve: Serve) -> None:
    receiver = serve(script=[(503, {"Retry-After": "3600"}, "maintenance")])
    sleeps = Sleeps()
    result = run_push(endpoint(receiver), encode_body({"items": []}), policy=POLICY, sleep=sleeps)
    assert result.outcome is Outcome.TRANSIENT and result.attempts == 1 and sleeps.waits == []
    assert "maintenance" in (result.reason or "") and "3600 s" in (result.reason or "")


def test_retry_after_as_an_http_date() -> None:
    at = datetime(2026, 5, 8, 6, 0, tzinfo=UTC)
    assert retry_after_seconds("Fri, 08 May 2026 06:00:30 GMT", at) == 30.0
    assert retry_after_seconds("soon", at) is None


def test_a_400_is_permanent_with_the_reason(serve: Serve) -> None:
    receiver = serve(script=[(400, {}, "items[0].audio_url: unreachable host")])
    sleeps = Sleeps()
    result = run_push(endpoint(receiver), encode_body({"items": []}), policy=POLICY, sleep=sleeps)
    assert result.outcome is Outcome.PERMANENT and result.attempts == 1 and sleeps.waits == []
    assert result.reason == "HTTP 400 Bad Request: items[0].audio_url: unreachable host"
    assert len(receiver.seen) == 1


def test_a_refused_connection_is_retried_then_reported(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = Endpoint("436", f"http://127.0.0.1:{port}/push", SECRET, 5.0, {})
    sleeps = Sleeps()
    result = run_push(target, encode_body({"items": []}), policy=POLICY, sleep=sleeps)
    # Nothing can have arrived: transient, not ambiguous.
    assert result.outcome is Outcome.TRANSIENT and result.attempts == 4 and len(sleeps.waits) == 3
    assert "cannot connect" in (result.reason or "") and "gave up after 4 attempts" in (
        result.reason or ""
    )


def test_no_answer_in_time_is_ambiguous(serve: Serve) -> None:
    receiver = serve(delay=1.0)
    target = Endpoint("436", receiver.url, SECRET, 0.2, {})
    result = run_push(
        target, encode_body({"items": []}), policy=RetryPolicy(max_attempts=1), sleep=Sleeps()
    )
    # The controller may have taken it: re-pushing must reuse the request id.
    assert result.outcome is Outcome.AMBIGUOUS and "no answer within 0.2 s" in (result.reason or "")


# --- endpoints by area ---------------------------------------------------------------------------


def test_an_area_uses_its_own_endpoint_else_its_nearest_ancestors(
    serve: Serve,
) -> None:
    province, district = serve(), serve()
    cfg = config(("42", province), ("436", district))
    assert cfg.endpoint_for(area_chain("/42/436/18301/")).area_code == "436"  # type: ignore[union-attr]
    assert cfg.endpoint_for(area_chain("/42/440/18401/")).area_code == "42"  # type: ignore[union-attr]
    assert cfg.endpoint_for(area_chain("/40/16801/")) is None
    # A playlist of district 440 goes to the province's controller, one of 436 to its own.
    for code in ("440", "436"):
        result = asyncio.run(
            push_playlist(cfg, ["42", code], playlist(code), policy=POLICY, clock=now)
        )
        assert result.accepted
    assert [p["area"] for p in province.accepted] == ["440"]
    assert [p["area"] for p in district.accepted] == ["436"]
    with pytest.raises(InvalidInput, match="no loudspeaker endpoint serves area 16801"):
        asyncio.run(
            push_playlist(cfg, ["40", "16801"], playlist("16801"), policy=POLICY, clock=now)
        )


def test_the_endpoints_file_is_validated_whole(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.yaml"
    path.write_text(
        """
endpoints:
  42:
    url: https://loa-push.example.vn/push
    secret_env: LS_SECRET_42
  "436":
    url: ftp://vendor.example.com/
    secret: "a-secret-long-enough-1234"
  "437":
    url: https://vendor.example.com/437
  "438":
    url: https://vendor.example.com/438
    secret: "a-secret-long-enough-1234"
    headers: {X-Loa-Signature: forged}
    timeout_seconds: 0
""",
        encoding="utf-8",
    )
    with pytest.raises(InvalidInput) as caught:
        load_endpoints(path, environ={})
    message = caught.value.message
    assert message.startswith(str(path))
    assert "area 436: url: URL scheme should be 'http' or 'https'" in message
    assert "area 437: Value error, give exactly one of secret and secret_env" in message
    assert "area 438: headers: Value error, X-Loa-Signature is written by Loa" in message
    assert "area 438: timeout_seconds: Input should be greater than 0" in message

    path.write_text(
        "timeout_seconds: 3\nendpoints:\n  42: {url: 'https://a.example/p', secret_env: LS_42}\n",
        encoding="utf-8",
    )
    with pytest.raises(InvalidInput, match="area 42: secret_env: LS_42 is not set"):
        load_endpoints(path, environ={})
    loaded = load_endpoints(path, environ={"LS_42": "x" * 20})
    assert loaded.endpoints["42"].timeout_seconds == 3 and loaded.endpoints["42"].secret == "x" * 20
    assert "x" * 20 not in repr(loaded)

    as_json = tmp_path / "endpoints.json"
    as_json.write_text('{"endpoints": {"436": {"url": "http://h/p", "secret": "short"}}}')
    with pytest.raises(InvalidInput, match="area 436: Value error, secret: at least 16"):
        load_endpoints(as_json)
    as_json.write_text('{"endpoints": {"436": ')
    with pytest.raises(InvalidInput, match="not valid JSON"):
        load_endpoints(as_json)
    with pytest.raises(InvalidInput, match="cannot be read"):
        load_endpoints(tmp_path / "missing.yaml")
    with pytest.raises(InvalidInput, match="set LOA_LOUDSPEAKER_ENDPOINTS_FILE"):
        load_endpoints(None)
    with pytest.raises(InvalidInput, match="endpoints: Field required"):
        parse_endpoints({"endpoint": {}}, source="x")


def test_the_example_config_loads() -> None:
    example = Path(__file__).resolve().parent.parent / "docs/loudspeaker-endpoints.example.yaml"
    loaded = load_endpoints(example, environ={"LOA_LS_SECRET_42": "p" * 40})
    assert set(loaded.endpoints) == {"42", "436"}


def test_a_bad_playlist_names_the_item_and_field() -> None:
    document = playlist()
    document["items"][1]["sha256"] = "nothex"
    del document["items"][0]["duration_ms"]
    with pytest.raises(InvalidInput) as caught:
        parse_playlist(document)
    assert "items.1.sha256: String should match pattern" in caught.value.message
    assert "items.0.duration_ms: Field required" in caught.value.message


# --- emergency ---------------------------------------------------------------------------------


def test_an_emergency_goes_to_every_endpoint_of_its_communes_within_the_bound(
    serve: Serve,
) -> None:
    in_flight = [0, 0]
    province, d436, d437 = (serve(delay=0.1, in_flight=in_flight) for _ in range(3))
    cfg = config(("42", province), ("436", d436), ("437", d437))
    chains = {
        "18301": ["42", "436", "18301"],
        "18302": ["42", "436", "18302"],
        "18350": ["42", "437", "18350"],
        "18401": ["42", "440", "18401"],  # no district endpoint: the province's
        "16801": ["40", "16801"],  # no endpoint at all
    }
    alert = item("khan-1", tuple(chains), priority="emergency")
    done = asyncio.run(
        push_emergency(
            cfg, alert, chains, day=date(2026, 5, 8), policy=POLICY, clock=now, concurrency=1
        )
    )
    assert [(r.area_code, r.outcome) for r in done.results] == [
        ("42", Outcome.ACCEPTED),
        ("436", Outcome.ACCEPTED),
        ("437", Outcome.ACCEPTED),
    ]
    assert done.uncovered == ["16801"]
    for receiver, area, communes in (
        (province, "42", ["18401"]),
        (d436, "436", ["18301", "18302"]),
        (d437, "437", ["18350"]),
    ):
        [got] = receiver.accepted
        assert got["area"] == area and got["emergency"] is True
        assert [i["commune_codes"] for i in got["items"]] == [communes]
    assert in_flight[1] == 1  # the bound held: never two at once

    in_flight[1] = 0
    asyncio.run(
        push_emergency(
            cfg, alert, chains, day=date(2026, 5, 8), policy=POLICY, clock=now, concurrency=3
        )
    )
    # Sent side by side when allowed (each receiver holds its request 0.1 s).
    assert in_flight[1] >= 2


def test_an_emergency_push_refuses_what_it_cannot_route(serve: Serve) -> None:
    receiver = serve()
    cfg = config(("42", receiver))
    with pytest.raises(InvalidInput, match="not 'emergency'"):
        asyncio.run(
            push_emergency(
                cfg,
                item(),
                {"18301": ["42", "18301"]},
                day=date(2026, 5, 8),
                policy=POLICY,
                clock=now,
                concurrency=2,
            )
        )
    with pytest.raises(InvalidInput, match="no area chain for commune\\(s\\) 18301"):
        asyncio.run(
            push_emergency(
                cfg,
                item(priority="emergency"),
                {},
                day=date(2026, 5, 8),
                policy=POLICY,
                clock=now,
                concurrency=2,
            )
        )
    assert receiver.seen == []


# --- the operator's ping -------------------------------------------------------------------------


def test_loa_loudspeaker_ping(serve: Serve, engine: Engine, db_url: str, tmp_path: Path) -> None:
    with session_scope(engine) as session:
        add_areas(session)
    receiver = serve()
    path = tmp_path / "endpoints.yaml"
    path.write_text(
        f"endpoints:\n  '42': {{url: '{receiver.url}', secret_env: LS_SECRET, "
        "headers: {X-Vendor-Tenant: ha-tinh}}\n",
        encoding="utf-8",
    )
    env = loa_env(db_url, tmp_path, LOA_LOUDSPEAKER_ENDPOINTS_FILE=str(path), LS_SECRET=SECRET)
    answered = run_loa("loudspeaker", "ping", "18301", env=env)
    assert "(configured for area 42)" in answered.stdout
    assert 'answer: HTTP 200 {"status":"accepted"}' in answered.stdout
    [got] = receiver.accepted
    assert got["area"] == "18301" and got["test"] is True and got["items"] == []

    refused = run_loa(
        "loudspeaker",
        "ping",
        "18301",
        env={**env, "LS_SECRET": "not-the-secret-at-all"},
        check=False,
    )
    assert refused.returncode == 1 and "answer: HTTP 401" in refused.stdout
    assert "permanent: HTTP 401 Unauthorized: signature does not match" in refused.stderr
    nowhere = run_loa("loudspeaker", "ping", "16801", env=env, check=False)
    assert "no loudspeaker endpoint serves area 16801" in nowhere.stderr
    unknown = run_loa("loudspeaker", "ping", "99999", env=env, check=False)
    assert "area 99999 is not in the area table" in unknown.stderr
