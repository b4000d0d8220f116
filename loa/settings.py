"""The one settings class. Every knob has a default that serves the embedded (SQLite) case."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOA_", extra="ignore")

    data_dir: Path = Path("./data")
    # Empty means the SQLite file data_dir/loa.db; postgresql+psycopg://... selects PostgreSQL.
    database_url: str = ""
    sqlite_busy_timeout_ms: int = Field(default=10_000, ge=0)

    # API server of `loa serve`.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    # Channels: which adapter carries each logical channel of a wave.
    sms_channel: str = "console"
    # File the console channel appends JSON lines to; stdout when unset.
    console_sink: Path | None = None

    # Campaign rules.
    default_timezone: str = "Asia/Ho_Chi_Minh"
    require_approval: bool = True
    # Four-eyes: the approver must be someone other than the campaign's author.
    four_eyes_approval: bool = False

    # Scheduler: how often the active scheduler looks for due waves, and how many
    # recipients one expansion statement inserts (memory stays bounded by this).
    scheduler_tick_seconds: float = Field(default=2.0, gt=0)
    expansion_chunk_size: int = Field(default=20_000, ge=1)

    # Dispatch workers.
    worker_batch_size: int = Field(default=200, ge=1)
    worker_poll_seconds: float = Field(default=1.0, gt=0)
    lease_seconds: int = Field(default=120, ge=5)
    max_attempts: int = Field(default=5, ge=1)
    # Transient failures are retried after base * 2^(attempt-1) seconds (jittered), at most max.
    retry_base_seconds: float = Field(default=30, ge=0)
    retry_max_seconds: float = Field(default=3600, ge=0)

    log_level: str = "INFO"

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'loa.db').as_posix()}"
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
