"""The culture centres' API: playlists in JSON, M3U8 and XSPF (validated), ETag/304, the access
of district keys, proof of play (whole, idempotent, refusals), the CSV history, and the CLI
export."""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlmodel import col

from api.app import create_app
from audio.store import asset_path
from loa.apikeys import Role, create_key
from loa.db import session_scope
from loa.models import BroadcastItem, BroadcastPlay, DeliveryEvent
from loa.settings import Settings
from tests.broadcasting import add_audio, launch_broadcast, loudspeaker_wave
from tests.builders import add_areas
from tests.clirun import loa_env, run_loa
from tests.conftest import FakeClock

XSPF = "{http://xspf.org/ns/0/}"
PUBLIC = "https://loa.example.vn"


@pytest.fixture
def world(engine: Engine, settings: Settings, clock: FakeClock) -> dict[str, str]:
    """Areas; a campaign to province 42 (district 440's two communes) and one to commune 16801
    of province 40; keys: a district key for 440, one for 40, an operator's."""
    with session_scope(engine) as session:
        add_areas(session)
        sha = add_audio(session, "bhxh", duration_ms=95_500, now=clock())
        other = add_audio(session, "nghe-an", duration_ms=60_000, now=clock())
    launch_broadcast(engine, settings, clock(), loudspeaker_wave(sha, repeats=2))
    launch_broadcast(
        engine, settings, clock(), loudspeaker_wave(other, audience={"areas": ["40"]}), name="N"
    )
    with session_scope(engine) as session:
        keys = {
            "440": create_key(
                session, role=Role.DISTRICT, actor="t", now=clock(), area_code="440"
            ).key,
            "40": create_key(
                session, role=Role.DISTRICT, actor="t", now=clock(), area_code="40"
            ).key,
            "operator": create_key(session, role=Role.OPERATOR, actor="t", now=clock()).key,
            "admin": create_key(session, role=Role.ADMIN, actor="t", now=clock()).key,
        }
        first = session.scalars(
            select(BroadcastItem)
            .where(col(BroadcastItem.audio_sha256) == sha)
            .order_by(col(BroadcastItem.starts_at))
        ).first()
        assert first is not None
    return {**keys, "sha": sha, "other": other, "item": str(first.id)}


@pytest.fixture
def client(settings: Settings, engine: Engine, clock: FakeClock) -> Iterator[TestClient]:
    public = settings.model_copy(update={"public_url": PUBLIC})
    with TestClient(create_app(public, engine, clock=clock)) as test_client:
        yield test_client


