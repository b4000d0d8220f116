"""Files sent as a request body, for the imports (recipients, suppressions, consents).

The body is streamed to a temporary file, so a large list does not sit in memory, and the import
reads it with the same readers as the CLI (CSV or XLSX, told apart by content, so the
Content-Type may be text/csv, the xlsx type or application/octet-stream). Errors about the file
name it as the caller did (`display`) rather than by the temporary path. A form upload is
refused: an import takes one file, and the raw body needs no multipart parser.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

from fastapi import Request

from api.idempotency import body_read
from api.limits import lift_body_limit
from loa.errors import ImportFileError, TooLarge, UnsupportedMediaType

SOURCE: Final = "request body"


@asynccontextmanager
async def uploaded_file(
    request: Request,
    *,
    limit: int,
    display: str = SOURCE,
    setting: str = "LOA_IMPORT_MAX_BYTES",
    hint: str = "split it, or import it on the server with the loa command line",
) -> AsyncIterator[Path]:
    """The request's body as a temporary file, removed afterwards; 413 past `limit` bytes
    (the setting named `setting`, whose message ends with `hint`), judged from Content-Length
    and again while streaming. Its SHA-256, taken on the way, completes an Idempotency-Key's
    fingerprint (api/idempotency.py)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/", "application/x-www-form-urlencoded")):
        raise UnsupportedMediaType(
            "send the file itself as the request body (e.g. curl --data-binary @file.csv "
            "-H 'Content-Type: text/csv'), not as a form"
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, setting, hint)
    lift_body_limit(request)  # this one is the body's limit
    with tempfile.TemporaryDirectory(prefix="loa-upload-") as directory:
        path = Path(directory) / "upload"
        size = 0
        digest = hashlib.sha256()
        with path.open("wb") as handle:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit, setting, hint)
                handle.write(chunk)
                digest.update(chunk)
        await body_read(request, digest.hexdigest())
        try:
            yield path
        except ImportFileError as exc:
            raise ImportFileError(exc.message.replace(str(path), display)) from None


def _too_large(limit: int, setting: str, hint: str) -> TooLarge:
    return TooLarge(f"the file is larger than {limit:,} bytes ({setting}); {hint}")
