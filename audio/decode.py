"""Decoding an uploaded or given file to mono PCM, and refusing what should not be broadcast.

One ffmpeg pass decodes the file, measures its integrated loudness (the "before" figure and the
base of the gain), and writes two copies: mono 16-bit PCM at the output sample rate, which the
encoder reads, and an 8 kHz copy, small enough to hold in memory even for an hour (58 MB), on
which pydub finds the silence to trim. ffmpeg's log, read line by line with its level, says
whether the file decoded cleanly; ffprobe is not used.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from audio import ffmpeg
from audio.loudness import Loudness, ebur128_filter, parse_summary
from loa.errors import InvalidInput

if TYPE_CHECKING:
    from pydub import AudioSegment

ANALYSIS_RATE: Final = 8000
SAMPLE_BYTES: Final = 2  # s16le mono

# ffmpeg's demuxer names of the accepted formats: WAV, MP3, M4A/AAC (MP4 or raw ADTS), OGG, FLAC.
ACCEPTED_FORMATS: Final = {
    "wav": "WAV",
    "mp3": "MP3",
    "mov,mp4,m4a,3gp,3g2,mj2": "M4A",
    "aac": "AAC",
    "ogg": "OGG",
    "flac": "FLAC",
}
ACCEPTED_NAMES: Final = "WAV, MP3, M4A/AAC, OGG or FLAC"

_INPUT = re.compile(r"Input #0, (\S+), from ")
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_LEVEL = re.compile(r"\[(error|fatal|warning)\] (.*)")
# A declared length this much longer than what decodes means the end of the file is missing
# (an encoder's padding and priming are a few tens of milliseconds).
_TRUNCATION_SLACK_S: Final = 0.25


@dataclass(frozen=True)
class Decoded:
    display: str  # the file as the caller named it, for messages
    format_name: str  # WAV, MP3, ...
    pcm: Path  # mono s16le at sample_rate
    sample_rate: int
    samples: int
    analysis: AudioSegment  # mono, ANALYSIS_RATE, for silence detection
    loudness: Loudness  # integrated loudness of the whole decoded file

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate


def decode(
    path: Path,
    *,
    display: str,
    work_dir: Path,
    sample_rate: int,
    min_seconds: float,
    max_seconds: float,
    max_bytes: int,
    tag: str = "main",
) -> Decoded:
    """Decode `path`, or raise InvalidInput saying why it cannot be broadcast."""
    size = path.stat().st_size
    if size == 0:
        raise InvalidInput(f"{display}: the file is empty")
    if size > max_bytes:
        raise InvalidInput(
            f"{display}: the file is {size:,} bytes, over the limit of {max_bytes:,} "
            "(LOA_AUDIO_MAX_BYTES)"
        )
    stem = work_dir / f"decode-{tag}"  # one work directory holds the main file and jingles
    pcm, low, log_path = stem.with_suffix(".pcm"), stem.with_suffix(".8k"), stem.with_suffix(".log")
    graph = (
        f"[0:a:0]aformat=sample_fmts=s16:channel_layouts=mono,aresample={sample_rate},"
        f"{ebur128_filter(true_peak=False)},asplit=2[full][low];"
        f"[low]aresample={ANALYSIS_RATE}[low8k]"
    )
    # -t before -i: a file far over the limit is read only a second past it, not to its end.
    code = ffmpeg.run(
        [
            *("-t", f"{max_seconds + 1:.3f}", "-i", str(path), "-filter_complex", graph),
            *(
                "-map",
                "[full]",
                "-f",
                "s16le",
                str(pcm),
                "-map",
                "[low8k]",
                "-f",
                "s16le",
                str(low),
            ),
        ],
        log=log_path,
    )
    log = log_path.read_text(errors="replace")
    problems = [m.group(2) for m in _LEVEL.finditer(log) if _is_problem(m.group(1), m.group(2))]

    opened = _INPUT.search(log)
    if opened is None:
        reason = problems[0] if problems else "ffmpeg could not open it"
        raise InvalidInput(
            f"{display}: not an audio file that can be read ({reason}); send {ACCEPTED_NAMES}"
        )
    format_name = ACCEPTED_FORMATS.get(opened.group(1))
    if format_name is None:
        raise InvalidInput(
            f"{display}: unsupported format {opened.group(1).split(',')[0]!r}; "
            f"send {ACCEPTED_NAMES}"
        )
    if any("matches no streams" in p for p in problems):
        raise InvalidInput(f"{display}: the {format_name} file has no audio stream")
    if problems or code != 0 or not pcm.exists():
        reason = problems[0] if problems else f"ffmpeg exited with status {code}"
        raise InvalidInput(f"{display}: the {format_name} file is corrupt or truncated ({reason})")

    samples = pcm.stat().st_size // SAMPLE_BYTES
    decoded_s = samples / sample_rate
    if decoded_s > max_seconds:
        raise InvalidInput(
            f"{display}: too long: more than {_minutes(max_seconds)} (LOA_AUDIO_MAX_SECONDS)"
        )
    declared = _declared_seconds(log)
    if declared is not None and decoded_s < declared - _TRUNCATION_SLACK_S:
        raise InvalidInput(
            f"{display}: the {format_name} file is truncated: it declares {declared:.1f} s "
            f"but only {decoded_s:.1f} s decode"
        )
    if format_name == "OGG" and not _ogg_ends_cleanly(path):
        raise InvalidInput(
            f"{display}: the OGG file is truncated: its last page is incomplete or not the "
            "end of the stream"
        )
    if decoded_s < min_seconds:
        raise InvalidInput(
            f"{display}: too short: {decoded_s:.2f} s, the shortest is {min_seconds:g} s "
            "(LOA_AUDIO_MIN_SECONDS)"
        )
    loudness = parse_summary(log)
    if loudness is None:
        raise InvalidInput(f"{display}: the {format_name} file decoded to nothing")

    ffmpeg.configure_pydub()
    from pydub import AudioSegment

    analysis = AudioSegment(
        data=low.read_bytes(), sample_width=SAMPLE_BYTES, frame_rate=ANALYSIS_RATE, channels=1
    )
    low.unlink()
    return Decoded(display, format_name, pcm, sample_rate, samples, analysis, loudness)


def _is_problem(level: str, message: str) -> bool:
    # Warnings are mostly harmless (a guessed channel layout, an estimated duration); the
    # demuxers' "corrupt packet" warnings are how a cut-off WAV shows itself.
    return level in ("error", "fatal") or "corrupt" in message.lower()


def _declared_seconds(log: str) -> float | None:
    """The length the container declares, unless ffmpeg only estimated it from the bitrate."""
    if "Estimating duration from bitrate" in log:
        return None
    found = _DURATION.search(log)
    if found is None:
        return None
    hours, minutes, seconds = found.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _ogg_ends_cleanly(path: Path) -> bool:
    """Whether the file is whole Ogg pages and the last one ends the stream (RFC 3533).

    Hand-written because ffmpeg decodes a cut-off Ogg file without a word: its length comes
    from the last granule it finds, so the declared and decoded lengths agree. Pages are
    walked by their headers (27 bytes and a segment table), never by searching for "OggS",
    which can occur inside a packet.
    """
    size = path.stat().st_size
    position = 0
    last_flags = 0
    with path.open("rb") as handle:
        while position < size:
            handle.seek(position)
            header = handle.read(27)
            if len(header) < 27 or header[:4] != b"OggS":
                return False
            last_flags = header[5]
            segments = header[26]
            table = handle.read(segments)
            if len(table) < segments:
                return False
            position += 27 + segments + sum(struct.unpack(f"{segments}B", table))
    return position == size and bool(last_flags & 0x04)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
