"""The statistics rollup (migration 0011's triggers) against a direct GROUP BY over the outbox and
the plays, after each step of a campaign's life (tests/rollup_scenario.py); and query_stats over
it. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text

from loa.db import session_scope
from loa.errors import InvalidInput
from loa.models import MessageStatus
from loa.settings import Settings
from scheduler.tick import run_tick
from stats.campaign import campaign_stats
from stats.rollup import StatsRow, query_stats
from tests import rollup_scenario
from tests.builders import add_areas, add_recipient, launch
from tests.conftest import FakeClock
from tests.rollup_scenario import assert_exact, hour_of, statuses, stored_rollup


@pytest.fixture
def priced(settings: Settings) -> Settings:
    return rollup_scenario.priced(settings)


@pytest.fixture
def lived(engine: Engine, priced: Settings, clock: FakeClock) -> dict[str, int]:
    return rollup_scenario.live_campaigns(engine, priced, clock)


def test_the_rollup_follows_every_change_and_the_backfill_matches(
    engine: Engine, lived: dict[str, int]
) -> None:
    assert statuses(engine) == {
        "+84912000001": "delivered",
        "+84912000002": "failed",
        "+84912000003": "sent",
        "+84912000004": "cancelled",
        "+84912000005": "undelivered",
        "+84912000006": "suppressed",
        "+84912000007": "sent",
        "+84912000008": "suppressed",
    }
    assert statuses(engine, "L") == {"+84912000007": "expired"}
    # The migration's backfill computes what the triggers kept.
    kept = stored_rollup(engine)
    from alembic import command

    from loa import schema

    config = schema._alembic_config()
    for target, down in (("0010", True), ("head", False)):
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(config, target)
    assert stored_rollup(engine) == kept
    assert_exact(engine)


def test_the_triggers_are_there_at_head(engine: Engine) -> None:
    """A later migration that rebuilds the outbox on SQLite (batch mode copies the table) would
    drop them silently."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            names = conn.scalars(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")).all()
        else:
            names = conn.scalars(
                text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            ).all()
    assert {
        "stats_rollup_outbox_insert",
        "stats_rollup_outbox_update",
        "stats_rollup_outbox_delete",
        "stats_rollup_play_insert",
        "stats_rollup_play_delete",
        "stats_rollup_area_outbox_insert",
        "stats_rollup_area_outbox_update",
        "stats_rollup_area_outbox_delete",
        "stats_rollup_area_play_insert",
        "stats_rollup_area_play_delete",
    } <= set(names)
    if engine.dialect.name == "postgresql":
        assert {"stats_rollup_outbox_truncate", "stats_rollup_play_truncate"} <= set(names)
    assert {"stats_rollup", "stats_rollup_wave", "stats_rollup_area"} <= set(
        inspect(engine).get_table_names()
    )


# --- query_stats --------------------------------------------------------------------------------


def _query(engine: Engine, settings: Settings, **kwargs: Any) -> list[StatsRow]:
    kwargs.setdefault("timezone", "Asia/Ho_Chi_Minh")
    kwargs.setdefault("group_by", [])
    with session_scope(engine) as session:
        return query_stats(session, prices=settings, **kwargs)


def _measures(row: StatsRow) -> dict[str, Any]:
    return row.model_dump(exclude={"key"})


def test_totals_and_what_each_measure_counts(
    engine: Engine, priced: Settings, lived: dict[str, int]
) -> None:
    (everything,) = _query(engine, priced)
    assert everything.key == {}
    # 8 messages of the first campaign + 1 (expired) of the late one.
    assert _measures(everything) == {
        "targeted": 9,
        "pending": 0,
        "sent": 4,  # sent (2: accepted, reconciled) + delivered + undelivered
        "delivered": 1,
        "failed": 2,  # refused + undelivered
        "expired": 1,
        "suppressed": 2,  # at expansion, at send time
        "cancelled": 1,
        "unknown": 0,
        # Handed to the provider: 2 segments for the Vietnamese name, 1 each for 5 others (the
        # cancelled retry was handed over once).
        "segments": 7,
        # Viettel 500 per segment (2 + 1 + 1 + 1), others 300 (Mobifone, Vinaphone).
        "cost": 3100.0,
        "delivery_rate": 0.25,
        "plays": 2,
    }
    # Prices by class too (the wave's class, read through the wave): the most specific rule
    # wins, as scheduler/pricing.py decides; without prices, nothing costs anything.
    by_class = priced.model_copy(
        update={"sms_prices": {"scripted": {"*": {"qc": 1, "info": 200}}, "*": {"*": {"*": 7}}}}
    )
    assert _query(engine, by_class)[0].cost == 7 * 200
    flat = priced.model_copy(update={"sms_prices": {}, "sms_price_per_segment": 0.5})
    assert _query(engine, flat)[0].cost == 3.5
    assert _query(engine, priced.model_copy(update={"sms_prices": {}}))[0].cost == 0


