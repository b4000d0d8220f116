"""Saved segments: a named filter over areas, tags and attributes that a wave's audience names
instead of repeating it, and that `loa segments count` / the API count with a sample.

The filter (JSON; every key optional, at least one given; everything given must hold, AND):

    {
      "areas": ["440"],                    # lives in any of these areas, at any depth below
      "tags": ["nong-dan", "tieu-thuong"], # carries any of these tags
      "all_tags": ["nong-dan", "ho-ngheo"],# carries every one of these tags
      "attributes": {                      # per attribute, one or more tests (all must hold)
        "gender":      {"equals": "nu"},
        "occupation":  {"in": ["trong-lua", "chan-nuoi"]},
        "card_number": {"exists": true},           # false: the attribute is absent
        "card_expiry": {"within_next_days": 30},   # today <= date <= today + 30
        "last_paid":   {"within_last_days": 90},   # today - 90 <= date <= today
        "birth_date":  {"after": "1960-01-01", "before": "1970-01-01"}  # strictly, ISO dates
      }
    }

`equals` and `in` compare with the attribute's JSON value and its type ("5" is not 5); the
importer stores every attribute as text. The date tests (before, after, within_*) read the
indexed `recipient_date` table, which holds the attributes whose values are ISO dates; an
attribute no recipient has as a date is refused, as a typo would otherwise select nobody.

"Today" is a local date: for `loa segments count` and the API, the date of the clock in
LOA_DEFAULT_TIMEZONE; for a wave, the local date (in the campaign's zone) of the wave's own
time, so that "cards expiring within 30 days" means within 30 days of the reminder, however long
before it the campaign was planned, and a re-run of a half-done expansion selects the same people.

A wave names a segment by name. It is resolved when the wave expands, not when the campaign is
created: the office edits a segment (new communes, another tag) and expects the waves that have
not gone out yet to follow. When expansion starts, the filter and the date are copied into the
wave (`segment_filter`, `as_of`), so that every chunk, a repair after a crash and a late
re-expansion of a relative occurrence use the same filter; an edit after that point applies to
the occurrences still to come. A segment used by a wave not yet expanded cannot be deleted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import (
    Boolean,
    ColumnElement,
    Text,
    and_,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from loa import audit
from loa.db import MAX_BIGINT
from loa.errors import Conflict, InvalidInput, NotFound
from loa.models import (
    Area,
    Campaign,
    CampaignStatus,
    Recipient,
    RecipientDate,
    Segment,
    Wave,
    WaveStatus,
)
from loa.paging import DEFAULT_PAGE, Key, keyset_page

# Whole numbers within 64 bits: the databases compare attributes with them as such.
Scalar = (
    StrictStr
    | Annotated[StrictInt, Field(ge=-MAX_BIGINT - 1, le=MAX_BIGINT)]
    | StrictFloat
    | StrictBool
)
OPERATORS = ("equals", "in", "exists", "before", "after", "within_next_days", "within_last_days")
DATE_OPERATORS = ("before", "after", "within_next_days", "within_last_days")
KEYS = ("areas", "tags", "all_tags", "attributes")
# A name goes in URLs and in campaign specs: plain, lower-case, no spaces.
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Ten years: a larger window is a typo (days instead of a date), not a plan.
MAX_DAYS = 3660


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _iso_date(value: str) -> str:
    try:
        if not _ISO_DATE.fullmatch(value):
            raise ValueError
        date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a date; write it as YYYY-MM-DD") from None
    return value


class AttributeTest(_Strict):
    equals: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in")
    exists: StrictBool | None = None
    before: StrictStr | None = None
    after: StrictStr | None = None
    within_next_days: StrictInt | None = Field(default=None, ge=0, le=MAX_DAYS)
    within_last_days: StrictInt | None = Field(default=None, ge=0, le=MAX_DAYS)

    @field_validator("before", "after")
    @classmethod
    def _is_date(cls, value: str | None) -> str | None:
        return None if value is None else _iso_date(value)

    @field_validator("in_")
    @classmethod
    def _not_empty(cls, value: list[Any] | None) -> list[Any] | None:
        if value is not None and not value:
            raise ValueError("give at least one value (an empty list would select nobody)")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> AttributeTest:
        given = self.model_fields_set
        if not given:
            raise ValueError(f"give at least one test: {', '.join(OPERATORS)}")
        if "equals" in given and self.equals is None:
            raise ValueError("equals null: use {'exists': false} for recipients without it")
        if self.exists is False and len(given) > 1:
            raise ValueError("exists: false cannot be combined with a test of the value")
        if self.before and self.after and self.after >= self.before:
            raise ValueError(f"after {self.after} is not before {self.before}: selects nobody")
        return self

    def date_tests(self) -> bool:
        return any(getattr(self, op) is not None for op in DATE_OPERATORS)


class SegmentFilter(_Strict):
    areas: list[StrictStr] | None = None
    tags: list[StrictStr] | None = None
    all_tags: list[StrictStr] | None = None
    attributes: dict[str, AttributeTest] | None = None

    @field_validator("areas", "tags", "all_tags")
    @classmethod
    def _codes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("give at least one value, or leave the key out")
        for item in value:
            if not item.strip():
                raise ValueError("an empty value")
        return value

    @field_validator("attributes")
    @classmethod
    def _names(cls, value: dict[str, AttributeTest] | None) -> dict[str, AttributeTest] | None:
        if value is not None:
            if not value:
                raise ValueError("give at least one attribute, or leave the key out")
            for name in value:
                if not name.strip() or len(name) > 200:
                    raise ValueError(f"{name!r} is not an attribute name (1 to 200 characters)")
        return value

    @model_validator(mode="after")
    def _not_everyone_by_accident(self) -> SegmentFilter:
        if not self.model_fields_set:
            raise ValueError(f"give at least one of {', '.join(KEYS)}")
        return self

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _problem(error: Any) -> tuple[str, str]:
    """A pydantic error as (field, message) in words a planner reads."""
    loc = ["filter", *(str(p) for p in error["loc"])]
    kind = error["type"]
    if kind == "extra_forbidden":
        if len(loc) == 2:
            return "filter", f"unknown key {loc[1]!r} (use {', '.join(KEYS)})"
        return ".".join(loc), f"unknown operator {loc[-1]!r} (use {', '.join(OPERATORS)})"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind in {"model_type", "dict_type"}:
        message = "must be an object (a JSON mapping)"
    if kind == "list_type":
        message = "must be a list"
    if loc[-1].startswith("within_") and kind.startswith(("less_than", "greater_than", "int")):
        message = f"must be a whole number of days from 0 to {MAX_DAYS}"
    # A union's every branch failing: say what is accepted, not four pydantic messages.
    if loc[-1] in {"str", "int", "float", "bool"} or (kind.endswith("_type") and "equals" in loc):
        loc = [p for p in loc if p not in {"str", "int", "float", "bool"}]
        message = "must be text, a number, true or false"
    return ".".join(loc), message


def parse_filter(raw: Any, *, source: str) -> SegmentFilter:
    """Validate a filter's shape; one InvalidInput naming every problem, `field` the first's."""
    if not isinstance(raw, dict):
        raise InvalidInput(
            f"{source}, field filter: must be an object with {', '.join(KEYS)}", field="filter"
        )
    try:
        return SegmentFilter.model_validate(raw)
    except ValidationError as exc:
        problems = list(dict.fromkeys(_problem(e) for e in exc.errors()))
        raise InvalidInput(
            f"{source}: " + "; ".join(f"field {field}: {message}" for field, message in problems),
            field=problems[0][0],
        ) from None


def check_against_data(session: Session, flt: SegmentFilter, *, source: str) -> None:
    """What only the database can say: area codes that do not exist, date tests on an attribute
    no recipient has as a date."""
    if flt.areas:
        known = set(session.scalars(select(col(Area.code)).where(col(Area.code).in_(flt.areas))))
        if missing := [code for code in flt.areas if code not in known]:
            raise InvalidInput(
                f"{source}, field filter.areas: unknown area code(s) {', '.join(missing)} "
                "(load areas first: loa areas import FILE.csv)",
                field="filter.areas",
            )
    for name, test in (flt.attributes or {}).items():
        if not test.date_tests():
            continue
        found = session.scalar(
            select(col(RecipientDate.recipient_id))
            .where(col(RecipientDate.attribute) == name)
            .limit(1)
        )
        if found is None:
            known_dates = session.scalars(
                select(col(RecipientDate.attribute))
                .distinct()
                .order_by(col(RecipientDate.attribute))
            ).all()
            raise InvalidInput(
                f"{source}, field filter.attributes.{name}: no recipient has a date in {name!r} "
                f"(date attributes on file: {', '.join(known_dates[:20]) or 'none'})",
                field=f"filter.attributes.{name}",
            )


# --- the filter as SQL ----------------------------------------------------------------------


def in_areas(codes: Sequence[str]) -> ColumnElement[bool]:
    """Recipients whose area is one of `codes` or anywhere below one (an indexed prefix of the
    area path; then ix_recipient_area_id)."""
    home, root = aliased(Area), aliased(Area)
    return exists(
        select(1)
        .select_from(home)
        .join(root, col(home.path).startswith(col(root.path)))
        .where(col(home.code) == col(Recipient.area_code), col(root.code).in_(codes))
    )


def any_tag(tags: Sequence[str], dialect: str) -> ColumnElement[bool]:
    """Recipients carrying any of `tags`: on PostgreSQL the GIN index ix_recipient_tags (array
    overlap); SQLite reads each row's JSON array."""
    if dialect == "postgresql":
        return col(Recipient.tags).op("&&", return_type=Boolean)(_tag_array(tags))
    tag = func.json_each(col(Recipient.tags)).table_valued("value").alias("tag")
    return exists(select(1).select_from(tag).where(tag.c.value.in_(list(tags))))


