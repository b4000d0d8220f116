"""A brandname SMS aggregator played on loopback by a real HTTP server (http.server in a thread),
in the shape of docs/gateways.example.yaml: it answers each number as told, de-duplicates by
request id, and keeps every request it got."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

API_KEY = "stub-api-key"
REPORT_SECRET = "stub-report-secret"

# An answer: (HTTP status, JSON body or raw bytes, headers), or "sleep" to answer too late.
Answer = tuple[int, Any, dict[str, str]]


def accepted(sms_id: str) -> Answer:
    return 200, {"code": "00", "message": "OK", "data": {"smsId": sms_id}}, {}


def code(value: str, text: str = "refused") -> Answer:
    return 200, {"code": value, "message": text}, {}


@dataclass
class Stub:
    """`answer(phone) -> Answer | "sleep"`; the default accepts everything once per request id."""

    answer: Callable[[str], Answer | str] = lambda phone: "accept"
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    taken: dict[str, str] = field(default_factory=dict)  # request id -> sms id
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def respond(self, body: dict[str, Any]) -> Answer | str:
        with self.lock:
            self.requests.append(body)
            rid = body["requestId"]
            if rid in self.taken:  # an aggregator that de-duplicates by request id
                return 200, {"code": "09", "data": {"smsId": self.taken[rid]}}, {}
            decided = self.answer(body["phone"])
            if decided == "accept":
                self.taken[rid] = f"sms-{len(self.taken) + 1}"
                return accepted(self.taken[rid])
            if decided == "take_then_fail":  # queued it, then failed to answer
                self.taken[rid] = f"sms-{len(self.taken) + 1}"
                return 500, b"<html>Internal Server Error</html>", {}
            return decided

    def requests_for(self, phone_national: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["phone"] == phone_national]


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length))
            with stub.lock:
                stub.headers.append(dict(self.headers))
            decided = stub.respond(body)
            if decided == "sleep":
                time.sleep(3)  # past the adapter's timeout: the request was received
                decided = accepted("late")
            assert not isinstance(decided, str)
            status, payload, headers = decided
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client gave up (its timeout)
                self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 refuses a batch's connections made at once
    daemon_threads = True


@contextmanager
def running(stub: Stub) -> Iterator[Stub]:
    server = _Server(("127.0.0.1", 0), _handler(stub))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stub.url = f"http://127.0.0.1:{server.server_address[1]}/api/v2/send"
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()


def gateway_entry(url: str, **override: Any) -> dict[str, Any]:
    """The example configuration's gateway, pointed at `url`."""
    example = yaml.safe_load(
        (Path(__file__).parent.parent / "docs" / "gateways.example.yaml").read_text()
    )
    entry: dict[str, Any] = example["gateways"]["example-vn"]
    entry["url"] = url
    entry["auth"] = {"type": "header", "header": "X-Api-Key", "key_env": "LOA_TEST_GW_KEY"}
    entry["report"]["auth"]["secret_env"] = "LOA_TEST_GW_REPORT_SECRET"
    entry["timeout_seconds"] = 1
    entry.update(override)
    return entry


def write_gateways(path: Path, entries: dict[str, dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"gateways": entries}), encoding="utf-8")
    return path


GATEWAY_ENV = {"LOA_TEST_GW_KEY": API_KEY, "LOA_TEST_GW_REPORT_SECRET": REPORT_SECRET}
