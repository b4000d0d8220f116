"""Pushing playlists and emergencies to loudspeaker controllers (channels/loudspeaker_push.py):
which (area, day) to push, and what became of each push (the `broadcast_push` table).

Playlists: every area with an endpoint of its own in LOA_LOUDSPEAKER_ENDPOINTS_FILE gets the
playlist of its communes for today and tomorrow (local dates in LOA_DEFAULT_TIMEZONE), so a
controller always holds the next day ahead. A playlist is pushed when its JSON's hash (the
API's ETag) differs from the last one pushed for (area, day); an empty playlist is not pushed
unless something was pushed before (it then clears the controller). After the last push:
- accepted: nothing until the playlist changes;
- permanent (refused): logged, not tried again until the playlist changes;
- transient (nothing arrived): pushed again at the next round, under a new request id;
- ambiguous (may have arrived): pushed again at the next round under the same request id, so
  the controller drops it if it already has it.

Emergencies: an emergency item goes at once to every endpoint serving one of its communes (a row
per endpoint with the item's id says what became of it). A push that may succeed later
(transient, ambiguous) is pushed again to that endpoint at each playlist round while the item is
still to play, as a playlist is (an ambiguous one under the same request id); a refused one is
not. The item is also in its districts' playlists, which carry it at the next round.

No database transaction is open while HTTP is in flight: each round reads, then pushes, then
writes what became of the pushes in a transaction of its own.

When the scheduler pushes (`PushTrigger`, called from each tick of the active scheduler): a
cheap version key is read each tick, (max campaign.updated_at, max broadcast_item.id). Every
change of what a playlist holds moves it: a launch writes items (new ids, append-only) and every
lifecycle transition (launch, pause, resume, cancel) stamps the campaign's updated_at. The key is
kept in the process's memory with the local dates and the endpoints configured; a playlist round
runs at most every LOA_LOUDSPEAKER_PUSH_SECONDS, and only when one of them changed (the dates
change at local midnight) or the last round left a push to retry. Emergencies are looked for as
soon as the key moves, not waiting for the round. A new process starts with no key, so its first
round renders every pushed playlist once and compares hashes with the table: nothing is pushed
twice because a scheduler restarted. Changes the key misses (an area renamed, a new commune under
an area) reach controllers with the next change or day, and at once with `loa loudspeaker push`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import Engine, select
from sqlmodel import Session, col

from broadcast.playlist import (
    PLAYING_CAMPAIGNS,
    Playlist,
    audio_url,
    broadcast_version,
    district_playlist,
)
from channels.base import Outcome
from channels.loudspeaker_config import EndpointConfig, area_chain, load_endpoints
from channels.loudspeaker_push import (
    PushResult,
    RetryPolicy,
    Sleep,
    push_emergency,
    push_playlist,
)
from loa.clock import Clock
from loa.db import session_scope
from loa.errors import InvalidInput, LoaError, NotFound
from loa.models import (
    Area,
    AudioAsset,
    BroadcastItem,
    BroadcastPriority,
    BroadcastPush,
    BroadcastTarget,
    Campaign,
)
from loa.settings import Settings

log = logging.getLogger(__name__)

PLAYLIST = "playlist"
EMERGENCY = "emergency"
RETRIED = frozenset({Outcome.TRANSIENT.value, Outcome.AMBIGUOUS.value})
REASON_CHARS = 1000  # the column's width


@dataclass(frozen=True)
class AreaPush:
    """What a round did for one (area, day): `outcome` is an Outcome value, or `unchanged`
    (nothing pushed) or `error` (the playlist could not be built; nothing pushed)."""

    area_code: str
    day: date
    outcome: str
    attempts: int = 0
    reason: str | None = None
    url: str | None = None


@dataclass
class _Job:
    area_code: str
    day: date
    chain: list[str]
    document: dict[str, Any]
    etag: str
    request_id: str | None  # of an ambiguous earlier push of the same content
    retry_of: int | None  # the row to update (same content pushed again)


def push_days(now: datetime, settings: Settings) -> list[date]:
    """Today and tomorrow in the default time zone."""
    today = now.astimezone(ZoneInfo(settings.default_timezone)).date()
    return [today, today + timedelta(days=1)]


def playlist_etag(playlist: Playlist) -> str:
    """The hash the API's ETag is made of: the same JSON bytes."""
    return hashlib.sha256(playlist.model_dump_json().encode()).hexdigest()


