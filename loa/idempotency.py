"""Idempotency keys: a request sent again with the same `Idempotency-Key` gets the first one's
response instead of doing its work twice (the IETF draft "The Idempotency-Key HTTP Header
Field", and Stripe's API).

A key belongs to the API key that sent it and is kept `ttl` from its first use with a
fingerprint of the request (method, path and query, body) and, once answered, the response.
The same key with another request is refused (422); while the first request is still being
processed, a repeat is refused (409).

Two ways to hold a key, after where the request's work is done:

- In the request's transaction (`claim_in` / `complete_in`): the work and the stored response
  commit together or not at all, so no crash can leave the work done with no response to
  replay. Nothing is committed while the request runs: on PostgreSQL a transaction-scoped
  advisory lock on the key makes a concurrent repeat wait for nothing (409 at once); on SQLite
  the one writer serialises them (the repeat waits, then replays).
- In transactions of its own (`claim_apart` / `complete_apart` / `release`), for routes whose
  work commits by itself or happens outside the database (imports, audio, test sends): the
  claim (a row without a status) commits before the work, the response after it. A crash in
  between leaves the claim, which holds the key until `lock_for` has passed; then a retry takes
  it over and does the work again (at least once, not exactly once, for these routes).

Expired rows are ignored where they are met and removed by `purge_expired`, a batch at a time.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import Engine, delete, select, text, tuple_, update
from sqlmodel import Session, col

from loa.db import session_scope, upsert_insert
from loa.errors import IdempotencyKeyInFlight, IdempotencyKeyReused, InvalidInput
from loa.models import IdempotencyKey

HEADER: Final = "Idempotency-Key"
MAX_KEY_LENGTH: Final = 255
# The advisory locks' namespace (first of two int4 keys; a space apart from the one-bigint locks
# of the scheduler and the importer).
_LOCK_SPACE: Final = 0x1DE4


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Held:
    """A key this request holds in a row of its own (`claim_apart`): `token` proves it."""

    token: str


@dataclass(frozen=True)
class Answered:
    """A key already answered, for a request whose body is still to be read: its fingerprint
    decides between replaying `response` and refusing the key (`judge_body`)."""

    fingerprint: str | None
    response: StoredResponse


def parse_key(raw: str) -> str:
    """The key of an Idempotency-Key header: a token, or a quoted string as the draft writes it
    (a Structured Field string); at most 255 printable ASCII characters."""
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not 1 <= len(value) <= MAX_KEY_LENGTH:
        raise InvalidInput(
            f"the {HEADER} header must be 1 to {MAX_KEY_LENGTH} characters "
            f"(it has {len(value)}); a UUID is a good key",
            field=HEADER,
        )
    if not all(" " <= c <= "~" for c in value):
        raise InvalidInput(
            f"the {HEADER} header may hold only printable ASCII characters; a UUID is a good key",
            field=HEADER,
        )
    return value


def fingerprint(method: str, target: str, body_sha256: str) -> str:
    """What identifies a request under its key: method, path with query, and body."""
    return hashlib.sha256(f"{method}\n{target}\n{body_sha256}".encode()).hexdigest()


def _lock(session: Session, api_key_id: int, key: str) -> None:
    """On PostgreSQL, this transaction's hold on the key; IdempotencyKeyInFlight when another
    transaction has it. SQLite needs none: its one writer runs one of them at a time."""
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"{api_key_id}:{key}".encode()).digest()
    got = session.scalar(
        text("SELECT pg_try_advisory_xact_lock(:space, :key)"),
        {"space": _LOCK_SPACE, "key": int.from_bytes(digest[:4], "big", signed=True)},
    )
    if not got:
        raise _in_flight()


def _in_flight() -> IdempotencyKeyInFlight:
    return IdempotencyKeyInFlight(
        f"a request with this {HEADER} is still being processed; retry once it has finished",
        field=HEADER,
    )


def _reused() -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        f"this {HEADER} was used for another request (method, path, query or body differ); "
        "use a new key for a new request",
        field=HEADER,
    )


def _current(
    session: Session, api_key_id: int, key: str, *, now: datetime, lock_for: timedelta
) -> IdempotencyKey | None:
    """The key's row, unless it has expired or is a claim abandoned for longer than `lock_for`
    (those are deleted: the key is free)."""
    row = session.scalars(
        select(IdempotencyKey).where(
            col(IdempotencyKey.api_key_id) == api_key_id, col(IdempotencyKey.key) == key
        )
    ).one_or_none()
    if row is None:
        return None
    abandoned = row.status_code is None and row.created_at + lock_for <= now
    if row.expires_at <= now or abandoned:
        session.delete(row)
        session.flush()
        return None
    return row


def _stored(row: IdempotencyKey) -> StoredResponse:
    assert row.status_code is not None and row.body is not None
    return StoredResponse(row.status_code, dict(row.headers or {}), row.body)


def _judge(row: IdempotencyKey, request_fingerprint: str | None) -> StoredResponse:
    """What a live row means for a request: its response to replay, or an error."""
    if (
        request_fingerprint is not None
        and row.fingerprint is not None
        and row.fingerprint != request_fingerprint
    ):
        raise _reused()
    if row.status_code is None:
        raise _in_flight()
    return _stored(row)


def claim_in(
    session: Session,
    api_key_id: int,
    key: str,
    request_fingerprint: str,
    *,
    now: datetime,
    lock_for: timedelta,
) -> StoredResponse | None:
    """In the request's own transaction: the response to replay, or None when the request is to
    run (then `complete_in` in the same transaction)."""
    _lock(session, api_key_id, key)
    row = _current(session, api_key_id, key, now=now, lock_for=lock_for)
    return None if row is None else _judge(row, request_fingerprint)


def complete_in(
    session: Session,
    api_key_id: int,
    key: str,
    request_fingerprint: str,
    response: StoredResponse,
    *,
    now: datetime,
    ttl: timedelta,
) -> None:
    """Store the response in the request's transaction: it commits with the work, or neither."""
    table = IdempotencyKey.__table__  # type: ignore[attr-defined]
    statement = (
        upsert_insert(session.get_bind(), table)
        .values(
            api_key_id=api_key_id,
            key=key,
            fingerprint=request_fingerprint,
            created_at=now,
            expires_at=now + ttl,
            status_code=response.status_code,
            headers=response.headers,
            body=response.body,
        )
        .on_conflict_do_nothing()
        .returning(table.c.key)
    )
    if session.execute(statement).scalar_one_or_none() is None:
        # Only a claim made apart by another route can be there (the lock keeps out the rest):
        # this request's work is rolled back with the transaction.
        raise _in_flight()


