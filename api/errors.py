"""The API's error shape, `{"error": {"code", "message", "field"}}`, for every error answer: its
model (declared in the OpenAPI description), the response, and the last resort for an error
nobody expected (500, logged with a request id; the answer carries the id, never a traceback)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from typing import Any, Final

from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

REQUEST_ID_HEADER: Final = "X-Request-ID"


class ErrorDetail(BaseModel):
    code: str  # stable, for programs: not_found, conflict, invalid, idempotency_key_reused, ...
    message: str  # for people: what is wrong and what to do
    field: str | None  # the field (or header) at fault, when there is one


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "field": field}},
        status_code=status,
        headers=headers,
    )


# Declared on every operation of the API (api/app.py): which of them an operation can answer
# depends on its parameters and its role checks, and a client reads them all the same way.
ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "The request could not be read",
        401: "No API key, or one that is unknown, revoked or expired",
        403: "The API key's role or area does not allow this",
        404: "Not found",
        409: "The current state does not allow this, or the Idempotency-Key is in use",
        413: "The request body is too large",
        415: "The body's media type is not one this operation reads",
        422: "Invalid input: the message says what, the field where",
        500: "An unexpected error (logged with the request id in X-Request-ID)",
    }.items()
}


class LastResort:
    """ASGI middleware: an exception no handler answered becomes a 500 in the API's error shape,
    with a request id that finds its logged traceback. Inside Starlette's own last resort, which
    would answer in plain text and then raise the error again (to be logged a second time)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            request_id = secrets.token_hex(8)
            log.exception(
                "unexpected error on %s %s (request id %s)",
                scope.get("method"),
                scope.get("path"),
                request_id,
            )
            if started:  # too late for an error answer: the connection is dropped
                raise
            response = error_response(
                500,
                "internal_error",
                f"an unexpected error; it is logged with request id {request_id}",
                None,
                {REQUEST_ID_HEADER: request_id},
            )
            await response(scope, receive, send)
