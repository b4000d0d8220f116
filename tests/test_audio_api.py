"""The audio API: upload with its limits and content types, the metadata, and the MP3 served as
HTTP says for a centre on a bad link (ETag/304, Range/206/416, If-Range)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.app import create_app
from audio.store import asset_path
from loa.apikeys import Role, create_key
from loa.db import session_scope
from loa.settings import Settings
from tests.audiosignals import make
from tests.conftest import FakeClock
from tests.test_import_formats import load_areas

URL = "/api/v1/audio"


@pytest.fixture
def keys(engine: Engine, clock: FakeClock, tmp_path: Path) -> dict[Role, str]:
    load_areas(engine, tmp_path)
    with session_scope(engine) as session:
        return {
            role: create_key(
                session,
                role=role,
                actor="test",
                now=clock(),
                area_code="42" if role == Role.DISTRICT else None,
            ).key
            for role in Role
        }


@pytest.fixture
def client(settings: Settings, engine: Engine, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine, clock=clock)) as test_client:
        yield test_client


def auth(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def upload(
    client: TestClient, key: str, body: bytes, content_type: str = "audio/wav", **params: str
) -> httpx.Response:
    response: httpx.Response = client.post(
        URL,
        content=body,
        params={"filename": "ban-tin.wav", **params},
        headers=auth(key, **{"Content-Type": content_type}),
    )
    return response


@pytest.fixture
def stored(client: TestClient, keys: dict[Role, str], tmp_path: Path) -> dict[str, object]:
    body = make(tmp_path / "ban-tin.wav", "speech", seconds=5, lufs=-30).read_bytes()
    response = upload(client, keys[Role.PLANNER], body, name="Bản tin")
    assert response.status_code == 201, response.text
    record: dict[str, object] = response.json()
    return record


def test_a_planner_uploads_audio_and_the_same_audio_again_is_the_same_asset(
    client: TestClient,
    keys: dict[Role, str],
    settings: Settings,
    tmp_path: Path,
    stored: dict[str, object],
) -> None:
    assert stored["created"] is True and stored["name"] == "Bản tin"
    assert stored["original_filename"] == "ban-tin.wav" and stored["source_format"] == "WAV"
    assert abs(float(stored["loudness_after_lufs"]) + 16) <= 1  # type: ignore[arg-type]
    sha = str(stored["sha256"])
    assert stored["url"] == f"{URL}/{sha}.mp3"
    data = asset_path(settings.data_dir, sha).read_bytes()
    assert hashlib.sha256(data).hexdigest() == sha

    again = upload(
        client,
        keys[Role.ADMIN],
        (tmp_path / "ban-tin.wav").read_bytes(),
        "application/octet-stream",
    )
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["sha256"] == sha

    listed = client.get(URL, headers=auth(keys[Role.OPERATOR])).json()
    assert ([a["sha256"] for a in listed["items"]], listed["next_after"]) == ([sha], None)
    # A district key lists only the audio of its own area's playlists: this is in none.
    assert client.get(URL, headers=auth(keys[Role.DISTRICT])).json()["items"] == []
    shown = client.get(f"{URL}/{sha}", headers=auth(keys[Role.OPERATOR]))
    assert shown.status_code == 200 and shown.json()["bytes"] == len(data)


def test_stored_assets_are_the_intro_and_outro_of_an_upload(
    client: TestClient, keys: dict[Role, str], tmp_path: Path, stored: dict[str, object]
) -> None:
    jingle = str(stored["sha256"])
    body = make(tmp_path / "main.ogg", "noise", seconds=3, lufs=-12).read_bytes()
    joined = upload(client, keys[Role.PLANNER], body, "audio/ogg", intro=jingle, outro=jingle)
    assert joined.status_code == 201, joined.text
    record = joined.json()
    assert record["intro_filename"] == record["outro_filename"] == "ban-tin.wav"
    # Twice the jingle (about 5 s each once trimmed) around 3 s of noise.
    expected = 2 * int(str(stored["duration_ms"])) + 3000
    assert abs(record["duration_ms"] - expected) <= 300, (record["duration_ms"], expected)
    assert abs(record["loudness_after_lufs"] + 16) <= 1

    unknown = upload(client, keys[Role.PLANNER], body, "audio/ogg", intro="f" * 64)
    assert unknown.status_code == 404 and "no audio asset" in unknown.json()["error"]["message"]
    bad = upload(client, keys[Role.PLANNER], body, "audio/ogg", outro="../x")
    assert bad.status_code == 422


def test_uploads_are_refused_with_the_reason_and_store_nothing(
    client: TestClient, keys: dict[Role, str], settings: Settings, tmp_path: Path
) -> None:
    planner = keys[Role.PLANNER]
    wav = make(tmp_path / "x.wav", "tone", seconds=3, lufs=-20).read_bytes()

    wrong_type = upload(client, planner, wav, "text/csv")
    assert wrong_type.status_code == 415 and "not audio" in wrong_type.json()["error"]["message"]
    form = upload(client, planner, wav, "multipart/form-data; boundary=x")
    assert form.status_code == 415

    corrupt = upload(client, planner, b"RIFF" + bytes(5000), "audio/wav")
    assert corrupt.status_code == 422
    assert "ban-tin.wav" in corrupt.json()["error"]["message"]

    settings.audio_max_bytes = 50_000
    too_big = upload(client, planner, wav, "audio/wav")
    assert too_big.status_code == 413
    assert "LOA_AUDIO_MAX_BYTES" in too_big.json()["error"]["message"]

    assert upload(client, keys[Role.DISTRICT], wav).status_code == 403
    no_key = client.post(
        URL, content=wav, params={"filename": "a.wav"}, headers={"Content-Type": "audio/wav"}
    )
    assert no_key.status_code == 401
    assert client.get(URL, headers=auth(planner)).json()["items"] == []
    assert not list((settings.data_dir / "audio").rglob("*.mp3"))


def test_the_mp3_is_served_immutable_with_ranges_as_http_says(
    client: TestClient, keys: dict[Role, str], settings: Settings, stored: dict[str, object]
) -> None:
    sha = str(stored["sha256"])
    url = f"{URL}/{sha}.mp3"
    key = keys[Role.OPERATOR]  # district keys: tests/test_playlists_api.py (own playlists only)
    data = asset_path(settings.data_dir, sha).read_bytes()
    size = len(data)
    etag = f'"{sha}"'

    whole = client.get(url, headers=auth(key))
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["etag"] == etag
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "audio/mpeg"
    assert "immutable" in whole.headers["cache-control"]
    assert int(whole.headers["content-length"]) == size

    head = client.head(url, headers=auth(key))
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == etag and int(head.headers["content-length"]) == size

    part = client.get(url, headers=auth(key, Range="bytes=100-1099"))
    assert part.status_code == 206 and part.content == data[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{size}"

    # Resuming: from an offset to the end, and the last N bytes.
    rest = client.get(url, headers=auth(key, Range=f"bytes={size - 500}-"))
    assert rest.status_code == 206 and rest.content == data[-500:]
    tail = client.get(url, headers=auth(key, Range="bytes=-300"))
    assert tail.status_code == 206 and tail.content == data[-300:]
    assert tail.headers["content-range"] == f"bytes {size - 300}-{size - 1}/{size}"

    beyond = client.get(url, headers=auth(key, Range=f"bytes={size}-"))
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"

    # If-Range: the range only if the file is still the one the client started on.
    same = client.get(url, headers=auth(key, Range="bytes=0-9", **{"If-Range": etag}))
    assert same.status_code == 206 and same.content == data[:10]
    changed = client.get(url, headers=auth(key, Range="bytes=0-9", **{"If-Range": '"other"'}))
    assert changed.status_code == 200 and changed.content == data
    weak = client.get(url, headers=auth(key, Range="bytes=0-9", **{"If-Range": f"W/{etag}"}))
    assert weak.status_code == 200 and weak.content == data  # If-Range needs a strong match

    # A Range it cannot use is ignored (RFC 9110 14.2), not an error.
    for unusable in ("items=0-9", "bytes=9-2", "bytes=x-y"):
        ignored = client.get(url, headers=auth(key, Range=unusable))
        assert ignored.status_code == 200 and ignored.content == data, unusable

    cached = client.get(url, headers=auth(key, **{"If-None-Match": etag}))
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["etag"] == etag
    weak_cached = client.get(url, headers=auth(key, **{"If-None-Match": f'"x", W/{etag}'}))
    assert weak_cached.status_code == 304
    stale = client.get(url, headers=auth(key, **{"If-None-Match": '"x"'}))
    assert stale.status_code == 200 and stale.content == data

    assert client.get(url).status_code == 401


@pytest.mark.parametrize(
    "name",
    [
        "..%2F..%2Floa.db",
        "..%2Floa.mp3",
        "%2e%2e%2f%2e%2e%2floa.mp3",
        "ABCDEF" + "0" * 58 + ".mp3",
        "0" * 63 + ".mp3",
        "0" * 64 + ".mp3%00",
    ],
)
def test_path_tricks_in_the_name_are_refused(
    client: TestClient, keys: dict[Role, str], name: str
) -> None:
    response = client.get(f"{URL}/{name}", headers=auth(keys[Role.ADMIN]))
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == "application/json"


def test_an_unknown_sha256_is_404(client: TestClient, keys: dict[Role, str]) -> None:
    response = client.get(f"{URL}/{'0' * 64}.mp3", headers=auth(keys[Role.ADMIN]))
    assert response.status_code == 404 and "no audio asset" in response.json()["error"]["message"]