def push_document(playlist: Playlist) -> dict[str, Any]:
    """The playlist as the push adapter takes it (its items name their communes
    `commune_codes`; the document names its area `district`)."""
    items = []
    for item in playlist.items:
        data = item.model_dump(mode="json")
        data["commune_codes"] = data.pop("communes")
        items.append(data)
    return {"district": playlist.area, "date": playlist.date.isoformat(), "items": items}


def _base_url(settings: Settings) -> str:
    if not settings.public_url:
        raise InvalidInput(
            "LOA_PUBLIC_URL is not set: pushed playlists give absolute audio URLs that "
            "controllers download from it",
            field="public_url",
        )
    return settings.public_url


def _latest(session: Session, area_code: str, day: date) -> BroadcastPush | None:
    return session.scalars(
        select(BroadcastPush)
        .where(
            col(BroadcastPush.area_code) == area_code,
            col(BroadcastPush.local_date) == day,
            col(BroadcastPush.kind) == PLAYLIST,
        )
        .order_by(col(BroadcastPush.id).desc())
        .limit(1)
    ).first()


def _plan(
    session: Session,
    config: EndpointConfig,
    *,
    areas: Sequence[str] | None,
    days: Sequence[date],
    settings: Settings,
    force: bool,
) -> tuple[list[_Job], list[AreaPush]]:
    """Which (area, day) to push, read in one transaction, before any HTTP."""
    base_url = _base_url(settings)
    wanted = sorted(config.endpoints) if areas is None else list(areas)
    found = {a.code: a for a in session.scalars(select(Area).where(col(Area.code).in_(wanted)))}
    jobs: list[_Job] = []
    skipped: list[AreaPush] = []
    for code in wanted:
        area = found.get(code)
        if area is None:
            if areas is not None:
                raise NotFound(f"area {code} is not in the area table (loa areas load)")
            log.warning("loudspeaker endpoint for area %s: no such area; not pushed", code)
            skipped.extend(AreaPush(code, d, "error", reason="no such area") for d in days)
            continue
        chain = area_chain(area.path)
        if config.endpoint_for(chain) is None:
            raise InvalidInput(
                f"no loudspeaker endpoint serves area {code} nor any area above it "
                f"({'/'.join(chain)}) in {config.source}"
            )
        for day in days:
            playlist = district_playlist(session, code, day, settings=settings, base_url=base_url)
            etag = playlist_etag(playlist)
            last = _latest(session, code, day)
            request_id: str | None = None
            retry_of: int | None = None
            if not force:
                if last is None and not playlist.items:
                    skipped.append(AreaPush(code, day, "unchanged"))
                    continue
                if last is not None and last.etag == etag:
                    if last.outcome not in RETRIED:
                        skipped.append(AreaPush(code, day, "unchanged", reason=last.outcome))
                        continue
                    retry_of = last.id
                    if last.outcome == Outcome.AMBIGUOUS.value:
                        request_id = last.request_id
            jobs.append(_Job(code, day, chain, push_document(playlist), etag, request_id, retry_of))
    return jobs, skipped


def _record(
    engine: Engine, jobs: Sequence[_Job], results: Sequence[PushResult], *, now: datetime
) -> None:
    with session_scope(engine) as session:
        for job, result in zip(jobs, results, strict=True):
            _save_push(
                session,
                job.retry_of,
                result,
                kind=PLAYLIST,
                area_code=job.area_code,
                day=job.day,
                etag=job.etag,
                now=now,
            )


