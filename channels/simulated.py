"""A simulated SMS provider for load tests and benchmarks: accepts every message after a fixed
latency per call (one call per message, as with Twilio), making up to `concurrency` calls at once.
It keeps no record, so messages it leaves `unknown` cannot be reconciled.

The calls wait on one asyncio loop in a thread of their own, as an adapter on an async HTTP client
does; one thread per call in flight (a hundred of them) spent more time handing the interpreter
lock between threads than the dispatcher spent on its own work."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime

from channels.base import Capabilities, Outcome, OutgoingMessage, SendResult


class SimulatedChannel:
    name = "simulated"
    capabilities = Capabilities(
        max_batch=None, status_callbacks=False, lookup=False, max_body_chars=1600
    )

    def __init__(self, *, latency_ms: float, concurrency: int) -> None:
        self._latency = latency_ms / 1000
        self._loop = asyncio.new_event_loop()
        # The provider's own limit on concurrent requests, shared by all batches of the process.
        self._slots = asyncio.Semaphore(concurrency)
        threading.Thread(target=self._loop.run_forever, name="simulated", daemon=True).start()

    async def _call(self, message: OutgoingMessage) -> SendResult:
        async with self._slots:
            await asyncio.sleep(self._latency)
        return SendResult(
            message.message_id, Outcome.ACCEPTED, provider_id=f"sim-{uuid.uuid4().hex}"
        )

    async def _send_all(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        return list(await asyncio.gather(*(self._call(m) for m in messages)))

    def send_batch(self, messages: Sequence[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        return asyncio.run_coroutine_threadsafe(self._send_all(messages), self._loop).result()
