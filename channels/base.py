"""The protocol every channel adapter implements, and the outcomes it reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable


class Outcome(StrEnum):
    ACCEPTED = "accepted"  # the provider took it; provider_id says how to find it again
    TRANSIENT = "transient"  # not sent; safe to retry after retry_after seconds
    PERMANENT = "permanent"  # not sent and never will be (error_code says why)
    AMBIGUOUS = "ambiguous"  # may or may not have been sent: reconcile, never resend blindly


class RecipientProblem(StrEnum):
    """What a provider's error says about the recipient's number, in words the core acts on (it
    suppresses the number); each adapter translates its own error codes into these."""

    INVALID = "invalid"  # the number does not exist or cannot receive SMS
    OPTED_OUT = "opt_out"  # the person unsubscribed at the provider (e.g. replied STOP)


@dataclass(frozen=True)
class Capabilities:
    """What an adapter can do, for the parts of the core that must know before sending."""

    max_batch: int | None  # most messages one send_batch call takes; None: any number
    status_callbacks: bool  # reports delivery later (webhooks), beyond accepted
    lookup: bool  # can tell what became of a message whose outcome was lost (Reconcilable)
    max_body_chars: int  # longest body it sends, in characters


@dataclass(frozen=True)
class OutgoingMessage:
    message_id: int
    wave_id: int
    to: str  # E.164
    body: str  # rendered, NFC
    # Not worth delivering after this instant (the wave's deadline); the provider may be told to
    # drop it from its queue then. None: no deadline.
    expires_at: datetime | None = None


@dataclass(frozen=True)
class SendResult:
    message_id: int
    outcome: Outcome
    provider_id: str | None = None
    error_code: str | None = None
    retry_after: float | None = None
    detail: str | None = None
    recipient_problem: RecipientProblem | None = None  # the number should not be tried again
    # With TRANSIENT: the adapter itself cannot send now (credentials refused, configuration
    # wrong, no balance), whatever the message; nothing was sent. A failover list takes the
    # adapter out of service for a while (channels/failover.py).
    unavailable: bool = False


def expired(message: OutgoingMessage) -> SendResult:
    """The result for a message whose wave's deadline passed before it could be sent."""
    return SendResult(
        message.message_id,
        Outcome.PERMANENT,
        error_code="expired",
        detail="the wave's deadline passed before the message could be sent",
    )


class Channel(Protocol):
    name: str
    capabilities: Capabilities

    def send_batch(self, messages: Sequence[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        """Send each message once; return exactly one result per message, in any order."""
        ...


@runtime_checkable
class Reconcilable(Protocol):
    """A channel that can say what became of messages whose send outcome was lost."""

    def lookup(self, message_ids: Sequence[int]) -> dict[int, str | None]:
        """For each message it can tell about: the provider id if it accepted the message, None
        if it never received it. Messages it cannot tell about are left out of the answer."""
        ...


@runtime_checkable
class Routing(Protocol):
    """A channel carried by one of several adapters (channels/failover.py). The dispatcher asks
    which adapter the next batch goes through, records it on the messages, and only then sends
    through it: a message's adapter is known before any provider may have it."""

    def route(self, now: datetime) -> str:
        """The name of the adapter the next batch should go through."""
        ...

    def adapter(self, name: str) -> Channel:
        """The adapter of that name (KeyError when it is not in the list)."""
        ...

    def send_via(
        self, adapter: str, messages: Sequence[OutgoingMessage], *, now: datetime
    ) -> list[SendResult]:
        """Send through the named adapter, and learn from its results whether it is down."""
        ...
