"""A generic HTTP gateway adapter for brandname SMS aggregators: one JSON request per message, to
a URL with the authentication, body and answer mapping of the gateway's configuration
(channels/gateway_config.py, LOA_GATEWAYS_FILE). Its adapter name is `gateway:<name>`.

Each message carries a request id derived from its outbox id (`<prefix><id>`): every attempt of
one message sends the same id, so an aggregator that de-duplicates drops a retry of something
it already took, and answers with its "duplicate" code, which counts as accepted.

Requests go through httpx's async client on one event loop in a thread of its own, shared by
every dispatch loop of the process, with at most `concurrency` in flight (the Twilio adapter's
shape, measured there: an async client beats a pool of blocking threads on two cores).

What an answer means, in the protocol's words (channels/base.py):
- the connection never made (refused, DNS, connect or pool timeout): transient;
- anything after the request may have left (read or write timeout, reset, HTTP 5xx, a 2xx
  whose body cannot be read): ambiguous; reconciled, never re-sent blindly;
- HTTP 429 or 408: transient, after Retry-After when given;
- HTTP 401/403, 404/405/410 (credentials or a wrong URL), or a code mapped `unavailable`:
  transient and `unavailable` (the adapter is down; a failover list moves on);
- otherwise the result code in the body, by the configuration's lists; a code in none of them
  is permanent and logged (the aggregator answered and did not take the message).
"""

from __future__ import annotations

import asyncio
import json
import logging
import string
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from channels.base import (
    Capabilities,
    Outcome,
    OutgoingMessage,
    RecipientProblem,
    SendResult,
    expired,
)
from channels.gateway_config import Gateway, ResponseMapping, load_gateways
from loa.errors import InvalidInput
from loa.settings import Settings
from templates.encoding import is_gsm7

log = logging.getLogger(__name__)

ADAPTER_PREFIX = "gateway:"
REPORT_PATH = "/webhooks/gateway/{name}/status"


def adapter_name(gateway: str) -> str:
    return f"{ADAPTER_PREFIX}{gateway}"


def request_id(prefix: str, message_id: int) -> str:
    """The de-duplication key of an outbox message: the same for every attempt of it."""
    return f"{prefix}{message_id}"


def message_id_from_request_id(prefix: str, value: str) -> int | None:
    """The outbox id a request id was made from; None when it is not one of Loa's."""
    if not value.startswith(prefix):
        return None
    rest = value[len(prefix) :]
    return int(rest) if rest.isdigit() and len(rest) < 19 else None


def dig(document: Any, path: str) -> Any:
    """The value at a dotted path (`data.msgId`, `results.0.code`); None when absent."""
    value = document
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _national(e164: str) -> str:
    # Vietnamese aggregators want the domestic form (0912...); other countries' numbers have no
    # single domestic form, so they go without the plus sign.
    return "0" + e164[3:] if e164.startswith("+84") else e164.lstrip("+")


def fill(document: Any, values: Mapping[str, Any]) -> Any:
    """The body document with its `${placeholder}`s filled (see channels/gateway_config.py)."""
    if isinstance(document, str):
        template = string.Template(document)
        names = template.get_identifiers()
        if len(names) == 1 and document in (f"${names[0]}", f"${{{names[0]}}}"):
            return values[names[0]]  # a whole-value placeholder keeps the value's type
        return template.substitute({k: str(v) for k, v in values.items()})
    if isinstance(document, dict):
        return {k: fill(v, values) for k, v in document.items()}
    if isinstance(document, list):
        return [fill(v, values) for v in document]
    return document


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    provider_id: str | None = None
    error_code: str | None = None
    retry_after: float | None = None
    detail: str | None = None
    problem: RecipientProblem | None = None
    unavailable: bool = False


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from an API; the dispatcher's own backoff applies


