"""Helpers for the loudspeaker tests: stored audio records and loudspeaker campaigns."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from loa.models import AudioAsset
from loa.settings import Settings
from tests.builders import launch


def add_audio(session: Session, name: str, *, duration_ms: int, now: datetime) -> str:
    """An audio record as ingest writes it (the playlist reads only the record); its sha256."""
    sha = hashlib.sha256(name.encode()).hexdigest()
    session.add(
        AudioAsset(
            sha256=sha,
            name=name,
            original_filename=f"{name}.wav",
            source_format="WAV",
            bytes=duration_ms * 4,
            duration_ms=duration_ms,
            sample_rate=44100,
            bitrate_kbps=32,
            loudness_before_lufs=-30.0,
            loudness_after_lufs=-16.0,
            true_peak_dbtp=-1.5,
            created_by="test",
            created_at=now,
        )
    )
    session.flush()
    return sha


def loudspeaker_wave(audio: str, **fields: Any) -> dict[str, Any]:
    wave: dict[str, Any] = {
        "name": "Phát thanh sáng chiều",
        "channel": "loudspeaker",
        "recurring": {"from": "2026-05-09", "to": "2026-05-10", "times": ["06:00", "17:30"]},
        "audience": {"areas": ["42"]},
        "audio": audio,
        "priority": "normal",
    }
    wave.update(fields)
    return wave


def launch_broadcast(
    engine: Engine, settings: Settings, now: datetime, *waves: dict[str, Any], name: str = "C"
) -> int:
    return launch(
        engine,
        {"name": name, "timezone": "Asia/Ho_Chi_Minh", "waves": list(waves)},
        settings,
        now,
    )
