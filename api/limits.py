"""The largest request body the API reads (LOA_API_MAX_BODY_BYTES), enforced as the body arrives.

An ASGI middleware counts the bytes a route reads and stops it with 413 at the limit (at once when
Content-Length already says more), so a huge body is never held in memory. A route that reads its
body as a stream and enforces a limit of its own (the imports and audio uploads, api/upload.py)
lifts this one before reading (`lift_body_limit`). A route that never reads its body is not
refused for one.

Starlette has a body limit of its own (`max_body_size`), but its limit is fixed per route when the
routes are declared, while these come from the settings, and where a route does not read its body
it answers in plain text rather than in the API's error shape.
"""

from __future__ import annotations

from typing import Final

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LIMIT_KEY: Final = "loa.max_body_bytes"
SETTING: Final = "LOA_API_MAX_BODY_BYTES"


class BodyTooLarge(HTTPException):
    """An HTTPException, because FastAPI passes those through when raised while it reads a body
    (others become a 400); api/app.py answers it in the API's error shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than {limit:,} bytes ({SETTING}); send less at once",
        )


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[_LIMIT_KEY] = self.max_bytes
        declared = Headers(scope=scope).get("content-length", "")
        announced = int(declared) if declared.isdigit() else None
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            limit: int | None = scope[_LIMIT_KEY]
            if limit is not None and announced is not None and announced > limit:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if limit is not None and received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


def lift_body_limit(request: Request) -> None:
    """For a route that enforces a limit of its own on the body it is about to stream."""
    request.scope[_LIMIT_KEY] = None