def claim_apart(
    engine: Engine,
    api_key_id: int,
    key: str,
    request_fingerprint: str | None,
    *,
    now: datetime,
    ttl: timedelta,
    lock_for: timedelta,
) -> Held | Answered | StoredResponse:
    """In a transaction of its own, committed before the request's work: the key held for this
    request (Held); or the response to replay; or, when the request's body is yet to be read
    (`request_fingerprint` None) and the key was answered, what `judge_body` decides from."""
    with session_scope(engine) as session:
        _lock(session, api_key_id, key)
        row = _current(session, api_key_id, key, now=now, lock_for=lock_for)
        if row is not None:
            if request_fingerprint is None and row.status_code is not None:
                return Answered(row.fingerprint, _stored(row))
            return _judge(row, request_fingerprint)
        token = secrets.token_hex(16)
        session.add(
            IdempotencyKey(
                api_key_id=api_key_id,
                key=key,
                fingerprint=request_fingerprint,
                token=token,
                created_at=now,
                expires_at=now + ttl,
            )
        )
        return Held(token)


def judge_body(answered: Answered, request_fingerprint: str) -> StoredResponse:
    """The answered key's response, if the request whose body has now been read is the same."""
    if answered.fingerprint != request_fingerprint:
        raise _reused()
    return answered.response


def complete_apart(
    engine: Engine,
    api_key_id: int,
    key: str,
    held: Held,
    request_fingerprint: str,
    response: StoredResponse,
) -> bool:
    """Store the response of a request that held its key apart. False when the claim was taken
    over meanwhile (this request outlived `lock_for`): the response is then not kept."""
    with session_scope(engine) as session:
        result = session.execute(
            update(IdempotencyKey)
            .where(
                col(IdempotencyKey.api_key_id) == api_key_id,
                col(IdempotencyKey.key) == key,
                col(IdempotencyKey.token) == held.token,
            )
            .values(
                fingerprint=request_fingerprint,
                token=None,
                status_code=response.status_code,
                headers=response.headers,
                body=response.body,
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def release(engine: Engine, api_key_id: int, key: str, held: Held) -> None:
    """Give the key back: the request failed before its work was done, a retry may run it."""
    with session_scope(engine) as session:
        session.execute(
            delete(IdempotencyKey).where(
                col(IdempotencyKey.api_key_id) == api_key_id,
                col(IdempotencyKey.key) == key,
                col(IdempotencyKey.token) == held.token,
            )
        )


def purge_expired(engine: Engine, *, now: datetime, batch: int = 1000) -> int:
    """Delete up to `batch` expired keys, found by the expiry index; the number deleted. Rows
    another purge holds are skipped, so purges running at once do not wait for each other."""
    expired = (
        select(IdempotencyKey.api_key_id, IdempotencyKey.key)  # type: ignore[call-overload]
        .where(col(IdempotencyKey.expires_at) <= now)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    with session_scope(engine) as session:
        result = session.execute(
            delete(IdempotencyKey).where(
                tuple_(col(IdempotencyKey.api_key_id), col(IdempotencyKey.key)).in_(expired)
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
