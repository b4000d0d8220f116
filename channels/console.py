"""The console channel: one JSON line per message to a file or stdout. The stand-in for an SMS
provider in development and tests; it accepts everything, and can be asked afterwards what it got
(so that messages whose outcome a crash lost can be reconciled)."""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from channels.base import Capabilities, Outcome, OutgoingMessage, SendResult


class ConsoleChannel:
    name = "console"
    capabilities = Capabilities(
        max_batch=None, status_callbacks=False, lookup=True, max_body_chars=1600
    )

    def __init__(self, sink: Path | None) -> None:
        self._sink = sink
        self._lock = threading.Lock()

    def send_batch(self, messages: Sequence[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        results = []
        lines = []
        for message in messages:
            provider_id = f"console-{uuid.uuid4().hex}"
            line = {
                "message_id": message.message_id,
                "wave_id": message.wave_id,
                "to": message.to,
                "body": message.body,
                "sent_at": now.isoformat(),
                "provider_id": provider_id,
            }
            lines.append(json.dumps(line, ensure_ascii=False) + "\n")
            results.append(
                SendResult(message.message_id, Outcome.ACCEPTED, provider_id=provider_id)
            )
        self._write("".join(lines).encode("utf-8"))
        return results

    def _write(self, data: bytes) -> None:
        with self._lock:
            if self._sink is None:
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
                return
            self._sink.parent.mkdir(parents=True, exist_ok=True)
            # One write(2) on an O_APPEND descriptor, so processes sharing the sink never
            # interleave (a buffered file object may split a batch over several writes). A process
            # killed mid-write can still leave a torn last line (Linux stops a write between pages
            # on SIGKILL): start on a fresh line after one, so the fragment stands alone, and
            # lookup() does not count it as a message.
            fd = os.open(self._sink, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(f"short write to {self._sink}: {written} of {len(data)} bytes")
            finally:
                os.close(fd)

    def lookup(self, message_ids: Sequence[int]) -> dict[int, str | None]:
        """What the sink holds: its lines are the channel's record of what it accepted."""
        if self._sink is None:
            return {}  # stdout keeps no record: nothing can be told
        wanted = set(message_ids)
        found: dict[int, str | None] = dict.fromkeys(wanted)
        if self._sink.exists():
            with self._sink.open(encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue  # blank, or the torn fragment of a killed writer: not accepted
                    if record["message_id"] in wanted:
                        found[record["message_id"]] = record.get("provider_id") or "console"
        return found
