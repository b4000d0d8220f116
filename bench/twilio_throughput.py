"""Benchmark: messages per second through the Twilio adapter (the real SDK) from one process.

    .venv/bin/python -m bench.twilio_throughput --messages 6000 --runs 3

A stub of Twilio's `Messages.create` (aiohttp, in a process of its own so that its work is not
counted against the adapter's) answers each request with Twilio's JSON after --latency-ms
(50 ms). The adapter is built from settings as `loa worker` builds it (LOA_SMS_CHANNEL=twilio,
LOA_TWILIO_API_URL pointing at the stub) and sent batches of --batch messages from --loops
threads at once, as a worker's dispatch loops call it. No database: this measures the adapter
(the SDK, requests and the thread pool), which the dispatcher's own figures leave out.
Throughput = messages / wall time of the run; the median of --runs is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

from channels.base import Outcome, OutgoingMessage
from channels.registry import channel_for
from loa.settings import Settings

ACCOUNT = "AC" + "0123456789abcdef" * 2


def serve(port: int, latency: float) -> None:
    """The stub: Twilio's 201 answer to Messages.create, after `latency` seconds."""
    from aiohttp import web

    async def create(request: web.Request) -> web.Response:
        form = await request.post()
        await asyncio.sleep(latency)
        sid = "SM" + uuid.uuid4().hex
        body = {
            "sid": sid,
            "account_sid": request.match_info["account"],
            "to": form.get("To"),
            "from": form.get("From"),
            "body": form.get("Body"),
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": "Fri, 08 May 2026 00:30:00 +0000",
            "uri": f"/2010-04-01/Accounts/{request.match_info['account']}/Messages/{sid}.json",
        }
        return web.Response(status=201, text=json.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", create)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=1024)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the stub did not listen on port {port}")


def run_once(settings: Settings, messages: int, batch: int, loops: int) -> float:
    channel = channel_for("sms", settings)
    now = datetime.now(UTC)
    batches = [
        [
            OutgoingMessage(i, 1, f"+8491{i:07d}", f"BHXH tinh: thong bao so {i}")
            for i in range(start, min(start + batch, messages))
        ]
        for start in range(0, messages, batch)
    ]
    pending = list(reversed(batches))
    lock = threading.Lock()
    accepted = [0]

    def loop() -> None:
        while True:
            with lock:
                if not pending:
                    return
                mine = pending.pop()
            results = channel.send_batch(mine, now=now)
            ok = sum(r.outcome == Outcome.ACCEPTED for r in results)
            with lock:
                accepted[0] += ok

    threads = [threading.Thread(target=loop) for _ in range(loops)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    close = getattr(channel, "close", None)
    if close:
        close()
    if accepted[0] != messages:
        raise SystemExit(f"only {accepted[0]} of {messages} messages were accepted")
    return messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=200, help="messages per send_batch call")
    parser.add_argument("--loops", type=int, default=4, help="threads calling send_batch")
    parser.add_argument("--concurrency", type=int, default=64, help="LOA_TWILIO_CONCURRENCY")
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.latency_ms / 1000)
        return

    port = _free_port()
    stub = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.twilio_throughput",
            "--serve",
            str(port),
            "--latency-ms",
            str(args.latency_ms),
        ]
    )
    try:
        _wait_listening(port)
        settings = Settings(
            sms_channel="twilio",
            twilio_account_sid=ACCOUNT,
            twilio_auth_token="bench",
            twilio_from="+15005550006",
            public_url="https://loa.example.vn",
            twilio_api_url=f"http://127.0.0.1:{port}",
            twilio_concurrency=args.concurrency,
        )
        run_once(settings, min(args.messages, 500), args.batch, args.loops)  # warm-up
        rates = []
        for run in range(args.runs):
            rate = run_once(settings, args.messages, args.batch, args.loops)
            rates.append(rate)
            print(f"run {run + 1}: {rate:,.0f} msg/s", flush=True)
        ceiling = args.concurrency / (args.latency_ms / 1000)
        print(
            f"median {statistics.median(rates):,.0f} msg/s over {args.runs} runs "
            f"({args.messages} messages, batches of {args.batch}, {args.loops} loops, "
            f"concurrency {args.concurrency}, {args.latency_ms:g} ms per request; "
            f"ceiling {ceiling:,.0f} msg/s)"
        )
    finally:
        stub.terminate()
        stub.wait(timeout=10)


if __name__ == "__main__":
    main()
