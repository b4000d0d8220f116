"""Finding and running ffmpeg.

From PATH when there is one (a distribution's ffmpeg is updated with the system), else the static
binary of the `imageio-ffmpeg` wheel, so that a fresh machine without root has one after
`pip install`. ffprobe is never needed: decode.py reads what it needs from ffmpeg's own log.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO, Final

from loa.errors import LoaError


class FfmpegMissing(LoaError):
    code = "ffmpeg_missing"
    http_status = 503


@cache
def ffmpeg_binary() -> str:
    """The ffmpeg to run: PATH first, then the imageio-ffmpeg wheel's."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as exc:
        raise FfmpegMissing(
            "ffmpeg was not found on PATH and the imageio-ffmpeg package gives none "
            f"({exc}); install ffmpeg, or `pip install imageio-ffmpeg`"
        ) from None


@cache
def configure_pydub() -> None:
    """Point pydub at our ffmpeg. pydub looks for ffmpeg on PATH when it is imported and warns
    when there is none; the warning is wrong here (we set the converter right after). It also
    imports audioop, deprecated in Python 3.12 and gone in 3.13: see the README."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        from pydub import AudioSegment
    AudioSegment.converter = ffmpeg_binary()


def base_command() -> list[str]:
    """ffmpeg with a log this package parses: every line tagged with its level (`[error]`),
    no progress lines, never reading the terminal."""
    return [
        ffmpeg_binary(),
        "-nostdin",
        "-hide_banner",
        "-nostats",
        "-loglevel",
        "level+info",
    ]


def run(args: list[str], *, log: Path) -> int:
    """Run ffmpeg with `args`, its log to the file `log` (a pipe could fill and block it)."""
    with log.open("wb") as log_file:
        return subprocess.run(
            [*base_command(), *args], stdout=subprocess.DEVNULL, stderr=log_file, check=False
        ).returncode


CHUNK_BYTES: Final = 64 * 1024


@dataclass(frozen=True)
class Teed:
    producer_code: int
    consumer_code: int
    size: int
    sha256: str


def run_teed(
    producer: list[str], consumer: list[str], *, out: Path, producer_log: Path, consumer_log: Path
) -> Teed:
    """Run two ffmpegs side by side: what the first writes to its stdout goes to the file `out`
    and into the second's stdin (which measures it), and is hashed on the way.

    Why: a measuring pass over a stream costs as much as the pass that makes it; on two cores
    the two overlap instead of adding up. The copy loop is Python, but it moves a few MB.
    """
    digest = hashlib.sha256()
    size = 0
    with (
        producer_log.open("wb") as producer_err,
        consumer_log.open("wb") as consumer_err,
        out.open("wb") as target,
    ):
        making = subprocess.Popen(
            [*base_command(), *producer], stdout=subprocess.PIPE, stderr=producer_err
        )
        measuring = subprocess.Popen(
            [*base_command(), *consumer],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=consumer_err,
        )
        assert making.stdout is not None and measuring.stdin is not None
        try:
            size = _copy(making.stdout, target, digest, measuring.stdin)
        finally:
            with contextlib.suppress(BrokenPipeError):
                measuring.stdin.close()
            making.wait()
            measuring.wait()
    return Teed(making.returncode, measuring.returncode, size, digest.hexdigest())


def _copy(source: IO[bytes], target: IO[bytes], digest: hashlib._Hash, consumer: IO[bytes]) -> int:
    size = 0
    feeding = True
    while chunk := source.read(CHUNK_BYTES):
        size += len(chunk)
        target.write(chunk)
        digest.update(chunk)
        if feeding:
            try:
                consumer.write(chunk)
            except BrokenPipeError:  # the consumer failed; its log says why, reported after
                feeding = False
    return size
