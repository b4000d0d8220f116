"""Pushing playlists to loudspeaker controllers: one signed JSON POST per area endpoint, retried
with backoff, with one request id across the retries of a push so the receiver can drop copies.

What is pushed (Content-Type application/json, UTF-8):

    {"version": 1, "area": "436", "date": "2026-05-08", "emergency": false, "test": false,
     "items": [{"id": ..., "commune_codes": [...], "priority": "normal", "audio_url": ...,
                "sha256": ..., "bytes": ..., "duration_ms": ..., "valid_until": ..., ...}]}

`area` is the district of the playlist (or, for an emergency, the area the endpoint is configured
for); items are passed on as the playlist gives them, fields this module does not know included.
The signature is described in channels/loudspeaker_signature.py; `verify_push` there is the
receiver's half.

What an attempt's answer means:
- 2xx: accepted (a receiver answers 2xx to a request id it already took, without acting on it
  again: that is how a retry after a lost answer ends);
- 408, 429, 5xx, a refused or dropped connection, a timeout: tried again after a backoff that
  doubles from LOA_LOUDSPEAKER_RETRY_BASE_SECONDS up to LOA_LOUDSPEAKER_RETRY_MAX_SECONDS (with
  jitter, so many pushes that failed together do not come back together), or after the
  Retry-After the receiver asked for; at most LOA_LOUDSPEAKER_MAX_ATTEMPTS attempts;
- any other answer (4xx, 3xx): permanent, with the receiver's reason; not tried again.

Each push ends in one PushResult per endpoint. Recording it (as delivery events of a wave) is the
caller's job: channels know nothing of campaigns.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
from pydantic import AliasChoices, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from channels.base import Outcome
from channels.loudspeaker_config import Endpoint, EndpointConfig
from channels.loudspeaker_signature import new_request_id, sign_push
from loa.clock import Clock
from loa.errors import InvalidInput
from loa.settings import Settings

Sleep = Callable[[float], Awaitable[None]]
ATTEMPT_HEADER = "X-Loa-Attempt"
PAYLOAD_VERSION = 1
# How much of a receiver's answer a result keeps: enough for a reason, not a whole error page.
ANSWER_EXCERPT_CHARS = 300


# --- what the adapter needs of a playlist ---------------------------------------------------


class PlaylistItem(BaseModel):
    """One broadcast item of a playlist. Fields the adapter does not use are kept and pushed
    as they are, so the playlist document can grow without changes here."""

    model_config = ConfigDict(extra="allow")

    id: str | int
    commune_codes: list[str] = Field(min_length=1)
    priority: Literal["normal", "priority", "emergency"]
    audio_url: str = Field(pattern=r"^https?://", max_length=2000)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=1)
    duration_ms: int = Field(ge=1)
    valid_until: AwareDatetime


class Playlist(BaseModel):
    """The playlist document of one district for one day."""

    model_config = ConfigDict(extra="allow")

    district: str = Field(validation_alias=AliasChoices("district", "district_code"))
    date: date
    items: list[PlaylistItem]


def _problems(exc: ValidationError) -> str:
    # "items.2.sha256: String should match pattern ...": the item and the field.
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}" for e in exc.errors()
    )


def parse_playlist(document: Mapping[str, Any]) -> Playlist:
    """Validate a playlist document; the error names the item and field that are wrong."""
    try:
        return Playlist.model_validate(document)
    except ValidationError as exc:
        raise InvalidInput(f"playlist document: {_problems(exc)}") from None


# --- retries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_seconds: float = 1.0
    max_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.loudspeaker_max_attempts,
            base_seconds=settings.loudspeaker_retry_base_seconds,
            max_seconds=settings.loudspeaker_retry_max_seconds,
        )

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The wait after failed attempt `attempt` (1-based): half of the doubled delay for
        sure, the other half at random ("equal jitter": never a retry at once, never in step)."""
        ceiling = min(self.max_seconds, self.base_seconds * 2.0 ** (attempt - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


# --- one push ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushResult:
    """What became of one push to one endpoint. `outcome` is accepted, permanent (refused: not
    tried again), transient (gave up after retries; nothing arrived) or ambiguous (gave up, but
    an attempt may have arrived: pushing again with the same request_id is safe)."""

    area_code: str  # the area the endpoint is configured for
    url: str
    outcome: Outcome
    request_id: str
    attempts: int
    status_code: int | None = None  # of the last answer, if any
    reason: str | None = None  # why it failed; None when accepted
    answer: str = ""  # the start of the last answer's body
    waits: tuple[float, ...] = field(default=())  # seconds waited before each retry

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED


def encode_body(payload: Mapping[str, Any]) -> bytes:
    # Compact and UTF-8 (Vietnamese names stay readable); the bytes sent are the bytes signed.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _excerpt(response: httpx.Response) -> str:
    text = response.text.strip()
    return text[:ANSWER_EXCERPT_CHARS] + ("..." if len(text) > ANSWER_EXCERPT_CHARS else "")


def _answer_reason(response: httpx.Response) -> str:
    reason = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("error", "detail", "message", "reason"):
            if isinstance(data.get(key), str):
                return f"{reason}: {data[key]}"
    excerpt = _excerpt(response)
    if 300 <= response.status_code < 400 and "location" in response.headers:
        return f"{reason}: redirected to {response.headers['location']}; configure that URL"
    return f"{reason}: {excerpt}" if excerpt else reason


async def push(
    endpoint: Endpoint,
    body: bytes,
    *,
    client: httpx.AsyncClient,
    policy: RetryPolicy,
    clock: Clock,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
    request_id: str | None = None,
) -> PushResult:
    """POST `body` to `endpoint`, signed, retrying what may succeed later. Pass the request_id
    of an ambiguous earlier result to push the same content again without risk of a double."""
    rng = rng or random.Random()
    request_id = request_id or new_request_id()
    waits: list[float] = []
    may_have_arrived = False
    status_code: int | None = None
    answer = ""
    reason = ""
    attempt = 0
    while True:
        attempt += 1
        headers = {
            **endpoint.headers,
            "Content-Type": "application/json; charset=utf-8",
            **sign_push(endpoint.secret, body, request_id=request_id, now=clock()),
            ATTEMPT_HEADER: str(attempt),
        }
        retry_after: float | None = None
        try:
            response = await client.post(
                endpoint.url, content=body, headers=headers, timeout=endpoint.timeout_seconds
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing left this side: the controller cannot have it.
            status_code, answer = None, ""
            reason = f"cannot connect: {exc.__class__.__name__}: {exc}".rstrip(": ")
        except httpx.TimeoutException as exc:
            may_have_arrived = True
            status_code, answer = None, ""
            reason = f"no answer within {endpoint.timeout_seconds:g} s ({exc.__class__.__name__})"
        except httpx.RequestError as exc:
            # A connection dropped mid-request, or an answer that could not be read.
            may_have_arrived = True
            status_code, answer = None, ""
            reason = f"connection lost: {exc.__class__.__name__}: {exc}".rstrip(": ")
        else:
            status_code, answer = response.status_code, _excerpt(response)
            if response.is_success:
                return PushResult(
                    endpoint.area_code,
                    endpoint.url,
                    Outcome.ACCEPTED,
                    request_id,
                    attempt,
                    status_code=status_code,
                    answer=answer,
                    waits=tuple(waits),
                )
            reason = _answer_reason(response)
            if not (response.status_code in (408, 429) or response.status_code >= 500):
                return PushResult(
                    endpoint.area_code,
                    endpoint.url,
                    Outcome.PERMANENT,
                    request_id,
                    attempt,
                    status_code=status_code,
                    reason=reason,
                    answer=answer,
                    waits=tuple(waits),
                )
            retry_after = retry_after_seconds(response.headers.get("retry-after"), clock())
        if attempt >= policy.max_attempts:
            reason = f"{reason} (gave up after {attempt} attempts)"
            break
        wait = policy.backoff(attempt, rng) if retry_after is None else retry_after
        if retry_after is not None and retry_after > policy.max_seconds:
            reason = (
                f"{reason}; asked to retry after {retry_after:g} s, more than "
                f"LOA_LOUDSPEAKER_RETRY_MAX_SECONDS ({policy.max_seconds:g} s)"
            )
            break
        waits.append(wait)
        await sleep(wait)
    return PushResult(
        endpoint.area_code,
        endpoint.url,
        Outcome.AMBIGUOUS if may_have_arrived else Outcome.TRANSIENT,
        request_id,
        attempt,
        status_code=status_code,
        reason=reason,
        answer=answer,
        waits=tuple(waits),
    )


def _payload(
    area: str, day: date, items: Sequence[PlaylistItem], *, emergency: bool, test: bool = False
) -> dict[str, Any]:
    return {
        "version": PAYLOAD_VERSION,
        "area": area,
        "date": day.isoformat(),
        "emergency": emergency,
        "test": test,
        "items": [item.model_dump(mode="json") for item in items],
    }


def _client(client: httpx.AsyncClient | None) -> httpx.AsyncClient:
    # Redirects are not followed: a POST that is moved is a configuration error to report.
    return client or httpx.AsyncClient(follow_redirects=False)


async def push_playlist(
    config: EndpointConfig,
    area_chain: Sequence[str],
    playlist: Playlist | Mapping[str, Any],
    *,
    policy: RetryPolicy,
    clock: Clock,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
    client: httpx.AsyncClient | None = None,
    request_id: str | None = None,
) -> PushResult:
    """Push one district's playlist of one day to the endpoint serving that district
    (`area_chain`: the district's codes from the root down, e.g. area_chain(area.path))."""
    doc = playlist if isinstance(playlist, Playlist) else parse_playlist(playlist)
    if not area_chain or area_chain[-1] != doc.district:
        raise InvalidInput(
            f"the area chain {'/'.join(area_chain)} does not end at the playlist's district "
            f"{doc.district}"
        )
    endpoint = config.endpoint_for(area_chain)
    if endpoint is None:
        raise InvalidInput(
            f"no loudspeaker endpoint serves area {doc.district} nor any area above it "
            f"({'/'.join(area_chain)}) in {config.source}"
        )
    emergency = any(item.priority == "emergency" for item in doc.items)
    body = encode_body(_payload(doc.district, doc.date, doc.items, emergency=emergency))
    http = _client(client)
    try:
        return await push(
            endpoint,
            body,
            client=http,
            policy=policy,
            clock=clock,
            sleep=sleep,
            rng=rng,
            request_id=request_id,
        )
    finally:
        if client is None:
            await http.aclose()


@dataclass(frozen=True)
class EmergencyPush:
    results: list[PushResult]  # one per endpoint, in the order of their area codes
    uncovered: list[str]  # communes of the item that no endpoint serves: nobody was told


async def push_emergency(
    config: EndpointConfig,
    item: PlaylistItem | Mapping[str, Any],
    commune_chains: Mapping[str, Sequence[str]],
    *,
    day: date,
    policy: RetryPolicy,
    clock: Clock,
    concurrency: int,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
    client: httpx.AsyncClient | None = None,
    only: Mapping[str, str | None] | None = None,
) -> EmergencyPush:
    """Push one emergency item at once to every endpoint serving one of its communes: one push
    per endpoint, carrying the item with that endpoint's communes only, at most `concurrency`
    in flight. `commune_chains` gives each commune's codes from the root down. `only` (a retry)
    limits the pushes to those endpoints (by area code), each with the request id to push under:
    an ambiguous earlier push's, or None for a new one."""
    if not isinstance(item, PlaylistItem):
        try:
            item = PlaylistItem.model_validate(item)
        except ValidationError as exc:
            raise InvalidInput(f"emergency item: {_problems(exc)}") from None
    if item.priority != "emergency":
        raise InvalidInput(f"item {item.id} has priority {item.priority!r}, not 'emergency'")
    if unknown := [c for c in item.commune_codes if c not in commune_chains]:
        raise InvalidInput(f"item {item.id}: no area chain for commune(s) {', '.join(unknown)}")
    groups: dict[str, list[str]] = {}
    endpoints: dict[str, Endpoint] = {}
    uncovered: list[str] = []
    for commune in dict.fromkeys(item.commune_codes):  # in order, once each
        endpoint = config.endpoint_for(commune_chains[commune])
        if endpoint is None:
            uncovered.append(commune)
            continue
        if only is None or endpoint.area_code in only:
            endpoints[endpoint.area_code] = endpoint
            groups.setdefault(endpoint.area_code, []).append(commune)

    gate = asyncio.Semaphore(concurrency)
    http = _client(client)

    async def one(area_code: str) -> PushResult:
        part = item.model_copy(update={"commune_codes": groups[area_code]})
        body = encode_body(_payload(area_code, day, [part], emergency=True))
        async with gate:
            return await push(
                endpoints[area_code],
                body,
                client=http,
                policy=policy,
                clock=clock,
                sleep=sleep,
                rng=rng,
                request_id=None if only is None else only[area_code],
            )

    try:
        results = await asyncio.gather(*(one(code) for code in sorted(groups)))
    finally:
        if client is None:
            await http.aclose()
    return EmergencyPush(results=list(results), uncovered=uncovered)


async def ping(
    endpoint: Endpoint,
    area_code: str,
    *,
    day: date,
    policy: RetryPolicy,
    clock: Clock,
    sleep: Sleep = asyncio.sleep,
    client: httpx.AsyncClient | None = None,
) -> PushResult:
    """A signed push with no items and `test: true`: checks the URL, the secret and the clocks
    agree, and changes nothing at the controller."""
    body = encode_body(_payload(area_code, day, [], emergency=False, test=True))
    http = _client(client)
    try:
        return await push(endpoint, body, client=http, policy=policy, clock=clock, sleep=sleep)
    finally:
        if client is None:
            await http.aclose()
