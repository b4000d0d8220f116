"""The one settings class. Every knob has a default that serves the embedded (SQLite) case."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from loa.errors import LoaError

# What MPEG-1, 2 and 2.5 Layer III (LAME) can write.
MP3_SAMPLE_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
MP3_BITRATES_KBPS = frozenset({8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 256, 320})


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
    # case, diacritics or surrounding punctuation ("Từ chối." is TU CHOI). See audience/keywords.py.
    opt_out_keywords: str = "TU CHOI,TUCHOI,HUY,STOP,DUNG"
    # Inbound SMS bodies that mean "I agree to receive advertising" (the reply to the one consent
    # request, labelled DKQC, that Decree 91/2020 allows): the sender's consent is recorded, and an
    # opt-out the same number sent earlier is lifted. Same comparison; none may be an opt-out.
    # Not "đồng ý" ("I agree"): people answer care messages with it, and it must not be taken
    # for consent to advertising.
    opt_in_keywords: str = "DKQC,DK QC"
    # Decree 91/2020/ND-CP content rules for advertising (qc), checked when a campaign is planned,
    # approved and launched: the text starts with `qc_label`; it tells how to refuse further
    # adverts by naming one of `qc_refusal_keywords` (comma-separated; each must be an opt-out
    # keyword, or a reply following the instructions would not opt out) and, when set,
    # `qc_refusal_number` (the short code to send it to); and the wave has a brandname (the
    # wave's or the campaign's `brandname`, else `sms_brandname`).
    qc_label: str = Field(default="[QC]", min_length=1)
    qc_refusal_keywords: str = "TU CHOI"
    qc_refusal_number: str = ""
    sms_brandname: str = ""
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
    # Prices per segment by channel adapter, carrier and class, as JSON, with "*" for any:
    # {"twilio": {"*": {"*": 1900}}, "*": {"viettel": {"qc": 800, "*": 350}}}. The most specific
    # entry wins (adapter before carrier before class); sms_price_per_segment when none matches.
    sms_prices: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    currency: str = "VND"
    plan_sample_size: int = Field(default=2000, ge=1)
    # How many of the recipients who lack a template variable the plan names (with the count).
    plan_name_missing: int = Field(default=10, ge=0)
    # The longest text one SMS may carry (Twilio's limit; a longer body is refused at plan time).
    sms_max_characters: int = Field(default=1600, ge=1)
    # The most numbers one test send (loa campaign test-send) may go to.
    test_send_max_numbers: int = Field(default=10, ge=1)

    # The largest request body the API reads (JSON bodies, webhooks): 413 above it, judged from
    # Content-Length and again while the body streams in. Imports and audio have their own,
    # larger limits (import_max_bytes, audio_max_bytes).
    api_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Idempotency-Key (api/idempotency.py): how long a key's response is kept and replayed, and
    # how long a request of a route whose work commits on its own (imports, audio, test sends)
    # holds its key before a retry may take it over (the first is then presumed dead).
    idempotency_ttl_hours: float = Field(default=24, gt=0)
    idempotency_lock_seconds: float = Field(default=600, gt=0)

    # Recipient imports: the largest file the API accepts (413 above it; the CLI reads files of any
    # size), and the longest physical line of a CSV (a longer one fails the file, naming the line,
    # before it is held in memory).
    import_max_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    import_max_line_bytes: int = Field(default=1024 * 1024, ge=1024)

    # Loudspeaker broadcasts (broadcast/): how long a slot lasts. Items that do not fit in it
    # are kept in order of priority and the rest reported as overflow, never silently cut.
    broadcast_slot_minutes: int = Field(default=30, ge=1, le=24 * 60)
    # How long the API keeps a serialised playlist at most; the broadcast data's version retires
    # it sooner (broadcast/cache.py). 0: no cache.
    playlist_cache_seconds: float = Field(default=300, ge=0)
    # How stale the API's in-process caches (verified keys, area paths, playlists) may be: the
    # data's versions are read at most this often (api/readcache.py), so a revoked key is
    # refused, and a changed playlist served, in every process at most this long after the
    # change commits. 0: read on every request.
    cache_recheck_seconds: float = Field(default=1.0, ge=0)
    # Audio for loudspeakers (audio/): files larger than this are refused (413 from the API);
    # lengths outside these bounds are refused.
    audio_max_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    audio_min_seconds: float = Field(default=1.0, gt=0)
    audio_max_seconds: float = Field(default=3600.0, gt=0)
    # Loudness target (ITU-R BS.1770 / EBU R128): integrated loudness, and the true-peak ceiling.
    audio_target_lufs: float = Field(default=-16.0, ge=-40, le=-5)
    audio_true_peak_dbtp: float = Field(default=-1.0, ge=-9, le=0)
    # Leading and trailing sound quieter than this (RMS, dBFS, judged at the target loudness) is
    # silence and is trimmed.
    audio_silence_threshold_db: float = Field(default=-50.0, ge=-90, le=-20)
    # The one loudspeaker profile: mono MP3 at this bitrate and sample rate.
    audio_bitrate_kbps: int = 64
    audio_sample_rate: int = 44100

    # Loudspeaker controllers that take pushed playlists (channels/loudspeaker_push.py): the YAML
    # or JSON file of endpoints by area (unset: none; see docs/loudspeaker-endpoints.example.yaml).
    loudspeaker_endpoints_file: Path | None = None
    # Attempts per push, and the backoff between them: base * 2^(attempt-1) seconds (jittered),
    # at most max; a Retry-After above max ends the push as failed rather than waiting longer.
    loudspeaker_max_attempts: int = Field(default=5, ge=1, le=20)
    loudspeaker_retry_base_seconds: float = Field(default=1.0, ge=0)
    loudspeaker_retry_max_seconds: float = Field(default=60.0, ge=0)
    # Pushes in flight at once when an emergency goes to every endpoint.
    loudspeaker_concurrency: int = Field(default=16, ge=1, le=256)
    # How often at most the scheduler pushes changed playlists (broadcast/push.py); emergencies
    # go at once whatever this says.
    loudspeaker_push_seconds: float = Field(default=60.0, gt=0)

    log_level: str = "INFO"
    # `text` (one readable line per record, for a console) or `json` (one JSON object per line,
    # for a log collector: timestamp, level, logger, message, and the ids of the message, wave,
    # campaign, worker and adapter a record is about).
    log_format: Literal["text", "json"] = "text"

    # Operations (GET /health, GET /metrics). Each long-running process (worker, scheduler, the
    # API of `loa serve`) writes a heartbeat row at most this often ...
    heartbeat_seconds: float = Field(default=10, gt=0)
    # ... and counts as seen (a worker, the scheduler leader) while its latest heartbeat is at
    # most this old. No scheduler leader seen within it: /health says `degraded`. A scheduler
    # beats at each tick, so this must exceed the longest tick (expanding a million recipients
    # takes about 6 s on PostgreSQL, docs/benchmarks.md).
    heartbeat_stale_seconds: float = Field(default=60, gt=0)
    # Rows of processes not seen for this long are deleted when a process starts.
    heartbeat_forget_days: int = Field(default=7, ge=1)
    # The due-queue depth is counted up to this many messages per channel (then reported as
    # "at least"), so that /health and /metrics stay cheap while a million-message wave sends.
    queue_count_limit: int = Field(default=10_000, ge=1)
    # When set, GET /metrics needs `Authorization: Bearer <token>`. Unset (the embedded default),
    # /metrics is open like /health: set it when the API is reachable beyond a trusted network.
    metrics_token: SecretStr = SecretStr("")
    # `loa worker` serves no API, so its own counters (send attempts and errors by adapter) are
    # served on this port of `host` when set (0: not served; `loa worker --metrics-port`).
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)

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

    @field_validator("opt_out_keywords", "opt_in_keywords")
    @classmethod
    def _keywords_parse(cls, value: str, info: ValidationInfo) -> str:
        from audience.keywords import parse_keywords

        try:
            parse_keywords(value, info.field_name or "")
        except LoaError as exc:
            raise ValueError(exc.message) from None
        return value

    @field_validator("sms_prices")
    @classmethod
    def _prices_are_prices(
        cls, value: dict[str, dict[str, dict[str, float]]]
    ) -> dict[str, dict[str, dict[str, float]]]:
        # Keys are matched without case: carriers come from the phone library as "Viettel".
        lowered: dict[str, dict[str, dict[str, float]]] = {}
        for channel, carriers in value.items():
            for carrier, classes in carriers.items():
                for message_class, price in classes.items():
                    if message_class.lower() not in ("qc", "info", "care", "*"):
                        raise ValueError(
                            f"{channel}.{carrier}: unknown class {message_class!r} "
                            "(qc, info, care or *)"
                        )
                    if price < 0:
                        raise ValueError(f"{channel}.{carrier}.{message_class}: price below 0")
                    lowered.setdefault(channel.lower(), {}).setdefault(carrier.lower(), {})[
                        message_class.lower()
                    ] = price
        return lowered

    @model_validator(mode="after")
    def _refusal_keywords_opt_out(self) -> Settings:
        from audience.keywords import parse_keywords

        try:
            refusal = parse_keywords(self.qc_refusal_keywords)
        except LoaError as exc:
            raise ValueError(f"qc_refusal_keywords: {exc.message}") from None
        honoured = parse_keywords(self.opt_out_keywords)
        if unknown := [k for k in refusal if k not in honoured]:
            raise ValueError(
                f"qc_refusal_keywords: {', '.join(unknown)} is not among LOA_OPT_OUT_KEYWORDS, "
                "so a reply that follows the advert's instructions would not opt out"
            )
        if both := set(parse_keywords(self.opt_in_keywords, "opt_in_keywords")) & set(honoured):
            raise ValueError(
                f"opt_in_keywords: {', '.join(sorted(both))} is also an opt-out keyword; "
                "one reply cannot both refuse and agree"
            )
        return self

    @field_validator("audio_bitrate_kbps")
    @classmethod
    def _mp3_bitrate(cls, value: int) -> int:
        if value not in MP3_BITRATES_KBPS:
            raise ValueError(f"an MP3 bitrate in kbit/s: one of {sorted(MP3_BITRATES_KBPS)}")
        return value

    @field_validator("audio_sample_rate")
    @classmethod
    def _mp3_sample_rate(cls, value: int) -> int:
        if value not in MP3_SAMPLE_RATES:
            raise ValueError(f"an MP3 sample rate in Hz: one of {sorted(MP3_SAMPLE_RATES)}")
        return value

    @model_validator(mode="after")
    def _heartbeats_fit(self) -> Settings:
        if self.heartbeat_stale_seconds <= self.heartbeat_seconds:
            raise ValueError(
                "heartbeat_stale_seconds must exceed heartbeat_seconds, or a live process "
                "would be reported as not seen between two of its heartbeats"
            )
        return self

    @model_validator(mode="after")
    def _audio_bounds(self) -> Settings:
        if self.audio_min_seconds >= self.audio_max_seconds:
            raise ValueError("audio_min_seconds must be below audio_max_seconds")
        return self

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'loa.db').as_posix()}"
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
