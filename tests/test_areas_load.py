"""`loa areas load --province`: areas seeded from the real vietnam-provinces dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import select
from vietnam_provinces import ProvinceCode, Ward

from audience.areas import AreaImportResult, import_areas, load_province, provinces
from loa.db import session_scope
from loa.errors import InvalidInput
from loa.models import Area
from tests.clirun import loa_env, run_loa

ROOT = Path(__file__).resolve().parent.parent
# Hà Tĩnh in the dataset's own terms, so that the test reads the package rather than a copy of it.
HA_TINH_WARDS = {f"{int(w.code):05d}": w.name for w in Ward.iter_by_province(ProvinceCode(42))}


def areas(engine: Engine) -> dict[str, Area]:
    with session_scope(engine) as session:
        return {a.code: a for a in session.scalars(select(Area))}


def test_loading_ha_tinh_seeds_the_province_and_its_communes(engine: Engine) -> None:
    assert len(HA_TINH_WARDS) > 50  # a real province, not an empty or truncated dataset
    with session_scope(engine) as session:
        result = load_province(session, "42")
    assert result == AreaImportResult(
        rows_read=1 + len(HA_TINH_WARDS), inserted=1 + len(HA_TINH_WARDS), updated=0, unchanged=0
    )
    loaded = areas(engine)
    assert loaded["42"].name == "Hà Tĩnh"
    assert (loaded["42"].level, loaded["42"].parent_code, loaded["42"].path) == (
        "province",
        None,
        "/42/",
    )
    # After the 2025 reform the dataset has no districts: communes hang under the province.
    assert loaded["18754"].name == "Phường Sông Trí"
    assert (loaded["18754"].level, loaded["18754"].parent_code, loaded["18754"].path) == (
        "commune",
        "42",
        "/42/18754/",
    )
    assert {c: a.name for c, a in loaded.items() if c != "42"} == HA_TINH_WARDS
    assert all(a.path == f"/42/{c}/" for c, a in loaded.items() if c != "42")


def test_loading_again_changes_nothing_and_says_so(engine: Engine) -> None:
    with session_scope(engine) as session:
        load_province(session, "42")
    with session_scope(engine) as session:
        again = load_province(session, " 042 ")  # the way a code may be typed
    assert again == AreaImportResult(
        rows_read=1 + len(HA_TINH_WARDS), inserted=0, updated=0, unchanged=1 + len(HA_TINH_WARDS)
    )
    assert len(areas(engine)) == 1 + len(HA_TINH_WARDS)


def test_loading_over_an_older_hierarchy_moves_communes_and_keeps_the_districts(
    engine: Engine, tmp_path: Path
) -> None:
    older = tmp_path / "older.csv"
    older.write_text(
        "code,name,level,parent_code\n"
        "42,Tỉnh Hà Tĩnh,province,\n"
        "436,Thị xã Kỳ Anh,district,42\n"
        "18754,Phường Sông Trí (cũ),commune,436\n"
        "99001,Cụm văn hoá Bắc,district,42\n",
        encoding="utf-8",
    )
    with session_scope(engine) as session:
        import_areas(session, older)
    with session_scope(engine) as session:
        result = load_province(session, "42")
    # The province and 18754 are renamed (18754 also moves), the other communes are new.
    assert (result.inserted, result.updated, result.unchanged) == (len(HA_TINH_WARDS) - 1, 2, 0)
    loaded = areas(engine)
    assert loaded["42"].name == "Hà Tĩnh"
    assert (loaded["18754"].name, loaded["18754"].parent_code, loaded["18754"].path) == (
        "Phường Sông Trí",
        "42",
        "/42/18754/",
    )
    # What the dataset does not know stays: a district of the old list, a service area.
    assert loaded["436"].path == "/42/436/"
    assert loaded["99001"].level == "district"


# 02 was Hà Giang, merged into Tuyên Quang (08) by the 2025 reform.
@pytest.mark.parametrize("code", ["43", "02", "4 2", "ha-tinh", "", "٤٢"])
def test_an_unknown_province_code_is_refused_and_says_where_codes_are(
    engine: Engine, code: str
) -> None:
    with (
        pytest.raises(InvalidInput, match=r"unknown province code .*`loa areas provinces`"),
        session_scope(engine) as session,
    ):
        load_province(session, code)
    assert areas(engine) == {}


def test_the_province_list_comes_from_the_dataset() -> None:
    listed = {p.code: p.name for p in provinces()}
    assert listed["42"] == "Hà Tĩnh"
    assert listed["01"] == "Thành phố Hà Nội"
    assert all(len(code) == 2 and code.isdigit() for code in listed)


def test_the_cli_loads_reports_and_refuses(db_url: str, tmp_path: Path) -> None:
    # PYTHONPATH makes the console script import this tree's cli.py and audience package.
    env = loa_env(db_url, tmp_path, PYTHONPATH=str(ROOT))
    n = 1 + len(HA_TINH_WARDS)
    first = run_loa("areas", "load", "--province", "42", env=env)
    assert f"{n} areas, {n} added, 0 updated, 0 unchanged" in first.stdout
    second = run_loa("areas", "load", "--province", "42", env=env)
    assert f"{n} areas, 0 added, 0 updated, {n} unchanged" in second.stdout
    listed = run_loa("areas", "provinces", env=env)
    assert "42  Hà Tĩnh" in listed.stdout.splitlines()
    refused = run_loa("areas", "load", "--province", "43", env=env, check=False)
    assert refused.returncode != 0
    assert "unknown province code '43'" in refused.stderr
    assert "loa areas provinces" in refused.stderr
    assert "Traceback" not in refused.stderr
