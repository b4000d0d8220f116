"""The query parameters and the answer of every keyset-paged list (loa/paging.py)."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field

from loa.paging import MAX_CURSOR, MAX_PAGE

T = TypeVar("T")

After = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR,
        description="The next_after of the previous page; omit it for the first page.",
    ),
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Items per page, 1 to {MAX_PAGE}.")]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_after: str | None = Field(
        description="Pass as ?after= for the next page; null on the last page."
    )
