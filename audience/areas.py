"""Importing the area hierarchy (province > district > commune) from a CSV file."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NoReturn

from sqlmodel import Session, select

from audience.csvfile import header_key, read_csv
from loa.errors import ImportFileError, InvalidInput
from loa.models import Area, AreaLevel

COLUMNS: Final = ("code", "name", "level", "parent_code")
# A parent is always of a higher level. Communes may hang directly under a province: the 2025
# reform removed the district level in law, and some provinces already load their data that way.
_RANK: Final[Mapping[str, int]] = {
    AreaLevel.PROVINCE: 0,
    AreaLevel.DISTRICT: 1,
    AreaLevel.COMMUNE: 2,
}
# Codes become segments of `path` and are matched with LIKE '/42/%', so "/", "%" and "_" would
# corrupt every "everything under X" query.
_CODE: Final = re.compile(r"[0-9A-Za-z-]{1,16}", re.ASCII)
_NAME_MAX: Final = 200
_PATH_MAX: Final = 255  # the width of area.path


@dataclass(frozen=True, slots=True)
class AreaImportResult:
    rows_read: int
    inserted: int
    # Existing areas that changed, including ones not in the file whose path changed because an
    # ancestor in the file moved.
    updated: int
    unchanged: int


@dataclass(frozen=True, slots=True)
class _Node:
    name: str
    level: str
    parent_code: str | None
    line: int | None  # None: only in the database


def import_areas(session: Session, path: Path) -> AreaImportResult:
    """Upsert the areas of a `code,name,level,parent_code` CSV file by code and compute their paths.

    Parents may come before or after their children in the file, or already be in the database.
    Any bad row fails the whole file with InvalidInput naming the file and the line; nothing is
    written then, as long as the caller rolls its transaction back.
    """
    display = str(path)
    return _upsert_areas(session, _read_rows(path, display), display)


def _upsert_areas(session: Session, from_file: dict[str, _Node], display: str) -> AreaImportResult:
    """Upsert `from_file` by code (parents in it, in the database, or both) and compute paths.
    Fails with InvalidInput naming `display` and the node's line before writing anything."""
    existing = {area.code: area for area in session.scalars(select(Area))}

    nodes: dict[str, _Node] = {
        code: _Node(area.name, area.level, area.parent_code, line=None)
        for code, area in existing.items()
    }
    nodes.update(from_file)

    def fail(line: int | None, problem: str) -> NoReturn:
        raise InvalidInput(f"{display}, line {line}: {problem}")

    for code, node in from_file.items():
        if node.parent_code is not None and node.parent_code not in nodes:
            fail(
                node.line,
                f"parent_code {node.parent_code} of {code} is neither in this file "
                "nor in the database",
            )
    paths = _paths(nodes, fail)
    for code, node in from_file.items():
        if len(paths[code]) > _PATH_MAX:
            fail(node.line, f"{code} is nested too deeply (path longer than {_PATH_MAX})")
    for code, node in nodes.items():
        parent = nodes[node.parent_code] if node.parent_code is not None else None
        if parent is None or (node.line is None and parent.line is None):
            continue  # only judge what this file brings
        child_rank, parent_rank = _RANK.get(node.level), _RANK.get(parent.level)
        if child_rank is not None and parent_rank is not None and parent_rank >= child_rank:
            fail(
                node.line if node.line is not None else parent.line,
                f"{node.level} {code} cannot be under {parent.level} {node.parent_code}",
            )

    # Parents first, so the self-referencing foreign key is satisfied row by row.
    new_codes = sorted(
        (code for code in from_file if code not in existing), key=lambda c: paths[c].count("/")
    )
    session.add_all(
        Area(
            code=code,
            name=from_file[code].name,
            level=from_file[code].level,
            parent_code=from_file[code].parent_code,
            path=paths[code],
        )
        for code in new_codes
    )
    session.flush()  # inserts before updates: an existing area may move under a new one

    updated = unchanged = 0
    for code, area in existing.items():
        node = nodes[code]
        wanted = (node.name, node.level, node.parent_code, paths[code])
        if (area.name, area.level, area.parent_code, area.path) != wanted:
            area.name, area.level, area.parent_code, area.path = wanted
            updated += 1
        elif code in from_file:
            unchanged += 1
    session.flush()
    return AreaImportResult(
        rows_read=len(from_file), inserted=len(new_codes), updated=updated, unchanged=unchanged
    )


