"""A simulated SMS provider for load tests and benchmarks: accepts every message after a fixed
latency per call (one call per message, as with Twilio), making up to `concurrency` calls at once.
It keeps no record, so messages it leaves `unknown` cannot be reconciled."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from channels.base import Outcome, OutgoingMessage, SendResult


class SimulatedChannel:
    name = "simulated"

    def __init__(self, *, latency_ms: float, concurrency: int) -> None:
        self._latency = latency_ms / 1000
        # A bounded pool: the provider's own limit on concurrent requests, shared by all batches.
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="simulated")

    def _call(self, message: OutgoingMessage) -> SendResult:
        time.sleep(self._latency)
        return SendResult(
            message.message_id, Outcome.ACCEPTED, provider_id=f"sim-{uuid.uuid4().hex}"
        )

    def send_batch(self, messages: Sequence[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        return list(self._pool.map(self._call, messages))
