"""Twilio's Programmable Messaging API, through the official SDK (twilio 9): one `Messages.create`
per message, from a number or a Messaging Service, with a delivery-report callback to Loa.

Requests go through the SDK's async client (aiohttp) on one event loop in a thread of its own,
shared by every dispatch loop of the process, with at most `twilio_concurrency` in flight. The
SDK's blocking client in a pool of threads was measured first: on two busy cores it reached
about 430 messages/s where the async client reached 620 (bench/twilio_throughput.py), the
threads spending their time handing the interpreter lock around.

What an answer means for the message is decided here, in the protocol's words (channels/base.py):
the core never sees a Twilio error code's meaning, only the outcome and the recipient problem.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http import AsyncHttpClient
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from channels.base import (
    Capabilities,
    Outcome,
    OutgoingMessage,
    RecipientProblem,
    SendResult,
    expired,
)
from loa.errors import InvalidInput
from loa.settings import Settings

log = logging.getLogger(__name__)

STATUS_CALLBACK_PATH = "/webhooks/twilio/status"
INBOUND_PATH = "/webhooks/twilio/inbound"
# The query parameter of the status callback URL that carries Loa's message id: a callback finds
# its message even when it arrives before the worker has recorded Twilio's id (a batch of 200
# takes a moment, a delivery report may not). The signature covers the URL, so it cannot be forged.
MESSAGE_PARAM = "m"
# Twilio refuses bodies over 1,600 characters, and ValidityPeriod outside 1..36000 seconds.
MAX_BODY_CHARS = 1600
MAX_VALIDITY_SECONDS = 36_000

_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")


@dataclass(frozen=True)
class ErrorClass:
    outcome: Outcome
    problem: RecipientProblem | None = None
    # Someone should look: the carrier filters our content, or the account is misconfigured.
    alert: str | None = None
    # The account or sender is refused, whatever the message: a failover list moves on.
    unavailable: bool = False


# Twilio error codes (https://www.twilio.com/docs/api/errors) with a meaning beyond their HTTP
# status. 30005-30007 arrive in delivery reports (ErrorCode) rather than from Messages.create;
# the same table serves both.
_ERRORS: dict[int, ErrorClass] = {
    21211: ErrorClass(Outcome.PERMANENT, RecipientProblem.INVALID),  # 'To' is not a valid number
    21614: ErrorClass(Outcome.PERMANENT, RecipientProblem.INVALID),  # 'To' is not a mobile number
    30005: ErrorClass(Outcome.PERMANENT, RecipientProblem.INVALID),  # unknown destination handset
    30006: ErrorClass(Outcome.PERMANENT, RecipientProblem.INVALID),  # landline or unreachable
    21610: ErrorClass(Outcome.PERMANENT, RecipientProblem.OPTED_OUT),  # recipient replied STOP
    30007: ErrorClass(
        Outcome.PERMANENT, alert="message filtered by the carrier (30007): review the content"
    ),
    20429: ErrorClass(Outcome.TRANSIENT),  # too many requests
}
# Errors of the account or the sender, not of the message: nothing was sent, and failing every
# message of the wave for them would be wrong. Retried later, loudly.
_ACCOUNT_ERRORS = frozenset({20003, 20404, 21212, 21606, 21659, 21701, 21702, 21703, 21704})


def classify_error(code: int | None, http_status: int | None) -> ErrorClass:
    """What a Twilio error (from Messages.create, or a delivery report's ErrorCode) means."""
    if code in _ERRORS:
        return _ERRORS[code]
    if code in _ACCOUNT_ERRORS or http_status in (401, 403):
        return ErrorClass(
            Outcome.TRANSIENT,
            alert=f"Twilio refused the account or sender (error {code}, HTTP {http_status}): "
            "check LOA_TWILIO_ACCOUNT_SID, LOA_TWILIO_AUTH_TOKEN and the sender",
            unavailable=True,
        )
    if http_status == 429:
        return ErrorClass(Outcome.TRANSIENT)
    if http_status is not None and http_status >= 500:
        # The request reached Twilio; whether it created the message before failing is unknown.
        return ErrorClass(Outcome.AMBIGUOUS)
    return ErrorClass(Outcome.PERMANENT)


@dataclass(frozen=True)
class TwilioConfig:
    account_sid: str
    auth_token: str
    sender: str  # From; may be empty when messaging_service_sid is set
    messaging_service_sid: str
    status_callback: str  # the full URL, without Loa's message id
    concurrency: int
    timeout: float
    api_url: str  # empty: Twilio's own


def config_from_settings(settings: Settings) -> TwilioConfig:
    """The adapter's settings, checked whole; what is missing or malformed is named by its
    environment variable (raised when the adapter is built, before anything is sent)."""
    sid = settings.twilio_account_sid.strip()
    if not sid:
        raise InvalidInput(
            "LOA_SMS_CHANNEL=twilio needs LOA_TWILIO_ACCOUNT_SID (the account's AC... SID)",
            field="twilio_account_sid",
        )
    if not _ACCOUNT_SID.match(sid):
        raise InvalidInput(
            f"LOA_TWILIO_ACCOUNT_SID={sid!r} is not an account SID (AC and 32 hex digits)",
            field="twilio_account_sid",
        )
    token = settings.twilio_auth_token.get_secret_value().strip()
    if not token:
        raise InvalidInput(
            "LOA_SMS_CHANNEL=twilio needs LOA_TWILIO_AUTH_TOKEN", field="twilio_auth_token"
        )
    sender = settings.twilio_from.strip()
    service = settings.twilio_messaging_service_sid.strip()
    if not sender and not service:
        raise InvalidInput(
            "LOA_SMS_CHANNEL=twilio needs a sender: LOA_TWILIO_FROM (a number or sender id) or "
            "LOA_TWILIO_MESSAGING_SERVICE_SID",
            field="twilio_from",
        )
    if service and not _SERVICE_SID.match(service):
        raise InvalidInput(
            f"LOA_TWILIO_MESSAGING_SERVICE_SID={service!r} is not a Messaging Service SID "
            "(MG and 32 hex digits)",
            field="twilio_messaging_service_sid",
        )
    return TwilioConfig(
        account_sid=sid,
        auth_token=token,
        sender=sender,
        messaging_service_sid=service,
        status_callback=public_url(settings) + STATUS_CALLBACK_PATH,
        concurrency=settings.twilio_concurrency,
        timeout=settings.twilio_timeout_seconds,
        api_url=settings.twilio_api_url.strip().rstrip("/"),
    )


def public_url(settings: Settings) -> str:
    """LOA_PUBLIC_URL without its trailing slash; InvalidInput when unset or not an http(s) URL
    (Twilio's callbacks, and their signatures, need it)."""
    url = settings.public_url.strip().rstrip("/")
    if not url:
        raise InvalidInput(
            "Twilio needs LOA_PUBLIC_URL, Loa's address as Twilio reaches it (e.g. "
            "https://loa.example.vn): delivery reports and their signatures depend on it",
            field="public_url",
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise InvalidInput(
            f"LOA_PUBLIC_URL={url!r} is not an http(s) address without a query",
            field="public_url",
        )
    return url


# Each send's last HTTP response: the SDK's exception drops the headers, and a 429's Retry-After
# is in them. A context variable: every send is an asyncio task with a context of its own.
_last_response: contextvars.ContextVar[Response | None] = contextvars.ContextVar(
    "twilio_last_response", default=None
)


class _RecordingClient(AsyncHttpClient):  # type: ignore[misc]  # the SDK ships no type hints
    """Wraps the HTTP client the SDK calls, keeping the response where the send can read it."""

    def __init__(self, inner: AsyncHttpClient) -> None:
        super().__init__(inner.logger, True, inner.timeout)
        self.inner = inner

    async def request(self, *args: Any, **kwargs: Any) -> Response:
        _last_response.set(None)
        response = await self.inner.request(*args, **kwargs)
        _last_response.set(response)
        return response


class PooledHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's aiohttp client with one connection pool as large as the concurrency and a total
    timeout per request. Its session is made on first use, inside the adapter's event loop
    (aiohttp binds a session to the loop it is made in)."""

    def __init__(self, concurrency: int, timeout: float) -> None:
        super().__init__(pool_connections=False)
        self.session: aiohttp.ClientSession | None = None
        self._limit = concurrency
        self._total = timeout

    async def request(self, *args: Any, **kwargs: Any) -> Response:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit),
                timeout=aiohttp.ClientTimeout(total=self._total),
            )
        return await super().request(*args, **kwargs)


def _retry_after(response: Response | None) -> float | None:
    if response is None:
        return None
    headers = response.headers or {}
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from an API; the dispatcher's own backoff applies


class TwilioChannel:
    name = "twilio"
    capabilities = Capabilities(
        max_batch=None, status_callbacks=True, lookup=False, max_body_chars=MAX_BODY_CHARS
    )

    def __init__(self, config: TwilioConfig, *, http_client: AsyncHttpClient | None = None) -> None:
        self._config = config
        self._http = _RecordingClient(
            http_client or PooledHttpClient(config.concurrency, config.timeout)
        )
        self._client = Client(config.account_sid, config.auth_token, http_client=self._http)
        if config.api_url:
            self._client.api.base_url = config.api_url
        self._messages = self._client.api.v2010.accounts(config.account_sid).messages
        self._loop = asyncio.new_event_loop()
        # The account's requests in flight at once, shared by every batch of the process.
        self._slots = asyncio.Semaphore(config.concurrency)
        threading.Thread(target=self._loop.run_forever, name="twilio", daemon=True).start()

    def close(self) -> None:
        inner = self._http.inner
        if isinstance(inner, AsyncTwilioHttpClient) and inner.session is not None:
            asyncio.run_coroutine_threadsafe(inner.close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)

    def send_batch(self, messages: Sequence[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        return asyncio.run_coroutine_threadsafe(self._send_all(messages, now), self._loop).result()

    async def _send_all(
        self, messages: Sequence[OutgoingMessage], now: datetime
    ) -> list[SendResult]:
        return list(await asyncio.gather(*(self._send_one(m, now) for m in messages)))

    def _params(self, message: OutgoingMessage, now: datetime) -> dict[str, Any] | None:
        config = self._config
        params: dict[str, Any] = {
            "to": message.to,
            "body": message.body,
            "status_callback": f"{config.status_callback}?{MESSAGE_PARAM}={message.message_id}",
        }
        if config.messaging_service_sid:
            params["messaging_service_sid"] = config.messaging_service_sid
        if config.sender:
            params["from_"] = config.sender
        if message.expires_at is not None:
            seconds = int((message.expires_at - now).total_seconds())
            if seconds < 1:
                return None
            if seconds < MAX_VALIDITY_SECONDS:  # Twilio's default is the maximum
                params["validity_period"] = seconds
        return params

    async def _send_one(self, message: OutgoingMessage, now: datetime) -> SendResult:
        params = self._params(message, now)
        if params is None:
            return expired(message)
        try:
            async with self._slots:
                created = await self._messages.create_async(**params)
        except (TwilioRestException, TwilioServiceException) as exc:
            return self._refused(message, exc)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Connecting failed (refused, no route, DNS, connect timeout): the request never left.
            return SendResult(
                message.message_id,
                Outcome.TRANSIENT,
                error_code="connect",
                detail=f"could not reach Twilio: {type(exc).__name__}: {exc}"[:500],
            )
        except (TimeoutError, aiohttp.ClientError, TwilioException) as exc:
            # Anything later (a reset, a read timeout, a broken answer) may have followed Twilio's
            # creating the message.
            return SendResult(
                message.message_id,
                Outcome.AMBIGUOUS,
                error_code="timeout" if isinstance(exc, TimeoutError) else "connection",
                detail=f"{type(exc).__name__}: {exc}"[:500],
            )
        return SendResult(message.message_id, Outcome.ACCEPTED, provider_id=created.sid)

    def _refused(
        self, message: OutgoingMessage, exc: TwilioRestException | TwilioServiceException
    ) -> SendResult:
        code = exc.code if isinstance(exc.code, int) else None
        verdict = classify_error(code, exc.status)
        text = exc.msg if isinstance(exc, TwilioRestException) else (exc.detail or exc.title)
        if verdict.alert:
            log.error("twilio: %s; message %s: %s", verdict.alert, message.message_id, text)
        return SendResult(
            message.message_id,
            verdict.outcome,
            error_code=str(code if code is not None else exc.status),
            retry_after=(
                _retry_after(_last_response.get()) if verdict.outcome == Outcome.TRANSIENT else None
            ),
            detail=f"HTTP {exc.status}: {text}"[:500],
            recipient_problem=verdict.problem,
            unavailable=verdict.unavailable,
        )
