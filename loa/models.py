"""The schema: every table of Loa, with the indexes the planner, the dispatcher and the stats use.

Changing a table here needs a migration in migrations/versions (both databases run the same files).
Statuses are plain strings (not database enums) so that adding one is a one-line migration.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Column, Index, LargeBinary, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from loa.db import BigId, JsonDoc, TagList, UTCDateTime


class AreaLevel(StrEnum):
    PROVINCE = "province"
    DISTRICT = "district"  # also a culture centre's service area after the 2025 reform
    COMMUNE = "commune"


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    APPROVED = "approved"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class WaveKind(StrEnum):
    ONCE = "once"  # fires once at fire_at (an `at` wave, or one occurrence of a series)
    # Series: they never send themselves; the scheduler makes one `once` child per occurrence,
    # so the outbox key (wave, recipient, channel) still means "at most once per occurrence".
    RECURRING = "recurring"  # one child per local date-time of its schedule
    RELATIVE = "relative"  # one child per value of a date attribute of recipients
    # A loudspeaker wave: never in the outbox. Launching it writes its broadcast items (one per
    # slot, with one target per commune) for the whole schedule, so that a culture centre can
    # pull a day's playlist before its first slot (broadcast/items.py).
    BROADCAST = "broadcast"


class WaveStatus(StrEnum):
    PENDING = "pending"  # campaign not launched yet
    # fire_at is set; the scheduler fires it then (a series: makes its next occurrence then)
    SCHEDULED = "scheduled"
    EXPANDING = "expanding"  # being written into the outbox; re-running is harmless
    EXPANDED = "expanded"  # every recipient has an outbox row
    DONE = "done"  # every outbox row is final


class MessageStatus(StrEnum):
    PLANNED = "planned"
    CLAIMED = "claimed"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    UNDELIVERED = "undelivered"
    SUPPRESSED = "suppressed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # ambiguous provider answer: reconciled, never blindly re-sent


# Statuses after which nothing is sent and no callback may move the message back.
FINAL_MESSAGE_STATUSES = frozenset(
    {
        MessageStatus.DELIVERED,
        MessageStatus.FAILED,
        MessageStatus.UNDELIVERED,
        MessageStatus.SUPPRESSED,
        MessageStatus.EXPIRED,
        MessageStatus.CANCELLED,
    }
)


# Predicates of the outbox's partial indexes; scheduler/dispatch.py uses the same text.
PLANNED_ONLY = "status = 'planned'"
IN_FLIGHT_ONLY = "status IN ('claimed', 'sending')"
UNKNOWN_ONLY = "status = 'unknown'"


def _where(predicate: str) -> dict[str, Any]:
    return {"postgresql_where": text(predicate), "sqlite_where": text(predicate)}


class Area(SQLModel, table=True):
    """A node of province > district > commune; codes as in the national statistics coding.

    `path` lists the codes from the root down ("/42/436/18301/") so that "everything under X" is one
    indexed prefix match instead of a recursive query at every expansion.
    """

    __tablename__ = "area"

    code: str = Field(primary_key=True, max_length=16)
    name: str = Field(max_length=200)
    level: str = Field(max_length=16)
    parent_code: str | None = Field(
        default=None, foreign_key="area.code", index=True, max_length=16
    )
    path: str = Field(max_length=255, index=True)


class Recipient(SQLModel, table=True):
    __tablename__ = "recipient"
    __table_args__ = (
        Index("ix_recipient_area_id", "area_code", "id"),
        # "Tag X" on PostgreSQL: a GIN index, whose pending list (fastupdate) takes an import's
        # new entries in bulk instead of one B-tree descent per tag (migration 0017). SQLite
        # has no index that looks inside a JSON array: its tag filters read the rows.
        Index("ix_recipient_tags", "tags", postgresql_using="gin").ddl_if(dialect="postgresql"),
    )

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    phone: str = Field(max_length=20, unique=True)  # E.164
    name: str | None = Field(default=None, max_length=200)
    # No foreign keys on recipient and recipient_date (migration 0007): checked row by row they
    # were a quarter of a large import's time. The importer writes only area codes that are in
    # the area table (read in the same transaction), date rows only for the recipient ids its own
    # statement returned, and nothing deletes areas or recipients; a deletion of recipients must
    # remove their date rows itself.
    area_code: str | None = Field(default=None, max_length=16)
    carrier: str | None = Field(default=None, max_length=32)  # from the prefix: an estimate
    phone_converted: bool = False  # an old 11-digit 01xx number converted with the 2018 table
    attributes: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDoc)
    # The recipient's tags (static groups: nong-dan, ho-ngheo), distinct and sorted; each at most
    # TAG_MAX characters. A column rather than rows of a table of their own (migration 0017): a
    # table cost two B-tree entries per tag, a third of a large import's time.
    # The column's default (empty) is set per database by the migration: '{}' and '[]'.
    tags: list[str] = Field(default_factory=list, sa_column=Column(TagList, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)  # the row last changed


class RecipientDate(SQLModel, table=True):
    """The date-valued attributes of recipients (card_expiry, ...), one row each, so that relative
    waves and date filters find "everyone whose card expires on D" through an index instead of
    reading every recipient's JSON. Kept in step with `recipient.attributes` by the importer."""

    __tablename__ = "recipient_date"
    __table_args__ = (Index("ix_recipient_date_value", "attribute", "value", "recipient_id"),)

    recipient_id: int = Field(sa_column=Column(BigId, primary_key=True))  # see Recipient
    attribute: str = Field(primary_key=True, max_length=200)
    value: date


