"""Real audio for the tests and the benchmark, made with ffmpeg: tones, noise and a speech-like
signal (a voiced buzz with harmonics and breath noise, in 4 Hz syllables, with pauses), at a
chosen integrated loudness, in any format ffmpeg writes; and a loudness meter that does not share
code with audio/ (ffmpeg's `loudnorm` first pass, read from its JSON)."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from audio.ffmpeg import ffmpeg_binary

SPEECH = (
    "0.25*(sin(2*PI*(140+20*sin(2*PI*0.5*t))*t)+0.5*sin(2*PI*2*(140+20*sin(2*PI*0.5*t))*t)"
    "+0.3*sin(2*PI*3*(140+20*sin(2*PI*0.5*t))*t)+0.3*(random(0)*2-1))"
    "*(0.55+0.45*sin(2*PI*4*t))*lt(mod(t\\,4)\\,3.2)"
)
SOURCES = {
    "tone": "sine=frequency=440:sample_rate=44100",
    "noise": "anoisesrc=color=pink:amplitude=0.3:sample_rate=44100:seed=7",
    "speech": f"aevalsrc={SPEECH}:s=44100",
}
CODECS = {
    "wav": [],
    "flac": [],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "128k"],
    "m4a": ["-c:a", "aac", "-b:a", "128k"],
    "aac": ["-c:a", "aac", "-b:a", "128k"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "5"],
    "aiff": [],
}


@dataclass(frozen=True)
class Measured:
    integrated_lufs: float
    true_peak_dbtp: float


def ffmpeg(*args: str) -> str:
    result = subprocess.run(
        [ffmpeg_binary(), "-nostdin", "-hide_banner", "-nostats", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def measure(path: Path) -> Measured:
    """Integrated loudness and true peak by ffmpeg's loudnorm filter (its first pass)."""
    log = ffmpeg("-i", str(path), "-af", "loudnorm=print_format=json", "-f", "null", "-")
    found = re.search(r"\{[^{}]*\"input_i\"[^{}]*\}", log)
    assert found, log
    figures = json.loads(found.group(0))
    return Measured(float(figures["input_i"]), float(figures["input_tp"]))


def make(
    path: Path,
    kind: str,
    *,
    seconds: float,
    lufs: float,
    lead_silence: float = 0.0,
    tail_silence: float = 0.0,
    channels: int = 1,
) -> Path:
    """`seconds` of `kind` at about `lufs`, with silence around it, written to `path` (the
    format from its suffix). Louder than about -12 LUFS, noise and speech clip in integer
    formats, as loud recordings do."""
    reference = path.with_name(f"{path.stem}-reference.wav")
    ffmpeg(
        "-y",
        "-f",
        "lavfi",
        "-i",
        SOURCES[kind],
        "-t",
        str(seconds),
        "-c:a",
        "pcm_f32le",
        str(reference),
    )
    gain = lufs - measure(reference).integrated_lufs
    delay_ms = int(lead_silence * 1000)
    chain = f"volume={gain:.2f}dB,adelay={delay_ms}:all=1,apad=pad_dur={tail_silence}"
    ffmpeg(
        "-y",
        "-i",
        str(reference),
        "-af",
        chain,
        "-ac",
        str(channels),
        *CODECS[path.suffix.lstrip(".")],
        str(path),
    )
    reference.unlink()
    return path


def silence(path: Path, seconds: float) -> Path:
    ffmpeg("-y", "-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono", "-t", str(seconds), str(path))
    return path


def truncated(source: Path, path: Path) -> Path:
    """The first half of `source`'s bytes: a download or copy that stopped halfway."""
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
