"""SMS encoding and segments (3GPP TS 23.038 / 23.040), and Vietnamese text without diacritics.

The planner needs the exact number of segments a text costs, because operators bill per segment
and one Vietnamese diacritic turns a 160-character GSM-7 message into a 70-unit UCS-2 one. The
GSM-7 tables are written out here by hand: the small PyPI counters divide a total length by the
per-segment size, which miscounts when an escape pair or a surrogate pair would straddle a segment
boundary (a handset never splits either), and none is kept up well enough to depend on for billing.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

GSM7 = "GSM-7"
UCS2 = "UCS-2"

# The default alphabet in code order, 0x00-0x7F, one row of 16 per line. 0x1B is the escape to the
# extension table, not a character of its own, so it is left out of the set below.
_GSM7_BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
GSM7_BASIC = frozenset(_GSM7_BASIC_TABLE) - {"\x1b"}
# The default extension table: each is sent as ESC + code, two septets.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

_GSM7_SINGLE = 160
_GSM7_PART = 153  # 160 septets less the 6-octet concatenation header (7 septets with fill bits)
_UCS2_SINGLE = 70
_UCS2_PART = 67  # 140 octets less the 6-octet concatenation header, in 2-octet units

# Blocks of combining diacritics on Latin letters; U+20D0-20FF (marks for symbols, such as the
# emoji keycap) is not among them, so unaccent leaves emoji sequences whole.
_DIACRITIC_BLOCKS = ((0x0300, 0x036F), (0x1AB0, 0x1AFF), (0x1DC0, 0x1DFF), (0xFE20, 0xFE2F))
# Letters with a stroke have no decomposition, so NFD alone would leave them.
_STROKED = str.maketrans({"đ": "d", "Đ": "D"})


@dataclass(frozen=True)
class SmsCount:
    """How a text goes out as SMS. `units` are septets for GSM-7, UTF-16 code units for UCS-2;
    `characters` are Unicode code points after NFC."""

    encoding: str
    segments: int
    characters: int
    units: int


def is_gsm7(text: str) -> bool:
    """True when every character of the NFC text is in the GSM-7 default alphabet or extension."""
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in unicodedata.normalize("NFC", text))


def _segments(costs: list[int], single: int, part: int) -> int:
    """Segments needed for characters of these unit costs; a character is never split."""
    total = sum(costs)
    if total <= single:
        # An empty SMS is still one message on the air and on the bill.
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > part:
            segments, used = segments + 1, 0
        used += cost
    return segments


def count_sms(text: str) -> SmsCount:
    """The encoding and number of segments the NFC form of `text` needs as one SMS."""
    text = unicodedata.normalize("NFC", text)
    if is_gsm7(text):
        costs = [2 if c in GSM7_EXTENSION else 1 for c in text]
        return SmsCount(
            encoding=GSM7,
            segments=_segments(costs, _GSM7_SINGLE, _GSM7_PART),
            characters=len(text),
            units=sum(costs),
        )
    costs = [2 if ord(c) > 0xFFFF else 1 for c in text]  # outside the BMP: a surrogate pair
    return SmsCount(
        encoding=UCS2,
        segments=_segments(costs, _UCS2_SINGLE, _UCS2_PART),
        characters=len(text),
        units=sum(costs),
    )


def _is_diacritic(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _DIACRITIC_BLOCKS)


def unaccent(text: str) -> str:
    """Vietnamese without diacritics, as brandname SMS are sent: 'Hà Tĩnh' -> 'Ha Tinh',
    'đ' -> 'd'. Characters that carry no diacritic (punctuation, emoji, other scripts) are kept."""
    decomposed = unicodedata.normalize("NFD", text).translate(_STROKED)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not _is_diacritic(c)))
