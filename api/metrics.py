"""GET /metrics, its two halves: this process's counters (loa/metrics.py, with the HTTP request
middleware below) and the cluster-wide figures, read from the database at each scrape.

Cluster-wide figures must not come from one process's memory (a load balancer spreads the
scrapes over the API nodes, and each would tell a different story), so they are collectors that
query the database when scraped: bounded, index-backed queries (api/cluster.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.cluster import read_cluster
from loa import metrics
from loa.clock import Clock
from loa.db import read_only, session_scope
from loa.models import WorkerKind
from loa.settings import Settings
from stats.rollup import LOUDSPEAKER, STATUS_MEASURES, StatsRow, query_stats

log = logging.getLogger(__name__)

# The route label of a request no route matched: raw paths would make a series per scanner probe.
UNMATCHED = "unmatched"


class RequestMetrics:
    """Counts every HTTP request and its duration by route template (`/api/v1/campaigns/{id}`).
    Pure ASGI, not BaseHTTPMiddleware: a streamed CSV export passes through untouched, and is
    timed to its last byte."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception before any answer started is answered 500 by Starlette

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, sending)
        finally:
            # The router put the matched route into this same scope.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)


class _ProcessMetrics(Collector):
    """This process's registry, served within the app's."""

    def collect(self) -> Iterator[Metric]:
        yield from metrics.PROCESS.collect()


class ClusterCollector(Collector):
    """Queue depth and age per channel, processes seen, leader present: read at each scrape."""

    def __init__(self, engine: Engine, clock: Clock, settings: Settings) -> None:
        self._engine = engine
        self._clock = clock
        self._settings = settings

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "loa_database_up",
            "1 when this process could read the cluster's figures from the database at this "
            "scrape; 0 when not (and the loa_queue_*, loa_processes_seen and "
            "loa_scheduler_leader_present metrics are absent).",
        )
        try:
            view = read_cluster(self._engine, now=self._clock(), settings=self._settings)
        except SQLAlchemyError as exc:
            log.warning("/metrics could not read the database: %s", exc.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        limit = self._settings.queue_count_limit
        due = GaugeMetricFamily(
            "loa_queue_due_messages",
            "Messages planned and due now in running campaigns, per channel, counted up to "
            f"LOA_QUEUE_COUNT_LIMIT ({limit}): at the limit, there are at least that many.",
            labels=["channel"],
        )
        age = GaugeMetricFamily(
            "loa_queue_oldest_due_age_seconds",
            "How long the oldest due message of each channel has waited past its due time "
            "(0 when none is due).",
            labels=["channel"],
        )
        for channel, queue in view.queues.items():
            due.add_metric([channel], queue.due)
            age.add_metric([channel], queue.oldest_age_seconds(view.now))
        seen = GaugeMetricFamily(
            "loa_processes_seen",
            "Loa processes whose heartbeat is at most LOA_HEARTBEAT_STALE_SECONDS "
            f"({self._settings.heartbeat_stale_seconds:g}) old, by kind (worker, scheduler, "
            "serve).",
            labels=["kind"],
        )
        for kind in WorkerKind:
            seen.add_metric([kind.value], view.seen(kind))
        leader = GaugeMetricFamily(
            "loa_scheduler_leader_present",
            "1 when a scheduler holding the leadership was seen within "
            "LOA_HEARTBEAT_STALE_SECONDS; 0 when none (no wave fires).",
        )
        leader.add_metric([], 1 if view.leader else 0)
        yield from (due, age, seen, leader)


class RollupCollector(Collector):
    """Messages by channel and measure, failures by error code and loudspeaker plays, from the
    statistics rollup (stats/rollup.py: the same measures as GET /api/v1/stats), whole-cluster
    and as of the scrape. Two grouped reads of the per-wave rollup: its size follows the waves,
    not the messages."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings

    def collect(self) -> Iterator[Metric]:
        def read(group_by: list[str]) -> list[StatsRow]:
            return query_stats(
                session,
                group_by=group_by,
                timezone=self._settings.default_timezone,
                prices=self._settings,
            )

        try:
            with session_scope(read_only(self._engine)) as session:
                by_channel, by_error = read(["channel"]), read(["channel", "error_code"])
        except SQLAlchemyError as exc:  # loa_database_up (ClusterCollector) says so
            log.warning("/metrics could not read the statistics: %s", exc.__class__.__name__)
            return
        messages = GaugeMetricFamily(
            "loa_messages",
            "Messages by channel and measure, as GET /api/v1/stats counts them (targeted, "
            "pending, sent, delivered, failed, expired, suppressed, cancelled, unknown). Whole "
            "cluster; a message moves between measures as its status does, so the send rate is "
            'the growth of measure="sent".',
            labels=["channel", "measure"],
        )
        plays = GaugeMetricFamily(
            "loa_loudspeaker_plays", "Loudspeaker plays reported by the culture centres."
        )
        errors = GaugeMetricFamily(
            "loa_message_errors",
            "Failed messages (failed, undelivered) by channel and the provider's error code "
            "(or Loa's: no_consent, expired, ...). Whole cluster.",
            labels=["channel", "error_code"],
        )
        total_plays = 0
        for row in by_channel:
            channel = str(row.key["channel"])
            if channel == LOUDSPEAKER:
                total_plays += row.plays
                continue
            for measure in STATUS_MEASURES:
                messages.add_metric([channel, measure], getattr(row, measure))
        plays.add_metric([], total_plays)
        for row in by_error:
            if row.failed and row.key["channel"] != LOUDSPEAKER:
                code = str(row.key["error_code"] or "none")
                errors.add_metric([str(row.key["channel"]), code], row.failed)
        yield from (messages, errors, plays)


def register_database_collectors(
    registry: CollectorRegistry, *, engine: Engine, clock: Clock, settings: Settings
) -> None:
    """Every metric read from the database at scrape time is registered here (one collector
    each, or one for several): add new cluster-wide figures as collectors in this function."""
    registry.register(ClusterCollector(engine, clock, settings))
    registry.register(RollupCollector(engine, settings))


def metrics_registry(*, engine: Engine, clock: Clock, settings: Settings) -> CollectorRegistry:
    """The registry /metrics serves: this process's metrics and the database's."""
    # auto_describe off: describing a collector must not query the database.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ProcessMetrics())
    register_database_collectors(registry, engine=engine, clock=clock, settings=settings)
    return registry
