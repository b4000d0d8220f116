"""An audience (areas + tags, a saved segment, and for one occurrence of a relative wave a date)
as a SQL condition on recipients, so expansion stays set-based."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, and_, not_, true
from sqlmodel import col

from audience.segments import any_tag, dated, filter_condition, has_attribute, in_areas
from loa.models import RecipientDate


def audience_condition(audience: dict[str, Any], *, dialect: str) -> ColumnElement[bool]:
    """Recipients living in any of the areas (at any depth below) AND carrying any of the tags
    AND matching the segment's filter AND, for an occurrence of a relative wave, whose date
    attribute is that occurrence's date.

    A segment must have been resolved first (audience.segments.resolve_audience): its filter and
    the date it is evaluated at are then part of the audience, so that this stays a pure function
    of the audience and gives the same answer for every chunk of an expansion."""
    conditions: list[ColumnElement[bool]] = []
    if audience.get("segment"):
        if "segment_filter" not in audience:
            raise ValueError(
                f"segment {audience['segment']!r} not resolved: call resolve_audience first"
            )
        conditions.append(
            filter_condition(
                audience["segment_filter"],
                today=date.fromisoformat(audience["as_of"]),
                dialect=dialect,
            )
        )
    if areas := audience.get("areas"):
        conditions.append(in_areas(areas))
    if tags := audience.get("tags"):
        conditions.append(any_tag(tags, dialect))
    if on := audience.get("date"):
        conditions.append(
            dated(on["attribute"], col(RecipientDate.value) == date.fromisoformat(on["on"]))
        )
    return and_(true(), *conditions)


def lacks_attribute(key: str, dialect: str) -> ColumnElement[bool]:
    """Recipients whose attributes have no `key` (on SQLite a JSON null counts as present)."""
    return not_(has_attribute(key, dialect))