class Suppression(SQLModel, table=True):
    """Numbers that must never receive a message, checked at expansion and again at send time."""

    __tablename__ = "suppression"
    # The list's pages, newest first (loa/paging.py).
    __table_args__ = (Index("ix_suppression_created", "created_at", "phone"),)

    phone: str = Field(primary_key=True, max_length=20)
    reason: str = Field(max_length=32)  # opt_out | do_not_contact | invalid | manual
    note: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(sa_type=UTCDateTime)


class Consent(SQLModel, table=True):
    """Numbers whose owner agreed to receive advertising (class `qc`, Decree 91/2020): without
    a row here a `qc` message is not sent, unless the settings say consent is not required."""

    __tablename__ = "consent"
    __table_args__ = (Index("ix_consent_given", "given_at", "phone"),)  # pages, newest first

    phone: str = Field(primary_key=True, max_length=20)
    source: str = Field(max_length=32)  # import | keyword | manual
    note: str | None = Field(default=None, max_length=500)
    given_at: datetime = Field(sa_type=UTCDateTime)


class Segment(SQLModel, table=True):
    """A saved audience: a filter over areas, tags and attributes (audience/segments.py), which a
    wave names instead of repeating it. Evaluated when the wave expands, not when saved."""

    __tablename__ = "segment"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    description: str | None = Field(default=None, max_length=1000)
    filter: dict[str, Any] = Field(sa_type=JsonDoc)
    created_by: str = Field(max_length=100)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class Template(SQLModel, table=True):
    __tablename__ = "template"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    channel: str = Field(max_length=32)
    body: str = Field(sa_type=Text)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class Campaign(SQLModel, table=True):
    __tablename__ = "campaign"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    timezone: str = Field(max_length=64)
    status: str = Field(default=CampaignStatus.DRAFT, max_length=16, index=True)
    spec: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDoc)  # as submitted
    created_by: str = Field(max_length=100)
    approved_by: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    launched_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Wave(SQLModel, table=True):
    """A wave of the spec, or one occurrence of a recurring or relative wave (`parent_id` set)."""

    __tablename__ = "wave"
    __table_args__ = (
        Index("ix_wave_status_fire_at", "status", "fire_at"),
        # An occurrence is made once, however often (or by however many schedulers) it is asked.
        UniqueConstraint("parent_id", "occurrence", name="uq_wave_parent_occurrence"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    position: int  # order within the campaign spec (an occurrence has its parent's)
    kind: str = Field(default=WaveKind.ONCE, max_length=16)
    parent_id: int | None = Field(default=None, foreign_key="wave.id", index=True)
    # Which occurrence: the local date-time of a recurring wave ("2026-05-01T06:00"), the
    # attribute's date for a relative wave ("2026-05-15").
    occurrence: str | None = Field(default=None, max_length=32)
    name: str = Field(max_length=200)
    channel: str = Field(max_length=32)
    message_class: str = Field(max_length=8)  # qc | info | care
    trigger: dict[str, Any] = Field(sa_type=JsonDoc)  # {"at": "2026-05-08 07:30"} as written
    audience: dict[str, Any] = Field(sa_type=JsonDoc)
    template_id: int | None = Field(default=None, foreign_key="template.id")
    body: str | None = Field(default=None, sa_type=Text)  # the template text this wave renders
    options: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDoc)
    status: str = Field(default=WaveStatus.PENDING, max_length=16)
    fire_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Messages of this wave not sent by then expire: an occurrence is superseded by the next.
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # A relative wave: every recipient date up to this one has had its occurrence made.
    covered_through: date | None = None
    expanded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    expanded_count: int = 0


class OutboxMessage(SQLModel, table=True):
    """One row per wave x recipient x channel: the unit of sending, idempotency and statistics."""

    __tablename__ = "outbox"
    __table_args__ = (
        # The idempotency key. Recipient first, so that it also serves per-recipient lookups
        # (caps): one index fewer to maintain on every row expansion writes.
        UniqueConstraint(
            "recipient_id", "wave_id", "channel", name="uq_outbox_recipient_wave_channel"
        ),
        # Partial indexes for the dispatcher: a row leaving `planned` (or its lease) adds no entry
        # to them, which matters because every status change of a message is a new row version.
        # Queries must repeat the predicate with literal values for either database to use them.
        # The claim, one wave at a time: an ordered range scan that stops at the batch size,
        # whatever other waves (paused, or another campaign's) have waiting.
        Index("ix_outbox_due", "wave_id", "due_at", "id", **_where(PLANNED_ONLY)),
        Index("ix_outbox_lease", "lease_expires_at", **_where(IN_FLIGHT_ONLY)),  # expired leases
        Index("ix_outbox_unknown", "updated_at", **_where(UNKNOWN_ONLY)),  # to reconcile
        Index("ix_outbox_wave_status", "wave_id", "status"),  # progress and stats per wave
        Index("ix_outbox_provider_id", "provider_id", **_where("provider_id IS NOT NULL")),
    )

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    # No foreign keys on the two high-volume tables (outbox, delivery_event): PostgreSQL checks
    # them row by row with a trigger that also locks the parent row, which was half the time of
    # expanding a million-recipient wave. Their rows are written only by statements that select
    # the parents (expansion reads recipient and wave; events read outbox), and recipients,
    # waves and outbox rows are never deleted, so a reference cannot dangle.
    wave_id: int
    recipient_id: int = Field(sa_type=BigId)
    channel: str = Field(max_length=32)
    status: str = Field(default=MessageStatus.PLANNED, max_length=16)
    due_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = 0
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    provider_id: str | None = Field(default=None, max_length=64)
    # The adapter that carries (or last tried) the message: `twilio`, `gateway:viettel`, ...
    # Written with `sending`, before the provider is called, so that reconciliation and
    # delivery reports deal with the provider that may have it (a failover list has several).
    adapter: str | None = Field(default=None, max_length=64)
    error_code: str | None = Field(default=None, max_length=32)
    segments: int | None = None
    # Copied from the recipient at expansion so per-area and per-carrier stats need no join.
    area_code: str | None = Field(default=None, max_length=16)
    carrier: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class DeliveryEvent(SQLModel, table=True):
    """Append-only: every attempt and status change of an outbox message (or a loudspeaker play).

    Queries filter by time so that the table can later be partitioned by month on PostgreSQL.
    """

    __tablename__ = "delivery_event"
    __table_args__ = (
        Index("ix_delivery_event_message", "message_id", "id"),
        Index("ix_delivery_event_wave_time", "wave_id", "occurred_at"),
        Index("ix_delivery_event_provider_id", "provider_id"),
    )

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    # No foreign keys: see OutboxMessage.
    message_id: int | None = Field(default=None, sa_type=BigId)
    wave_id: int
    channel: str = Field(max_length=32)
    kind: str = Field(max_length=16)  # attempt | status | play
    status: str = Field(max_length=16)
    adapter: str | None = Field(default=None, max_length=64)  # see OutboxMessage.adapter
    provider_id: str | None = Field(default=None, max_length=64)
    error_code: str | None = Field(default=None, max_length=32)
    detail: str | None = Field(default=None, sa_type=Text)
    occurred_at: datetime = Field(sa_type=UTCDateTime)


class RateBucket(SQLModel, table=True):
    """The rate limit shared by all workers (scheduler/ratelimit.py): one row per channel."""

    __tablename__ = "rate_bucket"

    name: str = Field(primary_key=True, max_length=64)
    tokens: float
    # The latest grant's instant (grants only move forward), from which the tokens refill.
    refilled_at: datetime = Field(sa_type=UTCDateTime)
    # The grants of the last second, oldest first: [instant in microseconds since 1970, count].
    grants: list[list[int]] = Field(
        default_factory=list, sa_type=JsonDoc, sa_column_kwargs={"server_default": text("'[]'")}
    )


class ApiKey(SQLModel, table=True):
    """API keys are stored hashed; `prefix` is the public part used to find the row."""

    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    prefix: str = Field(max_length=16, unique=True)
    secret_hash: str = Field(max_length=128)
    role: str = Field(max_length=16)  # admin | planner | approver | operator | district
    area_code: str | None = Field(default=None, foreign_key="area.code", max_length=16)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class CacheGeneration(SQLModel, table=True):
    """A counter per table ('api_key', 'area') that database triggers bump on the changes the
    API's in-process caches must see (migration 0015, api/readcache.py)."""

    __tablename__ = "cache_generation"

    name: str = Field(primary_key=True, max_length=32)
    value: int = Field(sa_type=BigInteger)


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_entity", "entity", "entity_id", "at"),)

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    actor: str = Field(max_length=100)
    action: str = Field(max_length=64)
    entity: str = Field(max_length=32)
    entity_id: str = Field(max_length=64)
    before: dict[str, Any] | None = Field(default=None, sa_type=JsonDoc)
    after: dict[str, Any] | None = Field(default=None, sa_type=JsonDoc)


class AudioAsset(SQLModel, table=True):
    """An encoded loudspeaker file, stored under LOA_DATA_DIR by the SHA-256 of its bytes
    (audio/store.py): the same content is one asset, whatever it was called when added."""

    __tablename__ = "audio_asset"

    sha256: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    original_filename: str = Field(max_length=255)
    intro_filename: str | None = Field(default=None, max_length=255)
    outro_filename: str | None = Field(default=None, max_length=255)
    source_format: str = Field(max_length=16)  # WAV | MP3 | M4A | AAC | OGG | FLAC
    bytes: int = Field(sa_type=BigId)
    duration_ms: int
    sample_rate: int
    bitrate_kbps: int
    # ITU-R BS.1770: the main file's integrated loudness as received, and the MP3's as stored.
    loudness_before_lufs: float
    loudness_after_lufs: float
    true_peak_dbtp: float
    created_by: str = Field(max_length=100)
    created_at: datetime = Field(sa_type=UTCDateTime)


class BroadcastPriority(StrEnum):
    """Circular 39/2020/TT-BTTTT's three priorities, in the order a full slot keeps them."""

    EMERGENCY = "emergency"
    PRIORITY = "priority"
    NORMAL = "normal"


class BroadcastItem(SQLModel, table=True):
    """One slot of a loudspeaker wave: its audio at a local time on a local date, `repeats` times.
    The communes it goes to are its targets (BroadcastTarget)."""

    __tablename__ = "broadcast_item"
    __table_args__ = (
        # Launching again (or twice at once) makes no second item for a slot.
        UniqueConstraint("wave_id", "local_date", "slot", name="uq_broadcast_item_wave_slot"),
        Index("ix_broadcast_item_date", "local_date", "id"),
    )

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    wave_id: int = Field(foreign_key="wave.id")
    campaign_id: int = Field(foreign_key="campaign.id")
    local_date: date  # in the campaign's time zone
    slot: str = Field(max_length=8)  # local start "06:00"
    starts_at: datetime = Field(sa_type=UTCDateTime)
    # After this the item is not to be played (the slot is over): what the playlist's
    # valid_until says.
    valid_until: datetime = Field(sa_type=UTCDateTime)
    priority: str = Field(max_length=16)  # emergency | priority | normal
    repeats: int = 1
    audio_sha256: str = Field(foreign_key="audio_asset.sha256", max_length=64)
    # Ties within a priority go to the earlier launch (the campaign's approval was before it).
    ranked_at: datetime = Field(sa_type=UTCDateTime)


class BroadcastTarget(SQLModel, table=True):
    """A commune an item is broadcast in."""

    __tablename__ = "broadcast_target"
    __table_args__ = (Index("ix_broadcast_target_commune", "commune_code", "item_id"),)

    item_id: int = Field(sa_column=Column(BigId, primary_key=True))
    commune_code: str = Field(primary_key=True, max_length=16)


class BroadcastPlay(SQLModel, table=True):
    """A play a culture centre reported (proof of play). The same report sent twice is one row;
    each row also has a delivery event (kind `play`) of its wave."""

    __tablename__ = "broadcast_play"
    __table_args__ = (
        UniqueConstraint(
            "item_id", "commune_code", "started_at", name="uq_broadcast_play_item_commune_start"
        ),
        Index("ix_broadcast_play_commune_time", "commune_code", "started_at"),
        Index("ix_broadcast_play_time", "started_at"),
    )

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    item_id: int = Field(sa_type=BigId)
    wave_id: int
    commune_code: str = Field(max_length=16)
    started_at: datetime = Field(sa_type=UTCDateTime)
    ended_at: datetime = Field(sa_type=UTCDateTime)
    result: str = Field(max_length=16)  # played | skipped | failed
    reported_by: str = Field(max_length=100)
    received_at: datetime = Field(sa_type=UTCDateTime)


class BroadcastPush(SQLModel, table=True):
    """A push of a district's playlist for a day (kind `playlist`) or of one emergency item
    (kind `emergency`, with its item) to a loudspeaker controller, and what became of it. The
    latest playlist row of (area, day) says what the controller last took: a round pushes again
    only when the playlist's hash differs, or when the last push may be retried (transient,
    ambiguous). Retrying the same content updates that row (attempts add up)."""

    __tablename__ = "broadcast_push"
    __table_args__ = (
        Index("ix_broadcast_push_area_day", "area_code", "local_date", "kind", "id"),
        Index("ix_broadcast_push_item", "item_id"),
    )

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    kind: str = Field(max_length=16)  # playlist | emergency
    area_code: str = Field(max_length=16)  # the playlist's area; the endpoint's for an emergency
    local_date: date
    etag: str = Field(max_length=64)  # sha256 of the playlist JSON (as the API's ETag) / the item
    item_id: int | None = Field(default=None, sa_type=BigId)  # the emergency item
    request_id: str = Field(max_length=64)
    outcome: str = Field(max_length=16)  # accepted | transient | permanent | ambiguous
    attempts: int
    reason: str | None = Field(default=None, max_length=1000)
    pushed_at: datetime = Field(sa_type=UTCDateTime)


class StatsRollup(SQLModel, table=True):
    """Delivery statistics kept by database triggers (migration 0011), in the same transaction as
    every change of an outbox row or a new loudspeaker play: the messages now in each key and
    their segments. stats/rollup.py reads it; nothing in Python writes it.

    Key columns hold '' rather than NULL (a unique key never matches NULLs, and the triggers
    upsert). `hour` counts hours since 1970-01-01 UTC of a time that never changes on the row
    (a message's created_at, when its wave fired; a play's started_at). Rows with channel
    'loudspeaker' are plays (status: played, skipped, failed); every other row is messages."""

    __tablename__ = "stats_rollup"
    # A day-bounded question by area reads its communes' hours (migration 0016). No column a
    # trigger updates is indexed, so the updates stay HOT.
    __table_args__ = (Index("ix_stats_rollup_area_hour", "area_code", "hour"),)

    # The key, in the order of the primary key: a wave or campaign filter reads a range of it.
    wave_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    channel: str = Field(primary_key=True, max_length=32)
    area_code: str = Field(primary_key=True, max_length=16)  # the commune (outbox.area_code)
    carrier: str = Field(primary_key=True, max_length=32)
    adapter: str = Field(primary_key=True, max_length=64)
    status: str = Field(primary_key=True, max_length=16)
    error_code: str = Field(primary_key=True, max_length=32)
    hour: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    n: int = Field(sa_type=BigInteger)
    segments: int = Field(sa_type=BigInteger)


class StatsRollupWave(SQLModel, table=True):
    """StatsRollup without the area, kept by the same triggers: a few rows per wave where the
    full rollup has hundreds (one per commune), for every question that needs no area."""

    __tablename__ = "stats_rollup_wave"

    wave_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    channel: str = Field(primary_key=True, max_length=32)
    carrier: str = Field(primary_key=True, max_length=32)
    adapter: str = Field(primary_key=True, max_length=64)
    status: str = Field(primary_key=True, max_length=16)
    error_code: str = Field(primary_key=True, max_length=32)
    hour: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    n: int = Field(sa_type=BigInteger)
    segments: int = Field(sa_type=BigInteger)


class StatsRollupArea(SQLModel, table=True):
    """StatsRollup without the wave and the hour, kept by triggers of migration 0016: one row
    per commune x channel x status x error code x carrier x adapter x message class (the wave's,
    as LOA_SMS_PRICES prices by it). Its size is bounded by those, not by the waves sent or the
    time gone by: it answers questions by area over every campaign and all time."""

    __tablename__ = "stats_rollup_area"

    area_code: str = Field(primary_key=True, max_length=16)
    channel: str = Field(primary_key=True, max_length=32)
    status: str = Field(primary_key=True, max_length=16)
    error_code: str = Field(primary_key=True, max_length=32)
    carrier: str = Field(primary_key=True, max_length=32)
    adapter: str = Field(primary_key=True, max_length=64)
    message_class: str = Field(primary_key=True, max_length=16)
    n: int = Field(sa_type=BigInteger)
    segments: int = Field(sa_type=BigInteger)


class WorkerKind(StrEnum):
    WORKER = "worker"  # a dispatch worker (`loa worker`, or the one inside `loa serve`)
    SCHEDULER = "scheduler"  # the active scheduler or a standby
    SERVE = "serve"  # the API of `loa serve`


class Worker(SQLModel, table=True):
    """Each long-running Loa process as last seen: its heartbeat (scheduler/heartbeat.py), for
    /health and /metrics. One row per process and kind; a process that stops says so, one that
    dies simply stops being seen."""

    __tablename__ = "worker"
    # "Seen within the last N seconds" and the pruning of old rows are range scans of this.
    __table_args__ = (Index("ix_worker_seen_at", "seen_at"),)

    id: str = Field(primary_key=True, max_length=64)  # the worker id (see new_worker_id)
    kind: str = Field(max_length=16)
    host: str = Field(max_length=255)
    pid: int
    started_at: datetime = Field(sa_type=UTCDateTime)
    seen_at: datetime = Field(sa_type=UTCDateTime)
    stopped_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # A scheduler that held the leadership at its latest heartbeat.
    is_leader: bool = False


class IdempotencyKey(SQLModel, table=True):
    """A request made with an Idempotency-Key header, and its response to replay
    (loa/idempotency.py). Keys belong to the API key that sent them. A row without a status is
    a request still in flight (only routes whose work commits on its own leave one committed);
    it holds the key until it completes, fails (the row is removed) or is older than the lock
    period."""

    __tablename__ = "idempotency_key"
    __table_args__ = (Index("ix_idempotency_key_expires", "expires_at"),)

    api_key_id: int = Field(primary_key=True)
    key: str = Field(primary_key=True, max_length=255)
    # sha256 of method, path and query, and body; None while a streamed body is being read.
    fingerprint: str | None = Field(default=None, max_length=64)
    token: str | None = Field(default=None, max_length=32)  # the attempt in flight
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    status_code: int | None = None
    headers: dict[str, str] | None = Field(default=None, sa_type=JsonDoc)
    body: bytes | None = Field(default=None, sa_type=LargeBinary)
