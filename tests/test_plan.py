"""The campaign plan: recipients, exclusions by reason, caps, missing variables, segments, cost
and send times, for each kind of wave, on SQLite and PostgreSQL; and that it writes nothing."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, func, select
from sqlmodel import SQLModel

from api.app import create_app
from loa.apikeys import Role, create_key
from loa.db import session_scope
from loa.errors import InvalidInput
from loa.models import RecipientDate, Suppression
from loa.settings import Settings
from scheduler.lifecycle import create_campaign
from scheduler.plan import CampaignPlan, finish_time, plan_campaign
from scheduler.spec import validate_spec
from scheduler.windows import parse_window
from tests.builders import add_areas, add_consent, add_recipient, launch
from tests.conftest import FakeClock
from tests.test_series import RECURRING, RELATIVE, _drain, _tick, _wave, local

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
TEMPLATE = "BHXH: {{ name }} oi, the BHYT het han ngay {{ card_expiry | vn_date }}."
# An advert as Decree 91/2020 wants it: label first, how to refuse, a brandname.
ADVERT = {
    "class": "qc",
    "template": "[QC] Xin chao {{ name }}. Tu choi QC soan TU CHOI gui 789",
    "brandname": "BHXH",
}


def _draft(engine: Engine, settings: Settings, now: datetime, *waves: dict[str, Any]) -> int:
    with session_scope(engine) as session:
        campaign = create_campaign(
            session,
            spec=validate_spec({"name": "C", "waves": list(waves)}, source="test"),
            actor="p",
            now=now,
            settings=settings,
        )
        assert campaign.id is not None
        return campaign.id


def _plan(engine: Engine, campaign_id: int, settings: Settings, now: datetime) -> CampaignPlan:
    with session_scope(engine) as session:
        return plan_campaign(session, campaign_id, now=now, settings=settings)


def _table_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for name, table in SQLModel.metadata.tables.items()
        }


@pytest.fixture
def five_people(engine: Engine, clock: FakeClock) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        for i, name in enumerate(["An", "Bình", "Cường", "Dung", "Em"]):
            attributes = {"card_expiry": f"2026-06-0{i + 1}"} if i != 4 else {}
            add_recipient(session, f"+8491200000{i}", now=clock(), name=name, attributes=attributes)
        for phone, reason in [
            ("+84912000001", "opt_out"),
            ("+84912000002", "do_not_contact"),
            ("+84912000003", "invalid"),
        ]:
            session.add(Suppression(phone=phone, reason=reason, created_at=clock()))


@pytest.mark.usefixtures("five_people")
def test_plan_of_a_draft_counts_everyone_and_writes_nothing(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    settings = settings.model_copy(update={"sms_price_per_segment": 650, "sms_rate_per_second": 1})
    clock.now = local("2026-05-08 06:00")
    campaign_id = _draft(engine, settings, clock(), _wave(at="2026-05-08 07:30", template=TEMPLATE))
    before = _table_counts(engine)

    plan = _plan(engine, campaign_id, settings, clock())

    assert _table_counts(engine) == before
    [wave] = plan.waves
    assert (wave.kind, wave.occurrences, wave.targeted, wave.to_send) == ("once", 1, 5, 2)
    assert wave.excluded.model_dump() == {
        "opted_out": 1,
        "do_not_contact": 1,
        "invalid_number": 1,
        "suppressed_manual": 0,
        "no_consent": 0,
        "duplicate": 0,
    }
    assert wave.missing_variables == {"card_expiry": 1}  # Em has no card_expiry
    assert any("template fails for 1 of 2 sampled" in note for note in wave.notes)
    # "BHXH: An oi, the BHYT het han ngay 01/06/2026." is GSM-7, one segment each.
    assert wave.segments is not None
    assert (wave.segments.encoding, wave.segments.per_message_max, wave.segments.total) == (
        "GSM-7",
        1,
        2,
    )
    assert wave.cost == 1300
    assert wave.first_send_at == local("2026-05-08 07:30")
    assert wave.last_send_at == local("2026-05-08 07:30") + timedelta(seconds=2)
    assert (plan.to_send, plan.segments, plan.cost) == (2, 2, 1300)


@pytest.mark.usefixtures("five_people")
def test_plan_counts_segments_of_vietnamese_text_with_and_without_unaccent(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    text = (
        "BHXH tỉnh Hà Tĩnh: {{ name }} ơi, tham gia BHXH tự nguyện - điểm tựa của bạn và gia đình."
    )
    accented = _draft(engine, settings, clock(), _wave(at="2026-05-08 07:30", template=text))
    plain = _draft(
        engine, settings, clock(), _wave(at="2026-05-08 07:30", template=text, unaccent=True)
    )
    with_marks = _plan(engine, accented, settings, clock()).waves[0].segments
    without = _plan(engine, plain, settings, clock()).waves[0].segments
    assert with_marks is not None and without is not None
    assert (with_marks.encoding, with_marks.per_message_max, with_marks.total) == ("UCS-2", 2, 4)
    assert (without.encoding, without.per_message_max, without.total) == ("GSM-7", 1, 2)
    assert without.exact and without.sampled == 2  # the three suppressed are not rendered


def test_finish_time_sends_only_while_the_window_is_open() -> None:
    window = parse_window("07:00-21:00")
    start = local("2026-05-08 20:59")
    # 60 go before 21:00, the other 60 from 07:00 the next morning.
    assert finish_time(start, 120, 1, window, HCM) == local("2026-05-09 07:01")
    assert finish_time(start, 60, 1, window, HCM) == local("2026-05-08 21:00")
    assert finish_time(local("2026-05-08 22:00"), 10, 10, window, HCM) == local(
        "2026-05-09 07:00:01"
    )
    assert finish_time(start, 120, 0, window, HCM) == start  # no rate: at once
    assert finish_time(local("2026-05-08 06:00"), 5, 0, window, HCM) == local("2026-05-08 07:00")


def test_plan_of_a_recurring_wave_counts_the_occurrences_still_to_come(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        for i in range(3):
            add_recipient(session, f"+8491200000{i}", now=clock())
    clock.now = local("2026-05-09 12:00")
    campaign_id = _draft(engine, settings, clock(), _wave(recurring=RECURRING))
    [wave] = _plan(engine, campaign_id, settings, clock()).waves
    # 2026-05-09 17:30, 05-10 09:00 and 17:30 are left of the six.
    assert (wave.kind, wave.occurrences, wave.targeted, wave.to_send) == ("recurring", 3, 9, 9)
    assert wave.first_send_at == local("2026-05-09 17:30")
    assert wave.last_send_at == local("2026-05-10 17:30")


def test_plan_of_a_relative_wave_counts_the_dates_still_ahead(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        for i, expiry in enumerate(["2026-05-14", "2026-05-15", "2026-05-20", "2026-05-20"]):
            add_recipient(
                session, f"+8491200000{i}", now=clock(), attributes={"card_expiry": expiry}
            )
        add_recipient(session, "+84912000009", now=clock())
    clock.now = local("2026-05-08 08:00")
    campaign_id = _draft(engine, settings, clock(), _wave(relative=RELATIVE))
    [wave] = _plan(engine, campaign_id, settings, clock()).waves
    # 05-14's moment (05-07 09:00) has passed; 05-15 and the two of 05-20 are ahead.
    assert (wave.kind, wave.occurrences, wave.targeted, wave.to_send) == ("relative", 2, 3, 3)
    assert wave.first_send_at == local("2026-05-08 09:00")
    assert wave.last_send_at == local("2026-05-13 09:00")

    with session_scope(engine) as session:
        session.execute(delete(RecipientDate))
    with pytest.raises(InvalidInput, match=r"field relative\.attribute: no recipient has a date"):
        _plan(engine, campaign_id, settings, clock())


def test_plan_shows_capped_recipients_and_the_duplicates_of_a_fired_wave(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        for i in range(2):
            add_recipient(session, f"+8491200000{i}", now=clock())
            add_consent(session, f"+8491200000{i}", now=clock())
    clock.now = local("2026-05-08 07:00")
    three_adverts = [
        {**_wave(at=f"2026-05-08 08:0{i}"), **ADVERT, "name": f"QC {i}"} for i in range(3)
    ]
    campaign_id = launch(engine, {"name": "QC", "waves": three_adverts}, settings, clock())
    for i in range(3):
        _tick(engine, settings, clock, local(f"2026-05-08 08:0{i}"))
        _drain(engine, settings, clock)

    fourth = _draft(engine, settings, clock(), {**_wave(at="2026-05-08 12:00"), **ADVERT})
    [wave] = _plan(engine, fourth, settings, clock()).waves
    assert (wave.capped, wave.to_send) == (2, 2)
    assert any("wait, they are not dropped" in note for note in wave.notes)

    # The first two waves are done: nothing of them is to come. The third is still open (no
    # tick since it was sent): everyone in its audience has its message already.
    fired = _plan(engine, campaign_id, settings, clock()).waves
    assert [(w.occurrences, w.excluded.duplicate, w.to_send) for w in fired] == [
        (0, 0, 0),
        (0, 0, 0),
        (1, 2, 0),
    ]


@pytest.mark.usefixtures("five_people")
def test_plan_over_http_and_cli(engine: Engine, settings: Settings, clock: FakeClock) -> None:
    campaign_id = _draft(engine, settings, clock(), _wave(at="2026-05-08 07:30", template=TEMPLATE))
    with session_scope(engine) as session:
        operator = create_key(session, role=Role.OPERATOR, name="o", actor="t", now=clock()).key
    client = TestClient(create_app(settings, engine, clock=clock))
    answer = client.post(
        f"/api/v1/campaigns/{campaign_id}/plan", headers={"Authorization": f"Bearer {operator}"}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["waves"][0]["to_send"] == 2
    assert body["waves"][0]["excluded"]["opted_out"] == 1
    assert client.post(f"/api/v1/campaigns/{campaign_id}/plan").status_code == 401
    assert (
        client.post(
            "/api/v1/campaigns/999/plan", headers={"Authorization": f"Bearer {operator}"}
        ).status_code
        == 404
    )
