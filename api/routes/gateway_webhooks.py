"""Delivery reports from HTTP gateways: `POST /webhooks/gateway/{name}/status`.

Each gateway's report format is in its configuration (channels/gateway_config.py, `report`): how
the request is authenticated (a shared secret in a header, or an HMAC-SHA256 of the raw body),
where the request id, the gateway's message id, the status and the error code are, and what
each status value means. A request that fails authentication gets 403 and changes nothing; one
with a missing field or a status value not in the mapping gets 422 and changes nothing (a
request with several reports is checked whole before any is applied); both are logged.

Reports move a message only forward (scheduler/delivery.py): a duplicate or late report is
harmless. A report for a message Loa does not know, or one recorded as carried by another
adapter (a failover list), is answered 200 and logged: a retry cannot make it known.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from api.deps import ClockDep, EngineDep
from channels.base import RecipientProblem
from channels.gateway_config import Gateway, HmacAuth, ReportMapping
from channels.http_gateway import adapter_name, dig, message_id_from_request_id
from loa.db import run_transaction
from loa.errors import Forbidden, InvalidInput, LoaError, NotFound
from loa.models import MessageStatus
from scheduler.delivery import (
    IGNORED,
    ReportEffect,
    ReportResult,
    apply_delivery_report,
    observe_report,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/webhooks/gateway", tags=["webhooks"])

_STATUSES = {
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.UNDELIVERED,
    "failed": MessageStatus.FAILED,
}


def _refuse(request: Request, error: LoaError) -> LoaError:
    client = request.client.host if request.client else "?"
    log.warning("webhook %s from %s refused: %s", request.url.path, client, error.message)
    return error


def authentic(report: ReportMapping, secret: bytes, headers: Any, body: bytes) -> bool:
    """Whether a report request carries the gateway's shared secret or a valid HMAC of its body.
    Compared in constant time."""
    given = headers.get(report.auth.header, "")
    if not given:
        return False
    auth = report.auth
    if isinstance(auth, HmacAuth):
        digest = hmac.new(secret, body, hashlib.sha256).digest()
        expected = auth.prefix + (
            digest.hex() if auth.encoding == "hex" else base64.b64encode(digest).decode()
        )
        return hmac.compare_digest(given.encode(), expected.encode())
    return hmac.compare_digest(given.encode(), secret)


@dataclass(frozen=True)
class _Report:
    message_id: int | None
    provider_id: str | None
    reported: str
    status: MessageStatus | None  # None: a status the mapping says to ignore
    error_code: str | None
    problem: RecipientProblem | None


def _text(value: Any) -> str | None:
    if value is None or value == "" or isinstance(value, dict | list):
        return None
    return str(value)


def _parse(gateway: Gateway, report: ReportMapping, document: Any) -> list[_Report]:
    """Every report of the request, or InvalidInput naming what is missing or unknown."""
    if report.items:
        items = dig(document, report.items)
        if not isinstance(items, list):
            raise InvalidInput(f"the request has no list at {report.items!r}", field=report.items)
    else:
        items = [document]
    parsed = []
    for n, item in enumerate(items):
        where = f"report {n + 1}: " if report.items else ""
        request_id = _text(dig(item, report.request_id)) if report.request_id else None
        provider_id = _text(dig(item, report.message_id)) if report.message_id else None
        if request_id is None and provider_id is None:
            field = report.request_id or report.message_id
            raise InvalidInput(f"{where}the report has no {field}", field=field)
        reported = _text(dig(item, report.status))
        if reported is None:
            raise InvalidInput(f"{where}the report has no {report.status}", field=report.status)
        if reported not in report.statuses:
            raise InvalidInput(
                f"{where}unknown status {reported!r} (the mapping knows "
                f"{', '.join(sorted(report.statuses))})",
                field=report.status,
            )
        mapped = report.statuses[reported]
        code = _text(dig(item, report.error_code)) if report.error_code else None
        problem = None
        if code is not None and code in report.invalid_number:
            problem = RecipientProblem.INVALID
        elif code is not None and code in report.opted_out:
            problem = RecipientProblem.OPTED_OUT
        message_id = (
            message_id_from_request_id(gateway.config.request_id_prefix, request_id)
            if request_id is not None
            else None
        )
        parsed.append(
            _Report(
                message_id=message_id,
                # A report without the gateway's own id knows the message by its request id;
                # so does the adapter, when the gateway answered the send without one.
                provider_id=provider_id,
                reported=reported,
                status=None if mapped == "ignore" else _STATUSES[mapped],
                error_code=code[:32] if code else None,
                problem=problem,
            )
        )
    return parsed


# Each report of a request, what came of it (None: nothing to record) and its answer.
_Applied = list[tuple[_Report, ReportResult | None, dict[str, Any]]]


@router.post("/{name}/status")
async def gateway_status(
    name: str, request: Request, engine: EngineDep, clock: ClockDep
) -> dict[str, Any]:
    """A gateway's delivery report(s): each moves its message forward (never back), with an
    event."""
    gateways: dict[str, Gateway] = getattr(request.app.state, "gateways", {})
    gateway = gateways.get(name)
    if gateway is None or gateway.config.report is None or gateway.report_secret is None:
        raise _refuse(request, NotFound(f"no gateway {name!r} with delivery reports"))
    report = gateway.config.report
    body = await request.body()
    if not authentic(report, gateway.report_secret, request.headers, body):
        raise _refuse(request, Forbidden(f"the report is not authenticated ({report.auth.header})"))
    try:
        if report.format == "json":
            document: Any = json.loads(body)
        else:
            document = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refuse(request, InvalidInput(f"the body is not {report.format}: {exc}")) from None
    try:
        reports = _parse(gateway, report, document)
    except InvalidInput as exc:
        raise _refuse(request, exc) from None
    adapter = adapter_name(name)

    def record(session: Session, now: datetime) -> _Applied:
        # Built anew by each attempt of the transaction.
        applied: _Applied = []
        for item in reports:
            if item.status is None:
                applied.append((item, None, {"effect": IGNORED, "status": item.reported}))
            elif item.message_id is None and item.provider_id is None:
                # A request id not Loa's.
                unknown = ReportResult(ReportEffect.UNKNOWN_MESSAGE)
                applied.append((item, unknown, {"effect": unknown.effect}))
            else:
                result = apply_delivery_report(
                    session,
                    channel="sms",
                    adapter=adapter,
                    provider_id=item.provider_id,
                    status=item.status,
                    message_id=item.message_id,
                    error_code=item.error_code,
                    problem=item.problem,
                    detail=f"{adapter}: {item.reported}"
                    + (f" (error {item.error_code})" if item.error_code else ""),
                    now=now,
                )
                answer = {
                    "effect": result.effect,
                    "message_id": result.message_id,
                    "status": result.status,
                }
                applied.append((item, result, answer))
        return applied

    def apply() -> list[dict[str, Any]]:
        now = clock()
        applied = run_transaction(engine, lambda session: record(session, now))
        # Counted and logged once committed: a request that failed half-way counts nothing.
        for item, outcome, _ in applied:
            observe_report(
                outcome,
                adapter=adapter,
                status=item.status,
                reported=item.reported,
                provider_id=item.provider_id,
                now=now,
            )
        return [answer for _, _, answer in applied]

    return {"results": await run_in_threadpool(apply)}
