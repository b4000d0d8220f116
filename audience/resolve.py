"""An audience (areas + tags, and for one occurrence of a relative wave a date) as a SQL condition
on recipients, so expansion stays set-based."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Boolean, ColumnElement, and_, exists, func, literal, not_, select, true
from sqlalchemy.orm import aliased
from sqlmodel import col

from loa.errors import NotBuilt
from loa.models import Area, Recipient, RecipientDate, RecipientTag


def audience_condition(audience: dict[str, Any]) -> ColumnElement[bool]:
    """Recipients living in any of the areas (at any depth below) AND carrying any of the tags
    AND, for an occurrence of a relative wave, whose date attribute is that occurrence's date."""
    if audience.get("segment"):
        raise NotBuilt("saved segments are not built yet")
    conditions: list[ColumnElement[bool]] = []
    if areas := audience.get("areas"):
        home, root = aliased(Area), aliased(Area)
        conditions.append(
            exists(
                select(1)
                .select_from(home)
                .join(root, col(home.path).startswith(col(root.path)))
                .where(col(home.code) == col(Recipient.area_code), col(root.code).in_(areas))
            )
        )
    if tags := audience.get("tags"):
        conditions.append(
            exists(
                select(1).where(
                    col(RecipientTag.recipient_id) == col(Recipient.id),
                    col(RecipientTag.tag).in_(tags),
                )
            )
        )
    if on := audience.get("date"):
        conditions.append(
            exists(
                select(1).where(
                    col(RecipientDate.recipient_id) == col(Recipient.id),
                    col(RecipientDate.attribute) == on["attribute"],
                    col(RecipientDate.value) == date.fromisoformat(on["on"]),
                )
            )
        )
    return and_(true(), *conditions)


def lacks_attribute(key: str, dialect: str) -> ColumnElement[bool]:
    """Recipients whose attributes have no `key`. Per dialect: SQLAlchemy's JSON index on SQLite
    wraps the value in json_quote(), which turns a missing key into the text 'null'."""
    attributes = col(Recipient.attributes)
    if dialect == "postgresql":
        return not_(attributes.op("?", return_type=Boolean)(literal(key)))
    path = '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return func.json_type(attributes, path).is_(None)
