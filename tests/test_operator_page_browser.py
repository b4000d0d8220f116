"""The operator page in a real browser: Debian's chromium (headless), driven by Playwright, against
`loa serve` on a seeded SQLite database. Signs in through the form, reads the figures the page
shows and checks them against the JSON API with the same key, switches language, signs out,
signs in as a district centre and checks its playlist; saves a screenshot under the test's
temporary directory (with LOA_UPDATE_SCREENSHOT=1, also as docs/operator-page.png: a test run
does not otherwise change files of the repository).

Needs /usr/bin/chromium (Debian's `chromium` package; `make test` installs it when run as root)
and the `playwright` package (the dev extra). Playwright's own browser downloads are never used.
Without them the test is skipped, and under LOA_TEST_STRICT=1 (CI) it fails."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from loa.db import make_engine
from loa.settings import Settings
from tests.clirun import LOA, loa_env
from tests.conftest import STRICT
from tests.operating import FIRST, ZONE, World, seed
from tests.test_end_to_end import _answers, _free_port, _wait_for
from web.dashboard import OUTCOMES

CHROMIUM = Path(os.environ.get("LOA_TEST_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOT = Path(__file__).parent.parent / "docs" / "operator-page.png"


def _missing(why: str) -> NoReturn:
    if STRICT:
        pytest.fail(f"{why}; CI needs the browser test to run (LOA_TEST_STRICT=1)")
    pytest.skip(why)


@dataclass(frozen=True)
class Served:
    base: str
    world: World


@pytest.fixture
def served(sqlite_template: Path, tmp_path: Path) -> Iterator[Served]:
    """`loa serve` on a copy of the migrated template, seeded at the wall clock's now. Without
    its worker and scheduler: the page and the API must read the same still data."""
    database = tmp_path / "loa.db"
    shutil.copyfile(sqlite_template, database)
    url = f"sqlite:///{database}"
    settings = Settings(database_url=url, data_dir=tmp_path, console_sink=tmp_path / "sink.jsonl")
    engine = make_engine(settings)
    try:
        world = seed(engine, settings, datetime.now(UTC))
    finally:
        engine.dispose()
    port = _free_port()
    server = subprocess.Popen(
        [LOA, "serve", "--port", str(port), "--no-worker", "--no-scheduler"],
        env=loa_env(url, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: _answers(f"{base}/health", server), "loa serve")
        yield Served(base, world)
    finally:
        server.terminate()
        server.wait(timeout=30)


@dataclass(frozen=True)
class Browsing:
    page: Any  # playwright.sync_api.Page (the package may be missing: see _missing)
    problems: list[str]  # console errors (a blocked load, a script error)


@pytest.fixture
def browsing() -> Iterator[Browsing]:
    if not CHROMIUM.exists():
        _missing(f"no browser at {CHROMIUM}: apt-get install chromium (Debian's package)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="vi-VN")
        page = context.new_page()
        # Anything the page's security policy blocks, or a script error, shows here.
        problems: list[str] = []

        def on_console(message: Any) -> None:
            if message.type == "error":
                problems.append(message.text)

        page.on("console", on_console)
        page.on("pageerror", lambda error: problems.append(str(error)))
        try:
            yield Browsing(page, problems)
        finally:
            context.close()
            browser.close()


def _api(served: Served, key: str, path: str) -> Any:
    response = httpx.get(
        f"{served.base}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def _check_area_row(page: Any, code: str | None, row: dict[str, Any]) -> None:
    shown = page.locator(f"#areas tr[data-area='{code or ''}']")
    for field in ("targeted", "sent", "delivered", "failed"):
        assert shown.locator(f"[data-field='{field}']").inner_text() == str(row[field]), field
    rate = shown.locator("[data-field='delivery_rate']").inner_text()  # "85,7%" in Vietnamese
    assert float(rate.rstrip("%").replace(",", ".")) == pytest.approx(
        100 * row["delivery_rate"], abs=0.05
    )


def _check_failures(page: Any, rows: list[dict[str, Any]]) -> None:
    """Every error code with failed messages, and its count, as the API gives them."""
    failed = {row["key"]["error_code"]: row["failed"] for row in rows if row["failed"]}
    assert failed and None not in failed
    shown = page.locator("#failures tbody tr")
    assert shown.count() == len(failed)
    for code, count in failed.items():
        cell = page.locator(f"#failures tr[data-code='{code}'] [data-field='failed']")
        assert cell.inner_text() == str(count)


def _sign_in(page: Any, served: Served, key: str) -> None:
    page.goto(f"{served.base}/")
    assert page.url == f"{served.base}/login"
    page.fill("#key", key)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(f"{served.base}/")


def test_the_operator_page_in_chromium(browsing: Browsing, served: Served, tmp_path: Path) -> None:
    # The browser first: without one, no server is started only to be skipped.
    page, world = browsing.page, served.world
    operator = world.keys["operator"]
    _sign_in(page, served, operator)
    assert page.locator("html").get_attribute("lang") == "vi"
    assert page.locator("#campaigns h2").inner_text() == "Chiến dịch"

    # The key is in a cookie the page's scripts cannot read, sent to Loa alone.
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "loa_key"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"] == operator
    assert "loa_key" not in page.evaluate("document.cookie")
    # The page's own script ran (its box is shown only then).
    assert page.locator("label.auto-refresh").is_visible()

    # Each campaign's figures are the API's.
    for campaign_id in (world.first, world.second, world.broadcasts):
        stats = _api(served, operator, f"/api/v1/campaigns/{campaign_id}/stats")
        article = page.locator(f"[data-campaign='{campaign_id}']")
        assert article.locator(".name").inner_text() == stats["name"]
        if not stats["total"]:  # loudspeakers only: no messages, no bar
            assert article.locator("[data-outcome]").count() == 0
            assert article.locator("p.ratio").first.inner_text().startswith("không có tin nhắn")
            continue
        for outcome, statuses in OUTCOMES.items():
            shown = article.locator(f"[data-outcome='{outcome}'] [data-field='count']").first
            assert int(shown.inner_text()) == sum(stats["by_status"][s] for s in statuses)
    first = page.locator(f"[data-campaign='{world.first}']")
    assert "15/15 tin đã xử lý" in first.locator(".ratio").first.inner_text()
    # The bar is drawn to the figures: 9 of 15 delivered.
    delivered = first.locator(".progress").first.locator("rect.seg.delivered")
    assert float(delivered.get_attribute("width")) == pytest.approx(60.0)

    # Delivery per district and failures by reason: the statistics API's.
    by_district = _api(served, operator, "/api/v1/stats?group_by=district")["rows"]
    assert len(by_district) == 3  # Đức Thọ, Hương Sơn, and Nghệ An's commune with no district
    for row in by_district:
        _check_area_row(page, row["key"]["district"], row)
    assert page.locator("svg.chart rect.bar").count() == 3
    _check_failures(page, _api(served, operator, "/api/v1/stats?group_by=error_code")["rows"])

    # Today's playlist of a district, asked for by code.
    page.fill("#area", "440")
    page.click("#playlist form button[type=submit]")
    page.wait_for_url(f"{served.base}/?area=440")
    assert page.locator("table.playlist tbody tr").count() == 2

    shot = tmp_path / "operator-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    if os.environ.get("LOA_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)

    # English, and remembered.
    page.click("nav.languages a[hreflang='en']")
    page.wait_for_load_state()
    assert page.locator("#campaigns h2").inner_text() == "Campaigns"
    page.goto(f"{served.base}/")
    assert page.locator("html").get_attribute("lang") == "en"
    assert (
        "15 of 15 messages settled"
        in page.locator(f"[data-campaign='{world.first}'] .ratio").first.inner_text()
    )
    page.click("nav.languages a[hreflang='vi']")
    page.wait_for_load_state()
    assert page.locator("#campaigns h2").inner_text() == "Chiến dịch"

    # Sign out: back to the form; the page is closed again.
    page.click("form[action='/logout'] button")
    page.wait_for_url(f"{served.base}/login?out=1")
    assert page.locator("p.notice").inner_text() == "Đã đăng xuất."
    page.goto(f"{served.base}/")
    assert page.url == f"{served.base}/login"

    # A district centre: its own playlist for today, the API's, and no campaigns.
    district = world.keys["district:440"]
    _sign_in(page, served, district)
    assert page.locator("#campaigns").count() == 0
    assert FIRST not in page.content()
    today = datetime.now(ZONE).date().isoformat()
    playlist = _api(served, district, f"/api/v1/districts/440/playlist?date={today}")
    assert len(playlist["items"]) == 2
    rows = page.locator("table.playlist tbody tr")
    assert rows.count() == len(playlist["items"])
    for index, item in enumerate(playlist["items"]):
        row = rows.nth(index)
        assert row.get_attribute("data-item") == str(item["id"])
        assert row.locator("[data-field='start_local']").inner_text() == item["start_local"]
        assert row.locator("[data-field='title']").inner_text() == item["title"]
        assert row.locator("[data-field='communes']").inner_text() == ", ".join(item["communes"])
        assert row.locator("[data-field='repeats']").inner_text() == str(item["repeats"])
    assert page.locator("[data-playlist-area]").inner_text().startswith("Huyện Đức Thọ (440)")
    # Its figures per commune are its own area's, as the statistics API gives them to its key.
    by_commune = _api(served, district, "/api/v1/stats?group_by=commune")["rows"]
    assert sorted(row["key"]["commune"] for row in by_commune) == ["18301", "18302"]
    assert page.locator("#areas tbody tr").count() == 2
    for row in by_commune:
        _check_area_row(page, row["key"]["commune"], row)
    _check_failures(page, _api(served, district, "/api/v1/stats?group_by=error_code")["rows"])

    assert browsing.problems == []