def _save_push(
    session: Session,
    retry_of: int | None,
    result: PushResult,
    *,
    kind: str,
    area_code: str,
    day: date,
    etag: str,
    now: datetime,
    item_id: int | None = None,
) -> None:
    """What became of a push: a new row, or the row of the same content pushed before
    (`retry_of`), whose attempts add up."""
    reason = None if result.reason is None else result.reason[:REASON_CHARS]
    row = session.get(BroadcastPush, retry_of) if retry_of is not None else None
    if row is None:
        row = BroadcastPush(
            kind=kind,
            area_code=area_code,
            local_date=day,
            etag=etag,
            item_id=item_id,
            request_id=result.request_id,
            outcome=result.outcome.value,
            attempts=result.attempts,
            reason=reason,
            pushed_at=now,
        )
    else:
        row.request_id = result.request_id
        row.outcome = result.outcome.value
        row.attempts += result.attempts
        row.reason = reason
        row.pushed_at = now
    session.add(row)


def _log_failure(what: str, result: PushResult) -> None:
    log.warning(
        "loudspeaker push of %s to %s (area %s) %s after %d attempt(s): %s",
        what,
        result.url,
        result.area_code,
        result.outcome.value,
        result.attempts,
        result.reason,
    )


async def _push_all(
    config: EndpointConfig,
    jobs: Sequence[_Job],
    *,
    policy: RetryPolicy,
    clock: Clock,
    concurrency: int,
    sleep: Sleep,
) -> list[PushResult]:
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(follow_redirects=False) as client:

        async def one(job: _Job) -> PushResult:
            async with gate:
                return await push_playlist(
                    config,
                    job.chain,
                    job.document,
                    policy=policy,
                    clock=clock,
                    sleep=sleep,
                    client=client,
                    request_id=job.request_id,
                )

        return list(await asyncio.gather(*(one(job) for job in jobs)))


def push_playlists(
    engine: Engine,
    config: EndpointConfig,
    *,
    now: datetime,
    settings: Settings,
    clock: Clock,
    areas: Sequence[str] | None = None,
    days: Sequence[date] | None = None,
    force: bool = False,
    sleep: Sleep = asyncio.sleep,
) -> list[AreaPush]:
    """One round: the playlists of `areas` (default: those with an endpoint of their own) for
    `days` (default: today and tomorrow) that changed since their last push, or all of them with
    `force`. `now` decides the days and stamps the rows; `clock` signs the requests."""
    days = list(days) if days is not None else push_days(now, settings)
    with session_scope(engine) as session:
        jobs, report = _plan(
            session, config, areas=areas, days=days, settings=settings, force=force
        )
    if not jobs:
        return report
    results = asyncio.run(
        _push_all(
            config,
            jobs,
            policy=RetryPolicy.from_settings(settings),
            clock=clock,
            concurrency=settings.loudspeaker_concurrency,
            sleep=sleep,
        )
    )
    _record(engine, jobs, results, now=now)
    for job, result in zip(jobs, results, strict=True):
        if not result.accepted:
            _log_failure(f"the playlist of area {job.area_code} for {job.day}", result)
        report.append(
            AreaPush(
                job.area_code,
                job.day,
                result.outcome.value,
                result.attempts,
                result.reason,
                result.url,
            )
        )
    return sorted(report, key=lambda r: (r.area_code, r.day))


# --- emergencies --------------------------------------------------------------------------------


@dataclass
class _Emergency:
    item_id: int
    day: date
    document: dict[str, Any]
    chains: dict[str, list[str]]
    # A retry: the endpoints (area codes) to push to again, each with the request id of an
    # ambiguous earlier push (None: a new id), and the rows recording them. None: the first push.
    retry: dict[str, str | None] | None
    rows: dict[str, int]


