"""The console channel: one JSON line per message to a file or stdout. The stand-in for an SMS
provider
in development and tests; it accepts everything."""

from __future__ import annotations

import json
import sys
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from channels.base import Outcome, OutgoingMessage, SendResult


class ConsoleChannel:
    name = "console"

    def __init__(self, sink: Path | None) -> None:
        self._sink = sink
        self._lock = threading.Lock()

    def send_batch(self, messages: Sequence[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        results = []
        lines = []
        for message in messages:
            provider_id = f"console-{uuid.uuid4().hex}"
            lines.append(
                json.dumps(
                    {
                        "message_id": message.message_id,
                        "wave_id": message.wave_id,
                        "to": message.to,
                        "body": message.body,
                        "sent_at": now.isoformat(),
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
            results.append(
                SendResult(message.message_id, Outcome.ACCEPTED, provider_id=provider_id)
            )
        self._write("".join(lines))
        return results

    def _write(self, text: str) -> None:
        with self._lock:
            if self._sink is None:
                sys.stdout.write(text)
                sys.stdout.flush()
                return
            self._sink.parent.mkdir(parents=True, exist_ok=True)
            # Append mode: several worker processes may share one sink file.
            with self._sink.open("a", encoding="utf-8") as f:
                f.write(text)
