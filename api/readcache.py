"""What the API process keeps in memory between requests so that a warm pull of a playlist reads
nothing from the database: verified API keys (by prefix) and area paths, both valid for a
generation of their table, and the data's versions, read at most every
LOA_CACHE_RECHECK_SECONDS (`Freshness`).

The bound: a change made anywhere (this process, another, the CLI on another machine) is seen by
every API process at most LOA_CACHE_RECHECK_SECONDS (1 s by default) after it commits: a revoked
key is refused, a moved area's access rule and a changed playlist apply. Never later, because a
request that finds the versions older than that reads them before it answers; and never wrong
after it, because the versions move with every change that matters (database triggers count
the changes of `api_key` and `area`, migration 0015; broadcast.playlist.broadcast_version for
the playlists). An expired key is refused at once (its expiry is cached with it), and failures
(unknown, revoked, expired) are never cached: only a key that verified.

The caches are per process and hold at most one entry per key and per area (both tables are
small). Lock-free reads: the event loop reads, threads that verified a key or read an area
write, and a dict's get and set are atomic.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine, select
from sqlmodel import Session, col

from broadcast.playlist import broadcast_version_columns
from loa.apikeys import LAST_USED_EVERY, Caller, parse_key
from loa.db import read_only, session_scope
from loa.models import CacheGeneration


@dataclass(frozen=True, slots=True)
class Versions:
    broadcast: tuple[Any, ...]  # broadcast.playlist.broadcast_version
    areas: int
    keys: int


def read_versions(session: Session) -> Versions:
    """The data's versions, in one statement: the broadcast data's (as broadcast_version) and
    the generations of `area` and `api_key`."""

    def generation(name: str) -> Any:
        return (
            select(col(CacheGeneration.value))
            .where(col(CacheGeneration.name) == name)
            .scalar_subquery()
        )

    *broadcast, areas, keys = session.execute(
        select(*broadcast_version_columns(), generation("area"), generation("api_key"))
    ).one()
    return Versions(broadcast=tuple(broadcast), areas=int(areas), keys=int(keys))


class Freshness:
    """The versions last read, trusted for `every` seconds (0: read on every request)."""

    def __init__(self, *, every: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._monotonic = monotonic
        self._read_at = -math.inf
        self._versions: Versions | None = None
        self._pending: tuple[float, asyncio.Future[Versions]] | None = None  # the read running
        self._lock = threading.Lock()

    def peek(self) -> Versions | None:
        """The versions, if read less than `every` seconds ago; else None (read them)."""
        versions = self._versions
        if versions is not None and self._monotonic() - self._read_at < self._every:
            return versions
        return None

    async def current(self, engine: Engine) -> Versions:
        """The versions, never older than `every`; called in the event loop only.

        Past half their age they are read again in the background while the requests go on
        with the ones held: had every request waited for the read once a second, each such
        wait (a round trip to the database, milliseconds to tens of them under load) would have
        stalled every pull in flight, most of the p99. Only when they are older than `every`
        (no request for a while, or a read slower than half of it) do requests wait. One read
        at a time: at thousands of pulls a second each would otherwise start its own."""
        now = self._monotonic()
        versions, age = self._versions, now - self._read_at
        if versions is not None and age < self._every:
            if age >= self._every / 2:
                self._start_read(engine, now)
            return versions
        # Shielded: a request that goes away does not cancel the read the others wait for.
        return await asyncio.shield(self._start_read(engine, now))

    def _start_read(self, engine: Engine, now: float) -> asyncio.Future[Versions]:
        """The read running, if it began at most `every` ago; else a new one."""
        pending = self._pending
        if pending is not None and pending[0] >= now - self._every:
            return pending[1]
        task = asyncio.ensure_future(run_in_threadpool(self.read, engine))
        mine = self._pending = (now, task)

        def done(_: object) -> None:
            if self._pending is mine:
                self._pending = None
            if not task.cancelled():
                task.exception()  # retrieved: a failed read is retried by the next request

        task.add_done_callback(done)
        return task

    def read(self, engine: Engine) -> Versions:
        # The age counts from before the read: a change committed while it ran is seen by the
        # next read, at most `every` seconds from now.
        started = self._monotonic()
        with session_scope(read_only(engine)) as session:
            versions = read_versions(session)
        with self._lock:
            if started >= self._read_at:  # a slower, older read does not replace a newer one
                self._versions, self._read_at = versions, started
        return versions


@dataclass(slots=True)
class _Key:
    secret_hash: str
    caller: Caller
    generation: int
    stamped_at: datetime  # when last_used_at was last written (or found recent enough)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyCache:
    """Keys that verified, by prefix, for the generation of `api_key` they were read in."""

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}

    def lookup(self, presented: str, *, now: datetime, generation: int) -> tuple[Caller, bool]:
        """The caller behind `presented` and whether its last-use stamp is due (it is then
        counted as written: one stamp a minute), or KeyError when the database must say."""
        prefix, secret = parse_key(presented)
        entry = self._keys.get(prefix)
        if (
            entry is None
            or entry.generation != generation
            or not hmac.compare_digest(entry.secret_hash, _hash(secret))
            or (entry.caller.expires_at is not None and entry.caller.expires_at <= now)
        ):
            raise KeyError(prefix)
        due = now - entry.stamped_at >= LAST_USED_EVERY
        if due:
            entry.stamped_at = now
        return entry.caller, due

    def remember(self, presented: str, caller: Caller, *, now: datetime, generation: int) -> None:
        """A key verify_key accepted at `now` (and stamped, when its stamp was due), in a
        transaction that began after `generation` was read."""
        _, secret = parse_key(presented)
        self._keys[caller.prefix] = _Key(_hash(secret), caller, generation, stamped_at=now)


class AreaPaths:
    """Area paths (the access rule compares them), for one generation of `area`."""

    def __init__(self) -> None:
        # One attribute, replaced whole: a reader never sees one generation's number with
        # another's paths.
        self._paths: tuple[int, dict[str, str]] = (-1, {})
        self._lock = threading.Lock()

    def get(self, code: str, generation: int) -> str | None:
        held, paths = self._paths
        return paths.get(code) if held == generation else None

    def remember(self, generation: int, paths: dict[str, str]) -> None:
        with self._lock:
            held, known = self._paths
            if generation < held:
                return  # read before a change another thread has already seen
            self._paths = (generation, {**known, **paths} if generation == held else dict(paths))
