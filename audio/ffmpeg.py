"""Finding and running ffmpeg.

From PATH when there is one (a distribution's ffmpeg is updated with the system), else the static
binary of the `imageio-ffmpeg` wheel, so that a fresh machine without root has one after
`pip install`. ffprobe is never needed: decode.py reads what it needs from ffmpeg's own log.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from functools import cache
from pathlib import Path

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
