"""The operator page through the real app, without a browser: sign-in with a key and the cookie's
flags, refused keys, forged forms, sign-out, what each role sees, today's playlist, the language
switch and the label catalogue. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.app import create_app
from channels import twilio
from loa.apikeys import revoke_key
from loa.db import session_scope
from loa.models import BroadcastPriority, CampaignStatus, WaveStatus
from loa.settings import Settings
from tests.conftest import FakeClock
from tests.operating import FIRST, SECOND, World, seed
from tests.pagereading import marked
from web import i18n
from web.dashboard import OUTCOMES

ORIGIN = "http://testserver"
TODAY = "2026-05-08"  # the fake clock's local date (07:00 in Hà Nội)
WEB = Path(__file__).parent.parent / "web"


@pytest.fixture
def world(engine: Engine, settings: Settings, clock: FakeClock) -> World:
    return seed(engine, settings, clock())


@pytest.fixture
def client(settings: Settings, engine: Engine, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine, clock=clock), base_url=ORIGIN) as test_client:
        yield test_client


def form_token(client: TestClient) -> str:
    page = client.get("/login")
    assert page.status_code == 200
    hidden = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert hidden is not None
    return hidden[1]


def sign_in(client: TestClient, key: str, **headers: str) -> httpx.Response:
    token = form_token(client)
    response: httpx.Response = client.post(
        "/login",
        data={"key": key, "csrf": token},
        headers={"Origin": ORIGIN, **headers},
        follow_redirects=False,
    )
    return response


def cookie_headers(response: httpx.Response, name: str) -> list[str]:
    return [v for v in response.headers.get_list("set-cookie") if v.startswith(f"{name}=")]


def test_the_page_sends_a_stranger_to_the_sign_in_form(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    form = client.get("/login")
    assert form.status_code == 200 and form.headers["content-type"].startswith("text/html")
    assert 'action="/login"' in form.text and 'name="key"' in form.text
    # The form's token is the one in the browser's cookie.
    assert f'value="{client.cookies["loa_csrf"]}"' in form.text
    csp = form.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert form.headers["cache-control"] == "no-store"


def test_sign_in_keeps_the_key_in_a_strict_http_only_cookie(
    client: TestClient, world: World
) -> None:
    response = sign_in(client, world.keys["operator"])
    assert response.status_code == 303 and response.headers["location"] == "/"
    (cookie,) = cookie_headers(response, "loa_key")
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert flags[0] == f"loa_key={world.keys['operator']}".lower()
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert "secure" not in flags  # plain http: a Secure cookie would never come back
    assert not any(f.startswith(("max-age", "expires")) for f in flags)  # ends with the browser
    # The form token changes with the session.
    (token,) = cookie_headers(response, "loa_csrf")
    assert "httponly" in token.lower() and "samesite=strict" in token.lower()
    page = client.get("/")
    assert page.status_code == 200
    assert "Khóa operator (vận hành)" in page.text


def test_over_https_the_cookies_are_secure(
    settings: Settings, engine: Engine, clock: FakeClock, world: World
) -> None:
    app = create_app(settings, engine, clock=clock)
    with TestClient(app, base_url="https://loa.example.vn") as client:
        response = sign_in(client, world.keys["admin"], Origin="https://loa.example.vn")
        assert response.status_code == 303
        for name in ("loa_key", "loa_csrf"):
            (cookie,) = cookie_headers(response, name)
            assert "secure" in [p.strip().lower() for p in cookie.split(";")], cookie


def test_refused_keys_are_told_apart_and_set_no_cookie(
    client: TestClient, world: World, engine: Engine, clock: FakeClock
) -> None:
    wrong = sign_in(client, world.keys["operator"][:-4] + "AAAA")
    assert wrong.status_code == 401
    assert "Khóa không được chấp nhận" in wrong.text and "unknown API key" in wrong.text
    assert not cookie_headers(wrong, "loa_key")

    with session_scope(engine) as session:
        revoke_key(session, world.keys["planner"].split("_")[1], actor="t", now=clock())
    revoked = sign_in(client, world.keys["planner"])
    assert revoked.status_code == 401 and "was revoked" in revoked.text
    assert not cookie_headers(revoked, "loa_key")

    empty = sign_in(client, "   ")
    assert empty.status_code == 422 and "Hãy dán khóa API" in empty.text
    assert client.get("/", follow_redirects=False).status_code == 303


@pytest.mark.parametrize(
    ("token", "headers"),
    [
        pytest.param(None, {"Origin": ORIGIN}, id="no-token"),
        pytest.param("x" * 43, {"Origin": ORIGIN}, id="wrong-token"),
        pytest.param("good", {"Origin": "https://evil.example"}, id="other-origin"),
        pytest.param("good", {"Origin": "null"}, id="opaque-origin"),
        pytest.param("good", {"Referer": "https://evil.example/page"}, id="other-referer"),
        pytest.param("good", {}, id="no-origin-no-referer"),
    ],
)
def test_a_forged_sign_in_form_is_refused(
    client: TestClient, world: World, token: str | None, headers: dict[str, str]
) -> None:
    good = form_token(client)
    data = {"key": world.keys["admin"]}
    if token is not None:
        data["csrf"] = good if token == "good" else token
    response = client.post("/login", data=data, headers=headers, follow_redirects=False)
    assert response.status_code == 403
    assert "Biểu mẫu không hợp lệ" in response.text
    assert not cookie_headers(response, "loa_key")


def test_a_referer_of_loa_itself_stands_for_a_missing_origin(
    client: TestClient, world: World
) -> None:
    token = form_token(client)
    response = client.post(
        "/login",
        data={"key": world.keys["admin"], "csrf": token},
        headers={"Referer": f"{ORIGIN}/login"},
        follow_redirects=False,
    )
    assert response.status_code == 303


def test_sign_out_needs_the_form_token_and_ends_the_session(
    client: TestClient, world: World
) -> None:
    assert sign_in(client, world.keys["operator"]).status_code == 303
    forged = client.post("/logout", headers={"Origin": ORIGIN}, follow_redirects=False)
    assert forged.status_code == 403 and not cookie_headers(forged, "loa_key")
    assert client.get("/", follow_redirects=False).status_code == 200  # still signed in

    page = client.get("/")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    out = client.post(
        "/logout", data={"csrf": token[1]}, headers={"Origin": ORIGIN}, follow_redirects=False
    )
    assert out.status_code == 303 and out.headers["location"] == "/login?out=1"
    (cleared,) = cookie_headers(out, "loa_key")
    assert "max-age=0" in cleared.lower()
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    assert "Đã đăng xuất." in client.get("/login?out=1").text


def test_a_key_revoked_after_sign_in_ends_the_session(
    client: TestClient, world: World, engine: Engine, clock: FakeClock
) -> None:
    assert sign_in(client, world.keys["approver"]).status_code == 303
    with session_scope(engine) as session:
        revoke_key(session, world.keys["approver"].split("_")[1], actor="t", now=clock())
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login?ended=1"
    assert "max-age=0" in cookie_headers(response, "loa_key")[0].lower()
    assert "Phiên đã kết thúc" in client.get("/login?ended=1").text


def test_the_cookie_does_not_open_the_json_api(client: TestClient, world: World) -> None:
    """The API wants the key in a header: a cookie sent along by a browser opens nothing."""
    assert sign_in(client, world.keys["admin"]).status_code == 303
    assert client.get(f"/api/v1/campaigns/{world.first}/stats").status_code == 401


@pytest.mark.parametrize("role", ["admin", "operator", "planner", "approver"])
def test_province_roles_see_every_campaign_with_the_apis_figures(
    client: TestClient, world: World, role: str
) -> None:
    assert sign_in(client, world.keys[role]).status_code == 303
    page = client.get("/")
    assert page.status_code == 200
    figures = marked(page.text)
    auth = {"Authorization": f"Bearer {world.keys[role]}"}
    for campaign_id in (world.first, world.second):
        stats = client.get(f"/api/v1/campaigns/{campaign_id}/stats", headers=auth).json()
        for outcome, statuses in OUTCOMES.items():
            shown = figures[(f"campaign={campaign_id}", f"outcome={outcome}", "field=count")]
            assert int(shown) == sum(stats["by_status"][s] for s in statuses), (
                campaign_id,
                outcome,
            )
    assert FIRST in page.text and SECOND in page.text
    # A loudspeaker campaign has no messages: said so, with no bar and no counts.
    broadcasts = client.get(f"/api/v1/campaigns/{world.broadcasts}/stats", headers=auth).json()
    assert broadcasts["total"] == 0
    assert not [k for k in figures if k[0] == f"campaign={world.broadcasts}" and "field=count" in k]
    assert re.search(
        rf'data-campaign="{world.broadcasts}">.*?không có tin nhắn.*?</article>', page.text, re.S
    )
    # The first campaign's figures as seeded: 15 messages, 9 delivered, 4 failed, 2 sent.
    first = {
        o: figures[(f"campaign={world.first}", f"outcome={o}", "field=count")] for o in OUTCOMES
    }
    assert first == {
        "delivered": "9",
        "sent": "2",
        "failed": "4",
        "set_aside": "0",
        "unknown": "0",
        "pending": "0",
    }
    assert "15/15 tin đã xử lý" in page.text and "3/4 tin đã xử lý" in page.text
    # The playlist of any area, when asked for.
    assert "Nhập mã một huyện" in page.text


def test_a_district_key_sees_its_own_playlist_and_no_campaigns(
    client: TestClient, world: World
) -> None:
    key = world.keys["district:440"]
    assert sign_in(client, key).status_code == 303
    page = client.get("/")
    assert page.status_code == 200
    figures = marked(page.text)
    assert not any(k[0].startswith("campaign=") for k in figures)
    assert FIRST not in page.text and SECOND not in page.text
    assert "Lịch tiêm chủng" not in page.text  # Hương Sơn's item

    api = client.get(
        f"/api/v1/districts/440/playlist?date={TODAY}", headers={"Authorization": f"Bearer {key}"}
    ).json()
    assert [i["start_local"] for i in api["items"]] == ["06:00", "17:30"]
    assert figures[("playlist-area=440",)] == "Huyện Đức Thọ (440), ngày 08/05/2026"
    for item in api["items"]:
        row = {
            field: figures[(f"item={item['id']}", f"field={field}")]
            for field in ("start_local", "title", "repeats", "communes", "duration")
        }
        assert row == {
            "start_local": item["start_local"],
            "title": item["title"],
            "repeats": str(item["repeats"]),
            "communes": ", ".join(item["communes"]),
            "duration": "1:36",  # 95.5 s, rounded up
        }

    # Another district's playlist is refused; a commune of its own is its to read.
    other = client.get("/?area=436")
    assert other.status_code == 403
    assert "Khóa này không được xem khu vực 436." in other.text
    assert "Lịch tiêm chủng" not in other.text
    commune = client.get("/?area=18302")
    assert commune.status_code == 200 and "Xã Đức Lạng (18302)" in commune.text


def test_a_province_role_reads_any_areas_playlist(client: TestClient, world: World) -> None:
    assert sign_in(client, world.keys["operator"]).status_code == 303
    page = client.get("/?area=436")
    assert page.status_code == 200
    figures = marked(page.text)
    (row,) = [k for k in figures if k[-1] == "field=priority"]
    assert figures[row] == "ưu tiên" and "Lịch tiêm chủng" in page.text
    assert client.get("/?area=999").status_code == 404
    assert "Không có khu vực mã 999." in client.get("/?area=999").text
    assert client.get("/?area=../etc").status_code == 422
    assert client.get("/?campaign=-1").status_code == 422


def test_the_language_is_switched_and_remembered(client: TestClient, world: World) -> None:
    assert 'lang="vi"' in client.get("/login").text  # Vietnamese unless asked otherwise
    assert sign_in(client, world.keys["operator"]).status_code == 303
    vi = client.get("/")
    assert 'lang="vi"' in vi.text and "Chiến dịch" in vi.text and "Campaigns" not in vi.text

    en = client.get("/?lang=en")
    assert 'lang="en"' in en.text and "Campaigns" in en.text and "Chiến dịch" not in en.text
    (cookie,) = cookie_headers(en, "loa_lang")
    assert cookie.startswith("loa_lang=en;") and "max-age=31536000" in cookie.lower()
    assert "15 of 15 messages settled" in en.text
    assert "Sign out" in client.get("/").text  # remembered
    assert "Sign out" in client.get("/?lang=xx").text  # unknown: ignored, not an error
    assert "Sign in" in client.get("/login").text

    back = client.get("/?lang=vi")
    assert "Đăng xuất" in back.text
    # The links to the other language keep the rest of the query.
    assert 'href="/?area=440&amp;lang=en"' in client.get("/?area=440").text


def test_every_label_is_in_both_languages_and_every_key_used_exists() -> None:
    for key, pair in {**i18n.MESSAGES, **i18n.ERROR_LABELS}.items():
        assert len(pair) == len(i18n.LANGUAGES) and all(text.strip() for text in pair), key
    used = set()
    for template in (WEB / "templates").glob("*.html"):
        used |= set(
            re.findall(r"""\bt\(\s*["']([a-z_.]+)["']\s*[,)]""", template.read_text("utf-8"))
        )
    assert used and used <= set(i18n.MESSAGES), used - set(i18n.MESSAGES)
    # Keys the templates build: statuses, outcomes, roles, priorities.
    built = {f"status.{s}" for s in (*CampaignStatus, *WaveStatus)}
    built |= {f"outcome.{o}" for o in OUTCOMES}
    built |= {f"role.{r}" for r in ("admin", "planner", "approver", "operator", "district")}
    built |= {f"priority.{p}" for p in BroadcastPriority}
    assert built <= set(i18n.MESSAGES), built - set(i18n.MESSAGES)
    # Notices and errors the routes name.
    routes = (WEB / "pages.py").read_text("utf-8")
    named = set(re.findall(r'"((?:login|playlist)\.(?!html")[a-z_]+)"', routes))
    assert named and named <= set(i18n.MESSAGES), named - set(i18n.MESSAGES)


def test_error_codes_have_a_label_in_each_language() -> None:
    vi, en = i18n.Translator("vi"), i18n.Translator("en")
    # Every code the Twilio adapter classifies, and the delivery-report codes Twilio documents.
    codes = {str(c) for c in twilio._ERRORS} | {"30003", "30005", "30006", "30007"}
    for code in codes | {"21211", "21610", "21614", "no_consent", "expired", "timeout"}:
        assert vi.error_label(code) != vi.error_label("zzz"), code
        assert en.error_label(code) != en.error_label("zzz"), code
    assert en.error_label("30003").startswith("Unreachable handset")
    assert vi.error_label("21610") == "Người nhận đã từ chối nhận tin (STOP)"
    assert en.error_label("http_503") == "Gateway answered HTTP 503"
    assert en.error_label("something-new") == "Other error"


def test_numbers_are_written_as_each_language_does() -> None:
    vi, en = i18n.Translator("vi"), i18n.Translator("en")
    assert (vi.number(1234567), en.number(1234567)) == ("1.234.567", "1,234,567")
    assert (vi.percent(0.9531), en.percent(0.9531)) == ("95,3%", "95.3%")
    assert vi.percent(None) == "–"
    assert i18n.Translator.duration(95_500) == "1:36" and i18n.Translator.duration(60_000) == "1:00"
    assert i18n.choose_language(None, None) == "vi"
    assert i18n.choose_language("en", "vi") == "en" and i18n.choose_language("fr", "en") == "en"


def test_the_pages_own_files_are_served(client: TestClient) -> None:
    css = client.get("/static/loa.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    js = client.get("/static/loa.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    page = client.get("/login").text
    # Nothing from elsewhere: every script, stylesheet and image is Loa's own.
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", page)


def _area_rows(figures: dict[tuple[str, ...], str]) -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    for key, text in figures.items():
        if len(key) == 2 and key[0].startswith("area=") and key[1].startswith("field="):
            rows.setdefault(key[0][5:], {})[key[1][6:]] = text
    return rows


def _failure_rows(figures: dict[tuple[str, ...], str]) -> dict[str, tuple[str, str]]:
    return {
        key[0][5:]: (figures[(key[0], "field=failed")], figures[(key[0], "field=set_aside")])
        for key in figures
        if len(key) == 1 and key[0].startswith("code=")
    }


def test_delivery_per_district_and_failures_by_reason(client: TestClient, world: World) -> None:
    assert sign_in(client, world.keys["operator"]).status_code == 303
    page = client.get("/")
    assert page.status_code == 200
    figures = marked(page.text)
    # As seeded (tests/operating.py): sent counts what a provider accepted, delivered among it.
    assert _area_rows(figures) == {
        "440": {
            "targeted": "9",
            "sent": "7",
            "delivered": "6",
            "failed": "2",
            "delivery_rate": "85,7%",
        },
        "436": {
            "targeted": "8",
            "sent": "4",
            "delivered": "1",
            "failed": "2",
            "delivery_rate": "25,0%",
        },
        "": {  # Nghệ An's commune has no district above it
            "targeted": "2",
            "sent": "2",
            "delivered": "2",
            "failed": "0",
            "delivery_rate": "100,0%",
        },
    }
    assert "Huyện Đức Thọ" in page.text and "(không thuộc huyện)" in page.text
    # The same figures as the statistics API's for the same key.
    api = client.get(
        "/api/v1/stats?group_by=district",
        headers={"Authorization": f"Bearer {world.keys['operator']}"},
    ).json()
    assert {
        row["key"]["district"] or "": {
            f: str(row[f]) for f in ("targeted", "sent", "delivered", "failed")
        }
        for row in api["rows"]
    } == {
        code: {f: v for f, v in shown.items() if f != "delivery_rate"}
        for code, shown in _area_rows(figures).items()
    }
    # The chart draws each rate: Hương Sơn's bar is a quarter of the full width.
    bars = re.findall(r'<rect class="bar" x="(\d+)" y="\d+" width="([\d.]+)"', page.text)
    assert [round(float(w) / 330, 3) for _, w in bars] == [0.25, 0.857, 1.0]  # by code
    assert _failure_rows(figures) == {"30003": ("2", "0"), "30007": ("1", "0"), "21610": ("1", "0")}
    assert "Không liên lạc được máy nhận" in page.text
    assert "Người nhận đã từ chối nhận tin (STOP)" in page.text

    # One campaign's figures: the second went to Hương Sơn only.
    second = marked(client.get(f"/?campaign={world.second}").text)
    assert _area_rows(second) == {
        "436": {
            "targeted": "4",
            "sent": "2",
            "delivered": "0",
            "failed": "0",
            "delivery_rate": "0,0%",
        }
    }
    assert _failure_rows(second) == {}
    assert "Không có tin nào lỗi." in client.get(f"/?campaign={world.second}").text
    english = client.get("/?lang=en").text
    assert "Delivery rate per district" in english and "85.7%" in english
    assert "Unreachable handset" in english


def test_a_district_key_sees_its_own_communes_figures_only(
    client: TestClient, world: World
) -> None:
    assert sign_in(client, world.keys["district:440"]).status_code == 303
    page = client.get("/")
    figures = marked(page.text)
    assert "Tỉ lệ đến máy theo xã" in page.text
    assert _area_rows(figures) == {
        "18301": {
            "targeted": "6",
            "sent": "5",
            "delivered": "4",
            "failed": "1",
            "delivery_rate": "80,0%",
        },
        "18302": {
            "targeted": "3",
            "sent": "2",
            "delivered": "2",
            "failed": "1",
            "delivery_rate": "100,0%",
        },
    }
    # Hương Sơn's opt-out (21610) is not Đức Thọ's.
    assert _failure_rows(figures) == {"30003": ("1", "0"), "30007": ("1", "0")}
