"""Proof of play: what culture centres report, checked whole, stored once, counted, exported.

A report is a list of plays (item, commune, started_at, ended_at, result). Every entry is
checked before anything is written, and one bad entry refuses the report with its position and
field: a centre re-sends a corrected report, and nothing half-stored has to be untangled. A play
is stored once per (item, commune, started_at) — a report sent again over a dropped link adds
nothing — in `broadcast_play`, with a delivery event (kind `play`, status the result) of its
wave, in the same transaction, so that the wave's log shows its broadcasts beside its messages.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import Engine, String, cast, func, literal, select, tuple_
from sqlmodel import Session, col

from broadcast.items import communes_under
from loa import audit
from loa.db import session_scope, upsert_insert
from loa.errors import InvalidInput
from loa.models import Area, BroadcastItem, BroadcastPlay, BroadcastTarget, DeliveryEvent
from loa.paging import DEFAULT_PAGE, MAX_PAGE, Key, keyset_page

PLAY = BroadcastPlay.__table__  # type: ignore[attr-defined]
EVENT = DeliveryEvent.__table__  # type: ignore[attr-defined]
# A player's clock may run a little ahead; a play further in the future is a wrong clock.
CLOCK_SKEW = timedelta(minutes=5)
MAX_PLAYS = 10_000  # per report: a day of a large district is a few hundred


class PlayReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: int = Field(ge=1)
    commune: str = Field(min_length=1, max_length=16)
    started_at: AwareDatetime
    ended_at: AwareDatetime
    result: Literal["played", "skipped", "failed"]


@dataclass(frozen=True)
class PlaysStored:
    received: int
    stored: int  # new plays
    duplicates: int  # already reported (or twice in this report)


def record_plays(
    session: Session, area: Area, plays: list[PlayReport], *, actor: str, now: datetime
) -> PlaysStored:
    """Check every play against `area` (the district the report is for), then store the new
    ones. Raise InvalidInput naming the first bad entry (0-based, as in the list) and field."""
    if len(plays) > MAX_PLAYS:
        raise InvalidInput(f"{len(plays)} plays in one report; send at most {MAX_PLAYS} at a time")
    wanted = {(p.item, p.commune) for p in plays}
    targeted: dict[tuple[int, str], int] = {}
    in_area: set[str] = set()
    items: set[int] = set()
    if wanted:
        targeted = {
            (row.item_id, row.commune_code): row.wave_id
            for row in session.execute(
                select(
                    col(BroadcastTarget.item_id),
                    col(BroadcastTarget.commune_code),
                    col(BroadcastItem.wave_id),
                )
                .join(BroadcastItem, col(BroadcastItem.id) == col(BroadcastTarget.item_id))
                .where(
                    tuple_(col(BroadcastTarget.item_id), col(BroadcastTarget.commune_code)).in_(
                        wanted
                    )
                )
            )
        }
        in_area = set(
            session.scalars(
                select(col(Area.code)).where(
                    col(Area.code).in_({p.commune for p in plays}), communes_under([area.path])
                )
            )
        )
        items = set(
            session.scalars(
                select(col(BroadcastItem.id)).where(
                    col(BroadcastItem.id).in_({p.item for p in plays})
                )
            )
        )
    for index, play in enumerate(plays):
        where = f"play {index}"
        if play.commune not in in_area:
            raise InvalidInput(
                f"{where}, field commune: {play.commune!r} is not a commune of area {area.code} "
                f"({area.name}); report plays for its own communes only",
                field=f"{index}.commune",
            )
        if play.item not in items:
            raise InvalidInput(
                f"{where}, field item: no broadcast item {play.item} (take ids from the playlist)",
                field=f"{index}.item",
            )
        if (play.item, play.commune) not in targeted:
            raise InvalidInput(
                f"{where}, field commune: item {play.item} is not broadcast in commune "
                f"{play.commune}",
                field=f"{index}.commune",
            )
        if play.ended_at < play.started_at:
            raise InvalidInput(
                f"{where}, field ended_at: {play.ended_at.isoformat()} is before started_at "
                f"{play.started_at.isoformat()}",
                field=f"{index}.ended_at",
            )
        if play.started_at > now + CLOCK_SKEW:
            raise InvalidInput(
                f"{where}, field started_at: {play.started_at.isoformat()} is in the future; "
                "check the player's clock",
                field=f"{index}.started_at",
            )
    unique = {(p.item, p.commune, p.started_at): p for p in plays}
    rows = [
        {
            "item_id": p.item,
            "wave_id": targeted[(p.item, p.commune)],
            "commune_code": p.commune,
            "started_at": p.started_at,
            "ended_at": p.ended_at,
            "result": p.result,
            "reported_by": actor,
            "received_at": now,
        }
        for p in unique.values()
    ]
    stored = 0
    if rows:
        new = session.execute(
            upsert_insert(session.connection(), PLAY)
            .on_conflict_do_nothing(index_elements=["item_id", "commune_code", "started_at"])
            .returning(PLAY.c.id),
            rows,
        ).all()
        stored = len(new)
        if new:
            ids = [row.id for row in new]
            session.execute(
                EVENT.insert().from_select(
                    ["wave_id", "channel", "kind", "status", "detail", "occurred_at"],
                    select(
                        col(BroadcastPlay.wave_id),
                        literal("loudspeaker"),
                        literal("play"),
                        col(BroadcastPlay.result),
                        literal("item ")
                        + cast(col(BroadcastPlay.item_id), String)
                        + literal(" commune ")
                        + col(BroadcastPlay.commune_code),
                        col(BroadcastPlay.started_at),
                    ).where(col(BroadcastPlay.id).in_(ids)),
                )
            )
    if stored:
        # One entry per report, not per play: the plays are rows of their own (with who reported
        # them); the entry says who reported how many, when.
        starts = [p.started_at for p in plays]
        audit.record(
            session,
            actor=actor,
            action="plays.report",
            entity="area",
            entity_id=area.code,
            now=now,
            after={
                "received": len(plays),
                "stored": stored,
                "first_started_at": min(starts).isoformat(),
                "last_started_at": max(starts).isoformat(),
            },
        )
    return PlaysStored(received=len(plays), stored=stored, duplicates=len(plays) - stored)


class CommuneCount(BaseModel):
    commune: str
    name: str
    played: int
    skipped: int
    failed: int


class PlayCounts(BaseModel):
    area: str
    played: int
    skipped: int
    failed: int
    communes: list[CommuneCount]


def count_plays(
    session: Session, area: Area, *, since: datetime | None = None, until: datetime | None = None
) -> PlayCounts:
    """Reported plays per commune under `area`, and for the area, by result."""
    where = [communes_under([area.path])]
    if since is not None:
        where.append(col(BroadcastPlay.started_at) >= since)
    if until is not None:
        where.append(col(BroadcastPlay.started_at) < until)
    rows = session.execute(
        select(col(Area.code), col(Area.name), col(BroadcastPlay.result), func.count())
        .join(BroadcastPlay, col(BroadcastPlay.commune_code) == col(Area.code))
        .where(*where)
        .group_by(col(Area.code), col(Area.name), col(BroadcastPlay.result))
        .order_by(col(Area.code))
    ).all()
    communes: dict[str, CommuneCount] = {}
    for code, name, result, count in rows:
        entry = communes.setdefault(
            code, CommuneCount(commune=code, name=name, played=0, skipped=0, failed=0)
        )
        setattr(entry, result, count)
    listed = list(communes.values())
    return PlayCounts(
        area=area.code,
        played=sum(c.played for c in listed),
        skipped=sum(c.skipped for c in listed),
        failed=sum(c.failed for c in listed),
        communes=listed,
    )


class Play(BaseModel):
    id: int
    item: int
    wave_id: int
    commune: str
    commune_name: str
    started_at: datetime
    ended_at: datetime
    result: str
    reported_by: str
    received_at: datetime


# In order of start; the index on started_at serves it.
PLAY_ORDER = (Key(col(BroadcastPlay.started_at)), Key(col(BroadcastPlay.id)))
CSV_HEADER = [
    "item",
    "wave_id",
    "commune",
    "commune_name",
    "started_at",
    "ended_at",
    "result",
    "reported_by",
    "received_at",
]
_EXPORT_BATCH = 5_000


def list_plays(
    session: Session,
    *,
    area_path: str | None,
    since: datetime | None,
    until: datetime | None,
    after: str | None = None,
    limit: int = DEFAULT_PAGE,
    maximum: int = MAX_PAGE,
) -> tuple[list[Play], str | None]:
    """One keyset page of the plays (under `area_path`, started in [since, until)) in order of
    start, and the cursor of the next page."""
    where = []
    if area_path is not None:
        where.append(communes_under([area_path]))
    if since is not None:
        where.append(col(BroadcastPlay.started_at) >= since)
    if until is not None:
        where.append(col(BroadcastPlay.started_at) < until)
    rows, next_after = keyset_page(
        session,
        select(BroadcastPlay, col(Area.name))
        .join(Area, col(Area.code) == col(BroadcastPlay.commune_code))
        .where(*where),
        PLAY_ORDER,
        after=after,
        limit=limit,
        key_of=lambda row: (row[0].started_at, row[0].id),
        maximum=maximum,
    )
    return [
        Play(
            id=play.id,
            item=play.item_id,
            wave_id=play.wave_id,
            commune=play.commune_code,
            commune_name=name,
            started_at=play.started_at,
            ended_at=play.ended_at,
            result=play.result,
            reported_by=play.reported_by,
            received_at=play.received_at,
        )
        for play, name in rows
    ], next_after


def export_plays_csv(
    engine: Engine,
    *,
    area_path: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Iterator[str]:
    """The plays (under `area_path`, started in [since, until)) as CSV text, a batch of rows at a
    time, in order of start: memory does not grow with the history. The pages of `list_plays`,
    each in its own short transaction, so a slow reader holds no transaction open."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    yield buffer.getvalue()
    after: str | None = None
    while True:
        with session_scope(engine) as session:
            plays, after = list_plays(
                session,
                area_path=area_path,
                since=since,
                until=until,
                after=after,
                limit=_EXPORT_BATCH,
                maximum=_EXPORT_BATCH,
            )
        buffer.seek(0)
        buffer.truncate()
        for play in plays:
            writer.writerow(
                [
                    play.item,
                    play.wave_id,
                    play.commune,
                    play.commune_name,
                    play.started_at.isoformat(),
                    play.ended_at.isoformat(),
                    play.result,
                    play.reported_by,
                    play.received_at.isoformat(),
                ]
            )
        yield buffer.getvalue()
        if after is None:
            return


def utc_bounds(since: date | None, until: date | None) -> tuple[datetime | None, datetime | None]:
    """Dates as the instants [`since` 00:00 UTC, the day after `until` 00:00 UTC): `to` is
    inclusive, as a person means "to 31 May"."""
    start = datetime.combine(since, time(), UTC) if since else None
    end = datetime.combine(until, time(), UTC) + timedelta(days=1) if until else None
    if start is not None and end is not None and start >= end:
        raise InvalidInput(f"from {since} is after to {until}", field="from")
    return start, end