def auth(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def url(code: str, suffix: str = "", day: str = "2026-05-09") -> str:
    return f"/api/v1/districts/{code}/playlist{suffix}?date={day}"


def test_the_json_playlist(client: TestClient, world: dict[str, str]) -> None:
    response = client.get(url("440"), headers=auth(world["440"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["area"], body["date"], body["slot_minutes"], body["overflow"]) == (
        "440",
        "2026-05-09",
        30,
        [],
    )
    first = body["items"][0]
    assert set(first) >= {
        "id",
        "communes",
        "start_local",
        "priority",
        "audio_url",
        "sha256",
        "bytes",
        "duration_ms",
        "valid_until",
    }
    assert first["communes"] == ["18301", "18302"] and first["start_local"] == "06:00"
    assert first["audio_url"] == f"{PUBLIC}/api/v1/audio/{world['sha']}.mp3"
    assert first["starts_at"] == "2026-05-09T06:00:00+07:00"
    assert first["valid_until"] == "2026-05-09T06:30:00+07:00"
    assert [i["start_local"] for i in body["items"]] == ["06:00", "17:30"]


def test_m3u8_follows_the_extended_m3u_grammar(client: TestClient, world: dict[str, str]) -> None:
    response = client.get(url("440", ".m3u8"), headers=auth(world["440"]))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("audio/x-mpegurl")
    lines = response.text.splitlines()
    assert lines[0] == "#EXTM3U"
    entries = [line for line in lines[1:] if not line.startswith("#PLAYLIST:")]
    assert len(entries) == 2 * 2 * 2  # two slots, each item twice (repeats), EXTINF + URL
    for extinf, location in zip(entries[::2], entries[1::2], strict=True):
        match = re.fullmatch(r"#EXTINF:(-?\d+),(.+)", extinf)
        assert match, extinf
        assert match[1] == "96"  # 95.5 s, rounded up to whole seconds
        assert location == f"{PUBLIC}/api/v1/audio/{world['sha']}.mp3"
    assert "[normal] 06:00 Phát thanh sáng chiều (18301, 18302)" in entries[0]


def test_xspf_is_version_1_in_its_namespace(client: TestClient, world: dict[str, str]) -> None:
    response = client.get(url("440", ".xspf"), headers=auth(world["440"]))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/xspf+xml"
    root = ET.fromstring(response.content)
    assert root.tag == f"{XSPF}playlist" and root.get("version") == "1"
    assert root.find(f"{XSPF}title") is not None
    tracks = root.findall(f"{XSPF}trackList/{XSPF}track")
    assert len(tracks) == 4
    for track in tracks:
        # XSPF's order within a track: location, identifier, title, annotation, ..., duration.
        assert [child.tag.removeprefix(XSPF) for child in track] == [
            "location",
            "identifier",
            "title",
            "annotation",
            "duration",
        ]
        assert track.findtext(f"{XSPF}location") == f"{PUBLIC}/api/v1/audio/{world['sha']}.mp3"
        assert track.findtext(f"{XSPF}duration") == "95500"


@pytest.mark.parametrize("suffix", ["", ".m3u8", ".xspf"])
def test_a_strong_etag_and_304(
    client: TestClient,
    world: dict[str, str],
    suffix: str,
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
) -> None:
    first = client.get(url("440", suffix), headers=auth(world["440"]))
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{64}"', etag)  # strong: no W/
    again = client.get(url("440", suffix), headers=auth(world["440"], **{"If-None-Match": etag}))
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = client.get(url("440", suffix), headers=auth(world["440"], **{"If-None-Match": '"x"'}))
    assert other.status_code == 200 and other.content == first.content
    # New data, new bytes, new tag.
    emergency = loudspeaker_wave(world["sha"], priority="emergency", at="2026-05-09 09:00")
    del emergency["recurring"]
    launch_broadcast(engine, settings, clock(), emergency, name="E")
    changed = client.get(url("440", suffix), headers=auth(world["440"], **{"If-None-Match": etag}))
    assert changed.status_code == 200 and changed.headers["etag"] != etag


def test_district_keys_read_only_their_own_areas(client: TestClient, world: dict[str, str]) -> None:
    def status(key: str, code: str) -> int:
        code_: int = client.get(url(code), headers=auth(world[key])).status_code
        return code_

    assert status("440", "440") == 200
    assert status("440", "18301") == 200  # a commune of its own
    assert status("440", "42") == 403  # its province
    assert status("440", "40") == 403 and status("440", "16801") == 403
    assert status("40", "16801") == 200 and status("40", "440") == 403
    assert status("operator", "40") == 200 and status("operator", "42") == 200
    refused = client.get(url("42"), headers=auth(world["440"])).json()["error"]
    assert "is for area 440; area 42 is not in it" in refused["message"]
    assert client.get(url("440")).status_code == 401


def test_district_keys_download_only_the_audio_of_their_playlists(
    client: TestClient, world: dict[str, str], settings: Settings
) -> None:
    for sha in (world["sha"], world["other"]):
        path = asset_path(settings.data_dir, sha)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"ID3" + bytes(1000))

    def status(key: str, sha: str, suffix: str = ".mp3") -> int:
        got: int = client.get(f"/api/v1/audio/{sha}{suffix}", headers=auth(world[key])).status_code
        return got

    assert status("440", world["sha"]) == 200 and status("440", world["sha"], "") == 200
    assert status("440", world["other"]) == 403 and status("440", world["other"], "") == 403
    assert status("40", world["other"]) == 200 and status("40", world["sha"]) == 403
    assert status("operator", world["other"]) == 200


@pytest.mark.parametrize(
    ("path", "status", "said"),
    [
        (url("440", day="09-05-2026"), 422, "date"),
        (url("440", day="2026-02-30"), 422, "is not a calendar date"),
        ("/api/v1/districts/440/playlist", 422, "date"),
        ("/api/v1/districts/..%2F..%2Fetc/playlist?date=2026-05-09", 404, ""),
        ("/api/v1/districts/4%2E4/playlist?date=2026-05-09", 422, "code"),
        (url("999"), 404, "no area with code '999'"),
    ],
)
def test_bad_playlist_requests_say_why(
    client: TestClient, world: dict[str, str], path: str, status: int, said: str
) -> None:
    response = client.get(path, headers=auth(world["operator"]))
    assert response.status_code == status, response.text
    assert said in response.json()["error"]["message"]


def _play(item: str, commune: str, minute: int = 0, result: str = "played") -> dict[str, object]:
    return {
        "item": int(item),
        "commune": commune,
        "started_at": f"2026-05-09T06:{minute:02d}:00+07:00",
        "ended_at": f"2026-05-09T06:{minute + 3:02d}:10+07:00",
        "result": result,
    }


def _stored(engine: Engine) -> tuple[int, int]:
    with session_scope(engine) as session:
        plays = session.scalar(select(func.count()).select_from(BroadcastPlay)) or 0
        events = (
            session.scalar(
                select(func.count())
                .select_from(DeliveryEvent)
                .where(col(DeliveryEvent.kind) == "play")
            )
            or 0
        )
    return plays, events


PLAYS = "/api/v1/districts/440/plays"


def test_plays_are_stored_once_and_counted(
    client: TestClient, world: dict[str, str], engine: Engine, clock: FakeClock
) -> None:
    clock.now = datetime(2026, 5, 9, 1, 0, tzinfo=UTC)
    report = [_play(world["item"], "18301"), _play(world["item"], "18302", result="failed")]
    first = client.post(PLAYS, json=report, headers=auth(world["440"]))
    assert first.status_code == 200, first.text
    assert first.json() == {"received": 2, "stored": 2, "duplicates": 0}
    again = client.post(PLAYS, json=report + report[:1], headers=auth(world["440"]))
    assert again.json() == {"received": 3, "stored": 0, "duplicates": 3}
    assert _stored(engine) == (2, 2)
    with session_scope(engine) as session:
        event = session.scalars(
            select(DeliveryEvent).where(col(DeliveryEvent.kind) == "play")
        ).first()
        assert event is not None
        assert (event.channel, event.status) == ("loudspeaker", "played")
        assert event.detail == f"item {world['item']} commune 18301"
    counts = client.get(PLAYS, headers=auth(world["440"])).json()
    assert (counts["played"], counts["failed"]) == (1, 1)
    assert [(c["commune"], c["played"], c["failed"]) for c in counts["communes"]] == [
        ("18301", 1, 0),
        ("18302", 0, 1),
    ]
    assert client.get("/api/v1/districts/40/plays", headers=auth(world["440"])).status_code == 403


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ({"item": 999_999}, "play 1, field item: no broadcast item 999999"),
        ({"commune": "16801"}, "play 1, field commune: '16801' is not a commune of area 440"),
        ({"started_at": "2026-05-09T06:00:00"}, "body 1.started_at: Input should have timezone"),
        ({"ended_at": "2026-05-09T05:00:00+07:00"}, "play 1, field ended_at"),
        ({"result": "maybe"}, "body 1.result: Input should be"),
        (
            {"started_at": "2026-06-09T06:00:00+07:00", "ended_at": "2026-06-09T06:03:00+07:00"},
            "is in the future",
        ),
    ],
)
def test_a_bad_entry_refuses_the_whole_report(
    client: TestClient,
    world: dict[str, str],
    engine: Engine,
    clock: FakeClock,
    entry: dict[str, object],
    said: str,
) -> None:
    clock.now = datetime(2026, 5, 9, 1, 0, tzinfo=UTC)
    bad = {**_play(world["item"], "18302"), **entry}
    response = client.post(
        PLAYS, json=[_play(world["item"], "18301"), bad], headers=auth(world["440"])
    )
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert said in message
    assert _stored(engine) == (0, 0)


