"""API keys: create (the full key is shown once), verify a presented key, revoke, list.

A key reads `loa_<prefix>_<secret>`. The prefix (8 hex characters) is public: it finds the row, it
names the key in lists and it is the actor `key:<prefix>` in the audit log. Only a hash of the
secret is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import exists, or_, select, update
from sqlmodel import Session, col

from loa import audit
from loa.errors import Conflict, InvalidInput, NotAuthenticated, NotFound
from loa.models import ApiKey, Area
from loa.paging import DEFAULT_PAGE, Key, keyset_page


class Role(StrEnum):
    ADMIN = "admin"
    PLANNER = "planner"  # drafts campaigns
    APPROVER = "approver"  # approves, launches, pauses, resumes, cancels
    OPERATOR = "operator"  # watches delivery
    DISTRICT = "district"  # a culture centre: its own area's playlists and play reports


# The stamp is a hint for people ("is this key still in use?"), not a log: writing it on every
# request would turn each read into a write.
LAST_USED_EVERY = timedelta(minutes=1)
_UNKNOWN = "unknown API key"


@dataclass(frozen=True)
class Caller:
    """Who is calling: a verified, unrevoked, unexpired key."""

    key_id: int
    prefix: str
    name: str
    role: Role
    area_code: str | None
    # Kept so that a cache of verified keys (api/readcache.py) refuses an expired key at once.
    expires_at: datetime | None = None

    @property
    def actor(self) -> str:
        # Four-eyes approval compares actors, so "someone else" means "another API key".
        return f"key:{self.prefix}"


@dataclass(frozen=True)
class NewKey:
    key: str  # the whole key; it exists only here and is never stored
    api_key: ApiKey


def _hash(secret: str) -> str:
    # SHA-256, not a slow password hash: the secret is 256 random bits, so there is nothing to
    # guess from a leaked hash, and a slow hash would only cost time on every request.
    return hashlib.sha256(secret.encode()).hexdigest()


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(
            f"unknown role {value!r}; use one of {', '.join(Role)}", field="role"
        ) from None


def create_key(
    session: Session,
    *,
    role: str,
    actor: str,
    now: datetime,
    name: str | None = None,
    area_code: str | None = None,
    expires_in: timedelta | None = None,
) -> NewKey:
    """A new key. District keys belong to one area; no other role has one."""
    checked = _role(role)
    if checked == Role.DISTRICT and area_code is None:
        raise InvalidInput("a district key needs the area it serves (--area CODE)", field="area")
    if checked != Role.DISTRICT and area_code is not None:
        raise InvalidInput(
            f"only district keys have an area; a {checked} key sees the whole province",
            field="area",
        )
    if area_code is not None and session.get(Area, area_code) is None:
        raise InvalidInput(
            f"unknown area code {area_code} (load areas first: loa areas import FILE.csv)",
            field="area",
        )
    if expires_in is not None and expires_in <= timedelta(0):
        raise InvalidInput(
            "a key's lifetime must be positive (--expires-days 1 or more)", field="expires"
        )

    prefix = secrets.token_hex(4)
    # 32 bits of prefix: a clash is rare but possible, and the unique index would turn it into
    # an error the person cannot act on.
    while session.scalar(select(exists().where(col(ApiKey.prefix) == prefix))):
        prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    api_key = ApiKey(
        name=name or (f"{checked} {area_code}" if area_code else str(checked)),
        prefix=prefix,
        secret_hash=_hash(secret),
        role=checked,
        area_code=area_code,
        created_at=now,
        expires_at=now + expires_in if expires_in is not None else None,
    )
    session.add(api_key)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="apikey.create",
        entity="api_key",
        entity_id=prefix,
        now=now,
        after={
            "name": api_key.name,
            "role": api_key.role,
            "area": area_code,
            "expires_at": api_key.expires_at.isoformat() if api_key.expires_at else None,
        },
    )
    return NewKey(key=f"loa_{prefix}_{secret}", api_key=api_key)


def parse_key(presented: str) -> tuple[str, str]:
    """(prefix, secret) of `loa_<prefix>_<secret>`; ("", "") when it is not shaped so."""
    scheme, _, rest = presented.strip().partition("_")
    prefix, _, secret = rest.partition("_")
    return (prefix, secret) if scheme == "loa" and prefix and secret else ("", "")


def verify_key(session: Session, presented: str, *, now: datetime) -> Caller:
    """The caller behind a presented key, or NotAuthenticated saying only unknown, revoked or
    expired. The secret is checked first, so that a guessed prefix learns nothing."""
    prefix, secret = parse_key(presented)
    api_key = None
    if prefix:
        api_key = session.scalars(select(ApiKey).where(col(ApiKey.prefix) == prefix)).one_or_none()
    # The hash is computed and compared even for an unknown prefix, so that the answer takes as
    # long whether the prefix exists or not.
    stored = api_key.secret_hash if api_key is not None else _hash("")
    if not hmac.compare_digest(stored, _hash(secret)) or api_key is None:
        raise NotAuthenticated(_UNKNOWN)
    if api_key.revoked_at is not None:
        raise NotAuthenticated(f"API key {prefix} was revoked; ask an administrator for a new one")
    if api_key.expires_at is not None and api_key.expires_at <= now:
        raise NotAuthenticated(
            f"API key {prefix} expired at {api_key.expires_at:%Y-%m-%d %H:%M} UTC; "
            "ask an administrator for a new one"
        )
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_EVERY:
        api_key.last_used_at = now
    assert api_key.id is not None
    return Caller(
        key_id=api_key.id,
        prefix=api_key.prefix,
        name=api_key.name,
        role=Role(api_key.role),
        area_code=api_key.area_code,
        expires_at=api_key.expires_at,
    )


def stamp_last_used(session: Session, key_id: int, *, now: datetime) -> None:
    """The key's last-use stamp, unless another process wrote one in the last minute: for a
    key verified from a cache, off the request's path."""
    session.execute(
        update(ApiKey)
        .where(
            col(ApiKey.id) == key_id,
            or_(
                col(ApiKey.last_used_at).is_(None),
                col(ApiKey.last_used_at) <= now - LAST_USED_EVERY,
            ),
        )
        .values(last_used_at=now)
    )


def revoke_key(session: Session, prefix: str, *, actor: str, now: datetime) -> ApiKey:
    """Refuse the key from now on. The row stays, so the audit log's `key:<prefix>` still names
    it."""
    api_key = session.scalars(
        select(ApiKey).where(col(ApiKey.prefix) == prefix).with_for_update()
    ).one_or_none()
    if api_key is None:
        raise NotFound(f"no API key with prefix {prefix} (see: loa apikey list)")
    if api_key.revoked_at is not None:
        raise Conflict(
            f"API key {prefix} was already revoked at {api_key.revoked_at:%Y-%m-%d %H:%M} UTC"
        )
    api_key.revoked_at = now
    audit.record(
        session,
        actor=actor,
        action="apikey.revoke",
        entity="api_key",
        entity_id=prefix,
        now=now,
        before={"revoked_at": None},
        after={"revoked_at": now.isoformat()},
    )
    return api_key


def list_keys(
    session: Session, *, after: str | None = None, limit: int = DEFAULT_PAGE
) -> tuple[list[ApiKey], str | None]:
    """One keyset page of the keys, oldest first, and the cursor of the next page."""
    return keyset_page(session, select(ApiKey), [Key(col(ApiKey.id))], after=after, limit=limit)
