"""Local times to UTC (with a DST zone as well as Vietnam's) and template rendering."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from loa.errors import InvalidInput, NotBuilt
from scheduler.triggers import first_fire_time
from templates.render import TemplateProblem, render, vn_date


def test_at_in_vietnam_is_seven_hours_ahead_of_utc() -> None:
    fire = first_fire_time({"at": "2026-05-08 07:30"}, ZoneInfo("Asia/Ho_Chi_Minh"))
    assert fire == datetime(2026, 5, 8, 0, 30, tzinfo=UTC)


def test_dst_gap_is_refused_and_repeated_hour_means_the_first() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    with pytest.raises(InvalidInput, match="does not exist in Europe/Berlin"):
        first_fire_time({"at": "2026-03-29 02:30"}, berlin)
    # 02:30 happens twice on 2026-10-25; the first is still summer time (UTC+2).
    assert first_fire_time({"at": "2026-10-25 02:30"}, berlin) == datetime(
        2026, 10, 25, 0, 30, tzinfo=UTC
    )
    assert first_fire_time({"at": "2026-07-01 09:00"}, berlin) == datetime(
        2026, 7, 1, 7, 0, tzinfo=UTC
    )


def test_triggers_not_built_fail_loudly() -> None:
    with pytest.raises(NotBuilt, match="'recurring' triggers are not built yet"):
        first_fire_time({"recurring": {}}, ZoneInfo("Asia/Ho_Chi_Minh"))


def test_render_is_strict_nfc_and_formats_vietnamese_dates() -> None:
    decomposed = "Nguye\u0302\u0303n"  # "Nguyễn" with combining marks
    text = render(
        "{{ name }}: the BHYT het han ngay {{ card_expiry | vn_date }}.",
        {"name": decomposed, "card_expiry": "2026-05-30"},
    )
    assert text == "Nguyễn: the BHYT het han ngay 30/05/2026."
    assert vn_date("2026-01-02") == "02/01/2026"
    with pytest.raises(TemplateProblem, match="card_expiry"):
        render("het han {{ card_expiry }}", {"name": "An"})


def test_the_sandbox_blocks_reaching_python_internals() -> None:
    with pytest.raises(TemplateProblem):
        render("{{ name.__class__.__mro__[1].__subclasses__() }}", {"name": "x"})
