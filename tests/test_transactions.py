"""run_transaction on both databases: a unit of work the database cancelled to settle a conflict
(a deadlock) runs again whole, and leaves one result; any other error, or a conflict on every
attempt, comes out with nothing written."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session, col

from loa.db import run_transaction, session_scope
from loa.models import Area
from tests.builders import raise_conflict


def _areas(engine: Engine) -> list[str]:
    with session_scope(engine) as session:
        return list(session.scalars(select(col(Area.code)).order_by(col(Area.code))))


def _add_area(session: Session, code: str) -> None:
    session.add(Area(code=code, name=f"Tỉnh {code}", level="province", path=f"/{code}/"))
    session.flush()


def test_a_unit_of_work_cancelled_by_a_deadlock_runs_again_whole(engine: Engine) -> None:
    calls: list[int] = []

    def work(session: Session) -> int:
        calls.append(1)
        _add_area(session, "42")
        if len(calls) == 1:
            raise_conflict(session)
        return len(calls)

    assert run_transaction(engine, work) == 2
    # The first attempt's row went with its transaction; the second's is the only one.
    assert _areas(engine) == ["42"]


def test_other_errors_are_not_retried(engine: Engine) -> None:
    calls: list[int] = []

    def work(session: Session) -> None:
        calls.append(1)
        _add_area(session, "42")
        _add_area(session, "42")

    with pytest.raises(IntegrityError):
        run_transaction(engine, work)
    assert len(calls) == 1
    assert _areas(engine) == []


def test_a_conflict_on_every_attempt_comes_out_with_nothing_written(engine: Engine) -> None:
    calls: list[int] = []

    def work(session: Session) -> None:
        calls.append(1)
        _add_area(session, f"{40 + len(calls)}")
        raise_conflict(session)

    with pytest.raises(DBAPIError) as caught:
        run_transaction(engine, work, attempts=3)
    assert getattr(caught.value.orig, "sqlstate", None) == "40P01"
    assert len(calls) == 3
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Area)) == 0
