"""How a push to a loudspeaker controller is signed, and how the receiver checks it.

The scheme (version v1), for a request body `body` (the exact bytes sent) and a shared secret:

    X-Loa-Timestamp:  the sending time, whole seconds since the Unix epoch (UTC)
    X-Loa-Request-Id: 32 lowercase hex digits; the same on every retry of one push
    X-Loa-Signature:  v1=<hex HMAC-SHA256(secret, f"{timestamp}.{request_id}." + body)>

Each attempt is signed afresh (a new timestamp, the same request id). The receiver
(`verify_push`) refuses a request whose signature does not match, whose timestamp is further
than the tolerance (default 5 minutes) from its own clock, or whose request id it has already
accepted within that time. So a captured request cannot be replayed later (the timestamp is
inside the signature), nor soon (the request id has been seen), and a retry of a push whose
answer was lost is recognised as a duplicate and not acted on twice.

The standard library's hmac does the work; what is written here is only the framing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Protocol

TIMESTAMP_HEADER = "X-Loa-Timestamp"
REQUEST_ID_HEADER = "X-Loa-Request-Id"
SIGNATURE_HEADER = "X-Loa-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE = timedelta(minutes=5)
_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


class PushRejected(Exception):
    """The request is not a genuine, fresh push; `reason` says which check failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PushReplayed(PushRejected):
    """A genuine request whose id was already accepted: a replay, or a retry of a push whose
    answer was lost. Either way it must not be acted on again."""


class NonceStore(Protocol):
    """The request ids a receiver has accepted, kept at least as long as the tolerance."""

    def claim(self, request_id: str, *, now: datetime, keep_until: datetime) -> bool:
        """Record the id; False if it was already there (atomically: two copies of one request
        arriving together must not both be claimed)."""
        ...

    def release(self, request_id: str) -> None:
        """Forget the id: the receiver failed to act on the push, and its retry must be taken."""
        ...


class MemoryNonceStore:
    """A NonceStore in one process's memory: enough for one receiver process. Several receiver
    processes behind a balancer need a shared one (a database table with the id as key, or
    Redis SET NX EX)."""

    def __init__(self) -> None:
        self._seen: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def claim(self, request_id: str, *, now: datetime, keep_until: datetime) -> bool:
        with self._lock:
            # Ids older than the tolerance cannot come back: their timestamps would be refused.
            for expired in [k for k, until in self._seen.items() if until < now]:
                del self._seen[expired]
            if request_id in self._seen:
                return False
            self._seen[request_id] = keep_until
            return True

    def release(self, request_id: str) -> None:
        with self._lock:
            self._seen.pop(request_id, None)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._seen


def new_request_id() -> str:
    return secrets.token_hex(16)


def signature(secret: str, timestamp: int, request_id: str, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256)
    mac.update(f"{timestamp}.{request_id}.".encode("ascii"))
    mac.update(body)
    return f"{SCHEME}={mac.hexdigest()}"


def sign_push(secret: str, body: bytes, *, request_id: str, now: datetime) -> dict[str, str]:
    """The headers that sign `body` for one attempt sent at `now`."""
    timestamp = int(now.timestamp())
    return {
        TIMESTAMP_HEADER: str(timestamp),
        REQUEST_ID_HEADER: request_id,
        SIGNATURE_HEADER: signature(secret, timestamp, request_id, body),
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    # Header names are case-insensitive; a plain dict from a framework may keep any case.
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value.strip()
    raise PushRejected(f"missing header {name}")


def verify_push(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    now: datetime,
    seen_nonces: NonceStore,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> str:
    """Check a received push; return its request id, or raise PushRejected (PushReplayed for an
    id already accepted). On success the id is claimed in `seen_nonces`: a receiver that then
    fails to act on the push must `release` it so that the sender's retry is taken.

    The headers are checked for form, then the signature (compared in constant time), and only
    then the timestamp and the id: a request without a valid signature learns nothing about the
    receiver's clock or the ids it has seen."""
    raw_timestamp = _header(headers, TIMESTAMP_HEADER)
    request_id = _header(headers, REQUEST_ID_HEADER)
    given = _header(headers, SIGNATURE_HEADER)
    if not (raw_timestamp.isascii() and raw_timestamp.isdigit()) or len(raw_timestamp) > 12:
        raise PushRejected(f"{TIMESTAMP_HEADER} is not whole seconds since the epoch")
    if not _REQUEST_ID.match(request_id):
        raise PushRejected(f"{REQUEST_ID_HEADER} is not 32 lowercase hex digits")
    timestamp = int(raw_timestamp)
    expected = signature(secret, timestamp, request_id, body)
    # Several comma-separated signatures may be sent while a secret is being changed.
    if not any(hmac.compare_digest(expected, candidate.strip()) for candidate in given.split(",")):
        raise PushRejected("signature does not match (wrong secret, or the body was altered)")
    skew = now.timestamp() - timestamp
    if abs(skew) > tolerance.total_seconds():
        when = "old" if skew > 0 else "in the future"
        raise PushRejected(
            f"timestamp is {abs(int(skew))} s {when} (tolerance {int(tolerance.total_seconds())} s)"
        )
    if not seen_nonces.claim(request_id, now=now, keep_until=now + 2 * tolerance):
        raise PushReplayed(f"request id {request_id} was already accepted")
    return request_id
