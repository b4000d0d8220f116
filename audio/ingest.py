"""Adding a file to the loudspeaker library: `loa audio add` and POST /api/v1/audio.

decode (and refuse what cannot be broadcast) -> measure -> trim silence -> gain to the target,
limit, encode, measure the MP3 -> store by SHA-256. Nothing is written to the store or the
database until the MP3 meets the target, so a refused file leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from sqlalchemy import Engine
from sqlmodel import Session

from audio import store
from audio.decode import Decoded, decode
from audio.encode import Encoded, Piece, encode_mp3
from audio.trim import sound_span
from loa import audit
from loa.errors import InvalidInput
from loa.models import AudioAsset
from loa.settings import Settings

# The MP3 counts as on target within this of the target loudness (the tests allow 1 LU).
TOLERANCE_LU: Final = 0.5
# The limiter's ceiling starts this far under the true-peak limit: room for inter-sample peaks
# and MP3 overshoot. An MP3 still over the limit is encoded again with a lower ceiling.
LIMITER_HEADROOM_DB: Final = 1.0
MAX_ATTEMPTS: Final = 3
# What MP3 encoding usually takes off the loudness: LAME low-passes at 64 kbit/s (around 15 kHz)
# and BS.1770's K-weighting counts high frequencies more. Aiming this much higher makes the
# first encode land on the target for most material; the retry corrects the rest.
ENCODER_LOSS_LU: Final = 0.4
JINGLE_MIN_SECONDS: Final = 0.2


@dataclass(frozen=True)
class Source:
    path: Path
    display: str  # how the caller named it, for messages and the record


@dataclass(frozen=True)
class AddResult:
    asset: AudioAsset
    created: bool  # False: the same MP3 was already stored (the asset as first added)
    trimmed_ms: int  # silence cut from the main file
    attempts: int  # encodes it took to meet the target


def add_audio(
    engine: Engine,
    source: Source,
    *,
    settings: Settings,
    actor: str,
    now: datetime,
    name: str | None = None,
    intro: Source | None = None,
    outro: Source | None = None,
) -> AddResult:
    with store.work_directory(settings.data_dir) as work:
        parts: list[tuple[Decoded, Piece]] = []
        for tag, part, min_seconds in (
            ("intro", intro, JINGLE_MIN_SECONDS),
            ("main", source, settings.audio_min_seconds),
            ("outro", outro, JINGLE_MIN_SECONDS),
        ):
            if part is not None:
                parts.append(_prepare(part, tag, work, settings, min_seconds))
        main, main_piece = parts[1 if intro is not None else 0]
        encoded, attempts = _normalise([piece for _, piece in parts], settings=settings, work=work)
        samples = sum(piece.end - piece.start for _, piece in parts)
        asset = AudioAsset(
            sha256=encoded.sha256,
            name=(name or Path(source.display).stem or "audio")[:200],
            original_filename=Path(source.display).name[:255],
            intro_filename=Path(intro.display).name[:255] if intro else None,
            outro_filename=Path(outro.display).name[:255] if outro else None,
            source_format=main.format_name,
            bytes=encoded.size,
            duration_ms=round(samples * 1000 / settings.audio_sample_rate),
            sample_rate=settings.audio_sample_rate,
            bitrate_kbps=settings.audio_bitrate_kbps,
            loudness_before_lufs=round(main.loudness.integrated_lufs, 1),
            loudness_after_lufs=round(encoded.loudness.integrated_lufs, 1),
            true_peak_dbtp=round(encoded.loudness.true_peak_dbtp or 0.0, 1),
            created_by=actor[:100],
            created_at=now,
        )
        with Session(engine, expire_on_commit=False) as session:
            if session.get(AudioAsset, asset.sha256) is None:
                audit.record(
                    session,
                    actor=actor,
                    action="audio.add",
                    entity="audio_asset",
                    entity_id=asset.sha256,
                    now=now,
                    after={"name": asset.name, "file": asset.original_filename},
                )
            stored, created = store.save(session, asset, encoded.path, settings.data_dir)
        trimmed = main.samples - (main_piece.end - main_piece.start)
        return AddResult(
            stored, created, round(trimmed * 1000 / settings.audio_sample_rate), attempts
        )


def _prepare(
    source: Source, tag: str, work: Path, settings: Settings, min_seconds: float
) -> tuple[Decoded, Piece]:
    decoded = decode(
        source.path,
        display=source.display,
        work_dir=work,
        sample_rate=settings.audio_sample_rate,
        min_seconds=min_seconds,
        max_seconds=settings.audio_max_seconds,
        max_bytes=settings.audio_max_bytes,
        tag=tag,
    )
    if decoded.loudness.silent:
        raise InvalidInput(f"{source.display}: silent: there is no sound to broadcast")
    gain = settings.audio_target_lufs - decoded.loudness.integrated_lufs
    # The threshold is meant at the target loudness; in the file as received it is `gain` lower.
    span = sound_span(decoded, threshold_dbfs=settings.audio_silence_threshold_db - gain)
    kept_s = (span.end - span.start) / decoded.sample_rate
    if kept_s < min_seconds:
        raise InvalidInput(
            f"{source.display}: too short: {kept_s:.2f} s of sound once the silence around it "
            f"is trimmed, the shortest is {min_seconds:g} s"
        )
    return decoded, Piece(decoded.pcm, span.start, span.end, gain)


def _normalise(pieces: list[Piece], *, settings: Settings, work: Path) -> tuple[Encoded, int]:
    """Encode until the MP3 is within TOLERANCE_LU of the target and under the true-peak limit.

    The first encode usually is. When the limiter had much to do (speech with high peaks made
    much louder) the loudness falls short, and the gain is raised by the shortfall; when MP3
    overshoot put a peak over the limit, the ceiling is lowered by the excess.
    """
    target, ceiling = settings.audio_target_lufs, settings.audio_true_peak_dbtp
    limit = ceiling - LIMITER_HEADROOM_DB
    pieces = [Piece(p.pcm, p.start, p.end, p.gain_db + ENCODER_LOSS_LU) for p in pieces]
    encoded: Encoded | None = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        encoded = encode_mp3(
            pieces,
            sample_rate=settings.audio_sample_rate,
            bitrate_kbps=settings.audio_bitrate_kbps,
            limit_dbfs=limit,
            out=work / f"out-{attempt}.mp3",
            work_dir=work,
        )
        off = target - encoded.loudness.integrated_lufs
        over = (encoded.loudness.true_peak_dbtp or 0.0) - ceiling
        if abs(off) <= TOLERANCE_LU and over <= 0:
            return encoded, attempt
        if over > 0:
            limit -= over + 0.2
        if abs(off) > TOLERANCE_LU:
            pieces = [Piece(p.pcm, p.start, p.end, p.gain_db + off) for p in pieces]
    assert encoded is not None
    raise InvalidInput(
        f"cannot bring the audio to {target:g} LUFS under {ceiling:g} dBTP: after "
        f"{MAX_ATTEMPTS} tries it measures {encoded.loudness.integrated_lufs:.1f} LUFS, "
        f"true peak {encoded.loudness.true_peak_dbtp:.1f} dBTP (its peaks are too high for "
        "its loudness; a recording with less noise or clipping will do)"
    )
