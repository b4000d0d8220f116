"""Preview and test send, on SQLite and PostgreSQL: through the service functions, the API and
the CLI. A preview writes nothing; a test send reaches the channel (the console sink, a real
file) and the audit log, and never the wave's outbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlmodel import SQLModel, col

from api.app import create_app
from channels.registry import channel_for
from loa.apikeys import Role, create_key
from loa.db import make_engine, session_scope
from loa.errors import InvalidInput, NotFound
from loa.models import AuditEntry, Suppression, Wave
from loa.settings import Settings
from scheduler.lifecycle import create_campaign
from scheduler.preview import SendTestReport, preview_wave, send_test
from scheduler.spec import validate_spec
from tests.builders import add_areas, add_recipient
from tests.clirun import loa_env, run_loa
from tests.conftest import FakeClock

TEMPLATE = "Chào {{ name | vn_given_name }}, mức đóng {{ amount | vn_money }}."
NAMES = ["Nguyễn Văn An", "Trần Thị Bình", "Lê Văn Cường", "Phạm Thị Dung"]


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for name, table in SQLModel.metadata.tables.items()
        }


def _setup(engine: Engine, settings: Settings, now: datetime, **wave: Any) -> tuple[int, int]:
    """Four recipients in area 18301 (the last suppressed) and a draft with one SMS wave."""
    with session_scope(engine) as session:
        add_areas(session)
        for i, name in enumerate(NAMES):
            r = add_recipient(
                session,
                f"+8491200000{i}",
                now=now,
                name=name,
                attributes={"amount": 150000 * (i + 1)},
            )
            r.carrier = "Vinaphone" if i == 1 else "Viettel"
        session.add(Suppression(phone="+84912000003", reason="opt_out", created_at=now))
        spec = {
            "name": "C",
            "waves": [
                {
                    "name": "W",
                    "channel": "sms",
                    "at": "2026-05-08 09:00",
                    "audience": {"areas": ["42"]},
                    "template": TEMPLATE,
                    **wave,
                }
            ],
        }
        campaign = create_campaign(
            session, spec=validate_spec(spec, source="t"), actor="p", now=now, settings=settings
        )
        assert campaign.id is not None
        wave_id = session.scalars(select(col(Wave.id))).one()
        assert wave_id is not None
        return campaign.id, wave_id


def _sink(settings: Settings) -> list[dict[str, Any]]:
    assert settings.console_sink is not None
    if not settings.console_sink.exists():
        return []
    return [json.loads(line) for line in settings.console_sink.read_text().splitlines()]


def _send(
    engine: Engine, settings: Settings, clock: FakeClock, ids: tuple[int, int], **kw: Any
) -> SendTestReport:
    return send_test(
        engine,
        ids[0],
        ids[1],
        actor="tester",
        now=clock(),
        settings=settings,
        channel_for=lambda name: channel_for(name, settings),
        **{"variables": None, **kw},
    )


def test_preview_renders_sample_recipients_with_segments_and_cost_and_writes_nothing(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    settings = settings.model_copy(
        update={"sms_price_per_segment": 500, "sms_prices": {"*": {"viettel": {"*": 300}}}}
    )
    campaign_id, wave_id = _setup(engine, settings, clock())
    before = _counts(engine)
    with session_scope(engine) as session:
        preview = preview_wave(
            session, campaign_id, wave_id, sample=5, now=clock(), settings=settings
        )
    assert _counts(engine) == before
    # The suppressed fourth recipient is not among those the wave would send to.
    assert [(m.recipient.phone, m.text) for m in preview.messages if m.recipient] == [
        ("+84912***000", "Chào An, mức đóng 150.000 đ."),
        ("+84912***001", "Chào Bình, mức đóng 300.000 đ."),
        ("+84912***002", "Chào Cường, mức đóng 450.000 đ."),
    ]
    first = preview.messages[0]
    assert (first.encoding, first.segments, first.characters) == ("UCS-2", 1, 28)
    assert [(m.carrier, m.price_per_segment, m.cost) for m in preview.messages] == [
        ("Viettel", 300, 300),
        ("Vinaphone", 500, 500),
        ("Viettel", 300, 300),
    ]
    assert preview.refusals == []
    with session_scope(engine) as session:
        two = preview_wave(session, campaign_id, wave_id, sample=2, now=clock(), settings=settings)
    assert len(two.messages) == 2


def test_preview_of_an_unaccented_advert_shows_its_refusals(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    campaign_id, wave_id = _setup(engine, settings, clock(), unaccent=True, **{"class": "info"})
    with session_scope(engine) as session:
        preview = preview_wave(
            session, campaign_id, wave_id, sample=3, now=clock(), settings=settings
        )
        m = preview.messages[0]
        assert (m.text, m.encoding) == ("Chao An, muc dong 150.000 d.", "GSM-7")
        session.execute(Wave.__table__.update().values(message_class="qc"))  # type: ignore[attr-defined]
        advert = preview_wave(
            session, campaign_id, wave_id, sample=1, now=clock(), settings=settings
        )
    assert len(advert.refusals) == 3 and "[QC]" in advert.refusals[0]
    with session_scope(engine) as session, pytest.raises(NotFound, match="has no wave 999"):
        preview_wave(session, campaign_id, 999, sample=1, now=clock(), settings=settings)


def test_test_send_reaches_the_channel_and_the_audit_log_not_the_outbox(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    ids = _setup(engine, settings, clock())
    before = _counts(engine)
    sent = _send(engine, settings, clock, ids, to=["0987 654 321", "+84987654321", "0912.111.222"])

    # Written as given once each, in E.164; the text rendered with the first recipient's data.
    assert [r.to for r in sent.results] == ["+84987654321", "+84912111222"]
    assert {r.outcome for r in sent.results} == {"accepted"}
    assert sent.text == "Chào An, mức đóng 150.000 đ."
    assert sent.rendered_for is not None and sent.rendered_for.phone == "+84912***000"
    lines = _sink(settings)
    assert [(line["to"], line["body"], line["message_id"]) for line in lines] == [
        ("+84987654321", sent.text, -1),
        ("+84912111222", sent.text, -2),
    ]
    after = _counts(engine)
    assert after["outbox"] == before["outbox"] == 0
    assert after["audit_log"] == before["audit_log"] + 2
    assert {k: v for k, v in after.items() if k != "audit_log"} == {
        k: v for k, v in before.items() if k != "audit_log"
    }
    with session_scope(engine) as session:
        entries = session.scalars(
            select(AuditEntry)
            .where(col(AuditEntry.action).like("wave.test_send%"))
            .order_by(col(AuditEntry.id))
        ).all()
        assert [(e.action, e.actor, e.entity_id) for e in entries] == [
            ("wave.test_send", "tester", str(ids[1])),
            ("wave.test_send_result", "tester", str(ids[1])),
        ]
        assert entries[0].after is not None and entries[0].after["to"] == [
            "+84987654321",
            "+84912111222",
        ]
        assert entries[1].after is not None
        assert [r["provider_id"] for r in entries[1].after["results"]] == [
            line["provider_id"] for line in lines
        ]


def test_test_send_with_given_variables(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    ids = _setup(engine, settings, clock())
    sent = _send(
        engine,
        settings,
        clock,
        ids,
        to=["0987654321"],
        variables={"name": "Lê Thu", "amount": "2000000"},
    )
    assert (sent.text, sent.rendered_for) == ("Chào Thu, mức đóng 2.000.000 đ.", None)
    with pytest.raises(InvalidInput, match="template variable missing: 'amount' is undefined"):
        _send(engine, settings, clock, ids, to=["0987654321"], variables={"name": "Thu"})
    assert len(_sink(settings)) == 1


def test_test_send_refuses_bad_suppressed_or_too_many_numbers_and_sends_nothing(
    engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    ids = _setup(engine, settings, clock())
    before = _counts(engine)
    with pytest.raises(InvalidInput, match="test number '0241234567'"):
        _send(engine, settings, clock, ids, to=["0987654321", "0241234567"])
    with pytest.raises(InvalidInput, match=r"suppression list.*\+84912000003 \(opt_out\)"):
        _send(engine, settings, clock, ids, to=["0987654321", "0912000003"])
    few = settings.model_copy(update={"test_send_max_numbers": 1})
    with pytest.raises(InvalidInput, match=r"at most 1 \(LOA_TEST_SEND_MAX_NUMBERS"):
        _send(engine, few, clock, ids, to=["0987654321", "0987654322"])
    unknown = settings.model_copy(update={"sms_channel": "nope"})
    with pytest.raises(InvalidInput, match="'nope' is not a known channel adapter"):
        _send(engine, unknown, clock, ids, to=["0987654321"])
    assert _counts(engine) == before
    assert _sink(settings) == []


# --- API -------------------------------------------------------------------------------------


@pytest.fixture
def client(settings: Settings, engine: Engine, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine, clock=clock)) as test_client:
        yield test_client


def _key(engine: Engine, clock: FakeClock, role: Role) -> dict[str, str]:
    with session_scope(engine) as session:
        key = create_key(session, role=role, actor="t", now=clock()).key
    return {"Authorization": f"Bearer {key}"}


def test_preview_and_test_send_over_http(
    client: TestClient, engine: Engine, settings: Settings, clock: FakeClock
) -> None:
    campaign_id, wave_id = _setup(engine, settings, clock())
    base = f"/api/v1/campaigns/{campaign_id}/waves/{wave_id}"
    operator, planner = _key(engine, clock, Role.OPERATOR), _key(engine, clock, Role.PLANNER)

    preview = client.post(f"{base}/preview?sample=2", headers=operator)
    assert preview.status_code == 200
    body = preview.json()
    assert [m["text"] for m in body["messages"]] == [
        "Chào An, mức đóng 150.000 đ.",
        "Chào Bình, mức đóng 300.000 đ.",
    ]
    assert client.post(f"{base}/preview?sample=0", headers=operator).status_code == 422
    assert (
        client.post(
            f"/api/v1/campaigns/{campaign_id}/waves/999/preview", headers=operator
        ).status_code
        == 404
    )

    # An operator may look, not send.
    denied = client.post(f"{base}/test-send", json={"to": ["0987654321"]}, headers=operator)
    assert denied.status_code == 403
    assert _sink(settings) == []
    sent = client.post(
        f"{base}/test-send",
        json={"to": ["0987654321"], "variables": {"name": "Thu", "amount": 5}},
        headers=planner,
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["text"] == "Chào Thu, mức đóng 5 đ."
    assert [line["to"] for line in _sink(settings)] == ["+84987654321"]
    bad = client.post(f"{base}/test-send", json={"to": ["12"]}, headers=planner)
    assert (bad.status_code, bad.json()["error"]["field"]) == (422, "to")


# --- CLI -------------------------------------------------------------------------------------


def test_the_cli_previews_refuses_and_test_sends(
    db_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    settings = Settings(database_url=db_url, data_dir=tmp_path)
    engine = make_engine(settings)
    campaign_id, wave_id = _setup(engine, settings, clock(), **{"class": "qc"})
    engine.dispose()
    env = loa_env(db_url, tmp_path, LOA_QC_REQUIRES_CONSENT="false")

    preview = run_loa("campaign", "preview", str(campaign_id), "--sample", "2", env=env)
    assert "Chào An, mức đóng 150.000 đ." in preview.stdout
    assert (
        "+84912***001 (id" in preview.stdout
        and "UCS-2, 1 segment(s), 30 characters" in preview.stdout
    )
    assert f"wave {wave_id} REFUSED: an advert (class qc) must start with '[QC]'" in preview.stderr
    as_json = json.loads(
        run_loa(
            "campaign", "preview", str(campaign_id), "--wave", str(wave_id), "--json", env=env
        ).stdout
    )
    assert [len(p["messages"]) for p in as_json] == [3]

    plan = run_loa("campaign", "plan", str(campaign_id), env=env)
    assert (
        f"wave {wave_id} REFUSED: an advert (class qc) must be sent under a brandname"
        in plan.stderr
    )
    approve = run_loa("campaign", "approve", str(campaign_id), env=env, check=False)
    assert approve.returncode == 1
    assert (
        f"Error: campaign {campaign_id} cannot be approved: wave {wave_id} ('W')" in approve.stderr
    )

    sent = run_loa(
        "campaign",
        "test-send",
        str(campaign_id),
        "--wave",
        str(wave_id),
        "--to",
        "0987654321,0912111222",
        "--var",
        "name=Thu",
        "--var",
        "amount=1500000",
        env=env,
    )
    assert "Chào Thu, mức đóng 1.500.000 đ." in sent.stdout
    assert "+84987654321: accepted console-" in sent.stdout
    assert "would be REFUSED for its audience" in sent.stderr
    sink = [json.loads(line) for line in (tmp_path / "sink.jsonl").read_text().splitlines()]
    assert [line["to"] for line in sink] == ["+84987654321", "+84912111222"]

    bad = run_loa(
        "campaign",
        "test-send",
        str(campaign_id),
        "--wave",
        str(wave_id),
        "--to",
        "0987654321",
        "--var",
        "oops",
        env=env,
        check=False,
    )
    assert bad.returncode == 2 and "'oops' is not NAME=VALUE" in bad.stderr