def all_tags(tags: Sequence[str], dialect: str) -> ColumnElement[bool]:
    """Recipients carrying every one of `tags` (array containment on PostgreSQL, GIN)."""
    distinct = list(dict.fromkeys(tags))
    if dialect == "postgresql":
        return col(Recipient.tags).op("@>", return_type=Boolean)(_tag_array(distinct))
    return and_(*(any_tag([tag], dialect) for tag in distinct))


def _tag_array(tags: Sequence[str]) -> ColumnElement[Any]:
    return literal(list(tags), ARRAY(Text()))


def dated(attribute: str, *conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """Recipients with a date in `attribute` that meets `conditions` (ix_recipient_date_value)."""
    return exists(
        select(1).where(
            col(RecipientDate.recipient_id) == col(Recipient.id),
            col(RecipientDate.attribute) == attribute,
            *conditions,
        )
    )


def _json_path(key: str) -> str:
    return '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def has_attribute(key: str, dialect: str) -> ColumnElement[bool]:
    """The attribute is present (with any value). SQLite's json_type() is NULL only for a
    missing key (a JSON null is 'null'), like PostgreSQL's `?`."""
    attributes = col(Recipient.attributes)
    if dialect == "postgresql":
        return attributes.op("?", return_type=Boolean)(literal(key))
    return func.json_type(attributes, _json_path(key)).is_not(None)


def attribute_equals(key: str, value: Any, dialect: str) -> ColumnElement[bool]:
    """The attribute's JSON value is `value`, type included: "5" is not 5, true is not 1."""
    attributes = col(Recipient.attributes)
    if dialect == "postgresql":
        # Containment compares JSON values by type (1 and 1.0 are equal numbers).
        return attributes.op("@>", return_type=Boolean)(literal({key: value}, JSONB))
    path = _json_path(key)
    kind = func.json_type(attributes, path)
    if isinstance(value, bool):
        return kind == ("true" if value else "false")
    kinds = ["text"] if isinstance(value, str) else ["integer", "real"]
    return and_(kind.in_(kinds), func.json_extract(attributes, path) == value)


def attribute_condition(
    key: str, test: AttributeTest, *, today: date, dialect: str
) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    if test.exists is not None:
        present = has_attribute(key, dialect)
        conditions.append(present if test.exists else not_(present))
    if test.equals is not None:
        conditions.append(attribute_equals(key, test.equals, dialect))
    if test.in_ is not None:
        conditions.append(or_(*(attribute_equals(key, v, dialect) for v in test.in_)))
    bounds: list[ColumnElement[bool]] = []
    value = col(RecipientDate.value)
    if test.before is not None:
        bounds.append(value < date.fromisoformat(test.before))
    if test.after is not None:
        bounds.append(value > date.fromisoformat(test.after))
    if test.within_next_days is not None:
        bounds += [value >= today, value <= today + timedelta(days=test.within_next_days)]
    if test.within_last_days is not None:
        bounds += [value >= today - timedelta(days=test.within_last_days), value <= today]
    if bounds:
        # All bounds in one EXISTS: one range scan of (attribute, value), not one per bound.
        conditions.append(dated(key, *bounds))
    return and_(true(), *conditions)


def filter_condition(
    flt: SegmentFilter | dict[str, Any], *, today: date, dialect: str
) -> ColumnElement[bool]:
    """The filter as one SQL condition on `recipient`, for a count, a sample or an expansion."""
    if isinstance(flt, dict):
        flt = parse_filter(flt, source="saved segment")
    conditions: list[ColumnElement[bool]] = []
    if flt.areas:
        conditions.append(in_areas(flt.areas))
    if flt.tags:
        conditions.append(any_tag(flt.tags, dialect))
    if flt.all_tags:
        conditions.append(all_tags(flt.all_tags, dialect))
    for key, test in (flt.attributes or {}).items():
        conditions.append(attribute_condition(key, test, today=today, dialect=dialect))
    return and_(true(), *conditions)


# --- saved segments -------------------------------------------------------------------------


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"segment name {name!r}: use 1 to 100 lower-case letters, digits, '-', '_' or '.', "
            "starting with a letter or digit (e.g. the-bhyt-sap-het-han)",
            field="name",
        )
    return name