def test_by_area_levels_with_names(engine: Engine, priced: Settings, lived: dict[str, int]) -> None:
    rows = _query(engine, priced, group_by=["province", "district"], channel="sms")
    by_key = {(r.key["province"], r.key["district"]): r for r in rows}
    assert set(by_key) == {("42", "440"), ("40", None)}  # 16801 sits right under its province
    assert by_key[("42", "440")].key == {
        "province": "42",
        "province_name": "Tỉnh Hà Tĩnh",
        "district": "440",
        "district_name": "Huyện Đức Thọ",
    }
    assert (by_key[("42", "440")].targeted, by_key[("40", None)].targeted) == (7, 2)
    communes = _query(engine, priced, group_by=["commune"], area_code="440")
    assert [(r.key["commune"], r.key["commune_name"], r.targeted, r.plays) for r in communes] == [
        ("18301", "Xã Đức Đồng", 4, 2),
        ("18302", "Xã Đức Lạng", 3, 0),
    ]
    assert _query(engine, priced, group_by=["commune"], area_code="40")[0].key["commune"] == "16801"


def test_by_campaign_wave_error_code_carrier_adapter(
    engine: Engine, priced: Settings, lived: dict[str, int]
) -> None:
    rows = _query(engine, priced, group_by=["campaign", "wave"])
    assert [
        (r.key["campaign"], r.key["campaign_name"], r.key["wave_name"], r.targeted, r.plays)
        for r in rows
    ] == [
        (lived["sms"], "SMS", "A", 8, 0),
        (lived["late"], "Late", "L", 1, 0),
        (lived["broadcast"], "Loa", "Phát thanh sáng chiều", 0, 2),
    ]
    errors = _query(engine, priced, group_by=["error_code"], campaign_id=lived["sms"])
    # The cancelled message keeps the code of its last (transient) try.
    assert {r.key["error_code"]: (r.failed, r.cancelled) for r in errors} == {
        "20429": (0, 1),
        "21211": (1, 0),
        "30003": (1, 0),
        None: (0, 0),
    }
    carriers = _query(engine, priced, group_by=["carrier"], channel="sms")
    assert {r.key["carrier"]: (r.targeted, r.cost) for r in carriers} == {
        "Mobifone": (1, 300.0),
        "Viettel": (7, 2500.0),
        "Vinaphone": (1, 300.0),
    }
    adapters = _query(engine, priced, group_by=["adapter"], channel="sms")
    assert {r.key["adapter"]: r.segments for r in adapters} == {"scripted": 7, None: 0}


