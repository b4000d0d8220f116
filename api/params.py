"""Parameter types the routes share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from loa.db import MAX_INTEGER

# A campaign's or a wave's id in a path (an INTEGER column): larger is a 422, not an overflow.
Id = Annotated[int, Path(ge=1, le=MAX_INTEGER)]
