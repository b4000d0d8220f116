"""Audio ingest on real audio made by ffmpeg: the MP3 meets the loudness target and the true-peak
ceiling whatever came in; what cannot be broadcast is refused with the reason and leaves
nothing; the same audio twice is one asset."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from audio.ffmpeg import ffmpeg_binary
from audio.ingest import AddResult, Source, add_audio
from audio.store import asset_path
from loa.errors import InvalidInput
from loa.models import AudioAsset, AuditEntry
from loa.settings import Settings
from tests.audiosignals import make, measure, silence, truncated
from tests.conftest import FakeClock


def add(
    engine: Engine, settings: Settings, clock: FakeClock, path: Path, **kw: object
) -> AddResult:
    return add_audio(
        engine,
        Source(path, path.name),
        settings=settings,
        actor="test",
        now=clock(),
        **kw,  # type: ignore[arg-type]
    )


def stored(engine: Engine, settings: Settings) -> tuple[int, list[Path]]:
    with Session(engine) as session:
        rows = session.exec(select(func.count()).select_from(AudioAsset)).one()
    files = sorted((settings.data_dir / "audio").rglob("*.mp3"))
    return rows, files


@pytest.mark.parametrize(
    ("kind", "suffix", "lufs"),
    [
        ("speech", "wav", -35),
        ("speech", "mp3", -6),
        ("tone", "flac", -35),
        ("noise", "m4a", -6),
        ("speech", "ogg", -35),
        ("noise", "aac", -35),
    ],
)
def test_any_level_in_any_format_comes_out_on_target_under_the_ceiling(
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
    tmp_path: Path,
    kind: str,
    suffix: str,
    lufs: float,
) -> None:
    # MP3 and M4A in stereo (the same in both channels), the others mono.
    channels = 2 if suffix in ("mp3", "m4a") else 1
    source = make(tmp_path / f"in.{suffix}", kind, seconds=8, lufs=lufs, channels=channels)
    before = measure(source).integrated_lufs
    assert abs(before - lufs) < 3  # the input really is that quiet or that loud

    result = add(engine, settings, clock, source)

    path = asset_path(settings.data_dir, result.asset.sha256)
    after = measure(path)
    assert abs(after.integrated_lufs - settings.audio_target_lufs) <= 1.0, after
    assert after.true_peak_dbtp <= settings.audio_true_peak_dbtp, after
    # What is recorded is what an independent meter finds.
    assert abs(result.asset.loudness_after_lufs - after.integrated_lufs) <= 0.3
    # "Before" is of the mono mix that is broadcast: a stereo file with the same signal in both
    # channels measures 3 LU less once mixed to one (BS.1770 sums the channels' power).
    assert abs(result.asset.loudness_before_lufs - (before - 3 * (channels - 1))) <= 1.0
    assert result.asset.true_peak_dbtp <= settings.audio_true_peak_dbtp
    header = ffmpeg_stream(path)
    assert "mp3" in header and "mono" in header and "44100 Hz" in header and "64 kb/s" in header
    assert result.asset.bytes == path.stat().st_size
    assert result.asset.source_format == {"m4a": "M4A", "aac": "AAC"}.get(suffix, suffix.upper())


def ffmpeg_stream(path: Path) -> str:
    """ffmpeg's description of the file's audio stream (codec, rate, channels, bitrate)."""
    probe = subprocess.run(
        [ffmpeg_binary(), "-hide_banner", "-i", str(path)], capture_output=True, text=True
    )
    return next(line for line in probe.stderr.splitlines() if "Audio:" in line)


def test_silence_around_the_sound_is_trimmed_and_the_same_audio_twice_is_one_asset(
    engine: Engine, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    source = make(
        tmp_path / "ban-tin.wav", "speech", seconds=6, lufs=-30, lead_silence=2.0, tail_silence=3.0
    )

    first = add(engine, settings, clock, source, name="Bản tin BHXH")
    again = add(engine, settings, clock, source, name="another name")

    assert first.created and not again.created
    assert again.asset.sha256 == first.asset.sha256 and again.asset.name == "Bản tin BHXH"
    # 11 s in, about 6 s of sound (the speech ends in a pause, trimmed too) plus 0.1 s margins.
    assert 5_000 <= first.asset.duration_ms <= 6_300, first.asset.duration_ms
    assert first.trimmed_ms >= 4_700
    rows, files = stored(engine, settings)
    assert rows == 1 and files == [asset_path(settings.data_dir, first.asset.sha256)]
    assert not any((settings.data_dir / "audio" / "tmp").iterdir())
    with Session(engine) as session:
        audits = session.exec(select(AuditEntry).where(AuditEntry.action == "audio.add")).all()
    assert [a.entity_id for a in audits] == [first.asset.sha256]


def test_intro_and_outro_are_joined_and_the_whole_is_on_target(
    engine: Engine, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    intro = make(tmp_path / "intro.wav", "tone", seconds=1.5, lufs=-40)
    main = make(tmp_path / "main.mp3", "speech", seconds=6, lufs=-10)
    outro = make(tmp_path / "outro.ogg", "noise", seconds=1.0, lufs=-25)

    result = add(
        engine,
        settings,
        clock,
        main,
        intro=Source(intro, "intro.wav"),
        outro=Source(outro, "outro.ogg"),
    )

    assert result.asset.intro_filename == "intro.wav" and result.asset.outro_filename == "outro.ogg"
    assert 8_000 <= result.asset.duration_ms <= 8_700, result.asset.duration_ms
    after = measure(asset_path(settings.data_dir, result.asset.sha256))
    assert abs(after.integrated_lufs - settings.audio_target_lufs) <= 1.0
    assert after.true_peak_dbtp <= settings.audio_true_peak_dbtp
    alone = add(engine, settings, clock, main)
    assert alone.asset.sha256 != result.asset.sha256


def refused(engine: Engine, settings: Settings, clock: FakeClock, path: Path, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason) as caught:
        add(engine, settings, clock, path)
    assert path.name in caught.value.message  # the message names the file
    rows, files = stored(engine, settings)
    assert (rows, files) == (0, [])
    tmp = settings.data_dir / "audio" / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir())


def test_a_file_that_is_not_audio_is_refused(
    engine: Engine, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    junk = tmp_path / "ban-tin.mp3"
    junk.write_bytes(bytes(range(256)) * 40)
    refused(engine, settings, clock, junk, "not an audio file that can be read")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    refused(engine, settings, clock, empty, "the file is empty")


@pytest.mark.parametrize("suffix", ["wav", "mp3", "flac", "ogg", "m4a", "aac"])
def test_a_truncated_file_is_refused(
    engine: Engine, settings: Settings, clock: FakeClock, tmp_path: Path, suffix: str
) -> None:
    whole = make(tmp_path / f"whole.{suffix}", "speech", seconds=10, lufs=-20)
    cut = truncated(whole, tmp_path / f"cut.{suffix}")
    reason = "moov atom not found" if suffix == "m4a" else "truncated"
    refused(engine, settings, clock, cut, reason)


def test_silent_short_long_oversized_and_unsupported_files_are_refused(
    engine: Engine, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    refused(engine, settings, clock, silence(tmp_path / "silent.wav", 5), "silent")
    refused(
        engine,
        settings,
        clock,
        make(tmp_path / "short.wav", "tone", seconds=0.5, lufs=-20),
        "too short",
    )
    # 0.6 s of sound in ten of silence: too short once trimmed.
    blip = make(
        tmp_path / "blip.flac", "tone", seconds=0.6, lufs=-20, lead_silence=5, tail_silence=4
    )
    refused(engine, settings, clock, blip, "too short: 0.[0-9]+ s of sound once the silence")
    refused(
        engine,
        settings,
        clock,
        make(tmp_path / "song.aiff", "tone", seconds=3, lufs=-20),
        "unsupported format 'aiff'",
    )
    long_file = make(tmp_path / "long.mp3", "speech", seconds=8, lufs=-20)
    settings.audio_max_seconds = 5
    refused(engine, settings, clock, long_file, "too long: more than 5 s")
    settings.audio_max_bytes = 10_000
    refused(engine, settings, clock, long_file, "over the limit of 10,000")
