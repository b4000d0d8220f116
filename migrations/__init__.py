"""Alembic migrations, the same files for SQLite and PostgreSQL; `loa db upgrade` applies them."""