def _emergencies(session: Session, *, now: datetime, base_url: str) -> list[_Emergency]:
    """Emergency items still to play that no push has carried yet, or whose push to some endpoint
    may succeed if tried again."""
    pushes: dict[int, list[BroadcastPush]] = {}
    for row in session.scalars(
        select(BroadcastPush)
        .where(col(BroadcastPush.kind) == EMERGENCY)
        # Only the items whose playing window is open can need anything; the index on item_id
        # finds their rows.
        .where(
            col(BroadcastPush.item_id).in_(
                select(col(BroadcastItem.id)).where(
                    col(BroadcastItem.priority) == BroadcastPriority.EMERGENCY.value,
                    col(BroadcastItem.valid_until) > now,
                )
            )
        )
    ):
        assert row.item_id is not None
        pushes.setdefault(row.item_id, []).append(row)
    rows = session.execute(
        select(BroadcastItem, col(AudioAsset.bytes), col(AudioAsset.duration_ms))
        .join(Campaign, col(Campaign.id) == col(BroadcastItem.campaign_id))
        .join(AudioAsset, col(AudioAsset.sha256) == col(BroadcastItem.audio_sha256))
        .where(
            col(BroadcastItem.priority) == BroadcastPriority.EMERGENCY.value,
            col(BroadcastItem.valid_until) > now,
            col(Campaign.status).in_(PLAYING_CAMPAIGNS),
        )
        .order_by(col(BroadcastItem.id))
    ).all()
    found = []
    for item, size, duration in rows:
        retry: dict[str, str | None] | None = None
        ids: dict[str, int] = {}
        if item.id in pushes:
            again = [p for p in pushes[item.id] if p.outcome in RETRIED]
            if not again:
                continue  # every endpoint took it, or refused it
            retry = {
                p.area_code: p.request_id if p.outcome == Outcome.AMBIGUOUS.value else None
                for p in again
            }
            ids = {p.area_code: p.id for p in again if p.id is not None}
        targets = session.execute(
            select(col(Area.code), col(Area.path))
            .join(BroadcastTarget, col(BroadcastTarget.commune_code) == col(Area.code))
            .where(col(BroadcastTarget.item_id) == item.id)
            .order_by(col(Area.code))
        ).all()
        document = {
            "id": item.id,
            "wave_id": item.wave_id,
            "campaign_id": item.campaign_id,
            "commune_codes": [code for code, _ in targets],
            "date": item.local_date.isoformat(),
            "start_local": item.slot,
            "starts_at": item.starts_at.isoformat(),
            "valid_until": item.valid_until.isoformat(),
            "priority": item.priority,
            "play_at_once": True,
            "repeats": item.repeats,
            "audio_url": audio_url(base_url, item.audio_sha256),
            "sha256": item.audio_sha256,
            "bytes": size,
            "duration_ms": duration,
        }
        chains = {code: area_chain(path) for code, path in targets}
        found.append(_Emergency(item.id, item.local_date, document, chains, retry, ids))
    return found


def push_emergencies(
    engine: Engine,
    config: EndpointConfig,
    *,
    now: datetime,
    settings: Settings,
    clock: Clock,
    sleep: Sleep = asyncio.sleep,
    unroutable: set[int] | None = None,
) -> list[PushResult]:
    """Push each emergency item not pushed yet to every endpoint serving its communes, and again
    to the endpoints where its push may succeed if repeated; one row per (item, endpoint) records
    the outcome (a repeat updates it, attempts adding up). `unroutable`: the items no endpoint
    serves, skipped (they leave no row to say so) and added to (each is reported once)."""
    with session_scope(engine) as session:
        pending = _emergencies(session, now=now, base_url=_base_url(settings))
    skip = unroutable if unroutable is not None else set()
    done: list[PushResult] = []
    for emergency in pending:
        if emergency.item_id in skip:
            continue
        sent = asyncio.run(
            push_emergency(
                config,
                emergency.document,
                emergency.chains,
                day=emergency.day,
                policy=RetryPolicy.from_settings(settings),
                clock=clock,
                concurrency=settings.loudspeaker_concurrency,
                sleep=sleep,
                only=emergency.retry,
            )
        )
        if not sent.results:
            skip.add(emergency.item_id)
        if sent.uncovered and emergency.retry is None:
            log.warning(
                "emergency item %d: no loudspeaker endpoint serves commune(s) %s",
                emergency.item_id,
                ", ".join(sent.uncovered),
            )
        etag = hashlib.sha256(repr(sorted(emergency.document.items())).encode()).hexdigest()
        with session_scope(engine) as session:
            for result in sent.results:
                if not result.accepted:
                    _log_failure(f"emergency item {emergency.item_id}", result)
                _save_push(
                    session,
                    emergency.rows.get(result.area_code),
                    result,
                    kind=EMERGENCY,
                    area_code=result.area_code,
                    day=emergency.day,
                    etag=etag,
                    now=now,
                    item_id=emergency.item_id,
                )
        done.extend(sent.results)
    return done


# --- when the scheduler pushes ------------------------------------------------------------------


