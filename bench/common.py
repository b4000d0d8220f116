"""What the benchmarks share: a fresh PostgreSQL database, and the environment of `loa worker`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

LOA = str(Path(sys.executable).parent / "loa")


def recreate_database(url: str) -> None:
    """Drop and create the PostgreSQL database the URL names (never one a test uses)."""
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


def worker_env(url: str, data_dir: str, **settings: str) -> dict[str, str]:
    """`loa worker` on the simulated channel, every window open, quiet logs, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    env.update(
        LOA_DATABASE_URL=url,
        LOA_DATA_DIR=data_dir,
        LOA_SMS_CHANNEL="simulated",
        LOA_WORKER_POLL_SECONDS="0.05",
        LOA_WINDOW_INFO="always",
        LOA_LOG_LEVEL="WARNING",
    )
    env.update(settings)
    return env
