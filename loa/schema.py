"""Bringing a database to the schema this code expects, and checking that it is there."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.schema import SchemaItem

import migrations
from loa.errors import SchemaOutOfDate


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return config


@cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "migrations/versions has no revision"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    config = _alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def require_current(engine: Engine) -> str:
    """The current revision, or SchemaOutOfDate when it is not the one this code needs."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"the database schema is at revision {current or 'none (empty database)'}, "
            f"this version of Loa needs {head}: run `loa db upgrade` first"
        )
    return head


def exists_on(dialect: str) -> Callable[[SchemaItem, str | None, str, bool, object], bool]:
    """An alembic include_object hook: leaves out of a comparison the schema items declared for
    another database only (`.ddl_if(dialect=...)`, such as the GIN index on recipient.tags), which
    alembic's autogenerate does not itself honour."""

    def include(
        item: SchemaItem, _name: str | None, _kind: str, _reflected: bool, _other: object
    ) -> bool:
        condition = getattr(item, "_ddl_if", None)
        return condition is None or condition.dialect in (None, dialect)

    return include