def test_occurrences_count_under_their_wave_and_a_wave_filter_includes_them(
    engine: Engine, priced: Settings, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        add_recipient(session, "+84912000001", now=clock())
    recurring = {
        "name": "Nhắc",
        "channel": "sms",
        "recurring": {"from": "2026-05-08", "to": "2026-05-09", "times": ["09:00"]},
        "audience": {"areas": ["42"]},
        "template": "x",
    }
    campaign_id = launch(engine, {"name": "R", "waves": [recurring]}, priced, clock())
    for day in (8, 9):
        clock.now = datetime(2026, 5, day, 2, 0, tzinfo=UTC)
        run_tick(engine, now=clock(), settings=priced)
    assert_exact(engine)
    rows = _query(engine, priced, group_by=["wave", "day"])
    spec_wave = rows[0].key["wave"]
    # The first occurrence's message expired when the second came due.
    assert [(r.key["wave"], r.key["day"], r.expired, r.pending) for r in rows] == [
        (spec_wave, "2026-05-08", 1, 0),
        (spec_wave, "2026-05-09", 0, 1),
    ]
    assert isinstance(spec_wave, int)
    assert _query(engine, priced, wave_id=spec_wave)[0].targeted == 2
    assert (
        _query(engine, priced, campaign_id=campaign_id, day_from=date(2026, 5, 9))[0].targeted == 1
    )


def test_days_are_local_days_of_the_zone_asked(
    engine: Engine, priced: Settings, lived: dict[str, int]
) -> None:
    def days(zone: str, **kwargs: Any) -> dict[Any, tuple[int, int]]:
        rows = _query(engine, priced, group_by=["day"], timezone=zone, **kwargs)
        return {r.key["day"]: (r.targeted, r.plays) for r in rows}

    # Messages at 01:30 and 05:30 UTC on 8 May; plays at 23:00 UTC on 8 May and 10:30 on 9 May.
    assert days("Asia/Ho_Chi_Minh") == {"2026-05-08": (9, 0), "2026-05-09": (0, 2)}
    assert days("UTC") == {"2026-05-08": (9, 1), "2026-05-09": (0, 1)}
    # New York is on summer time (UTC-4) in May: the first campaign's messages are on the 7th.
    assert days("America/New_York") == {
        "2026-05-07": (8, 0),
        "2026-05-08": (1, 1),
        "2026-05-09": (0, 1),
    }
    assert days("America/New_York", day_from=date(2026, 5, 8), day_to=date(2026, 5, 8)) == {
        "2026-05-08": (1, 1)
    }
    assert days("Asia/Ho_Chi_Minh", day_from=date(2026, 5, 9)) == {"2026-05-09": (0, 2)}
    assert days("Asia/Ho_Chi_Minh", day_to=date(2026, 5, 7)) == {}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"group_by": ["county"]}, "group_by"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"day_from": date(2026, 5, 9), "day_to": date(2026, 5, 8)}, "day_from"),
        ({"area_code": "99999"}, "area_code"),
    ],
)
def test_bad_arguments_name_their_field(
    engine: Engine, settings: Settings, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        _query(engine, settings, **kwargs)
    assert raised.value.field == field


def test_campaign_stats_reads_the_rollup(
    engine: Engine, priced: Settings, lived: dict[str, int]
) -> None:
    with session_scope(engine) as session:
        stats = campaign_stats(session, lived["sms"])
    expected = {
        "delivered": 1,
        "failed": 1,
        "sent": 2,
        "cancelled": 1,
        "undelivered": 1,
        "suppressed": 2,
    }
    assert stats.total == 8
    assert stats.by_status == {s.value: expected.get(s.value, 0) for s in MessageStatus}
    assert stats.waves[0].by_status == stats.by_status


def test_offset_stretches_find_the_hour_summer_time_starts() -> None:
    from stats.rollup import _stretches

    march = hour_of(datetime(2026, 3, 1, tzinfo=UTC))
    april = hour_of(datetime(2026, 4, 1, tzinfo=UTC))
    # 2 a.m. EST on 8 March 2026 = 07:00 UTC: -300 minutes before, -240 after.
    assert _stretches("America/New_York", march, april) == [
        (hour_of(datetime(2026, 3, 8, 7, tzinfo=UTC)), -300),
        (april, -240),
    ]
    assert _stretches("Asia/Ho_Chi_Minh", march, april) == [(april, 420)]


@pytest.mark.parametrize(
    "prices",
    [
        {"scripted": {"viettel": {"*": 500}, "*": {"*": 300}}},
        {"scripted": {"*": {"qc": 1, "info": 200}}, "*": {"mobifone": {"*": 7}}},
        {},
    ],
)
def test_questions_by_area_read_the_rollup_without_waves_and_give_the_same_figures(
    engine: Engine, priced: Settings, lived: dict[str, int], prices: dict[str, Any]
) -> None:
    """A question by area with no campaign, wave or day reads stats_rollup_area (migration 0016);
    the same question with a day range that covers everything reads stats_rollup. Both agree,
    costs by class included (stats_rollup_area keeps the wave's class)."""
    from stats.rollup import R_AREA, R, _check, _table

    settings = priced.model_copy(update={"sms_prices": prices, "sms_price_per_segment": 0.5})
    for group_by, kwargs in [
        (["district"], {}),
        (["province", "district", "channel"], {}),
        (["commune", "error_code"], {"area_code": "440"}),
        (["commune", "carrier", "adapter"], {}),
        ([], {"area_code": "42", "channel": "sms"}),
    ]:
        query = _check(group_by, None, None, "Asia/Ho_Chi_Minh")
        assert _table(query, None, None, kwargs.get("area_code")) is R_AREA
        coarse = _query(engine, settings, group_by=group_by, **kwargs)
        fine = _query(engine, settings, group_by=group_by, day_from=date(2000, 1, 1), **kwargs)
        assert coarse == fine
        assert coarse and any(r.targeted for r in coarse)
    everything = _query(engine, settings, group_by=["province"])
    assert sum(r.cost for r in everything) == pytest.approx(_query(engine, settings)[0].cost)
    query = _check(["district", "day"], None, None, "UTC")
    assert _table(query, None, None, None) is R
    assert _table(_check(["district"], None, None, "UTC"), lived["sms"], None, None) is R


def test_a_done_wave_keeps_no_keys_at_zero(
    engine: Engine, priced: Settings, lived: dict[str, int], clock: FakeClock
) -> None:
    """Each message passed through keys it left at zero (planned, claimed, sending); once the
    tick finds the wave done, they are deleted (stats/prune.py), and the figures stay exact."""
    run_tick(engine, now=clock(), settings=priced)
    with engine.connect() as conn:
        done = conn.scalars(
            text("SELECT id FROM wave WHERE status = 'done' AND campaign_id = :c"),
            {"c": lived["sms"]},
        ).all()
        assert done
        for table in ("stats_rollup", "stats_rollup_wave"):
            rows = conn.execute(
                text(f"SELECT status, n, segments FROM {table} WHERE wave_id = :w"),
                {"w": done[0]},
            ).all()
            assert rows and all(n or segments for _, n, segments in rows), rows
            assert not {"planned", "claimed", "sending"} & {status for status, _, _ in rows}
        # The rollup without waves keeps no zero at all once a wave is done.
        assert not conn.scalar(
            text("SELECT count(*) FROM stats_rollup_area WHERE n = 0 AND segments = 0")
        )
    assert_exact(engine)
