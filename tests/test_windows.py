"""Send windows: the Decree 91 boundaries in Vietnam's DST-free zone, windows across midnight, and
DST gaps and repeats in Europe/Berlin, checked against a brute-force minute-by-minute oracle."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from loa.errors import InvalidInput
from scheduler.windows import SendWindow, is_open, next_open, parse_window, window_closes

VN = ZoneInfo("Asia/Ho_Chi_Minh")
BERLIN = ZoneInfo("Europe/Berlin")
QC = SendWindow(time(7), time(22))
TICK = timedelta(microseconds=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def vn(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=VN)


def window(text: str) -> SendWindow:
    parsed = parse_window(text)
    assert parsed is not None
    return parsed


def in_utc(value: datetime | None) -> datetime:
    """The result, after checking it is aware and in UTC itself (not merely an equal instant)."""
    assert value is not None
    assert value.tzinfo is UTC, f"{value!r} is not in UTC"
    return value


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("07:00-22:00", time(7), time(22)),
        ("7:00-22:00", time(7), time(22)),
        ("07:00:00-21:59:59", time(7), time(21, 59, 59)),
        (" 07:00 - 22:00 ", time(7), time(22)),
        ("07:00–22:00", time(7), time(22)),
        ("20:00-06:00", time(20), time(6)),
        ("07:00-00:00", time(7), time(0)),
    ],
)
def test_parse_window_accepts_the_written_forms(text: str, start: time, end: time) -> None:
    assert parse_window(text) == SendWindow(start, end)


@pytest.mark.parametrize("text", ["", "   ", "always", "Always"])
def test_always_and_empty_mean_no_window(text: str) -> None:
    assert parse_window(text) is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("7-22", "not in the form HH:MM-HH:MM"),
        ("07:00", "not in the form HH:MM-HH:MM"),
        ("07:00-22:00-23:00", "not in the form HH:MM-HH:MM"),
        ("07h00-22h00", "not in the form HH:MM-HH:MM"),
        ("never", "not in the form HH:MM-HH:MM"),
        ("07:60-22:00", "07:60 is not a time of day"),
        ("07:00-24:00", "24:00 is not a time of day"),
        ("07:00:61-22:00", "07:00:61 is not a time of day"),
        ("07:00-07:00", "never opens"),
        ("07:00:00-7:00", "never opens"),
    ],
)
def test_bad_windows_are_refused_naming_the_text(text: str, problem: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_window(text)
    assert repr(text) in raised.value.message
    assert problem in raised.value.message


def test_a_window_built_in_code_that_never_opens_is_refused_too() -> None:
    with pytest.raises(InvalidInput, match="never opens"):
        SendWindow(time(9), time(9))


def test_a_window_prints_as_it_is_written() -> None:
    assert str(window("7:00-22:00")) == "07:00-22:00"
    assert str(window("07:00:00-21:59:59")) == "07:00-21:59:59"
    assert parse_window(str(window("20:00-06:30"))) == window("20:00-06:30")


# --- Decree 91 boundaries in Vietnam (UTC+7, no DST) --------------------------------------------


def test_one_second_before_seven_is_closed_and_opens_at_seven_the_same_day() -> None:
    instant = vn(2026, 5, 8, 6, 59, 59)
    assert not is_open(instant, QC, VN)
    assert in_utc(next_open(instant, QC, VN)) == utc(2026, 5, 8, 0, 0)  # 07:00 local
    assert window_closes(instant, QC, VN) == instant  # closed: nothing may be sent


def test_seven_exactly_is_open() -> None:
    instant = vn(2026, 5, 8, 7, 0, 0)
    assert is_open(instant, QC, VN)
    assert in_utc(next_open(instant, QC, VN)) == instant
    assert in_utc(window_closes(instant, QC, VN)) == utc(2026, 5, 8, 15, 0)  # 22:00 local


def test_one_second_before_twenty_two_is_open_for_one_more_second() -> None:
    instant = vn(2026, 5, 8, 21, 59, 59)
    assert is_open(instant, QC, VN)
    assert in_utc(next_open(instant, QC, VN)) == instant
    assert in_utc(window_closes(instant, QC, VN)) == instant + timedelta(seconds=1)


def test_twenty_two_exactly_is_closed_and_opens_at_seven_the_next_day() -> None:
    instant = vn(2026, 5, 8, 22, 0, 0)
    assert not is_open(instant, QC, VN)
    assert in_utc(next_open(instant, QC, VN)) == utc(2026, 5, 9, 0, 0)  # 07:00 on the 9th
    assert window_closes(instant, QC, VN) == instant


def test_results_are_utc_whatever_zone_the_instant_is_given_in() -> None:
    open_instant = vn(2026, 5, 8, 9, 0)
    result = in_utc(next_open(open_instant, QC, VN))
    assert result == open_instant and result.hour == 2
    assert in_utc(next_open(open_instant, None, VN)) == open_instant
    assert in_utc(window_closes(open_instant.astimezone(BERLIN), QC, VN)) == utc(2026, 5, 8, 15)


def test_no_window_is_always_open_and_never_closes() -> None:
    night = vn(2026, 5, 8, 3, 0)
    assert is_open(night, None, VN)
    assert in_utc(next_open(night, None, VN)) == night
    assert window_closes(night, None, VN) is None


def test_naive_instants_are_refused() -> None:
    naive = datetime(2026, 5, 8, 7, 0)
    for call in (is_open, next_open, window_closes):
        with pytest.raises(InvalidInput, match="no time zone"):
            call(naive, QC, VN)


def test_a_window_across_midnight() -> None:
    night = window("20:00-06:00")
    assert not is_open(vn(2026, 5, 8, 19, 59, 59), night, VN)
    assert in_utc(next_open(vn(2026, 5, 8, 19, 59, 59), night, VN)) == utc(2026, 5, 8, 13, 0)
    for open_at in (
        vn(2026, 5, 8, 20),
        vn(2026, 5, 8, 23, 59, 59),
        vn(2026, 5, 9, 0),
        vn(2026, 5, 9, 5, 59, 59),
    ):
        assert is_open(open_at, night, VN), open_at
        # Closes at 06:00 on the 9th however late or early in the night it is asked.
        assert in_utc(window_closes(open_at, night, VN)) == utc(2026, 5, 8, 23, 0)
    assert not is_open(vn(2026, 5, 9, 6), night, VN)
    assert in_utc(next_open(vn(2026, 5, 9, 6), night, VN)) == utc(2026, 5, 9, 13, 0)  # 20:00


# --- DST in Europe/Berlin -----------------------------------------------------------------------
# 2026-03-29: at 01:00 UTC clocks go 02:00 CET -> 03:00 CEST; 02:00-02:59 local does not exist.
# 2026-10-25: at 01:00 UTC clocks go 03:00 CEST -> 02:00 CET; 02:00-02:59 local happens twice.


def test_a_start_skipped_by_the_spring_gap_opens_at_the_first_instant_after_it() -> None:
    late_start = window("02:30-22:00")
    midnight = utc(2026, 3, 28, 23, 0)  # 00:00 CET on the 29th
    assert in_utc(next_open(midnight, late_start, BERLIN)) == utc(2026, 3, 29, 1, 0)  # 03:00 CEST
    assert not is_open(utc(2026, 3, 29, 0, 59, 59), late_start, BERLIN)  # 01:59:59 CET
    assert is_open(utc(2026, 3, 29, 1, 0), late_start, BERLIN)
    # The day before, without a gap, 02:30 CET is 01:30 UTC.
    assert in_utc(next_open(utc(2026, 3, 27, 23, 0), late_start, BERLIN)) == utc(2026, 3, 28, 1, 30)
    # The day after, 02:30 CEST is 00:30 UTC.
    after = utc(2026, 3, 29, 20, 0)  # 22:00 CEST, closed
    assert in_utc(next_open(after, late_start, BERLIN)) == utc(2026, 3, 30, 0, 30)


def test_an_end_skipped_by_the_spring_gap_closes_at_the_first_instant_after_it() -> None:
    late_end = window("22:00-02:30")
    midnight = utc(2026, 3, 28, 23, 0)
    assert is_open(midnight, late_end, BERLIN)
    assert in_utc(window_closes(midnight, late_end, BERLIN)) == utc(2026, 3, 29, 1, 0)
    assert in_utc(next_open(utc(2026, 3, 29, 1, 0), late_end, BERLIN)) == utc(2026, 3, 29, 20, 0)


def test_a_window_inside_the_spring_gap_waits_for_the_next_day() -> None:
    swallowed = window("02:10-02:40")
    midnight = utc(2026, 3, 28, 23, 0)
    assert in_utc(next_open(midnight, swallowed, BERLIN)) == utc(2026, 3, 30, 0, 10)


def test_a_start_repeated_in_autumn_opens_at_the_first_and_the_clock_rule_holds_after() -> None:
    late_start = window("02:30-22:00")
    midnight = utc(2026, 10, 24, 22, 0)  # 00:00 CEST on the 25th
    first = in_utc(next_open(midnight, late_start, BERLIN))
    assert first == utc(2026, 10, 25, 0, 30)  # 02:30 CEST, the first of the two
    assert in_utc(window_closes(first, late_start, BERLIN)) == utc(2026, 10, 25, 1, 0)
    # From 01:00 UTC the clock reads 02:00-02:29 again, before the start: closed until the
    # second 02:30 (CET), then open until 22:00 CET.
    back = utc(2026, 10, 25, 1, 0)
    assert not is_open(back, late_start, BERLIN)
    assert in_utc(next_open(back, late_start, BERLIN)) == utc(2026, 10, 25, 1, 30)
    second = utc(2026, 10, 25, 1, 30)
    assert in_utc(window_closes(second, late_start, BERLIN)) == utc(2026, 10, 25, 21, 0)


def test_an_end_repeated_in_autumn_closes_at_the_first_and_reopens_while_clock_is_inside() -> None:
    late_end = window("22:00-02:30")
    midnight = utc(2026, 10, 24, 22, 0)
    assert is_open(midnight, late_end, BERLIN)
    assert in_utc(window_closes(midnight, late_end, BERLIN)) == utc(2026, 10, 25, 0, 30)
    closed = utc(2026, 10, 25, 0, 30)  # 02:30 CEST
    assert in_utc(next_open(closed, late_end, BERLIN)) == utc(2026, 10, 25, 1, 0)  # 02:00 CET
    assert in_utc(window_closes(utc(2026, 10, 25, 1, 0), late_end, BERLIN)) == utc(
        2026, 10, 25, 1, 30
    )
    assert in_utc(next_open(utc(2026, 10, 25, 1, 30), late_end, BERLIN)) == utc(2026, 10, 25, 21)


def test_a_fall_back_across_midnight_repeats_the_previous_evening() -> None:
    # America/Goose_Bay, 2010-11-07: at 00:01 ADT (03:01 UTC) clocks went back to 23:01 AST on
    # the 6th. Just after midnight the next opening of a late-evening window is yesterday's
    # evening, repeated, not tonight's.
    goose_bay = ZoneInfo("America/Goose_Bay")
    late = window("23:30-23:45")
    just_after_midnight = utc(2010, 11, 7, 3, 0, 30)  # 00:00:30 ADT on the 7th
    assert not is_open(just_after_midnight, late, goose_bay)
    assert in_utc(next_open(just_after_midnight, late, goose_bay)) == utc(2010, 11, 7, 3, 30)


# --- properties against a brute-force oracle ----------------------------------------------------
# All these windows start and end on whole minutes, and the zones change offset on whole hours, so
# every opening and closing lies on the minute grid: a minute-by-minute scan of the wall clock is
# an exact oracle, not an approximation.

PROPERTY_WINDOWS = ["07:00-22:00", "20:00-06:00", "02:30-22:00", "22:00-02:30", "02:10-02:40"]
PROPERTY_SPANS = [
    (VN, utc(2026, 5, 7, 12, 3)),
    (BERLIN, utc(2026, 3, 27, 12, 3)),  # covers the spring gap
    (BERLIN, utc(2026, 10, 23, 12, 3)),  # covers the autumn repeat
]


def wall_clock_inside(instant: datetime, text: str, zone: ZoneInfo) -> bool:
    """The definition, written independently of the module: the local clock reads [start, end)."""
    start_text, end_text = text.split("-")
    start, end = time.fromisoformat(start_text), time.fromisoformat(end_text)
    reading = instant.astimezone(zone).time()
    if start < end:
        return start <= reading < end
    return reading >= start or reading < end


@pytest.mark.parametrize("text", PROPERTY_WINDOWS)
@pytest.mark.parametrize(
    ("zone", "begin"), PROPERTY_SPANS, ids=["vn", "berlin-spring", "berlin-autumn"]
)
def test_next_open_and_window_closes_agree_with_a_minute_scan(
    text: str, zone: ZoneInfo, begin: datetime
) -> None:
    send_window = window(text)
    minutes = 6 * 24 * 60  # three days of instants plus three days for their answers
    grid = [begin + timedelta(minutes=i) for i in range(minutes)]
    inside = [wall_clock_inside(moment, text, zone) for moment in grid]
    # For each minute, the first minute at or after it with the window open / closed.
    first_open: list[int | None] = [None] * minutes
    first_closed: list[int | None] = [None] * minutes
    open_from: int | None = None
    closed_from: int | None = None
    for i in reversed(range(minutes)):
        if inside[i]:
            open_from = i
        else:
            closed_from = i
        first_open[i], first_closed[i] = open_from, closed_from

    checked = 0
    for i in range(0, 3 * 24 * 60, 7):
        x = grid[i]
        assert is_open(x, send_window, zone) == inside[i], x

        opens = in_utc(next_open(x, send_window, zone))
        expected_open = first_open[i]
        assert expected_open is not None
        assert opens >= x
        assert is_open(opens, send_window, zone)
        # No open minute between x and the answer, and the answer is exact to the microsecond.
        assert opens == grid[expected_open], (x, opens)
        if opens > x:
            assert not wall_clock_inside(opens - TICK, text, zone)

        closes = in_utc(window_closes(x, send_window, zone))
        expected_close = first_closed[i]
        assert expected_close is not None
        assert closes == grid[expected_close], (x, closes)
        if closes > x:
            assert wall_clock_inside(closes - TICK, text, zone)
        checked += 1
    assert checked == 618
