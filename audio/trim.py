"""Leading and trailing silence, found with pydub on the 8 kHz analysis copy of decode.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from audio.decode import Decoded
from loa.errors import InvalidInput

# Kept before the first and after the last sound, so that a word's attack and a fade's tail,
# which sit just under the threshold, are not clipped.
MARGIN_MS: Final = 100
CHUNK_MS: Final = 10


@dataclass(frozen=True)
class Span:
    """The part of a decoded file that is kept, in samples of its PCM."""

    start: int
    end: int


def sound_span(decoded: Decoded, *, threshold_dbfs: float) -> Span:
    """Where the sound starts and ends: the first and last 10 ms chunks louder than
    `threshold_dbfs` (RMS, pydub's dBFS), with MARGIN_MS kept around them."""
    from pydub.silence import detect_leading_silence

    segment = decoded.analysis
    length_ms = len(segment)
    lead = detect_leading_silence(segment, silence_threshold=threshold_dbfs, chunk_size=CHUNK_MS)
    if lead >= length_ms:
        raise InvalidInput(
            f"{decoded.display}: silent: nothing is louder than {threshold_dbfs:.0f} dBFS "
            "(LOA_AUDIO_SILENCE_THRESHOLD_DB, after normalisation)"
        )
    trail = detect_leading_silence(
        segment.reverse(), silence_threshold=threshold_dbfs, chunk_size=CHUNK_MS
    )
    start_ms = max(0, lead - MARGIN_MS)
    end_ms = min(length_ms, length_ms - trail + MARGIN_MS)
    rate = decoded.sample_rate
    return Span(
        start=start_ms * rate // 1000,
        end=min(decoded.samples, end_ms * rate // 1000),
    )
