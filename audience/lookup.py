"""Finding recipients: by phone (written any way a person writes it), name prefix, area (at any
level) and tag, a keyset page at a time by id; and one recipient.

Each filter is an indexed lookup except the name: the phone is unique, the area goes through
ix_recipient_area_id in id order, so a page stops after `limit` rows; the tag through the GIN
index ix_recipient_tags on PostgreSQL, or the primary key in id order, filtered, when the planner
expects a page to fill quickly (bench/list_pages.py measures each). A name prefix alone is
checked on rows in id order until a page is full: fast for common names, a walk of the whole
table for a rare one (0.5 s over a million recipients). Narrow it with an area or a tag. (An
index on names would be one more for every import of a million rows to keep up, for this search
alone.)
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlmodel import Session, col

from audience.phones import normalize_phone
from audience.segments import any_tag
from loa.errors import InvalidInput, NotFound
from loa.models import Area, Recipient
from loa.paging import DEFAULT_PAGE, Key, keyset_page


@dataclass(frozen=True)
class RecipientQuery:
    phone: str | None = None  # any usual form: 0912 345 678, 84912345678, +84912345678, ...
    name: str | None = None  # the start of the name, as stored (NFC, case as written)
    area: str | None = None  # an area code: recipients in it or anywhere below it
    tag: str | None = None


def search_recipients(
    session: Session, query: RecipientQuery, *, after: str | None = None, limit: int = DEFAULT_PAGE
) -> tuple[list[Recipient], str | None]:
    """One keyset page (by id) of the recipients matching every filter given, and the cursor of
    the next page. InvalidInput for a phone that is not a mobile number or an unknown area."""
    statement = select(Recipient)
    if query.phone is not None:
        # Normalised as the importer stores it; an old 11-digit number finds its new form.
        statement = statement.where(col(Recipient.phone) == normalize_phone(query.phone).e164)
    if query.name is not None:
        prefix = unicodedata.normalize("NFC", query.name.strip())
        if not prefix:
            raise InvalidInput("name: give at least one letter of the name", field="name")
        # substr, not LIKE: the same exact, case-sensitive match on both databases (SQLite's LIKE
        # ignores ASCII case and PostgreSQL's does not), and no wildcard to escape.
        statement = statement.where(func.substr(col(Recipient.name), 1, len(prefix)) == prefix)
    if query.area is not None:
        area = session.get(Area, query.area)
        if area is None:
            raise InvalidInput(
                f"unknown area code {query.area} (codes as in the national statistics coding)",
                field="area",
            )
        # The codes under the area first, then IN with the values: planned with the real codes,
        # PostgreSQL walks ix_recipient_area_id or the primary key in id order and stops at the
        # page. (A subquery hid the count from the planner, which then read the whole area and
        # sorted it: 0.4 s for a district of 100,000 people; bench/list_pages.py.)
        codes = session.scalars(
            select(col(Area.code)).where(col(Area.path).startswith(area.path, autoescape=True))
        ).all()
        statement = statement.where(col(Recipient.area_code).in_(codes))
    if query.tag is not None:
        statement = statement.where(any_tag([query.tag], session.get_bind().dialect.name))
    return keyset_page(session, statement, [Key(col(Recipient.id))], after=after, limit=limit)


def get_recipient(session: Session, recipient_id: int) -> Recipient:
    recipient = session.get(Recipient, recipient_id)
    if recipient is None:
        raise NotFound(f"no recipient with id {recipient_id}", field="id")
    return recipient
