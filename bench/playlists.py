"""Serve 700 district playlists under concurrent pulls: latency p50/p99 of
GET /api/v1/districts/{code}/playlist (JSON) from `loa serve` in a subprocess.

The data: one province of `--districts` districts with `--communes` communes each, three
campaigns of loudspeaker waves (a province-wide recurring one at 06:00 and 17:30, a priority one
at 06:00, and per-district emergency bulletins for a tenth of the districts), launched as the
office would. Every district's playlist for the day therefore has items, some overflow and,
for some, an emergency at the head. Each pull uses that district's own key (the access check
is part of what is measured). The server is one uvicorn process, as
`loa serve --no-worker --no-scheduler`. The load comes from `--client`:
- `httpx`: async clients in this Python process, `--requests` pulls in all;
- `wrk` (Debian's package `wrk`; bench/playlists.lua picks each pull's district and key): a C
  load generator that takes a fraction of the CPU the Python clients do, for `--seconds`. On a
  machine with two cores the load generator shares them with the server either way.

    python -m bench.playlists [--url postgresql+psycopg://postgres@127.0.0.1:5432/loa_bench]
        [--districts 700] [--communes 15] [--concurrency 16] [--requests 7000]
        [--client httpx|wrk] [--seconds 30] [--reuse KEYS_FILE]

Without --url, a SQLite file in a temporary directory (the embedded default).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import insert

from bench.common import LOA, recreate_database, worker_env
from loa.apikeys import Role, create_key
from loa.db import make_engine, session_scope
from loa.models import Area, AudioAsset
from loa.settings import Settings
from scheduler.lifecycle import approve_campaign, create_campaign, launch_campaign
from scheduler.spec import validate_spec

DAY = "2026-05-09"
NOW = datetime(2026, 5, 1, tzinfo=UTC)


def _audio(session: object, name: str, duration_ms: int) -> str:
    sha = hashlib.sha256(name.encode()).hexdigest()
    session.add(  # type: ignore[attr-defined]
        AudioAsset(
            sha256=sha,
            name=name,
            original_filename=f"{name}.wav",
            source_format="WAV",
            bytes=duration_ms * 8,
            duration_ms=duration_ms,
            sample_rate=44100,
            bitrate_kbps=64,
            loudness_before_lufs=-30.0,
            loudness_after_lufs=-16.0,
            true_peak_dbtp=-1.5,
            created_by="bench",
            created_at=NOW,
        )
    )
    return sha


def build(settings: Settings, districts: int, communes: int) -> dict[str, str]:
    """The areas, audio records, campaigns and one key per district; the keys by district."""
    engine = make_engine(settings)
    areas = [
        {"code": "99", "name": "Tỉnh", "level": "province", "parent_code": None, "path": "/99/"}
    ]
    for d in range(districts):
        code = f"9{d:04d}"
        areas.append(
            {
                "code": code,
                "name": f"Huyện {d}",
                "level": "district",
                "parent_code": "99",
                "path": f"/99/{code}/",
            }
        )
        for c in range(communes):
            commune = f"{code}{c:02d}"
            areas.append(
                {
                    "code": commune,
                    "name": f"Xã {d}-{c}",
                    "level": "commune",
                    "parent_code": code,
                    "path": f"/99/{code}/{commune}/",
                }
            )
    with session_scope(engine) as session:
        session.execute(insert(Area), areas)
        normal = _audio(session, "normal", 12 * 60_000)
        priority = _audio(session, "priority", 10 * 60_000)
        flood = _audio(session, "flood", 15 * 60_000)
    recurring = {"from": "2026-05-02", "to": "2026-05-31", "times": ["06:00", "17:30"]}
    emergencies = [
        {
            "name": f"Bão {d}",
            "channel": "loudspeaker",
            "at": f"{DAY} 06:00",
            "audience": {"areas": [f"9{d:04d}"]},
            "audio": flood,
            "priority": "emergency",
        }
        for d in range(0, districts, 10)
    ]
    specs = [
        [
            {
                "name": "Sáng chiều",
                "channel": "loudspeaker",
                "recurring": recurring,
                "audience": {"areas": ["99"]},
                "audio": normal,
                "priority": "normal",
            }
        ],
        [
            {
                "name": "BHYT",
                "channel": "loudspeaker",
                "recurring": {**recurring, "times": ["06:00"]},
                "audience": {"areas": ["99"]},
                "audio": priority,
                "priority": "priority",
            }
        ],
        emergencies,
    ]
    keys: dict[str, str] = {}
    with session_scope(engine) as session:
        for index, waves in enumerate(specs):
            spec = validate_spec({"name": f"C{index}", "waves": waves}, source="bench")
            campaign = create_campaign(
                session, spec=spec, actor="planner", now=NOW, settings=settings
            )
            assert campaign.id is not None
            approve_campaign(session, campaign.id, actor="approver", now=NOW, settings=settings)
            launch_campaign(session, campaign.id, actor="approver", now=NOW, settings=settings)
        for d in range(districts):
            code = f"9{d:04d}"
            keys[code] = create_key(
                session, role=Role.DISTRICT, actor="bench", now=NOW, area_code=code
            ).key
    engine.dispose()
    return keys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def pull(
    base: str, keys: dict[str, str], requests: int, concurrency: int, *, each: bool = False
) -> list[float]:
    """`requests` pulls of random districts' playlists by `concurrency` clients; each latency.
    `each`: every district once instead (the warm-up), whatever `requests` says."""
    codes = list(keys)
    latencies: list[float] = []
    remaining = len(codes) if each else requests

    async def client() -> None:
        nonlocal remaining
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            while remaining > 0:
                remaining -= 1
                code = codes[remaining] if each else random.choice(codes)
                started = time.perf_counter()
                response = await http.get(
                    f"/api/v1/districts/{code}/playlist",
                    params={"date": DAY},
                    headers={"Authorization": f"Bearer {keys[code]}"},
                )
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200 or not response.json()["items"]:
                    raise RuntimeError(f"{code}: {response.status_code} {response.text[:200]}")

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc): the server's cost per pull,
    which, unlike latency, another load on the machine hardly changes."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(
    base: str,
    keys: dict[str, str],
    tmp: Path,
    concurrency: int,
    seconds: int,
    server_pid: int,
    pause_ms: int,
) -> str:
    """Pull for `seconds` with wrk (one thread, `concurrency` connections, each waiting
    `pause_ms` after each answer); the summary line."""
    keys_file = tmp / "keys.txt"
    keys_file.write_text("".join(f"{code} {key}\n" for code, key in keys.items()))
    script = Path(__file__).with_name("playlists.lua")
    cpu_before = cpu_seconds(server_pid)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "-s", str(script), base],
        env={
            **os.environ,
            "LOA_BENCH_KEYS": str(keys_file),
            "LOA_BENCH_DATE": DAY,
            "LOA_BENCH_PAUSE_MS": str(pause_ms),
        },
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = cpu_seconds(server_pid) - cpu_before
    line = next(row for row in out.splitlines() if row.startswith("LOA "))
    figures = dict(part.split("=") for part in line.split()[1:])
    ms = {k: int(figures[k]) / 1000 for k in ("p50", "p90", "p99", "max")}
    return (
        f"{figures['requests']} pulls in {seconds} s, {concurrency} connections (wrk"
        + (f", {pause_ms} ms between a connection's pulls" if pause_ms else "")
        + "): "
        f"{int(figures['requests']) / seconds:.0f}/s, p50 {ms['p50']:.1f} ms, "
        f"p90 {ms['p90']:.1f} ms, p99 {ms['p99']:.1f} ms, max {ms['max']:.1f} ms, "
        f"errors {figures['errors']}; server CPU {cpu * 1000 / int(figures['requests']):.2f} ms "
        f"a pull; load average {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="")
    parser.add_argument("--districts", type=int, default=700)
    parser.add_argument("--communes", type=int, default=15)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=7000)
    parser.add_argument("--client", choices=["httpx", "wrk"], default="httpx")
    parser.add_argument("--seconds", type=int, default=30, help="how long wrk pulls")
    parser.add_argument(
        "--pause-ms",
        type=int,
        default=0,
        help="wrk: each connection waits this long after each answer (0: back to back, which "
        "saturates the server)",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        help="PostgreSQL only: a file of the district keys; when it exists, the database is "
        "reused as a run that wrote it left it (for A/B runs); else it is written",
    )
    args = parser.parse_args()
    if args.client == "wrk" and shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    reuse = args.reuse is not None and args.reuse.exists() and args.url.startswith("postgresql")
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        env = worker_env(url, tmp, LOA_LOG_LEVEL="WARNING")
        if reuse:
            assert args.reuse is not None
            keys = dict(line.split() for line in args.reuse.read_text().splitlines())
            print(f"data: reused, {len(keys)} district keys from {args.reuse}")
        else:
            if url.startswith("postgresql"):
                recreate_database(url)
            subprocess.run([LOA, "db", "upgrade"], env=env, check=True, capture_output=True)
            settings = Settings(database_url=url, data_dir=Path(tmp))
            started = time.perf_counter()
            keys = build(settings, args.districts, args.communes)
            print(
                f"data: {args.districts} districts x {args.communes} communes, "
                f"built and launched in {time.perf_counter() - started:.1f} s"
            )
            if args.reuse is not None:
                args.reuse.write_text("".join(f"{code} {key}\n" for code, key in keys.items()))
        port = _free_port()
        server = subprocess.Popen(
            [LOA, "serve", "--no-worker", "--no-scheduler", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    if httpx.get(f"{base}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            # Warm-up: every district once (connection pools, the statement cache, the
            # playlist cache). These first pulls are the cold ones: reported apart.
            cold = sorted(asyncio.run(pull(base, keys, 0, args.concurrency, each=True)))
            print(
                f"warm-up: {len(cold)} first pulls (each district once, cold cache), "
                f"p50 {statistics.median(cold) * 1000:.1f} ms, "
                f"p99 {cold[int(len(cold) * 0.99) - 1] * 1000:.1f} ms, "
                f"max {cold[-1] * 1000:.1f} ms"
            )
            if args.client == "wrk":
                print(
                    run_wrk(
                        base,
                        keys,
                        Path(tmp),
                        args.concurrency,
                        args.seconds,
                        server.pid,
                        args.pause_ms,
                    )
                )
                return
            started = time.perf_counter()
            latencies = asyncio.run(pull(base, keys, args.requests, args.concurrency))
            wall = time.perf_counter() - started
        finally:
            server.terminate()
            _, errors = server.communicate(timeout=30)
            if "Traceback" in errors.decode():
                print(errors.decode()[-3000:])
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    print(
        f"{len(latencies)} pulls, {args.concurrency} concurrent: {len(latencies) / wall:.0f}/s, "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1] * 1000:.1f} ms; "
        f"load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
