"""Keyset pages for the lists Loa returns (campaigns, segments, recipients, the audit log, ...).

A page is the rows after a position in a fixed order, never an OFFSET: page 10,000 costs what
page 1 costs, and a row added meanwhile neither repeats nor hides another. The position is the
sort key of the page's last row, handed to the client as an opaque cursor (`next_after`) that it
sends back as `after`. The key must be unique (end it with the primary key) and its columns NOT
NULL, so that "after" always means exactly one place.

Pages carry no total: a count is a scan of everything that matches (83 ms on every page of a
list of a million numbers, bench/list_pages.py), and "is there more" is what `next_after` says.

The delivery log (stats/deliveries.py) pages the same way on the bare message id; it predates
this module and keeps its integer cursor for its clients.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Mapped
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session

from loa.errors import InvalidInput

MAX_PAGE: Final = 1000
DEFAULT_PAGE: Final = 100
MAX_CURSOR: Final = 512  # characters; a cursor of Loa's is far shorter


@dataclass(frozen=True)
class Key:
    """One column of a list's order."""

    column: Mapped[Any]  # a mapped attribute, through sqlmodel's col()
    descending: bool = False

    @property
    def _attribute(self) -> InstrumentedAttribute[Any]:
        attribute: InstrumentedAttribute[Any] = self.column  # type: ignore[assignment]
        return attribute

    @property
    def name(self) -> str:
        return str(self._attribute.key)

    @property
    def kind(self) -> type:
        """The Python type of the column's values (under Loa's decorated types)."""
        sql_type = self._attribute.type
        while isinstance(sql_type, TypeDecorator):
            sql_type = sql_type.impl_instance
        python_type: type = sql_type.python_type
        return python_type


def _bad_cursor() -> InvalidInput:
    return InvalidInput(
        "after: not a cursor of this list; pass the next_after of the previous page, or omit "
        "it for the first page",
        field="after",
    )


def encode_cursor(values: Sequence[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, date | datetime) else v for v in values]
    raw = json.dumps(plain, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decoded(value: Any, kind: type) -> Any:
    # bool is an int to Python; a cursor never holds one.
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    if kind is datetime and isinstance(value, str):
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("naive instant")
        return moment
    if kind is date and isinstance(value, str):
        return date.fromisoformat(value)
    raise ValueError(f"{value!r} is not a {kind.__name__}")


def decode_cursor(cursor: str, keys: Sequence[Key]) -> list[Any]:
    """The key values a cursor holds; InvalidInput (field `after`) for anything else."""
    if len(cursor) > MAX_CURSOR:
        raise _bad_cursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != len(keys):
            raise ValueError("wrong shape")
        return [_decoded(value, key.kind) for value, key in zip(values, keys, strict=True)]
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _bad_cursor() from None


def after_condition(keys: Sequence[Key], values: Sequence[Any]) -> ColumnElement[bool]:
    """Rows strictly after `values` in the order of `keys`.

    Spelt out (k1 > v1 OR k1 = v1 AND k2 > v2 ...) rather than as a row comparison: it allows
    mixed directions, and each value is bound with its column's type (SQLite stores instants as
    text). The leading bound repeats the first key alone so that PostgreSQL starts an index scan
    there instead of filtering the whole index.
    """

    def beyond(key: Key, value: Any) -> ColumnElement[bool]:
        condition: ColumnElement[bool] = (
            key.column < value if key.descending else key.column > value
        )
        return condition

    alternatives = [
        and_(
            *[k.column == v for k, v in zip(keys[:i], values[:i], strict=True)], beyond(key, value)
        )
        for i, (key, value) in enumerate(zip(keys, values, strict=True))
    ]
    first, start = keys[0], values[0]
    leading = first.column <= start if first.descending else first.column >= start
    return and_(leading, or_(*alternatives))


def check_limit(limit: int, maximum: int = MAX_PAGE) -> None:
    if not 1 <= limit <= maximum:
        raise InvalidInput(f"limit must be between 1 and {maximum}", field="limit")


def keyset_page(
    session: Session,
    statement: Select[*tuple[Any, ...]],
    keys: Sequence[Key],
    *,
    after: str | None,
    limit: int,
    key_of: Callable[[Any], Sequence[Any]] | None = None,
    maximum: int = MAX_PAGE,
) -> tuple[list[Any], str | None]:
    """One page of `statement` (a select of one entity, or of rows when `key_of` is given) in
    the order of `keys`, after the cursor `after`; and the cursor of the next page (None at the
    end). `key_of` takes a row to its key values; by default the entity's key attributes.
    `maximum` is for Loa's own batches (an export), never a client's page."""
    check_limit(limit, maximum)
    if after is not None:
        statement = statement.where(after_condition(keys, decode_cursor(after, keys)))
    ordered = statement.order_by(
        *[k.column.desc() if k.descending else k.column.asc() for k in keys]
    ).limit(limit + 1)  # one more tells whether there is a next page
    rows = list(session.scalars(ordered) if key_of is None else session.execute(ordered))
    page = rows[:limit]
    if len(rows) <= limit:
        return page, None
    last = page[-1]
    values = key_of(last) if key_of is not None else [getattr(last, k.name) for k in keys]
    return page, encode_cursor(values)
