"""The one settings class. Every knob has a default that serves the embedded (SQLite) case."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from loa.errors import LoaError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOA_", extra="ignore")

    data_dir: Path = Path("./data")
    # Empty means the SQLite file data_dir/loa.db; postgresql+psycopg://... selects PostgreSQL.
    database_url: str = ""
    sqlite_busy_timeout_ms: int = Field(default=10_000, ge=0)

    # API server of `loa serve`.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    # Channels: which adapter carries each logical channel of a wave: one name (console,
    # simulated, twilio, gateway:<name>), or an ordered failover list "twilio,gateway:viettel".
    sms_channel: str = "console"
    # File the console channel appends JSON lines to; stdout when unset.
    console_sink: Path | None = None
    # The simulated channel (load tests): latency of each call, and calls in flight at once.
    simulated_latency_ms: float = Field(default=20, ge=0)
    simulated_concurrency: int = Field(default=100, ge=1)
    # Loa's address as the SMS provider reaches it (e.g. https://loa.example.vn): delivery reports
    # are asked for at <public_url>/webhooks/twilio/status, and the webhooks' signatures are
    # checked against this address (behind a proxy, Loa cannot tell it from the request).
    public_url: str = ""
    # Twilio (LOA_SMS_CHANNEL=twilio): the account, and the sender: a number or alphanumeric
    # sender id (twilio_from), or a Messaging Service (twilio_messaging_service_sid) whose pool
    # picks one.
    twilio_account_sid: str = ""
    twilio_auth_token: SecretStr = SecretStr("")
    twilio_from: str = ""
    twilio_messaging_service_sid: str = ""
    # Requests in flight at once from one process (all its dispatch loops share them), and how
    # long one may take before its outcome is called unknown.
    twilio_concurrency: int = Field(default=64, ge=1, le=1000)
    twilio_timeout_seconds: float = Field(default=15, gt=0)
    # The Twilio API's address; empty for Twilio's own. A mock (Prism) or a stub in tests.
    twilio_api_url: str = ""
    # HTTP gateways of brandname SMS aggregators (LOA_SMS_CHANNEL=gateway:<name>): a YAML file
    # with each gateway's URL, authentication, body and answer mapping, validated whole when a
    # worker or the API starts (docs/gateways.example.yaml).
    gateways_file: Path | None = None
    # Failover (LOA_SMS_CHANNEL=twilio,gateway:viettel): an adapter is taken out of service after
    # this many messages in a row failed transiently or ambiguously (at once when it refuses the
    # account or its configuration), and tried again after the cool-down. Per process.
    failover_after_failures: int = Field(default=20, ge=1)
    failover_cooldown_seconds: float = Field(default=300, ge=0)

    # Campaign rules.
    default_timezone: str = "Asia/Ho_Chi_Minh"
    # Send windows per message class, in the campaign's local time; "always" for none.
    # Advertising (qc) follows Decree 91/2020/ND-CP: 07:00-22:00 only.
    window_qc: str = "07:00-22:00"
    window_info: str = "07:00-21:00"
    window_care: str = "07:00-21:00"
    # Frequency caps per recipient and class over a rolling period, "N/24h" ("" for none).
    # Advertising (qc): at most 3 per number per 24 h (Decree 91/2020/ND-CP).
    cap_qc: str = "3/24h"
    cap_info: str = ""
    cap_care: str = ""
    # A wave that fires more than this after its time (the service was down) expires its
    # messages instead of sending them hours late.
    late_after_minutes: int = Field(default=120, ge=1)
    # A message of one occurrence of a recurring or relative wave that has not gone out this long
    # after its time expires (and always when the wave's next occurrence is due).
    occurrence_valid_hours: int = Field(default=24, ge=1)
    require_approval: bool = True
    # Advertising (qc) goes only to numbers with recorded consent (table `consent`, Decree
    # 91/2020): without it the message is suppressed with error code no_consent.
    qc_requires_consent: bool = True
    # Old 11-digit mobile numbers (01xx, before the 2018 conversion) in a recipient import are
    # converted with the prefix table and marked so; false rejects them with the reason instead.
    convert_old_numbers: bool = True
    # Inbound SMS bodies that mean "stop sending me messages", comma-separated; compared without
    # case, diacritics or surrounding punctuation ("Từ chối." is TU CHOI). See audience/optout.py.
    opt_out_keywords: str = "TU CHOI,TUCHOI,HUY,STOP,DUNG"
    # Four-eyes: the approver must be someone other than the campaign's author.
    four_eyes_approval: bool = False

    # Scheduler: how often the active scheduler looks for due waves, and how many
    # recipients one expansion statement inserts (memory stays bounded by this).
    scheduler_tick_seconds: float = Field(default=2.0, gt=0)
    expansion_chunk_size: int = Field(default=20_000, ge=1)

    # Rate limit of the sms channel across all workers: messages per second (0: none), and the
    # most that may leave at once.
    sms_rate_per_second: float = Field(default=0, ge=0)
    sms_burst: int = Field(default=0, ge=0)  # 0: one second's worth

    # Dispatch workers. Each `loa worker` process runs `worker_loops` claim-and-send loops, so that
    # one batch's database work overlaps another's sending (SQLite runs one: it has one writer).
    worker_loops: int = Field(default=4, ge=1)
    worker_batch_size: int = Field(default=200, ge=1)
    worker_poll_seconds: float = Field(default=1.0, gt=0)
    lease_seconds: int = Field(default=120, ge=5)
    max_attempts: int = Field(default=5, ge=1)
    # Transient failures are retried after base * 2^(attempt-1) seconds (jittered), at most max.
    retry_base_seconds: float = Field(default=30, ge=0)
    retry_max_seconds: float = Field(default=3600, ge=0)
    # How often a worker asks its channels about messages whose outcome a crash lost (`unknown`).
    # Only messages unknown for at least one lease period are asked about: a slow worker may
    # still be about to record them.
    reconcile_seconds: float = Field(default=30, gt=0)

    # Planning: what one SMS segment costs (0: not set, the plan gives no cost), in `currency`;
    # how many recipients' texts are rendered to estimate the segments of a wave.
    sms_price_per_segment: float = Field(default=0, ge=0)
    currency: str = "VND"
    plan_sample_size: int = Field(default=2000, ge=1)

    # Recipient imports: the largest file the API accepts (413 above it; the CLI reads files of any
    # size), and the longest physical line of a CSV (a longer one fails the file, naming the line,
    # before it is held in memory).
    import_max_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    import_max_line_bytes: int = Field(default=1024 * 1024, ge=1024)

    log_level: str = "INFO"

    @field_validator("window_qc", "window_info", "window_care", "cap_qc", "cap_info", "cap_care")
    @classmethod
    def _class_rule_parses(cls, value: str, info: ValidationInfo) -> str:
        # The parsers live with the class rules; imported here to keep settings import-light.
        from scheduler.policy import parse_cap
        from scheduler.windows import parse_window

        parse = parse_window if (info.field_name or "").startswith("window") else parse_cap
        try:
            parse(value)
        except LoaError as exc:
            raise ValueError(exc.message) from None
        return value

    @field_validator("opt_out_keywords")
    @classmethod
    def _keywords_parse(cls, value: str) -> str:
        from audience.optout import parse_keywords

        try:
            parse_keywords(value)
        except LoaError as exc:
            raise ValueError(exc.message) from None
        return value

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'loa.db').as_posix()}"
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
