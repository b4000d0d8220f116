"""This process's own Prometheus metrics: what it answered over HTTP, what its dispatcher sent,
what delivery reports it received. Counted in memory where the thing happens; GET /metrics
serves them with the cluster-wide figures read from the database (api/metrics.py).

Module-level on purpose: a counter counts for the whole process, whichever thread or request
increments it, and Prometheus adds up the processes. Each process has its own, so every HELP
says "this process". They live in their own registry, not prometheus_client's global one, so
that /metrics shows exactly what is declared here.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from channels.base import SendResult

PROCESS = CollectorRegistry()
ProcessCollector(registry=PROCESS)
PlatformCollector(registry=PROCESS)
GCCollector(registry=PROCESS)

HTTP_REQUESTS = Counter(
    "loa_http_requests",
    "HTTP requests answered by this process, by route template (not the raw path) and status.",
    ["method", "route", "status"],
    registry=PROCESS,
)
HTTP_DURATION = Histogram(
    "loa_http_request_duration_seconds",
    "Time this process took to answer HTTP requests (to the last byte), by route template.",
    ["method", "route"],
    registry=PROCESS,
)
SEND_ATTEMPTS = Counter(
    "loa_send_attempts",
    "Send attempts recorded by this process's dispatcher, by adapter and result (accepted, "
    "transient, permanent, ambiguous). Other processes count their own.",
    ["adapter", "result"],
    registry=PROCESS,
)
SEND_ERRORS = Counter(
    "loa_send_errors",
    "Send results with an error code recorded by this process's dispatcher, by adapter and "
    "error code (the provider's, or Loa's own such as 'template'). Other processes count "
    "their own.",
    ["adapter", "error_code"],
    registry=PROCESS,
)
DELIVERY_REPORTS = Counter(
    "loa_delivery_reports",
    "Delivery reports (webhooks) received by this process, by adapter, reported status and "
    "effect (moved, unchanged, unknown_message, mismatch; ignored: a status the adapter's "
    "mapping ignores, with status 'none').",
    ["adapter", "status", "effect"],
    registry=PROCESS,
)
# Seconds to days: a report may come a minute after the send, or a day later from a phone that
# was off.
LAG_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 10800, 43200, 86400, 259200)
WEBHOOK_LAG = Histogram(
    "loa_webhook_lag_seconds",
    "Delay from a message's sending to a delivery report that moved it (report received minus "
    "the message's sent_at), for reports received by this process.",
    ["adapter"],
    buckets=LAG_BUCKETS,
    registry=PROCESS,
)

# Results of messages that never reached an adapter (their template failed to render).
NO_ADAPTER = "none"


def count_send_results(adapter: str, results: Iterable[SendResult]) -> None:
    for result in results:
        SEND_ATTEMPTS.labels(adapter, result.outcome.value).inc()
        if result.error_code:
            SEND_ERRORS.labels(adapter, result.error_code).inc()


def count_delivery_report(
    adapter: str, status: str, effect: str, lag_seconds: float | None
) -> None:
    DELIVERY_REPORTS.labels(adapter, status, effect).inc()
    if lag_seconds is not None:
        WEBHOOK_LAG.labels(adapter).observe(max(lag_seconds, 0.0))


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an Authorization header carries `Bearer <token>`. Constant time: the comparison
    must not tell a guesser how much of the token was right."""
    return hmac.compare_digest((authorization or "").encode(), f"Bearer {token}".encode())


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per scrape is noise
        pass


def serve_process_metrics(host: str, port: int, token: str) -> tuple[int, Callable[[], None]]:
    """Serve this process's metrics at http://host:port/ from a thread (for `loa worker`, which
    has no API): with a token, only to `Authorization: Bearer <token>`. Returns the port (port 0:
    a free one) and how to stop."""
    app = make_wsgi_app(PROCESS)

    def guarded(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if token and not bearer_matches(environ.get("HTTP_AUTHORIZATION"), token):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain; charset=utf-8"), ("WWW-Authenticate", "Bearer")],
            )
            return [b"metrics need 'Authorization: Bearer <token>' (LOA_METRICS_TOKEN)\n"]
        return app(environ, start_response)  # type: ignore[no-any-return]

    server = make_server(host, port, guarded, ThreadingWSGIServer, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return server.server_port, stop
