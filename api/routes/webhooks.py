"""Twilio's webhooks: delivery reports (`StatusCallback`) and inbound SMS (opt-out and opt-in
keywords).

Both are signed by Twilio with the account's auth token over the URL it called and every form
parameter (X-Twilio-Signature). The URL checked is LOA_PUBLIC_URL + the path + the query, since
behind a proxy the URL this process sees is not the one Twilio called. A request that fails the
check gets 403 and changes nothing; one with a missing or malformed field gets 422 and changes
nothing; both are logged.

A delivery report for a message Loa does not know (no outbox row with that id) is answered 200:
Twilio retries a webhook that failed, and a retry cannot make an unknown message known. Reports
carry Loa's message id in their URL (channels/twilio.py), so one that arrives before the worker
recorded Twilio's id still finds its message.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from api.deps import ClockDep, EngineDep, SettingsDep
from audience.segments import mask_phone
from audience.suppression import apply_inbound
from channels.twilio import MESSAGE_PARAM, classify_error, public_url
from loa.db import run_transaction
from loa.errors import Forbidden, InvalidInput, LoaError
from loa.models import MessageStatus
from loa.settings import Settings
from scheduler.delivery import IGNORED, apply_delivery_report, observe_report

log = logging.getLogger(__name__)

router = APIRouter(prefix="/webhooks/twilio", tags=["webhooks"])

# Twilio's MessageStatus values and what each means for an outbox message. None: says nothing
# Loa records (inbound statuses; a partial delivery of a multi-part message, to be followed by
# its final status).
TWILIO_STATUSES: dict[str, MessageStatus | None] = {
    "accepted": MessageStatus.SENT,
    "scheduled": MessageStatus.SENT,
    "queued": MessageStatus.SENT,
    "sending": MessageStatus.SENT,
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.UNDELIVERED,
    "failed": MessageStatus.FAILED,
    "canceled": MessageStatus.CANCELLED,
    "partially_delivered": None,
    "receiving": None,
    "received": None,
}


def _refuse(request: Request, error: LoaError) -> LoaError:
    client = request.client.host if request.client else "?"
    log.warning("webhook %s from %s refused: %s", request.url.path, client, error.message)
    return error


async def _signed_params(request: Request, settings: Settings) -> dict[str, str]:
    """The form parameters of a request Twilio signed; Forbidden when the signature does not
    match (or cannot be checked)."""
    token = settings.twilio_auth_token.get_secret_value()
    if not token:
        raise _refuse(
            request,
            Forbidden("LOA_TWILIO_AUTH_TOKEN is not set: Twilio's signature cannot be checked"),
        )
    try:
        base = public_url(settings)
    except InvalidInput as exc:
        raise _refuse(request, Forbidden(exc.message)) from None
    # Parsed here with the standard library: the body is a plain urlencoded form, and FastAPI's
    # form support needs python-multipart, which Loa does not otherwise use.
    body = (await request.body()).decode("utf-8", errors="replace")
    pairs = parse_qsl(body, keep_blank_values=True)
    params = dict(pairs)
    if len(params) != len(pairs):
        # Twilio's messaging webhooks never repeat a parameter; a form that does is not theirs.
        raise _refuse(request, InvalidInput("a form parameter is repeated"))
    url = base + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not RequestValidator(token).validate(url, params, signature):
        raise _refuse(request, Forbidden(f"the X-Twilio-Signature does not match {url}"))
    return params


def _required(request: Request, params: dict[str, str], *names: str) -> str:
    for name in names:
        if params.get(name):
            return params[name]
    raise _refuse(request, InvalidInput(f"the request has no {names[0]}", field=names[0]))


@router.post("/status")
async def twilio_status(
    request: Request, settings: SettingsDep, engine: EngineDep, clock: ClockDep
) -> dict[str, Any]:
    """A Twilio delivery report: moves the message forward (never back), with an event."""
    params = await _signed_params(request, settings)
    sid = _required(request, params, "MessageSid", "SmsSid")
    reported = _required(request, params, "MessageStatus", "SmsStatus")
    if reported not in TWILIO_STATUSES:
        raise _refuse(
            request,
            InvalidInput(f"unknown MessageStatus {reported!r}", field="MessageStatus"),
        )
    raw_id = request.query_params.get(MESSAGE_PARAM)
    message_id: int | None = None
    if raw_id is not None:
        if not raw_id.isdigit():
            raise _refuse(request, InvalidInput(f"{MESSAGE_PARAM}={raw_id!r} is not a message id"))
        message_id = int(raw_id)
    raw_code = params.get("ErrorCode") or None
    if raw_code is not None and not raw_code.isdigit():
        raise _refuse(request, InvalidInput(f"ErrorCode {raw_code!r} is not a number"))
    status = TWILIO_STATUSES[reported]
    if status is None:
        observe_report(
            None, adapter="twilio", status=None, reported=reported, provider_id=sid, now=clock()
        )
        return {"effect": IGNORED, "status": reported}
    verdict = classify_error(int(raw_code), None) if raw_code else None
    if verdict is not None and verdict.alert:
        log.error(
            "twilio: %s; message %s (%s)",
            verdict.alert,
            message_id,
            sid,
            extra={"message_id": message_id, "provider_id": sid, "adapter": "twilio"},
        )

    def apply() -> dict[str, Any]:
        now = clock()
        result = run_transaction(
            engine,
            lambda session: apply_delivery_report(
                session,
                channel="sms",
                adapter="twilio",
                provider_id=sid,
                status=status,
                message_id=message_id,
                error_code=raw_code,
                problem=verdict.problem if verdict else None,
                detail=f"twilio: {reported}" + (f" (error {raw_code})" if raw_code else ""),
                now=now,
            ),
        )
        observe_report(
            result, adapter="twilio", status=status, reported=reported, provider_id=sid, now=now
        )
        return {"effect": result.effect, "message_id": result.message_id, "status": result.status}

    return await run_in_threadpool(apply)


@router.post("/inbound")
async def twilio_inbound(
    request: Request, settings: SettingsDep, engine: EngineDep, clock: ClockDep
) -> Response:
    """An SMS sent to Loa's number: an opt-out keyword suppresses the sender; an opt-in keyword
    records their consent to advertising. Answers empty TwiML (Loa sends no automatic reply)."""
    params = await _signed_params(request, settings)
    sender = _required(request, params, "From")
    if "Body" not in params:
        raise _refuse(request, InvalidInput("the request has no Body", field="Body"))

    def apply() -> None:
        result = run_transaction(
            engine,
            lambda session: apply_inbound(
                session,
                sender,
                params["Body"],
                now=clock(),
                keywords=settings.opt_out_keywords,
                opt_in_keywords=settings.opt_in_keywords,
                actor="twilio:inbound",
            ),
        )
        # Masked: logs are kept and read more widely than the suppression list.
        log.info("inbound SMS from %s: %s", mask_phone(result.phone), result.kind)

    try:
        await run_in_threadpool(apply)
    except InvalidInput as exc:
        raise _refuse(request, exc) from None
    return Response(str(MessagingResponse()), media_type="application/xml")
