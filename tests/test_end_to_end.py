"""The first user journey with real processes: import areas and recipients, create and launch a
campaign with the CLI, run `loa serve`, and watch the wave go out through the console channel,
reading its figures over the API with an operator's key."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

from tests.clirun import LOA, loa_env, run_loa

AREAS = """code,name,level,parent_code
42,Tỉnh Hà Tĩnh,province,
440,Huyện Đức Thọ,district,42
18301,Xã Đức Đồng,commune,440
18302,Xã Đức Lạng,commune,440
40,Tỉnh Nghệ An,province,
16801,Xã Nghi Lâm,commune,40
"""
RECIPIENTS = """so_dien_thoai,ho_ten,ma_xa,tags
0912 000 001,Nguyễn Văn An,18301,nong-dan
+84912000002,Trần Thị Bình,18302,nong-dan|ho-ngheo
84912000003,Lê Văn Cường,18301,lao-dong-tu-do
0912000004,Phạm Thị Dung,16801,nong-dan
not-a-phone,Hoàng Văn Em,18301,nong-dan
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(predicate, what: str, seconds: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what} after {seconds} s")


def test_sms_campaign_from_spec_to_stats(db_url: str, tmp_path: Path) -> None:
    env = loa_env(db_url, tmp_path, LOA_SCHEDULER_TICK_SECONDS="0.3", LOA_WORKER_POLL_SECONDS="0.2")
    (tmp_path / "areas.csv").write_text(AREAS, encoding="utf-8")
    (tmp_path / "recipients.csv").write_text(RECIPIENTS, encoding="utf-8")

    assert "already at revision" in run_loa("db", "upgrade", env=env).stdout
    run_loa("areas", "import", str(tmp_path / "areas.csv"), env=env)
    imported = run_loa(
        "recipients",
        "import",
        str(tmp_path / "recipients.csv"),
        "--report",
        str(tmp_path / "rejected.csv"),
        env=env,
    )
    assert "4 new" in imported.stdout and "1 rejected" in imported.stdout
    assert (tmp_path / "rejected.csv").read_text("utf-8").splitlines()[1].startswith("6,")

    zone = ZoneInfo("Asia/Ho_Chi_Minh")
    # Room for three CLI start-ups on a loaded machine before the launch (a past time is refused).
    fire_local = datetime.now(zone) + timedelta(seconds=20)
    spec = {
        "name": "Lễ ra quân BHXH",
        "timezone": zone.key,
        "waves": [
            {
                "name": "Lễ ra quân",
                "channel": "sms",
                "class": "info",
                "at": fire_local.strftime("%Y-%m-%d %H:%M:%S"),
                "audience": {"areas": ["42"], "tags": ["nong-dan", "lao-dong-tu-do"]},
                "template": "BHXH tinh: {{ name }} oi, thang 5 la Thang van dong BHXH toan dan.",
            }
        ],
    }
    (tmp_path / "campaign.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    created = run_loa("campaign", "create", str(tmp_path / "campaign.json"), env=env)
    campaign_id = int(created.stdout.split()[2])
    run_loa("campaign", "approve", str(campaign_id), env=env)
    run_loa("campaign", "launch", str(campaign_id), env=env)
    key = run_loa("apikey", "create", "--role", "operator", env=env).stdout.strip()
    operator = {"Authorization": f"Bearer {key}"}

    port = _free_port()
    server = subprocess.Popen(
        [LOA, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                return False

        _wait_for(healthy, "loa serve to answer /health")
        health = httpx.get(f"{base}/health").json()
        assert health["database"]["status"] == "ok"

        def campaign_done() -> bool:
            body = httpx.get(
                f"{base}/api/v1/campaigns/{campaign_id}/stats", headers=operator, timeout=5
            ).json()
            return bool(body["status"] == "completed")

        _wait_for(campaign_done, "the campaign to complete")
        stats = httpx.get(f"{base}/api/v1/campaigns/{campaign_id}/stats", headers=operator).json()
        assert httpx.get(f"{base}/api/v1/campaigns/{campaign_id}/stats").status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert stats["total"] == 3
    assert stats["by_status"]["sent"] == 3
    assert stats["waves"][0]["by_status"]["sent"] == 3
    lines = [json.loads(x) for x in (tmp_path / "sink.jsonl").read_text("utf-8").splitlines()]
    assert sorted(x["to"] for x in lines) == ["+84912000001", "+84912000002", "+84912000003"]
    assert {x["body"] for x in lines} >= {
        "BHXH tinh: Trần Thị Bình oi, thang 5 la Thang van dong BHXH toan dan."
    }
    sent_at = min(datetime.fromisoformat(x["sent_at"]) for x in lines)
    assert sent_at >= fire_local.replace(microsecond=0)  # not before its time

    table = run_loa("stats", str(campaign_id), env=env).stdout
    assert "completed, 3 messages" in table
    assert table.splitlines()[1].split()[-2:] == ["sent", "total"]
    assert table.splitlines()[-1].split()[-2:] == ["3", "3"]
    assert table.splitlines()[2].split()[-3] == "done"
    as_json = json.loads(run_loa("stats", str(campaign_id), "--json", env=env).stdout)
    assert as_json["by_status"] == stats["by_status"]


def test_card_expiry_reminders_planned_approved_and_sent_over_the_api(
    db_url: str, tmp_path: Path
) -> None:
    """The office's second journey, with four-eyes approval: recipients with card expiry dates;
    a planner key creates a reminder seven days before each date and plans it; another key
    approves and launches; only the person whose card expires in seven days gets it, at the
    minute set, with the date written as Vietnamese do."""
    env = loa_env(
        db_url,
        tmp_path,
        LOA_SCHEDULER_TICK_SECONDS="0.3",
        LOA_WORKER_POLL_SECONDS="0.2",
        LOA_FOUR_EYES_APPROVAL="true",
    )
    zone = ZoneInfo("Asia/Ho_Chi_Minh")
    today = datetime.now(zone).date()
    in_seven, in_eight = today + timedelta(days=7), today + timedelta(days=8)
    (tmp_path / "areas.csv").write_text(AREAS, encoding="utf-8")
    (tmp_path / "recipients.csv").write_text(
        "so_dien_thoai,ho_ten,ma_xa,han_the\n"
        f"0912000001,Nguyễn Văn An,18301,{in_seven:%d/%m/%Y}\n"
        f"0912000002,Trần Thị Bình,18302,{in_eight:%d/%m/%Y}\n"
        "0912000003,Lê Văn Cường,18301,\n",
        encoding="utf-8",
    )
    run_loa("areas", "import", str(tmp_path / "areas.csv"), env=env)
    run_loa("recipients", "import", str(tmp_path / "recipients.csv"), env=env)
    planner = run_loa("apikey", "create", "--role", "planner", env=env).stdout.strip()
    approver = run_loa("apikey", "create", "--role", "approver", env=env).stdout.strip()

    port = _free_port()
    server = subprocess.Popen(
        [LOA, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}/api/v1/campaigns"

    def call(key: str, path: str = "", body: object = None) -> httpx.Response:
        return httpx.post(
            f"{base}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )

    try:
        _wait_for(lambda: _answers(f"http://127.0.0.1:{port}/health", server), "loa serve")
        # The reminder's minute is set now that everything is up: it must be after the launch.
        fire_local = datetime.now(zone) + timedelta(seconds=15)
        spec = {
            "name": "Nhắc hạn thẻ BHYT",
            "waves": [
                {
                    "name": "Nhắc hạn thẻ",
                    "channel": "sms",
                    "class": "care",
                    "relative": {
                        "attribute": "han_the",
                        "offset": "-7d",
                        "at": fire_local.strftime("%H:%M:%S"),
                    },
                    "window": "always",
                    "audience": {"areas": ["42"]},
                    "template": "{{ name }}: the BHYT het han ngay {{ han_the | vn_date }}.",
                    "unaccent": True,
                }
            ],
        }
        created = call(planner, "", spec)
        assert created.status_code == 201, created.text
        campaign_id = created.json()["id"]
        plan = call(planner, f"/{campaign_id}/plan").json()
        assert (plan["waves"][0]["to_send"], plan["waves"][0]["occurrences"]) == (2, 2)
        refused = call(planner, f"/{campaign_id}/approve")
        assert refused.status_code == 403  # a planner key does not approve
        assert call(approver, f"/{campaign_id}/approve").status_code == 200
        assert call(approver, f"/{campaign_id}/launch").status_code == 200

        def reminded() -> bool:
            stats = httpx.get(
                f"{base}/{campaign_id}/stats",
                headers={"Authorization": f"Bearer {approver}"},
                timeout=5,
            ).json()
            return bool(stats["by_status"]["sent"] == 1)

        _wait_for(reminded, "the reminder to go out")
    finally:
        server.terminate()
        server.wait(timeout=30)

    lines = [json.loads(x) for x in (tmp_path / "sink.jsonl").read_text("utf-8").splitlines()]
    assert [(x["to"], x["body"]) for x in lines] == [
        ("+84912000001", f"Nguyen Van An: the BHYT het han ngay {in_seven:%d/%m/%Y}.")
    ]
    assert datetime.fromisoformat(lines[0]["sent_at"]) >= fire_local.replace(microsecond=0)


def _answers(url: str, server: subprocess.Popen[str]) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        assert server.poll() is None, server.stdout.read() if server.stdout else ""
        return False