def test_plays_for_another_district_or_not_json_are_refused(
    client: TestClient, world: dict[str, str], engine: Engine
) -> None:
    report = [_play(world["item"], "18301")]
    other = client.post("/api/v1/districts/40/plays", json=report, headers=auth(world["440"]))
    assert other.status_code == 403
    operator = client.post(PLAYS, json=report, headers=auth(world["operator"]))
    assert operator.status_code == 403
    text = client.post(
        PLAYS,
        content="item,commune",
        headers=auth(world["440"], **{"Content-Type": "text/csv"}),
    )
    assert text.status_code in (415, 422)
    assert _stored(engine) == (0, 0)


def test_the_play_history_as_csv_from_the_api_and_the_cli(
    client: TestClient,
    world: dict[str, str],
    clock: FakeClock,
    settings: Settings,
    db_url: str,
    tmp_path: Path,
) -> None:
    clock.now = datetime(2026, 5, 9, 1, 0, tzinfo=UTC)
    report = [_play(world["item"], "18301"), _play(world["item"], "18302", 5, "skipped")]
    assert client.post(PLAYS, json=report, headers=auth(world["440"])).status_code == 200

    response = client.get("/api/v1/plays.csv", headers=auth(world["440"]))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["item"], r["commune"], r["result"]) for r in rows] == [
        (world["item"], "18301", "played"),
        (world["item"], "18302", "skipped"),
    ]
    assert rows[0]["started_at"] == "2026-05-08T23:00:00+00:00"
    forty = client.get("/api/v1/plays.csv?district=40", headers=auth(world["440"]))
    assert forty.status_code == 403
    empty = client.get("/api/v1/plays.csv?from=2026-05-10", headers=auth(world["operator"]))
    assert empty.text.splitlines() == [
        ",".join(
            [
                "item",
                "wave_id",
                "commune",
                "commune_name",
                "started_at",
                "ended_at",
                "result",
                "reported_by",
                "received_at",
            ]
        )
    ]

    out = tmp_path / "plays.csv"
    env = loa_env(db_url, settings.data_dir)
    run_loa("plays", "export", "--district", "440", "--from", "2026-05-08", "-o", str(out), env=env)
    exported = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [(r["commune"], r["commune_name"], r["result"]) for r in exported] == [
        ("18301", "Xã Đức Đồng", "played"),
        ("18302", "Xã Đức Lạng", "skipped"),
    ]
    none = run_loa("plays", "export", "--district", "40", env=env)
    assert len(none.stdout.splitlines()) == 1
    bad = run_loa("plays", "export", "--from", "9/5/2026", env=env, check=False)
    assert bad.returncode != 0 and "is not a date like 2026-05-31" in bad.stderr


def test_a_cached_playlist_follows_a_cancelled_campaign(
    client: TestClient, world: dict[str, str], engine: Engine, clock: FakeClock
) -> None:
    """Pulls are served from the process's cache while the broadcast data is unchanged; a
    campaign's state change (here a cancel, which writes no items) retires the cached body."""
    from loa.models import Campaign
    from scheduler.lifecycle import cancel_campaign

    first = client.get(url("440"), headers=auth(world["440"]))
    again = client.get(url("440"), headers=auth(world["440"]))
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    assert len(first.json()["items"]) == 2
    with session_scope(engine) as session:
        campaign_id = session.scalar(select(col(Campaign.id)).where(col(Campaign.name) == "C"))
        assert campaign_id is not None
        clock.advance(seconds=1)
        cancel_campaign(session, campaign_id, actor="t", now=clock())
    after = client.get(url("440"), headers=auth(world["440"]))
    assert after.json()["items"] == [] and after.headers["etag"] != first.headers["etag"]