def get_segment(session: Session, name: str) -> Segment:
    segment = session.scalar(select(Segment).where(col(Segment.name) == name))
    if segment is None:
        raise NotFound(f"no segment named {name!r} (see: loa segments list)", field="name")
    return segment


def list_segments(
    session: Session, *, after: str | None = None, limit: int = DEFAULT_PAGE
) -> tuple[list[Segment], str | None]:
    """One keyset page of saved segments by name (unique), and the cursor of the next page."""
    return keyset_page(session, select(Segment), [Key(col(Segment.name))], after=after, limit=limit)


def create_segment(
    session: Session,
    *,
    name: str,
    raw_filter: Any,
    description: str | None,
    actor: str,
    now: datetime,
    source: str,
) -> Segment:
    check_name(name)
    flt = parse_filter(raw_filter, source=source)
    check_against_data(session, flt, source=source)
    if session.scalar(select(col(Segment.id)).where(col(Segment.name) == name)) is not None:
        raise Conflict(f"a segment named {name!r} exists already", field="name")
    segment = Segment(
        name=name,
        description=description,
        filter=flt.as_json(),
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(segment)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:  # created at the same moment by another request: the UNIQUE key
        raise Conflict(f"a segment named {name!r} exists already", field="name") from None
    audit.record(
        session,
        actor=actor,
        action="segment.create",
        entity="segment",
        entity_id=name,
        now=now,
        after={"filter": segment.filter, "description": description},
    )
    return segment


def update_segment(
    session: Session,
    name: str,
    *,
    raw_filter: Any,
    description: str | None,
    actor: str,
    now: datetime,
    source: str,
) -> Segment:
    """Replace the filter (and the description, when given). Waves not yet expanded follow."""
    flt = parse_filter(raw_filter, source=source)
    check_against_data(session, flt, source=source)
    segment = get_segment(session, name)
    before = {"filter": segment.filter, "description": segment.description}
    segment.filter = flt.as_json()
    if description is not None:
        segment.description = description
    segment.updated_at = now
    audit.record(
        session,
        actor=actor,
        action="segment.update",
        entity="segment",
        entity_id=name,
        now=now,
        before=before,
        after={"filter": segment.filter, "description": segment.description},
    )
    return segment


def waves_using(session: Session, name: str) -> list[tuple[int, int, str]]:
    """(campaign id, wave id, wave name) of the waves not yet expanded that name the segment."""
    rows = session.execute(
        select(col(Wave.campaign_id), col(Wave.id), col(Wave.name), col(Wave.audience))
        .join(Campaign, col(Campaign.id) == col(Wave.campaign_id))
        .where(
            col(Wave.status).in_([WaveStatus.PENDING, WaveStatus.SCHEDULED]),
            col(Campaign.status).not_in([CampaignStatus.COMPLETED, CampaignStatus.CANCELLED]),
        )
        .order_by(col(Wave.id))
    ).all()
    # Few waves are unfired at any time: reading their audience here beats dialect-specific JSON.
    return [(c, w, n) for c, w, n, audience in rows if (audience or {}).get("segment") == name]


def delete_segment(session: Session, name: str, *, actor: str, now: datetime) -> None:
    segment = get_segment(session, name)
    if users := waves_using(session, name):
        listed = ", ".join(f"campaign {c} wave {w} ({n!r})" for c, w, n in users[:10])
        raise Conflict(
            f"segment {name!r} is used by {len(users)} wave(s) not yet sent: {listed}; "
            "cancel those campaigns or wait until the waves have gone out",
            field="name",
        )
    audit.record(
        session,
        actor=actor,
        action="segment.delete",
        entity="segment",
        entity_id=name,
        now=now,
        before={"filter": segment.filter, "description": segment.description},
    )
    session.delete(segment)


def local_today(now: datetime, timezone: str) -> date:
    return now.astimezone(ZoneInfo(timezone)).date()


def resolve_audience(session: Session, audience: dict[str, Any], *, as_of: date) -> dict[str, Any]:
    """A wave's audience with its segment's filter and the date it is evaluated at copied in,
    unless they were copied already (a wave whose expansion has started keeps its own)."""
    if not audience.get("segment") or "segment_filter" in audience:
        return audience
    segment = get_segment(session, audience["segment"])
    return {**audience, "segment_filter": segment.filter, "as_of": as_of.isoformat()}


# --- counting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleRecipient:
    id: int
    phone: str  # masked: see mask_phone
    name: str | None
    area_code: str | None


@dataclass(frozen=True)
class SegmentCount:
    count: int
    as_of: date
    sample: list[SampleRecipient]


def mask_phone(phone: str) -> str:
    """+84912345678 -> +84912***678. A sample is for checking that a segment picks the right kind
    of people (names, places); whole numbers in a screenshot or a report help nobody. The prefix
    (carrier) and the last digits stay, so that a person can still be recognised."""
    if len(phone) < 9:
        return phone[:2] + "*" * (len(phone) - 2)
    return phone[:6] + "*" * (len(phone) - 9) + phone[-3:]


def count_filter(session: Session, flt: SegmentFilter, *, today: date, sample: int) -> SegmentCount:
    """How many recipients match, and the first `sample` of them by id: two set-based queries."""
    condition = filter_condition(flt, today=today, dialect=session.get_bind().dialect.name)
    count = session.scalar(select(func.count()).select_from(Recipient).where(condition)) or 0
    rows = (
        session.execute(
            select(
                col(Recipient.id),
                col(Recipient.phone),
                col(Recipient.name),
                col(Recipient.area_code),
            )
            .where(condition)
            .order_by(col(Recipient.id))
            .limit(sample)
        ).all()
        if sample > 0 and count
        else []
    )
    return SegmentCount(
        count=count,
        as_of=today,
        sample=[SampleRecipient(i, mask_phone(p), n, a) for i, p, n, a in rows],
    )


def count_segment(session: Session, name: str, *, today: date, sample: int) -> SegmentCount:
    segment = get_segment(session, name)
    flt = parse_filter(segment.filter, source=f"segment {name!r}")
    return count_filter(session, flt, today=today, sample=sample)
