"""The whole OpenAPI description of the real app, run by Schemathesis against a real database with a
little data (areas, recipients, a segment, a launched campaign, an audio asset), with an admin key:
no answer is a 5xx, every answer's status is declared, and every answer matches its declared
schema. A bounded number of cases per operation keeps it within CI's time (about a minute on
two cores). On SQLite, and on PostgreSQL when LOA_TEST_POSTGRES_URL is set.

Cases are reproducible: Schemathesis derives each operation's seed from LOA_FUZZ_SEED (default
0); LOA_FUZZ_EXAMPLES raises the number of cases for a longer hunt."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.config import SchemathesisConfig
from sqlalchemy import Engine, create_engine

from api.app import create_app
from api.routes.audio import AUDIO_TYPES
from api.routes.recipients import XLSX_TYPE
from audience.segments import create_segment
from audio.ingest import Source, add_audio
from loa.apikeys import Role, create_key
from loa.db import make_engine, session_scope
from loa.settings import Settings
from tests.audiosignals import make
from tests.builders import add_areas, add_recipient, launch
from tests.conftest import BACKENDS, FakeClock, _fresh_database

EXAMPLES = int(os.environ.get("LOA_FUZZ_EXAMPLES", "12"))
SEED = int(os.environ.get("LOA_FUZZ_SEED", "0"))
SPEC: dict[str, Any] = {
    "name": "Tháng vận động BHXH 2026",
    "waves": [
        {
            "name": "Lễ ra quân",
            "channel": "sms",
            "class": "info",
            "at": "2026-05-09 07:30",
            "audience": {"areas": ["42"], "segment": "nong-dan"},
            "template": "BHXH: {{ name }} oi, thang 5 la Thang van dong BHXH toan dan.",
        }
    ],
}


@dataclass(frozen=True)
class Target:
    """The app on a seeded database, and the admin key's header."""

    app: FastAPI
    headers: dict[str, str]


def _seed(engine: Engine, settings: Settings, now: datetime, tmp_path: Path) -> str:
    """The data the cases meet; the admin key they are sent with."""
    with session_scope(engine) as session:
        add_areas(session)
        for n in range(5):
            add_recipient(
                session,
                f"+8491200000{n}",
                now=now,
                area="18301" if n % 2 else "18302",
                tags=("nong-dan",),
                attributes={"card_expiry": "2026-06-01"},
            )
        create_segment(
            session,
            name="nong-dan",
            raw_filter={"tags": ["nong-dan"]},
            description=None,
            actor="test",
            now=now,
            source="test",
        )
    launch(engine, SPEC, settings, now)
    wav = make(tmp_path / "ban-tin.wav", "tone", seconds=2, lufs=-20)
    add_audio(engine, Source(wav, "ban-tin.wav"), settings=settings, actor="test", now=now)
    with session_scope(engine) as session:
        return create_key(session, role=Role.ADMIN, actor="test", now=now).key


@pytest.fixture(scope="module", params=BACKENDS)
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """One seeded database per backend for all the operations: what the cases write stays, as
    it would on a server."""
    tmp_path = tmp_path_factory.mktemp("fuzz")
    databases = _fresh_database(request.param, request, tmp_path)
    settings = Settings(
        database_url=next(databases), data_dir=tmp_path, console_sink=tmp_path / "sink.jsonl"
    )
    engine = make_engine(settings)
    clock = FakeClock(datetime(2026, 5, 8, 0, 0, tzinfo=UTC))
    key = _seed(engine, settings, clock(), tmp_path)
    yield Target(create_app(settings, engine, clock=clock), {"Authorization": f"Bearer {key}"})
    engine.dispose()
    next(databases, None)  # drops the PostgreSQL database


def _description() -> dict[str, Any]:
    """The app's OpenAPI description (it does not depend on the database)."""
    return create_app(Settings(database_url="sqlite://"), create_engine("sqlite://")).openapi()


# Uploads are bytes whatever their declared type: sent as Schemathesis sends octet streams.
for media_type in sorted({*AUDIO_TYPES, XLSX_TYPE} - {"application/octet-stream"}):
    schemathesis.serializer.alias(media_type, "application/octet-stream")

schema = schemathesis.openapi.from_dict(
    _description(),
    config=SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            # The audio upload's parameters (a file name, jingles by SHA-256) reject most of what
            # Hypothesis draws first; the cases it keeps are enough.
            "suppress-health-check": ["filter_too_much", "too_slow"],
            "generation": {"max-examples": EXAMPLES},
            "phases": {"stateful": {"enabled": False}},
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
            },
        }
    ),
)


@schema.parametrize()
def test_the_api_keeps_its_openapi_description(
    case: schemathesis.Case[Any], target: Target
) -> None:
    case.call_and_validate(app=target.app, headers=target.headers)
