"""Gain, limiting and MP3 encoding of the kept parts of one or more decoded files, in one ffmpeg
process; the MP3 is measured as it is written, by a second ffmpeg that decodes it.

The two run side by side (ffmpeg.run_teed), so measuring the real result costs little extra
time on two cores. The gain is linear (ffmpeg `volume`, in floating point, so nothing clips
before the limiter); `alimiter` (look-ahead, sample peak) then holds the peaks under a ceiling
set a little below the true-peak limit, because inter-sample peaks and MP3 encoding both add
some overshoot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from audio import ffmpeg
from audio.loudness import Loudness, ebur128_filter, parse_summary

# LAME's algorithm quality (0 best and slowest .. 9): 7 is its "fast" preset, half the time of
# the default on speech, and the difference is not audible on a loudspeaker horn.
LAME_QUALITY: Final = 7


@dataclass(frozen=True)
class Piece:
    """One decoded file's kept samples (mono s16le at the output rate) and the gain it gets."""

    pcm: Path
    start: int
    end: int
    gain_db: float


@dataclass(frozen=True)
class Encoded:
    path: Path
    sha256: str
    size: int
    loudness: Loudness  # of the MP3 as decoded, with its true peak


def encode_mp3(
    pieces: list[Piece],
    *,
    sample_rate: int,
    bitrate_kbps: int,
    limit_dbfs: float,
    out: Path,
    work_dir: Path,
) -> Encoded:
    """Join `pieces` in order, apply their gains and the limiter, encode mono MP3 to `out`."""
    inputs: list[str] = []
    chains: list[str] = []
    for index, piece in enumerate(pieces):
        inputs += ["-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", str(piece.pcm)]
        chains.append(
            f"[{index}:a]atrim=start_sample={piece.start}:end_sample={piece.end},"
            f"asetpts=PTS-STARTPTS,volume={piece.gain_db:.3f}dB:precision=float[p{index}]"
        )
    joined = "".join(f"[p{i}]" for i in range(len(pieces)))
    limit = max(0.0625, 10 ** (limit_dbfs / 20))
    graph = ";".join(chains) + (
        f";{joined}concat=n={len(pieces)}:v=0:a=1,"
        f"alimiter=limit={limit:.6f}:level=false:latency=true:attack=5:release=50[out]"
    )
    encode_args = [
        *inputs,
        "-filter_complex",
        graph,
        "-map",
        "[out]",
        "-map_metadata",
        "-1",
        # Byte-for-byte the same MP3 from the same input: a re-add finds the stored file.
        "-fflags",
        "+bitexact",
        "-flags:a",
        "+bitexact",
        "-c:a",
        "libmp3lame",
        "-b:a",
        f"{bitrate_kbps}k",
        "-compression_level",
        str(LAME_QUALITY),
        "-ar",
        str(sample_rate),
        "-ac",
        "1",
        "-f",
        "mp3",
        "pipe:1",
    ]
    measure_args = [
        *("-f", "mp3", "-i", "pipe:0", "-af", ebur128_filter(true_peak=True), "-f", "null", "-"),
    ]
    encode_log, measure_log = work_dir / "encode.log", work_dir / "measure-out.log"
    teed = ffmpeg.run_teed(
        encode_args, measure_args, out=out, producer_log=encode_log, consumer_log=measure_log
    )
    if teed.producer_code != 0:
        raise RuntimeError(f"ffmpeg could not encode: {encode_log.read_text(errors='replace')}")
    measured = parse_summary(measure_log.read_text(errors="replace"))
    if teed.consumer_code != 0 or measured is None:
        raise RuntimeError(
            f"ffmpeg could not measure the MP3: {measure_log.read_text(errors='replace')}"
        )
    return Encoded(out, teed.sha256, teed.size, measured)
