"""CSV files sent as a request body (Content-Type: text/csv), for the list imports.

The body is streamed to a temporary file, so a large list does not sit in memory, and the
import reads it with the same reader as the CLI. Errors about the file name it "request body"
rather than the temporary path.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

from fastapi import Request

from loa.errors import ImportFileError, InvalidInput

SOURCE: Final = "request body"
# Far above any list an office keeps (a million numbers is about 15 MB), far below what would
# fill a disk.
MAX_BYTES: Final = 200 * 1024 * 1024


@asynccontextmanager
async def csv_body(request: Request) -> AsyncIterator[Path]:
    """The request's body as a temporary CSV file, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="loa-upload-") as directory:
        path = Path(directory) / "upload.csv"
        size = 0
        with path.open("wb") as handle:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BYTES:
                    raise InvalidInput(
                        f"{SOURCE}: larger than {MAX_BYTES // (1024 * 1024)} MB; split the file"
                    )
                handle.write(chunk)
        if size == 0:
            raise ImportFileError(
                f"{SOURCE} is empty: send the CSV file as the body (Content-Type: text/csv)"
            )
        try:
            yield path
        except ImportFileError as exc:
            raise ImportFileError(exc.message.replace(str(path), SOURCE)) from None
