"""Content checked at plan time, on SQLite and PostgreSQL: missing template variables over the
whole audience (the recipients named), Decree 91 for adverts, bodies over the SMS limit, unknown
channels and broken templates; a refused wave blocks approval and launch; cost per carrier."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlmodel import col

from loa.db import session_scope
from loa.models import Campaign, Suppression, Wave
from loa.settings import Settings
from scheduler.lifecycle import approve_campaign, create_campaign, launch_campaign
from scheduler.plan import CampaignPlan, ContentRefused, plan_campaign
from scheduler.spec import validate_spec
from tests.builders import add_areas, add_consent, add_recipient
from tests.conftest import FakeClock

ADVERT = "[QC] Chao {{ name | vn_given_name }}, tham gia BHXH. Tu choi QC soan TU CHOI gui 789"


def _wave(**fields: Any) -> dict[str, Any]:
    return {
        "name": "W",
        "channel": "sms",
        "class": "info",
        "at": "2026-05-08 09:00",
        "audience": {"areas": ["42"]},
        "template": "Chao {{ name }}",
        **fields,
    }


def _draft(engine: Engine, settings: Settings, now: datetime, *waves: dict[str, Any]) -> int:
    with session_scope(engine) as session:
        campaign = create_campaign(
            session,
            spec=validate_spec({"name": "C", "waves": list(waves)}, source="t"),
            actor="p",
            now=now,
            settings=settings,
        )
        assert campaign.id is not None
        return campaign.id


def _plan(engine: Engine, campaign_id: int, settings: Settings, now: datetime) -> CampaignPlan:
    with session_scope(engine) as session:
        return plan_campaign(session, campaign_id, now=now, settings=settings)


def _approve(engine: Engine, campaign_id: int, settings: Settings, now: datetime) -> None:
    with session_scope(engine) as session:
        approve_campaign(session, campaign_id, actor="a", now=now, settings=settings)


def _status(engine: Engine, campaign_id: int) -> str:
    with session_scope(engine) as session:
        return session.scalars(
            select(col(Campaign.status)).where(col(Campaign.id) == campaign_id)
        ).one()


@pytest.fixture
def people(engine: Engine, clock: FakeClock) -> list[int]:
    """Five recipients in area 18301: two have card_expiry, three lack it (one suppressed)."""
    ids = []
    with session_scope(engine) as session:
        add_areas(session)
        for i in range(5):
            attributes = {"card_expiry": f"2026-06-0{i + 1}"} if i < 2 else {}
            r = add_recipient(session, f"+8491200000{i}", now=clock(), attributes=attributes)
            assert r.id is not None
            ids.append(r.id)
        session.add(Suppression(phone="+84912000004", reason="opt_out", created_at=clock()))
    return ids


def test_a_missing_variable_is_counted_over_the_audience_names_recipients_and_blocks_approval(
    engine: Engine, settings: Settings, clock: FakeClock, people: list[int]
) -> None:
    settings = settings.model_copy(update={"plan_name_missing": 1, "plan_sample_size": 1})
    template = "Chao {{ name }}, the het han {{ card_expiry | vn_date }}"
    campaign_id = _draft(engine, settings, clock(), _wave(template=template))

    [wave] = _plan(engine, campaign_id, settings, clock()).waves

    # Recipients 3 and 4 lack card_expiry, but 5 is suppressed: only those who would be sent to
    # count. The sample (one recipient) need not contain them: the count is over everyone.
    assert wave.missing_variables == {"card_expiry": 2}
    [missing] = wave.missing
    assert (missing.variable, missing.count) == ("card_expiry", 2)
    assert [(r.id, r.phone) for r in missing.recipients] == [(people[2], "+84912***002")]
    assert wave.refusals == [
        "template variable 'card_expiry' is missing for 2 recipient(s) to send to: "
        f"+84912***002 (id {people[2]}) and 1 more"
    ]
    with pytest.raises(ContentRefused, match=r"cannot be approved: wave \d+ \('W'\): template"):
        _approve(engine, campaign_id, settings, clock())
    assert _status(engine, campaign_id) == "draft"

    # Once those two are no longer sent to (here: suppressed by hand), the campaign is approved.
    with session_scope(engine) as session:
        for phone in ("+84912000002", "+84912000003"):
            session.add(Suppression(phone=phone, reason="manual", created_at=clock()))
    _approve(engine, campaign_id, settings, clock())
    assert _status(engine, campaign_id) == "approved"


def test_launch_checks_again_recipients_imported_after_approval(
    engine: Engine, settings: Settings, clock: FakeClock, people: list[int]
) -> None:
    template = "Chao {{ name }}, {{ card_expiry | vn_date }}"
    campaign_id = _draft(
        engine, settings, clock(), _wave(template=template, audience={"tags": ["moi"]})
    )
    _approve(engine, campaign_id, settings, clock())  # nobody tagged yet: nothing missing
    with session_scope(engine) as session:
        add_recipient(session, "+84912000009", now=clock(), tags=("moi",))
    with (
        session_scope(engine) as session,
        pytest.raises(ContentRefused, match="cannot be launched"),
    ):
        launch_campaign(session, campaign_id, actor="a", now=clock(), settings=settings)
    assert _status(engine, campaign_id) == "approved"
    with session_scope(engine) as session:
        assert session.scalars(select(col(Wave.status))).all() == ["pending"]


@pytest.mark.usefixtures("people")
def test_an_advert_breaking_decree_91_is_refused_with_each_reason(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        for i in range(4):
            add_consent(session, f"+8491200000{i}", now=clock())
    bad = _draft(engine, settings, clock(), _wave(**{"class": "qc"}))
    [wave] = _plan(engine, bad, settings, clock()).waves
    assert len(wave.refusals) == 3
    assert [r.split(" (Decree")[0].split(":")[0][:40] for r in wave.refusals] == [
        "an advert (class qc) must start with '[Q",
        "an advert (class qc) must tell how to re",
        "an advert (class qc) must be sent under ",
    ]
    assert _plan(engine, bad, settings, clock()).refused
    with pytest.raises(ContentRefused, match="must start with '\\[QC\\]'"):
        _approve(engine, bad, settings, clock())

    # The same text as an information message is not an advert: no rule applies.
    info = _draft(engine, settings, clock(), _wave())
    assert _plan(engine, info, settings, clock()).waves[0].refusals == []

    # Compliant, with the brandname on the campaign: planned and approved.
    with session_scope(engine) as session:
        campaign = create_campaign(
            session,
            spec=validate_spec(
                {
                    "name": "C",
                    "brandname": "BHXH-HT",
                    "waves": [_wave(template=ADVERT, **{"class": "qc"})],
                },
                source="t",
            ),
            actor="p",
            now=clock(),
            settings=settings,
        )
        good = campaign.id
        assert good is not None
    [wave] = _plan(engine, good, settings, clock()).waves
    assert (wave.refusals, wave.to_send) == ([], 4)
    _approve(engine, good, settings, clock())
    with session_scope(engine) as session:
        stored = session.get(Wave, wave.wave_id)
        assert stored is not None and stored.options["brandname"] == "BHXH-HT"


@pytest.mark.usefixtures("people")
def test_a_body_over_the_sms_limit_is_refused(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    # "Chao " + name ("Nguyễn Văn An", 13) + padding: exactly 1,600 characters, then 1,601.
    exact = _draft(engine, settings, clock(), _wave(template="Chao {{ name }}" + "x" * 1582))
    over = _draft(engine, settings, clock(), _wave(template="Chao {{ name }}" + "x" * 1583))
    [fits] = _plan(engine, exact, settings, clock()).waves
    assert fits.segments is not None and fits.segments.characters_max == 1600
    assert fits.refusals == []
    [too_long] = _plan(engine, over, settings, clock()).waves
    assert too_long.refusals == [
        "the text is 1,601 characters long for 4 of 4 sampled recipient(s); an SMS carries at "
        "most 1,600 (LOA_SMS_MAX_CHARACTERS)"
    ]
    with pytest.raises(ContentRefused, match="1,601 characters"):
        _approve(engine, over, settings, clock())


@pytest.mark.usefixtures("people")
def test_an_unknown_channel_adapter_and_a_broken_template_are_refused(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    campaign_id = _draft(engine, settings, clock(), _wave())
    unknown = settings.model_copy(update={"sms_channel": "viettel-api"})
    [wave] = _plan(engine, campaign_id, unknown, clock()).waves
    assert wave.refusals == [
        "channel 'sms' cannot send: LOA_SMS_CHANNEL: 'viettel-api' is not a known channel "
        "adapter; use one of console, simulated, twilio, gateway:<name>, or several separated "
        "by commas"
    ]
    with pytest.raises(ContentRefused, match="viettel-api"):
        _approve(engine, campaign_id, unknown, clock())

    # A template that no longer parses (the spec check is passed by writing to the table): the
    # plan says so once, and does not try to render or count it.
    with session_scope(engine) as session:
        session.execute(update(Wave).values(body="Chao {{ name "))
    [wave] = _plan(engine, campaign_id, settings, clock()).waves
    assert len(wave.refusals) == 1 and wave.refusals[0].startswith("template does not parse")
    assert (wave.segments, wave.missing) == (None, [])


@pytest.mark.usefixtures("people")
def test_a_template_failing_for_sampled_recipients_is_refused(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        add_recipient(session, "+84912000008", now=clock(), attributes={"card_expiry": "soon"})
    campaign_id = _draft(
        engine,
        settings,
        clock(),
        _wave(template="{{ card_expiry | vn_date }}", audience={"areas": ["18301"]}),
    )
    [wave] = _plan(engine, campaign_id, settings, clock()).waves
    assert any(
        r.startswith("the template fails for 1 of 5 sampled") and "'soon' is not a date" in r
        for r in wave.refusals
    )


def test_cost_is_priced_per_carrier_and_class(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    with session_scope(engine) as session:
        add_areas(session)
        for i, carrier in enumerate(["Viettel", "Viettel", "Vinaphone", None]):
            r = add_recipient(session, f"+8491200000{i}", now=clock())
            r.carrier = carrier
    settings = settings.model_copy(
        update={
            "sms_price_per_segment": 500,
            "sms_prices": {"*": {"viettel": {"info": 300}, "vinaphone": {"qc": 900}}},
        }
    )
    # "Chào " + a 13-character name + 60 more: 78 characters, UCS-2, 2 segments each.
    campaign_id = _draft(engine, settings, clock(), _wave(template="Chào {{ name }}" + "ạ" * 60))
    plan = _plan(engine, campaign_id, settings, clock())
    [wave] = plan.waves
    assert [
        (c.carrier, c.messages, c.segments, c.price_per_segment, c.cost)
        for c in wave.cost_by_carrier
    ] == [
        ("Viettel", 2, 4, 300, 1200),
        ("Vinaphone", 1, 2, 500, 1000),  # its qc price does not apply to info
        ("unknown", 1, 2, 500, 1000),
    ]
    assert (wave.cost, wave.price_per_segment, plan.cost) == (3200, None, 3200)

    # Carriers with no price and no fallback: no cost, and the plan says for whom.
    unpriced = settings.model_copy(update={"sms_price_per_segment": 0})
    [wave] = _plan(engine, campaign_id, unpriced, clock()).waves
    assert wave.cost is None
    assert any("no price per segment set for Vinaphone, unknown" in n for n in wave.notes)
