"""Alembic environment: `loa db upgrade` passes its connection; plain `alembic` uses settings."""

from alembic import context
from sqlmodel import SQLModel

import loa.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from loa.db import make_engine
from loa.schema import exists_on
from loa.settings import Settings

config = context.config
target_metadata = SQLModel.metadata


def run_migrations(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=exists_on(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    engine = make_engine(Settings())
    with engine.connect() as conn:
        run_migrations(conn)
    engine.dispose()
