"""Loudness per ITU-R BS.1770 (EBU R128): integrated loudness in LUFS and true peak in dBTP.

Measured with ffmpeg's `ebur128` filter rather than pyloudnorm: pyloudnorm measures integrated
loudness only (no true peak) and brings numpy and scipy; ffmpeg is already here, decodes every
format, and `ebur128=peak=true` gives both figures in one pass over the audio. ffmpeg's
`loudnorm` filter (the usual two-pass recipe) measures the same way but upsamples everything to
192 kHz, about three times the work of `ebur128` on this machine: too slow for the 3-second
target on five minutes of speech (docs/benchmarks.md).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from audio import ffmpeg

# ebur128 reports -70 LUFS (its absolute gate) for audio with nothing above the gate.
SILENCE_LUFS = -70.0

_INTEGRATED = re.compile(r"Integrated loudness:\s*\n\s*I:\s*(\S+) LUFS")
_TRUE_PEAK = re.compile(r"True peak:\s*\n\s*Peak:\s*(\S+) dBFS")


@dataclass(frozen=True)
class Loudness:
    integrated_lufs: float
    # The true peak (4x oversampled), when it was measured; -inf for digital silence.
    true_peak_dbtp: float | None = None

    @property
    def silent(self) -> bool:
        return self.integrated_lufs <= SILENCE_LUFS or math.isnan(self.integrated_lufs)


def ebur128_filter(*, true_peak: bool) -> str:
    # framelog=quiet: the summary only, not a line per 100 ms.
    return "ebur128=framelog=quiet" + (":peak=true" if true_peak else "")


def parse_summary(log: str) -> Loudness | None:
    """The figures of the last ebur128 summary in an ffmpeg log; None when there is none (the
    input never reached the filter)."""
    integrated = _INTEGRATED.findall(log)
    if not integrated:
        return None
    peaks = _TRUE_PEAK.findall(log)
    return Loudness(
        integrated_lufs=float(integrated[-1]),
        true_peak_dbtp=float(peaks[-1]) if peaks else None,
    )


def measure_file(path: Path, work_dir: Path) -> Loudness:
    """Integrated loudness and true peak of a whole file, as a player would decode it."""
    log = work_dir / "measure.log"
    ffmpeg.run(["-i", str(path), "-af", ebur128_filter(true_peak=True), "-f", "null", "-"], log=log)
    measured = parse_summary(log.read_text(errors="replace"))
    if measured is None:
        raise RuntimeError(f"ffmpeg measured nothing in {path}: {log.read_text(errors='replace')}")
    return measured
