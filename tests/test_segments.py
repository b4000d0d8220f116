"""Saved segments on SQLite and PostgreSQL: every operator of the filter, areas at any depth, tags
any and all, combinations, "within N days" counted from the right day, bad filters refused with
the field named, and waves over a segment (at and relative) expanded to exactly the right people;
saving, editing and deleting (refused while a wave not yet expanded uses the segment)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select
from sqlmodel import col

from audience.segments import (
    count_filter,
    count_segment,
    create_segment,
    delete_segment,
    get_segment,
    mask_phone,
    parse_filter,
    update_segment,
)
from loa.db import session_scope
from loa.errors import Conflict, InvalidInput
from loa.models import AuditEntry, OutboxMessage, Recipient, Segment, Wave
from loa.settings import Settings
from scheduler.lifecycle import cancel_campaign, create_campaign
from scheduler.plan import plan_campaign
from scheduler.spec import validate_spec
from scheduler.tick import run_tick
from tests.builders import add_areas, add_recipient, launch
from tests.conftest import FakeClock

# The clock starts at 2026-05-08 00:00 UTC: 07:00 in Hà Tĩnh, so "today" is 2026-05-08.
TODAY = date(2026, 5, 8)
PEOPLE: dict[str, dict[str, Any]] = {
    "p1": {
        "area": "18301",
        "tags": ("nong-dan",),
        "attributes": {"card_expiry": "2026-05-18", "gender": "nu"},
    },
    "p2": {
        "area": "18302",
        "tags": ("nong-dan", "ho-ngheo"),
        "attributes": {"card_expiry": "2026-06-20", "gender": "nam"},
    },
    "p3": {  # another province
        "area": "16801",
        "tags": ("nong-dan",),
        "attributes": {"card_expiry": "2026-05-20", "gender": "nu"},
    },
    "p4": {
        "area": "18301",
        "tags": ("tieu-thuong",),
        "attributes": {"card_expiry": "2026-05-01"},
    },
    "p5": {  # placed at the district itself, not in a commune; typed JSON values
        "area": "440",
        "tags": ("ho-ngheo",),
        "attributes": {"score": 5, "flag": True, "note": None},
    },
}
PHONE = {name: f"+8491200000{i}" for i, name in enumerate(PEOPLE, start=1)}


@pytest.fixture(autouse=True)
def people(engine: Engine, clock: FakeClock) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        for name, person in PEOPLE.items():
            add_recipient(
                session,
                PHONE[name],
                now=clock(),
                name=name,
                area=person["area"],
                tags=person["tags"],
                attributes=person["attributes"],
            )


def _matching(engine: Engine, raw: dict[str, Any], today: date = TODAY) -> set[str]:
    with session_scope(engine) as session:
        counted = count_filter(session, parse_filter(raw, source="test"), today=today, sample=100)
    names = {r.name for r in counted.sample if r.name}
    assert counted.count == len(names)  # the count and the rows agree
    return names


def _a(attribute: str, **test: Any) -> dict[str, Any]:
    return {"attributes": {attribute: {k.rstrip("_"): v for k, v in test.items()}}}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # areas: any of, at any depth (province, district, commune)
        ({"areas": ["42"]}, {"p1", "p2", "p4", "p5"}),
        ({"areas": ["440"]}, {"p1", "p2", "p4", "p5"}),
        ({"areas": ["18301"]}, {"p1", "p4"}),
        ({"areas": ["18302", "16801"]}, {"p2", "p3"}),
        ({"areas": ["40", "42"]}, set(PEOPLE)),
        # tags: any of, all of
        ({"tags": ["nong-dan"]}, {"p1", "p2", "p3"}),
        ({"tags": ["ho-ngheo", "tieu-thuong"]}, {"p2", "p4", "p5"}),
        ({"all_tags": ["nong-dan", "ho-ngheo"]}, {"p2"}),
        ({"all_tags": ["nong-dan", "tieu-thuong"]}, set()),
        # equals / in, by JSON type
        (_a("gender", equals="nu"), {"p1", "p3"}),
        (_a("gender", in_=["nu", "nam"]), {"p1", "p2", "p3"}),
        (_a("gender", in_=["khac"]), set()),
        (_a("score", equals=5), {"p5"}),
        (_a("score", equals=5.0), {"p5"}),
        (_a("score", equals="5"), set()),
        (_a("flag", equals=True), {"p5"}),
        (_a("flag", equals=False), set()),
        (_a("flag", equals=1), set()),
        # exists: present (a JSON null is present), absent
        (_a("gender", exists=True), {"p1", "p2", "p3"}),
        (_a("gender", exists=False), {"p4", "p5"}),
        (_a("note", exists=True), {"p5"}),
        # dates from recipient_date: strict before/after, inclusive within
        (_a("card_expiry", before="2026-05-18"), {"p4"}),
        (_a("card_expiry", after="2026-05-18"), {"p2", "p3"}),
        (_a("card_expiry", after="2026-05-01", before="2026-06-20"), {"p1", "p3"}),
        (_a("card_expiry", within_next_days=30), {"p1", "p3"}),
        (_a("card_expiry", within_next_days=10), {"p1"}),
        (_a("card_expiry", within_next_days=9), set()),
        (_a("card_expiry", within_next_days=0), set()),
        (_a("card_expiry", within_last_days=7), {"p4"}),
        (_a("card_expiry", within_last_days=6), set()),
        # combinations are ANDed: the office's example
        (
            {"areas": ["440"], "tags": ["nong-dan"], **_a("card_expiry", within_next_days=30)},
            {"p1"},
        ),
        (
            {
                "tags": ["nong-dan", "tieu-thuong"],
                "attributes": {
                    "card_expiry": {"within_next_days": 60},
                    "gender": {"exists": True, "in": ["nu"]},
                },
            },
            {"p1", "p3"},
        ),
    ],
)
def test_each_operator_selects_exactly_its_recipients(
    engine: Engine, raw: dict[str, Any], expected: set[str]
) -> None:
    assert _matching(engine, raw) == expected


def test_within_counts_from_the_day_given(engine: Engine) -> None:
    within = _a("card_expiry", within_next_days=5)
    assert _matching(engine, within, today=date(2026, 5, 8)) == set()
    assert _matching(engine, within, today=date(2026, 5, 15)) == {"p1", "p3"}
    assert _matching(engine, within, today=date(2026, 6, 16)) == {"p2"}


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({}, "filter", "give at least one of"),
        ([], "filter", "must be an object"),
        ({"area": ["42"]}, "filter", "unknown key 'area'"),
        ({"areas": []}, "filter.areas", "at least one"),
        ({"tags": "nong-dan"}, "filter.tags", "must be a list"),
        ({"tags": [""]}, "filter.tags", "empty value"),
        (_a("card_expiry", within=30), "filter.attributes.card_expiry.within", "unknown operator"),
        (_a("gender", in_=[]), "filter.attributes.gender.in", "at least one value"),
        (_a("gender", equals=["nu"]), "filter.attributes.gender.equals", "text, a number"),
        (_a("gender", equals=None), "filter.attributes.gender", "exists"),
        (_a("card_expiry", before="08/05/2026"), "filter.attributes.card_expiry.before", "YYYY"),
        (
            _a("card_expiry", after="2026-02-30"),
            "filter.attributes.card_expiry.after",
            "not a date",
        ),
        (
            _a("card_expiry", within_next_days=-1),
            "filter.attributes.card_expiry.within_next_days",
            "whole number of days",
        ),
        (
            _a("card_expiry", within_last_days="30"),
            "filter.attributes.card_expiry.within_last_days",
            "whole number of days",
        ),
        ({"attributes": {"gender": {}}}, "filter.attributes.gender", "at least one test"),
        ({"attributes": {"gender": "nu"}}, "filter.attributes.gender", "must be an object"),
        (_a("gender", exists=False, equals="nu"), "filter.attributes.gender", "exists: false"),
    ],
)
def test_a_bad_filter_is_refused_with_the_field_named(raw: Any, field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_filter(raw, source="seg.json")
    assert refused.value.field == field
    assert refused.value.message.startswith("seg.json")
    assert field in refused.value.message and words in refused.value.message


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"areas": ["42", "99999"]}, "filter.areas", "unknown area code(s) 99999"),
        (_a("card_expiy", within_next_days=30), "filter.attributes.card_expiy", "card_expiry"),
    ],
)
def test_what_only_the_data_can_refute_is_refused_and_nothing_saved(
    engine: Engine, clock: FakeClock, raw: dict[str, Any], field: str, words: str
) -> None:
    with session_scope(engine) as session, pytest.raises(InvalidInput) as refused:
        create_segment(
            session, name="s", raw_filter=raw, description=None, actor="t", now=clock(), source="x"
        )
    assert refused.value.field == field and words in refused.value.message
    with session_scope(engine) as session, pytest.raises(Exception, match="no segment named"):
        get_segment(session, "s")


def test_names_are_unique_and_plain(engine: Engine, clock: FakeClock) -> None:
    def create(name: str) -> None:
        with session_scope(engine) as session:
            create_segment(
                session,
                name=name,
                raw_filter={"tags": ["nong-dan"]},
                description="Nông dân",
                actor="t",
                now=clock(),
                source="x",
            )

    create("nong-dan")
    with pytest.raises(Conflict, match="exists already"):
        create("nong-dan")
    with pytest.raises(InvalidInput, match="lower-case") as refused:
        create("Nông dân")
    assert refused.value.field == "name"
    with session_scope(engine) as session:
        counted = count_segment(session, "nong-dan", today=TODAY, sample=2)
        actions = session.scalars(select(col(AuditEntry.action))).all()
    assert counted.count == 3 and [r.name for r in counted.sample] == ["p1", "p2"]
    assert counted.sample[0].phone == "+84912***001"
    assert actions == ["segment.create"]


def test_mask_phone_keeps_the_prefix_and_the_last_digits() -> None:
    assert mask_phone("+84912345678") == "+84912***678"
    assert mask_phone("+8491234") == "+8******"


# --- waves over a segment ---------------------------------------------------------------------


def _save(engine: Engine, clock: FakeClock, name: str, raw: dict[str, Any]) -> None:
    with session_scope(engine) as session:
        create_segment(
            session, name=name, raw_filter=raw, description=None, actor="t", now=clock(), source="x"
        )


def _wave(audience: dict[str, Any], **trigger: Any) -> dict[str, Any]:
    return {
        "name": "C",
        "timezone": "Asia/Ho_Chi_Minh",
        "waves": [
            {
                "name": "W",
                "channel": "sms",
                "class": "care",
                "window": "always",
                "audience": audience,
                "template": "{{ name }}: the BHYT sap het han.",
                **(trigger or {"at": "2026-05-08 07:30"}),
            }
        ],
    }


def _outbox_names(engine: Engine) -> set[str]:
    with session_scope(engine) as session:
        return set(
            session.scalars(
                select(col(Recipient.name)).join(
                    OutboxMessage, col(OutboxMessage.recipient_id) == col(Recipient.id)
                )
            )
        )


OFFICE_EXAMPLE = {"areas": ["440"], "tags": ["nong-dan"], **_a("card_expiry", within_next_days=30)}


def test_an_expanded_wave_over_a_segment_reaches_exactly_its_recipients(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    _save(engine, clock, "the-sap-het-han", OFFICE_EXAMPLE)
    launch(engine, _wave({"segment": "the-sap-het-han"}), settings, clock())
    run_tick(engine, now=datetime(2026, 5, 8, 0, 30, tzinfo=UTC), settings=settings)
    assert _outbox_names(engine) == {"p1"}
    with session_scope(engine) as session:
        wave = session.scalars(select(Wave)).one()
    # Pinned at expansion: later edits of the segment do not change this wave.
    assert wave.audience["segment_filter"] == OFFICE_EXAMPLE
    assert wave.audience["as_of"] == "2026-05-08"


def test_areas_and_tags_beside_a_segment_narrow_it(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    _save(engine, clock, "nong-dan", {"tags": ["nong-dan"]})
    launch(engine, _wave({"segment": "nong-dan", "areas": ["18302", "16801"]}), settings, clock())
    run_tick(engine, now=datetime(2026, 5, 8, 0, 30, tzinfo=UTC), settings=settings)
    assert _outbox_names(engine) == {"p2", "p3"}


def test_a_wave_follows_edits_until_it_expands_and_counts_from_its_own_day(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    _save(engine, clock, "sap-het-han", {"tags": ["tieu-thuong"]})
    launch(engine, _wave({"segment": "sap-het-han"}, at="2026-05-20 07:30"), settings, clock())
    with session_scope(engine) as session:
        update_segment(
            session,
            "sap-het-han",
            raw_filter=_a("card_expiry", within_next_days=5),
            description=None,
            actor="t",
            now=clock(),
            source="x",
        )
        # Planned now (05-08) for a wave on 05-20: counted from 05-20 as the expansion will.
        plan = plan_campaign(session, 1, now=clock(), settings=settings)
    assert plan.waves[0].targeted == 1
    # On 05-08 nobody's card expires within 5 days; on the wave's day (05-20) p3's does.
    run_tick(engine, now=datetime(2026, 5, 20, 0, 30, tzinfo=UTC), settings=settings)
    assert _outbox_names(engine) == {"p3"}


def test_a_relative_wave_over_a_segment_ands_its_occurrence_date(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    _save(engine, clock, "nong-dan-ha-tinh", {"areas": ["42"], "tags": ["nong-dan"]})
    spec = _wave(
        {"segment": "nong-dan-ha-tinh"},
        relative={"attribute": "card_expiry", "offset": "-2d", "at": "09:00"},
    )
    launch(engine, spec, settings, clock())
    # 05-18 09:00 local - 2 days: p1's reminder (p3 expires 05-20 too close behind, but in 40).
    for day in (16, 17, 18, 19):
        run_tick(engine, now=datetime(2026, 5, day, 2, 0, tzinfo=UTC), settings=settings)
    assert _outbox_names(engine) == {"p1"}


def test_an_unknown_segment_is_refused_at_create_with_the_field(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    with session_scope(engine) as session, pytest.raises(InvalidInput) as refused:
        create_campaign(
            session,
            spec=validate_spec(_wave({"segment": "khong-co"}), source="c.yaml"),
            actor="t",
            now=clock(),
            settings=settings,
            source="c.yaml",
        )
    assert refused.value.field == "audience.segment"
    assert "c.yaml: wave 1 ('W'), field audience.segment: no segment named 'khong-co'" in (
        refused.value.message
    )


def test_a_segment_in_use_by_a_wave_not_yet_expanded_cannot_be_deleted(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    _save(engine, clock, "nong-dan", {"tags": ["nong-dan"]})
    _save(engine, clock, "unused", {"tags": ["ho-ngheo"]})
    campaign_id = launch(engine, _wave({"segment": "nong-dan"}), settings, clock())
    with session_scope(engine) as session, pytest.raises(Conflict, match="campaign 1 wave 1"):
        delete_segment(session, "nong-dan", actor="t", now=clock())
    with session_scope(engine) as session:
        delete_segment(session, "unused", actor="t", now=clock())
        cancel_campaign(session, campaign_id, actor="t", now=clock())
    with session_scope(engine) as session:  # a cancelled campaign's waves never expand
        delete_segment(session, "nong-dan", actor="t", now=clock())
    with session_scope(engine) as session:
        actions = session.scalars(
            select(col(AuditEntry.action)).where(col(AuditEntry.entity) == "segment")
        ).all()
    assert sorted(actions) == ["segment.create"] * 2 + ["segment.delete"] * 2


def test_a_wave_whose_segment_vanished_does_not_hold_up_the_others(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    """Creating a campaign and deleting its segment at the same moment can both succeed (each
    checks before the other commits). The wave is then refused at expansion, loudly and alone:
    the tick expands every other due wave and tries the orphan again next time."""
    _save(engine, clock, "nong-dan", {"tags": ["nong-dan"]})
    launch(engine, _wave({"segment": "nong-dan"}), settings, clock())
    with session_scope(engine) as session:  # what the race leaves behind
        session.execute(delete(Segment).where(col(Segment.name) == "nong-dan"))
    launch(engine, _wave({"tags": ["nong-dan"]}), settings, clock())
    report = run_tick(engine, now=datetime(2026, 5, 8, 0, 30, tzinfo=UTC), settings=settings)
    assert list(report.failed) == [1] and "nong-dan" in report.failed[1]
    assert list(report.fired) == [2] and report.fired[2] > 0
    with session_scope(engine) as session:
        assert session.get(Wave, 1).status == "scheduled"  # type: ignore[union-attr]
