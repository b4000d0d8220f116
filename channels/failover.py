"""Failover: the `sms` channel carried by an ordered list of adapters (LOA_SMS_CHANNEL=
"twilio,gateway:viettel"). Each batch goes through the first adapter in service; an adapter
leaves service when it refuses the account or its configuration (a result marked `unavailable`),
or after `failover_after_failures` messages in a row failed transiently or ambiguously, and
comes back after `failover_cooldown_seconds`, on probation: its next failed message takes it out
again, an accepted one restores it.

No message is ever sent twice by failing over. The dispatcher records the adapter of each message
before sending (Routing in channels/base.py), and a message only goes through another adapter
when the first said it was not sent (transient: retried later, routed afresh). An ambiguous
message stays `unknown` and is reconciled with the adapter that may have it.

The in-service state lives in each process's memory, not in the database. It only decides where
the next batch goes, which is safe whatever it says (see above); a process that has not yet seen
an outage pays for at most one batch (refused account) or `failover_after_failures` messages
(a run of failures) before it moves on itself. Sharing it through the database would cost a
write per batch for every worker, for no gain in correctness.

Hand-written rather than a circuit-breaker library (pybreaker and the like): those wrap one call
and count its exceptions, where an adapter reports one outcome per message of a batch, and the
choice of adapter must be made, and recorded, before the call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from channels.base import Capabilities, Channel, Outcome, OutgoingMessage, SendResult

log = logging.getLogger(__name__)

_FAILED = (Outcome.TRANSIENT, Outcome.AMBIGUOUS)


@dataclass
class _Health:
    failures: int = 0  # messages failed in a row, since the last one accepted
    down_until: datetime | None = None
    reason: str = ""


class FailoverChannel:
    def __init__(
        self,
        adapters: Sequence[Channel],
        *,
        after_failures: int,
        cooldown_seconds: float,
    ) -> None:
        if len(adapters) < 2:
            raise ValueError("a failover list needs at least two adapters")
        self._adapters = {a.name: a for a in adapters}
        self._order = [a.name for a in adapters]
        self.name = ",".join(self._order)
        self._after = after_failures
        self._cooldown = timedelta(seconds=cooldown_seconds)
        self._health = {name: _Health() for name in self._order}
        self._lock = threading.Lock()  # the dispatch loops of one process share it
        limits = [a.capabilities.max_batch for a in adapters if a.capabilities.max_batch]
        self.capabilities = Capabilities(
            max_batch=min(limits) if limits else None,
            status_callbacks=any(a.capabilities.status_callbacks for a in adapters),
            lookup=any(a.capabilities.lookup for a in adapters),
            # A message must fit whichever adapter carries it.
            max_body_chars=min(a.capabilities.max_body_chars for a in adapters),
        )

    def adapter(self, name: str) -> Channel:
        return self._adapters[name]

    def in_service(self, now: datetime) -> list[str]:
        with self._lock:
            return [n for n in self._order if not self._is_down(n, now)]

    def _is_down(self, name: str, now: datetime) -> bool:
        until = self._health[name].down_until
        return until is not None and now < until

    def route(self, now: datetime) -> str:
        with self._lock:
            for name in self._order:
                if not self._is_down(name, now):
                    return name
            # Every adapter is out: the one back soonest is tried (its messages come back as
            # transient if it is still down, and wait their backoff).
            return min(self._order, key=lambda n: self._health[n].down_until or now)

    def send_via(
        self, adapter: str, messages: Sequence[OutgoingMessage], *, now: datetime
    ) -> list[SendResult]:
        try:
            results = self._adapters[adapter].send_batch(messages, now=now)
        except Exception:
            # The dispatcher makes these ambiguous; for the adapter's health they are failures.
            self._observe(adapter, [], failed=len(messages), unavailable=None, now=now)
            raise
        unavailable = next((r for r in results if r.unavailable), None)
        self._observe(
            adapter,
            results,
            failed=sum(1 for r in results if r.outcome in _FAILED),
            unavailable=unavailable,
            now=now,
        )
        return results

    def send_batch(self, messages: Sequence[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        """For callers that record no adapter; the dispatcher uses route() and send_via()."""
        return self.send_via(self.route(now), messages, now=now)

    def _observe(
        self,
        adapter: str,
        results: Sequence[SendResult],
        *,
        failed: int,
        unavailable: SendResult | None,
        now: datetime,
    ) -> None:
        with self._lock:
            health = self._health[adapter]
            if unavailable is not None:
                reason = f"{unavailable.error_code}: {unavailable.detail or 'unavailable'}"
                self._take_out(adapter, health, reason, now)
            elif any(r.outcome == Outcome.ACCEPTED for r in results):
                if health.down_until is not None or health.failures:
                    log.info("%s is carrying messages again", adapter)
                health.failures = 0
                health.down_until = None
            else:
                health.failures += failed
                if health.failures >= self._after:
                    self._take_out(
                        adapter, health, f"{health.failures} messages in a row failed", now
                    )

    def _take_out(self, adapter: str, health: _Health, reason: str, now: datetime) -> None:
        health.down_until = now + self._cooldown
        health.reason = reason
        # On probation when it comes back: one more failed message takes it out again.
        health.failures = self._after - 1
        nxt = [n for n in self._order if n != adapter and not self._is_down(n, now)]
        log.error(
            "%s taken out of service until %s (%s); next batches go through %s",
            adapter,
            health.down_until.isoformat(),
            reason[:300],
            nxt[0] if nxt else "no other adapter (all are out)",
        )