def _read_rows(path: Path, display: str) -> dict[str, _Node]:
    rows: dict[str, _Node] = {}
    with read_csv(path) as table:
        columns: dict[str, int] = {}
        for index, header in enumerate(table.header):
            columns.setdefault(header_key(header), index)
        missing = [column for column in COLUMNS if column not in columns]
        if missing:
            found = ", ".join(h.strip() for h in table.header if h.strip()) or "none"
            raise ImportFileError(
                f"{display}: missing column {', '.join(missing)}; an area file has the columns "
                f"{','.join(COLUMNS)} (found: {found})"
            )
        for line, cells in table.rows:
            values = {
                column: unicodedata.normalize("NFC", cells[index].strip())
                if index < len(cells)
                else ""
                for column, index in columns.items()
            }
            code, name = values["code"], values["name"]
            level, parent_code = values["level"].lower(), values["parent_code"]

            def fail(problem: str, line: int = line) -> NoReturn:
                raise InvalidInput(f"{display}, line {line}: {problem}")

            if not _CODE.fullmatch(code):
                fail(f"code {code!r} is not 1 to 16 letters, digits or dashes")
            if code in rows:
                fail(f"code {code} is already on line {rows[code].line}")
            if not name:
                fail(f"area {code} has no name")
            if len(name) > _NAME_MAX:
                fail(f"name of {code} is longer than {_NAME_MAX} characters")
            if level not in _RANK:
                fail(f"level {values['level']!r} of {code} is not one of {', '.join(_RANK)}")
            if level == AreaLevel.PROVINCE and parent_code:
                fail(f"province {code} cannot have a parent_code ({parent_code})")
            if level != AreaLevel.PROVINCE and not parent_code:
                fail(f"{level} {code} needs a parent_code")
            if parent_code == code:
                fail(f"area {code} is its own parent")
            rows[code] = _Node(name, level, parent_code or None, line)
    return rows


def _paths(
    nodes: Mapping[str, _Node], fail: Callable[[int | None, str], NoReturn]
) -> dict[str, str]:
    """Every area's path from the root ("/42/436/18301/"); fails on a cycle of parents."""
    paths: dict[str, str] = {}
    for start in nodes:
        chain: list[str] = []
        on_chain: set[str] = set()
        code: str | None = start
        while code is not None and code not in paths:
            if code in on_chain:
                cycle = [*chain[chain.index(code) :], code]
                lines = [line for c in cycle if (line := nodes[c].line) is not None]
                fail(min(lines, default=None), f"parent_code forms a cycle: {' -> '.join(cycle)}")
            chain.append(code)
            on_chain.add(code)
            code = nodes[code].parent_code
        prefix = paths[code] if code is not None else "/"
        for member in reversed(chain):
            prefix = f"{prefix}{member}/"
            paths[member] = prefix
    return paths


@dataclass(frozen=True, slots=True)
class ProvinceInfo:
    code: str
    name: str


def dataset_version() -> str:
    """Which release of the `vietnam-provinces` package the areas are loaded from, and the date
    its data were taken from the General Statistics Office's list."""
    import vietnam_provinces

    version, data = vietnam_provinces.__version__, vietnam_provinces.__data_version__
    return f"vietnam-provinces {version} (data of {data})"


def provinces() -> list[ProvinceInfo]:
    """The provinces of the dataset, by code: what `loa areas load --province` accepts."""
    from vietnam_provinces import Province

    return sorted(
        (ProvinceInfo(_province_code(p.code), p.name) for p in Province.iter_all()),
        key=lambda p: p.code,
    )


def load_province(session: Session, province_code: str) -> AreaImportResult:
    """Upsert one province and every unit under it from the `vietnam-provinces` dataset.

    Re-running is harmless (what has not changed is counted unchanged) and picks up a newer
    release of the dataset: names are updated and units move to their new parent. The current
    release follows the 2025 reform, with communes (xã, phường, đặc khu) directly under the
    province; areas already in the database that the dataset does not have (districts of an
    older list, a culture centre's service areas) are kept. Raises InvalidInput for a code that
    is not a province of the dataset.
    """
    from vietnam_provinces import Province, ProvinceCode, Ward

    wanted = province_code.strip()
    province = None
    if wanted.isascii() and wanted.isdigit():
        try:
            province = Province.from_code(ProvinceCode(int(wanted)))
        except ValueError:
            province = None
    if province is None:
        raise InvalidInput(
            f"unknown province code {province_code!r}: {dataset_version()} has "
            f"{len(provinces())} provinces (those after the 2025 reform, when many merged); "
            "`loa areas provinces` lists their codes (two digits, e.g. 42 for Hà Tĩnh)"
        )
    parent = _province_code(province.code)
    nodes: dict[str, _Node] = {parent: _Node(province.name, AreaLevel.PROVINCE, None, line=1)}
    wards = sorted(Ward.iter_by_province(province.code), key=lambda w: int(w.code))
    for number, ward in enumerate(wards, start=2):
        # Codes are zero-padded as in the statistics office's list ("00004"), which is also how
        # office files write them; the dataset's integers would lose the leading zeros.
        nodes[f"{int(ward.code):05d}"] = _Node(ward.name, AreaLevel.COMMUNE, parent, line=number)
    return _upsert_areas(session, nodes, f"{dataset_version()}, province {parent}")


def _province_code(code: int) -> str:
    return f"{int(code):02d}"