@dataclass
class _Memory:
    emergency_key: tuple[Any, ...] | None = None
    round_key: tuple[Any, ...] | None = None
    retry: bool = False
    next_round: datetime | None = None
    last_error: str | None = None  # logged once, not every tick
    # Emergency items that no configured endpoint serves (for these endpoints); forgotten when
    # the endpoints change.
    unroutable: set[int] = field(default_factory=set)
    unroutable_for: tuple[Any, ...] | None = None
    busy: threading.Lock = field(default_factory=threading.Lock)


class PushTrigger:
    """Called by each tick of the active scheduler: decides cheaply whether there is anything to
    push (see the module's docstring) and pushes it. In `background` mode the pushes run on a
    thread of their own, so a controller that does not answer (retries with backoff) never holds
    up the tick; a round still running when the next is due makes that one wait."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        *,
        background: bool = False,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._memory = _Memory()
        self._executor = ThreadPoolExecutor(1, "loudspeaker-push") if background else None

    def after_tick(self, engine: Engine, *, now: datetime) -> None:
        memory = self._memory
        if not memory.busy.acquire(blocking=False):
            return  # a round is in flight; the next tick looks again
        try:
            config = load_endpoints(self._settings.loudspeaker_endpoints_file)
            with session_scope(engine) as session:
                key = broadcast_version(session)
        except LoaError as exc:  # e.g. the endpoints file was edited into a broken state
            memory.busy.release()
            if exc.message != memory.last_error:
                log.error("loudspeaker pushes stopped: %s", exc.message)
            memory.last_error = exc.message
            return
        except Exception:
            memory.busy.release()
            raise
        memory.last_error = None
        emergencies = key != memory.emergency_key
        fingerprint = (
            key,
            tuple(push_days(now, self._settings)),
            tuple(sorted((e.area_code, e.url) for e in config.endpoints.values())),
        )
        playlists = (memory.next_round is None or now >= memory.next_round) and (
            memory.retry or fingerprint != memory.round_key
        )
        if not emergencies and not playlists:
            memory.busy.release()
            return

        def work() -> None:
            try:
                self._push(engine, config, now, key, fingerprint, playlists)
            except LoaError as exc:
                log.error("loudspeaker push: %s", exc.message)
            except Exception:  # the next tick tries again; the scheduler must go on
                log.exception("loudspeaker push failed")
            finally:
                memory.busy.release()

        if self._executor is None:
            work()
        else:
            self._executor.submit(work)

    def _push(
        self,
        engine: Engine,
        config: EndpointConfig,
        now: datetime,
        key: tuple[Any, ...],
        fingerprint: tuple[Any, ...],
        playlists: bool,
    ) -> None:
        memory, sleep = self._memory, self._sleep
        # Every call pushes new emergencies and, as a round does, repeats the emergency pushes
        # that may succeed now (see the module's docstring).
        endpoints = fingerprint[2]
        if memory.unroutable_for != endpoints:
            memory.unroutable, memory.unroutable_for = set(), endpoints
        urgent = push_emergencies(
            engine,
            config,
            now=now,
            settings=self._settings,
            clock=self._clock,
            sleep=sleep,
            unroutable=memory.unroutable,
        )
        memory.emergency_key = key
        again = any(r.outcome.value in RETRIED for r in urgent)
        if playlists:
            memory.next_round = now + timedelta(seconds=self._settings.loudspeaker_push_seconds)
            done = push_playlists(
                engine, config, now=now, settings=self._settings, clock=self._clock, sleep=sleep
            )
            memory.retry = again or any(r.outcome in RETRIED for r in done)
            memory.round_key = fingerprint
        else:
            memory.retry = memory.retry or again

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)


def describe(results: Iterable[AreaPush]) -> list[str]:
    """One line per (area, day), for the CLI."""
    lines = []
    for r in results:
        line = f"{r.area_code} {r.day.isoformat()} {r.outcome}"
        if r.attempts:
            line += f" ({r.attempts} attempt{'s' if r.attempts != 1 else ''})"
        if r.url:
            line += f" {r.url}"
        if r.reason and r.outcome != "unchanged":
            line += f": {r.reason}"
        lines.append(line)
    return lines
