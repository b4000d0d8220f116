"""Audio ingest: normalise and encode N minutes (default 5) of speech-like audio, the whole of
`loa audio add` (decode and checks, loudness, silence trim, gain and limiter, MP3 encode and
the measurement of the MP3, the store and its row on SQLite). Target: <= 3 s for 5 minutes.

    python -m bench.audio_normalize [--minutes 5] [--runs 5] [--lufs -30] [--sample-rate 44100]

Each run adds the same file to a fresh data directory, so every run does the full work.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from audio.ingest import Source, add_audio
from loa import schema
from loa.db import make_engine
from loa.settings import Settings
from tests.audiosignals import make, measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lufs", type=float, default=-30, help="loudness of the input")
    parser.add_argument("--sample-rate", type=int, default=44100)
    parser.add_argument("--bitrate", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="loa-bench-audio-") as scratch:
        source = make(
            Path(scratch) / "speech.wav",
            "speech",
            seconds=args.minutes * 60,
            lufs=args.lufs,
            lead_silence=1.5,
            tail_silence=2.0,
        )
        print(f"input: {args.minutes:g} min speech-like WAV, mono 44.1 kHz, {args.lufs:g} LUFS")
        times: list[float] = []
        cpus: list[float] = []
        for run in range(args.runs):
            data_dir = Path(scratch) / f"run{run}"
            data_dir.mkdir()
            settings = Settings(
                data_dir=data_dir,
                audio_sample_rate=args.sample_rate,
                audio_bitrate_kbps=args.bitrate,
            )
            engine = make_engine(settings)
            schema.upgrade(engine)
            cpu_before = _cpu_seconds()
            started = time.perf_counter()
            result = add_audio(
                engine,
                Source(source, source.name),
                settings=settings,
                actor="bench",
                now=datetime.now(UTC),
            )
            elapsed = time.perf_counter() - started
            cpu = _cpu_seconds() - cpu_before
            engine.dispose()
            times.append(elapsed)
            cpus.append(cpu)
            asset = result.asset
            print(
                f"run {run + 1}: {elapsed:.2f} s, CPU {cpu:.2f} s  ({result.attempts} encode(s), "
                f"{asset.loudness_before_lufs:.1f} -> {asset.loudness_after_lufs:.1f} LUFS, "
                f"{asset.true_peak_dbtp:.1f} dBTP, {asset.bytes:,} bytes)"
            )
        checked = measure(data_dir / "audio" / asset.sha256[:2] / f"{asset.sha256}.mp3")
        print(
            f"median {statistics.median(times):.2f} s, min {min(times):.2f} s, "
            f"max {max(times):.2f} s over {args.runs} runs "
            f"(CPU median {statistics.median(cpus):.2f} s); "
            f"{args.minutes * 60 / statistics.median(times):.0f}x real time; "
            f"loudnorm re-measure: {checked.integrated_lufs:.1f} LUFS, "
            f"{checked.true_peak_dbtp:.1f} dBTP"
        )


def _cpu_seconds() -> float:
    """User and system time of this process and its finished children (the ffmpeg runs): what
    the work costs, less swayed than the wall time by other load on a shared machine."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
