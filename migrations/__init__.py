"""Alembic migrations. The same files run on SQLite and PostgreSQL; `loa db upgrade` applies them."""
