"""Gain, limiting and MP3 encoding of the kept parts of one or more decoded files, in one ffmpeg
process; the MP3 is measured as it is written, by a second ffmpeg that decodes it.

The two run side by side (the encoder's output is copied to the file, to the SHA-256 and to the
measuring process in one loop), so measuring the real result costs almost no extra time on two
cores. The gain is linear (ffmpeg `volume`, in floating point, so nothing clips before the
limiter); `alimiter` (look-ahead, sample peak) then holds the peaks under a ceiling set a little
below the true-peak limit, because inter-sample peaks and MP3 encoding both add some overshoot.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from audio import ffmpeg
from audio.loudness import Loudness, ebur128_filter, parse_summary

# LAME's algorithm quality (0 best and slowest .. 9): 7 is its "fast" preset, half the time of
# the default on speech, and the difference is not audible on a loudspeaker horn.
LAME_QUALITY: Final = 7
CHUNK_BYTES: Final = 64 * 1024


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
        *ffmpeg.base_command(),
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
        *ffmpeg.base_command(),
        *("-f", "mp3", "-i", "pipe:0", "-af", ebur128_filter(true_peak=True), "-f", "null", "-"),
    ]
    encode_log, measure_log = work_dir / "encode.log", work_dir / "measure-out.log"
    digest = hashlib.sha256()
    size = 0
    with (
        encode_log.open("wb") as enc_err,
        measure_log.open("wb") as meas_err,
        out.open("wb") as target,
    ):
        encoder = subprocess.Popen(encode_args, stdout=subprocess.PIPE, stderr=enc_err)
        meter = subprocess.Popen(
            measure_args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=meas_err
        )
        assert encoder.stdout is not None and meter.stdin is not None
        try:
            size = _copy(encoder.stdout, target, digest, meter.stdin)
        finally:
            with contextlib.suppress(BrokenPipeError):
                meter.stdin.close()
            encoder.wait()
            meter.wait()
    if encoder.returncode != 0:
        raise RuntimeError(f"ffmpeg could not encode: {encode_log.read_text(errors='replace')}")
    measured = parse_summary(measure_log.read_text(errors="replace"))
    if meter.returncode != 0 or measured is None:
        raise RuntimeError(
            f"ffmpeg could not measure the MP3: {measure_log.read_text(errors='replace')}"
        )
    return Encoded(out, digest.hexdigest(), size, measured)


def _copy(source: IO[bytes], target: IO[bytes], digest: hashlib._Hash, meter: IO[bytes]) -> int:
    size = 0
    metering = True
    while chunk := source.read(CHUNK_BYTES):
        size += len(chunk)
        target.write(chunk)
        digest.update(chunk)
        if metering:
            try:
                meter.write(chunk)
            except BrokenPipeError:  # the meter failed; its log says why, reported after
                metering = False
    return size
