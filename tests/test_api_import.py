"""POST /api/v1/recipients/import on SQLite and PostgreSQL: who may import, the JSON and CSV
answers, dry runs, mappings, and every file that must fail whole (with nothing written)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlmodel import col

from api.app import create_app
from loa.apikeys import Role, create_key
from loa.db import session_scope
from loa.models import AuditEntry
from loa.settings import Settings
from tests.conftest import FakeClock
from tests.importfiles import PHONES, REJECTED, XLSX_EXTRA_PHONES, messy_csv, messy_xlsx
from tests.test_import import recipients
from tests.test_import_formats import load_areas

URL = "/api/v1/recipients/import"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture
def keys(engine: Engine, clock: FakeClock, tmp_path: Path) -> dict[Role, str]:
    load_areas(engine, tmp_path)  # a district key needs its area
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
    settings.import_max_bytes = 60 * 1024 * 1024
    with TestClient(create_app(settings, engine, clock=clock)) as test_client:
        yield test_client


def post(
    client: TestClient, key: str, body: bytes, content_type: str = "text/csv", **params: str
) -> httpx.Response:
    response: httpx.Response = client.post(
        URL,
        content=body,
        params=params,
        headers={"Authorization": f"Bearer {key}", "Content-Type": content_type},
    )
    return response


def test_a_planner_imports_a_messy_csv_and_gets_the_rejected_rows(
    client: TestClient, keys: dict[Role, str], engine: Engine, tmp_path: Path
) -> None:
    load_areas(engine, tmp_path)
    body = messy_csv(tmp_path / "x.csv").read_bytes()
    response = post(client, keys[Role.PLANNER], body, filename="danh-sach.csv")
    assert response.status_code == 200, response.text
    result = response.json()
    assert {k: result[k] for k in ("source", "dry_run", "rows_read", "inserted", "updated")} == {
        "source": "danh-sach.csv",
        "dry_run": False,
        "rows_read": 15,
        "inserted": 9,
        "updated": 0,
    }
    assert (result["converted"], result["rejected_count"]) == (2, 5)
    assert [tuple(r.values()) for r in result["rejected"]] == REJECTED
    assert sorted(recipients(engine)) == PHONES
    with session_scope(engine) as session:
        entries = session.scalars(
            select(AuditEntry).where(col(AuditEntry.action) == "recipients.import")
        ).all()
        assert [(e.actor, e.entity_id, e.after) for e in entries] == [
            (
                f"key:{keys[Role.PLANNER].split('_')[1]}",
                "danh-sach.csv",
                {
                    "file": "danh-sach.csv",
                    "rows_read": 15,
                    "inserted": 9,
                    "updated": 0,
                    "converted": 2,
                    "rejected": 5,
                },
            )
        ]


def test_an_admin_imports_a_workbook_as_csv_report_and_dry_runs_first(
    client: TestClient, keys: dict[Role, str], engine: Engine, tmp_path: Path
) -> None:
    load_areas(engine, tmp_path)
    body = messy_xlsx(tmp_path / "x.xlsx").read_bytes()
    dry = post(client, keys[Role.ADMIN], body, XLSX, dry_run="true")
    assert dry.json()["inserted"] == 10 and dry.json()["dry_run"] is True
    assert recipients(engine) == {}
    with session_scope(engine) as session:  # a dry run changes nothing, so audits nothing
        assert (
            session.scalars(
                select(AuditEntry).where(col(AuditEntry.action) == "recipients.import")
            ).first()
            is None
        )

    response = client.post(
        URL,
        content=body,
        headers={
            "Authorization": f"Bearer {keys[Role.ADMIN]}",
            "Content-Type": XLSX,
            "Accept": "text/csv",
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["x-loa-inserted"] == "10"
    assert response.headers["x-loa-rejected"] == "7"
    assert response.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0] == ["line", "column", "value", "reason"]
    assert [(r[0], r[1]) for r in rows[1:]][-2:] == [("17", "Ghi chú"), ("18", "Ngày hết hạn thẻ")]
    assert sorted(recipients(engine)) == sorted(PHONES + XLSX_EXTRA_PHONES)

    again = post(client, keys[Role.ADMIN], body, XLSX, format="csv")
    assert again.headers["x-loa-updated"] == "10"


def test_a_mapping_is_given_as_query_parameters(
    client: TestClient, keys: dict[Role, str], engine: Engine
) -> None:
    body = "Tên người;Số liên hệ\nNguyễn Văn An;0912000101\n".encode()
    refused = post(client, keys[Role.PLANNER], body)
    assert refused.status_code == 422
    assert "no phone column" in refused.json()["error"]["message"]
    response = client.post(
        URL + "?column=phone%3DSố liên hệ&column=name%3DTên người",
        content=body,
        headers={"Authorization": f"Bearer {keys[Role.PLANNER]}", "Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    assert recipients(engine)["+84912000101"].name == "Nguyễn Văn An"
    bad = post(client, keys[Role.PLANNER], body, column="email=Thư")
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "column"


@pytest.mark.parametrize("role", [Role.APPROVER, Role.OPERATOR, Role.DISTRICT])
def test_only_planners_and_admins_may_import(
    client: TestClient, keys: dict[Role, str], engine: Engine, role: Role
) -> None:
    response = post(client, keys[role], b"phone\n0912000101\n")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    no_key = client.post(URL, content=b"phone\n0912000101\n")
    assert no_key.status_code == 401
    assert recipients(engine) == {}


def _formula_workbook() -> bytes:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["SĐT", "Họ tên"])
    sheet.append(["0912000101", '=PROPER("an")'])
    sheet.append(["0912000102", "Bình"])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def test_a_formula_cell_rejects_its_row_and_the_others_land(
    client: TestClient, keys: dict[Role, str], engine: Engine
) -> None:
    response = post(client, keys[Role.PLANNER], _formula_workbook(), XLSX)
    assert response.status_code == 200
    [row] = response.json()["rejected"]
    assert (row["line"], row["column"], row["value"]) == (2, "Họ tên", '=PROPER("an")')
    assert row["reason"].startswith("formula cell")
    assert sorted(recipients(engine)) == ["+84912000102"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", r"request body is empty"),
        (
            b"ho_ten,dia_chi\nAn,Thon 1\n",
            r"request body: no phone column \(found: ho_ten, dia_chi\)",
        ),
        (bytes(range(256)) * 8, r"request body is not a CSV file \(it contains binary data\)"),
        (
            b"phone,name,ghi_chu\n0912000101,An,x\n0912000102,Binh,x\n0912000103,Cuong,"
            + b"y" * (50 * 1024 * 1024)
            + b"\n",
            r"request body, line 4: longer than 1,048,576 bytes",
        ),
        (
            "phone,Ghi chú,ghi chú,Ghi chú\n0912000101,a,b,c\n".encode(),
            r"the header 'Ghi chú' appears more than once \(columns 2 and 4\)",
        ),
        (
            b"PK\x03\x04" + bytes(100),
            r"request body starts like a zip file \(\.xlsx\) but is damaged",
        ),
    ],
    ids=["empty", "no-phone", "binary", "50MB-line", "duplicate-header", "broken-zip"],
)
def test_bad_files_are_422_with_the_reason_and_write_nothing(
    client: TestClient, keys: dict[Role, str], engine: Engine, body: bytes, message: str
) -> None:
    response = post(client, keys[Role.PLANNER], body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_file"
    assert re.search(message, error["message"]), error["message"]
    assert recipients(engine) == {}


def test_a_body_over_the_limit_is_413_and_a_form_is_415(
    settings: Settings, engine: Engine, clock: FakeClock, keys: dict[Role, str]
) -> None:
    settings.import_max_bytes = 1000
    with TestClient(create_app(settings, engine, clock=clock)) as client:
        body = b"phone\n" + b"0912000101\n" * 200
        response = post(client, keys[Role.PLANNER], body)
        assert response.status_code == 413
        assert (
            "larger than 1,000 bytes (LOA_IMPORT_MAX_BYTES)" in response.json()["error"]["message"]
        )

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
            yield from (body[i : i + 100] for i in range(0, len(body), 100))

        streamed = client.post(
            URL,
            content=chunks(),
            headers={"Authorization": f"Bearer {keys[Role.PLANNER]}", "Content-Type": "text/csv"},
        )
        assert streamed.status_code == 413

        form = client.post(
            URL,
            files={"file": ("x.csv", b"phone\n0912000101\n", "text/csv")},
            headers={"Authorization": f"Bearer {keys[Role.PLANNER]}"},
        )
        assert form.status_code == 415
        assert "--data-binary" in form.json()["error"]["message"]
    assert recipients(engine) == {}


def test_a_workbook_sheet_is_chosen_with_a_query_parameter(
    client: TestClient, keys: dict[Role, str], engine: Engine, tmp_path: Path
) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    first = workbook.active
    assert first is not None
    first.title = "Thôn 1"
    first.append(["SĐT"])
    first.append(["0912000101"])
    workbook.create_sheet("Thôn 2").append(["SĐT"])
    workbook["Thôn 2"].append(["0912000102"])
    workbook.save(tmp_path / "w.xlsx")
    body = (tmp_path / "w.xlsx").read_bytes()
    xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

    default = post(client, keys[Role.PLANNER], body, xlsx)
    assert default.status_code == 200, default.text
    assert (default.json()["inserted"], default.json()["unread_sheets"]) == (1, ["Thôn 2"])
    chosen = post(client, keys[Role.PLANNER], body, xlsx, sheet="Thôn 2")
    assert (chosen.json()["inserted"], chosen.json()["unread_sheets"]) == (1, ["Thôn 1"])
    wrong = post(client, keys[Role.PLANNER], body, xlsx, sheet="Thôn 9")
    assert wrong.status_code == 422
    assert "has no sheet 'Thôn 9'" in wrong.json()["error"]["message"]
    assert set(recipients(engine)) == {"+84912000101", "+84912000102"}