def classify_response(
    mapping: ResponseMapping,
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    request_id: str,
) -> Verdict:
    """What one HTTP answer of the gateway means for the message (the rules in the docstring)."""
    snippet = content[:300].decode("utf-8", errors="replace")
    if status == 429 or status == 408:
        return Verdict(
            Outcome.TRANSIENT,
            error_code=f"http_{status}",
            retry_after=_retry_after(headers),
            detail=f"HTTP {status}: {snippet}",
        )
    if status in (401, 403, 404, 405, 410):
        return Verdict(
            Outcome.TRANSIENT,
            error_code=f"http_{status}",
            detail=f"HTTP {status}: the gateway refused the account or the address: {snippet}",
            unavailable=True,
        )
    if status >= 500:
        # The request reached the gateway; whether it queued the message before failing is unknown.
        return Verdict(Outcome.AMBIGUOUS, error_code=f"http_{status}", detail=f"HTTP {status}")
    try:
        document = json.loads(content)
    except ValueError:
        document = None
    raw_code = dig(document, mapping.code) if document is not None else None
    if raw_code is None or isinstance(raw_code, dict | list):
        if 200 <= status < 300:
            return Verdict(
                Outcome.AMBIGUOUS,
                error_code="unreadable",
                detail=f"HTTP {status} without a result code at {mapping.code!r}: {snippet}",
            )
        return Verdict(
            Outcome.PERMANENT, error_code=f"http_{status}", detail=f"HTTP {status}: {snippet}"
        )
    code = str(raw_code)
    detail = f"HTTP {status}, code {code}: {snippet}"
    if code in mapping.accepted or code in mapping.duplicate:
        found = dig(document, mapping.message_id) if mapping.message_id else None
        # Without an id of its own, the gateway knows the message by the request id.
        provider_id = str(found) if found not in (None, "") else request_id
        return Verdict(
            Outcome.ACCEPTED,
            provider_id=provider_id[:64],
            detail="duplicate request id: the gateway has it already"
            if code in mapping.duplicate
            else None,
        )
    if code in mapping.unavailable:
        return Verdict(Outcome.TRANSIENT, error_code=code, detail=detail, unavailable=True)
    if code in mapping.transient:
        return Verdict(
            Outcome.TRANSIENT, error_code=code, retry_after=_retry_after(headers), detail=detail
        )
    if code in mapping.invalid_number:
        return Verdict(
            Outcome.PERMANENT, error_code=code, detail=detail, problem=RecipientProblem.INVALID
        )
    if code in mapping.opted_out:
        return Verdict(
            Outcome.PERMANENT, error_code=code, detail=detail, problem=RecipientProblem.OPTED_OUT
        )
    if code not in mapping.permanent:
        log.warning(
            "gateway answered with a code not in its mapping, taken as permanent: %s", detail
        )
    return Verdict(Outcome.PERMANENT, error_code=code[:32], detail=detail)


def gateway_public_url(settings: Settings, gateway: str) -> str:
    """LOA_PUBLIC_URL without its trailing slash; InvalidInput when unset or not an http(s) URL."""
    url = settings.public_url.strip().rstrip("/")
    parts = urlsplit(url)
    if not url or parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise InvalidInput(
            f"gateway {gateway!r} asks for delivery reports (${{callback_url}}): LOA_PUBLIC_URL "
            f"must be Loa's http(s) address as the gateway reaches it (it is {url!r})",
            field="public_url",
        )
    return url


def gateways_from_settings(settings: Settings) -> dict[str, Gateway]:
    if settings.gateways_file is None:
        raise InvalidInput(
            "a gateway adapter (gateway:<name>) needs LOA_GATEWAYS_FILE, the gateways' "
            "configuration (see docs/gateways.example.yaml)",
            field="gateways_file",
        )
    return load_gateways(settings.gateways_file)


def gateway_from_settings(settings: Settings, name: str) -> tuple[Gateway, str | None]:
    """The named gateway's configuration, checked, and its callback URL (None when its body does
    not ask for one). InvalidInput names what is missing."""
    gateways = gateways_from_settings(settings)
    if name not in gateways:
        known = ", ".join(sorted(gateways)) or "none"
        raise InvalidInput(
            f"no gateway {name!r} in {settings.gateways_file} (it has: {known})",
            field="sms_channel",
        )
    gateway = gateways[name]
    uses_callback = "callback_url" in json.dumps(gateway.config.body)
    callback = None
    if uses_callback:
        callback = gateway_public_url(settings, name) + REPORT_PATH.format(name=name)
    return gateway, callback


class HttpGatewayChannel:
    def __init__(
        self, gateway: Gateway, *, callback_url: str | None, transport: Any | None = None
    ) -> None:
        self.name = adapter_name(gateway.name)
        self._gateway = gateway
        self._config = gateway.config
        self.capabilities = Capabilities(
            max_batch=None,
            status_callbacks=gateway.config.report is not None,
            lookup=False,
            max_body_chars=gateway.config.max_body_chars,
        )
        self._callback_url = callback_url or ""
        self._transport = transport  # tests may hand httpx a transport of their own
        self._client: httpx.AsyncClient | None = None
        self._loop = asyncio.new_event_loop()
        self._slots = asyncio.Semaphore(gateway.config.concurrency)
        threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True).start()

    def close(self) -> None:
        if self._client is not None:
            asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)

    def send_batch(self, messages: Sequence[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        return asyncio.run_coroutine_threadsafe(self._send_all(messages, now), self._loop).result()

    async def _send_all(
        self, messages: Sequence[OutgoingMessage], now: datetime
    ) -> list[SendResult]:
        if self._client is None:  # made inside the loop it will run on
            config = self._config
            self._client = httpx.AsyncClient(
                headers=self._gateway.headers,
                auth=self._gateway.basic_auth,
                timeout=httpx.Timeout(config.timeout_seconds),
                limits=httpx.Limits(
                    max_connections=config.concurrency,
                    max_keepalive_connections=config.concurrency,
                ),
                transport=self._transport,
            )
        return list(await asyncio.gather(*(self._send_one(m, now) for m in messages)))

    def body_for(self, message: OutgoingMessage, now: datetime) -> dict[str, Any] | None:
        """The request body for a message; None when its deadline has passed."""
        validity = 0
        if message.expires_at is not None:
            validity = int((message.expires_at - now).total_seconds())
            if validity < 1:
                return None
        values = {
            "to": message.to,
            "to_national": _national(message.to),
            "to_international": message.to.lstrip("+"),
            "body": message.body,
            "brandname": self._config.brandname,
            "request_id": request_id(self._config.request_id_prefix, message.message_id),
            "message_id": message.message_id,
            "callback_url": self._callback_url,
            "unicode": 0 if is_gsm7(message.body) else 1,
            "validity_seconds": validity,
        }
        filled: dict[str, Any] = fill(self._config.body, values)
        return filled

    async def _send_one(self, message: OutgoingMessage, now: datetime) -> SendResult:
        body = self.body_for(message, now)
        if body is None:
            return expired(message)
        rid = request_id(self._config.request_id_prefix, message.message_id)
        assert self._client is not None
        try:
            async with self._slots:
                response = await self._client.request(
                    self._config.method, self._config.url, json=body
                )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Connecting failed (refused, no route, DNS, connect timeout): the request never left.
            return SendResult(
                message.message_id,
                Outcome.TRANSIENT,
                error_code="connect",
                detail=f"could not reach {self.name}: {type(exc).__name__}: {exc}"[:500],
            )
        except httpx.HTTPError as exc:
            # Anything later (a read or write timeout, a reset, a broken answer) may have followed
            # the gateway's taking the message.
            timed_out = isinstance(exc, httpx.TimeoutException)
            return SendResult(
                message.message_id,
                Outcome.AMBIGUOUS,
                error_code="timeout" if timed_out else "connection",
                detail=f"{type(exc).__name__}: {exc}"[:500],
            )
        verdict = classify_response(
            self._config.response,
            response.status_code,
            response.headers,
            response.content,
            request_id=rid,
        )
        if verdict.unavailable:
            log.error("%s cannot send: %s", self.name, verdict.detail)
        return SendResult(
            message.message_id,
            verdict.outcome,
            provider_id=verdict.provider_id,
            error_code=verdict.error_code,
            retry_after=verdict.retry_after,
            detail=verdict.detail[:500] if verdict.detail else None,
            recipient_problem=verdict.problem,
            unavailable=verdict.unavailable,
        )
