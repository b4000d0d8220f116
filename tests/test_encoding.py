"""SMS encoding and segment counts (3GPP TS 23.038 / 23.040) and Vietnamese unaccent."""

from __future__ import annotations

import random
import unicodedata

import pytest

from templates.encoding import (
    GSM7,
    GSM7_BASIC,
    GSM7_EXTENSION,
    UCS2,
    SmsCount,
    count_sms,
    is_gsm7,
    unaccent,
)
from templates.render import render

VOWELS = "aăâeêioôơuưy"
TONES = ("\u0300", "\u0301", "\u0309", "\u0303", "\u0323")  # huyền, sắc, hỏi, ngã, nặng

SHORT = "BHXH tỉnh Hà Tĩnh: Tham gia BHXH tự nguyện - điểm tựa của bạn và gia đình."
LONG = (
    "Từ ngày 01/7/2025, người tham gia BHXH tự nguyện được hỗ trợ tiền đóng theo quy định. "
    "Chi tiết xin liên hệ UBND xã hoặc gọi 1900 9068 để được tư vấn, hoặc xem trên "
    "Cổng Dịch vụ công quốc gia."
)


def vietnamese_accented_letters() -> list[str]:
    """Every Vietnamese letter that carries a diacritic, lower and upper case, precomposed."""
    lower = {unicodedata.normalize("NFC", v + t) for v in VOWELS for t in ("", *TONES)}
    lower = {c for c in lower if c not in "aeiouy"} | {"đ"}
    return sorted(lower | {c.upper() for c in lower})


def test_the_gsm7_tables_are_the_standard_ones() -> None:
    assert len(GSM7_BASIC) == 127  # 128 code points less the escape
    for char in "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ!\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà\n\r ":
        assert char in GSM7_BASIC, char
    assert set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") <= GSM7_BASIC
    assert frozenset("^{}\\[~]|€\f") == GSM7_EXTENSION
    assert not GSM7_BASIC & GSM7_EXTENSION
    # ASCII that is not GSM-7, and look-alikes that are not either.
    for char in ("`", "\t", "ç", "á", "ả", "“", "’", "…", "–", "\x1b"):
        assert not is_gsm7(char), repr(char)
    # Every printable ASCII character but the backtick is in one table or the other.
    printable = {chr(c) for c in range(0x20, 0x7F)}
    assert printable - GSM7_BASIC - GSM7_EXTENSION == {"`"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a" * 160, SmsCount(GSM7, 1, 160, 160)),
        ("a" * 161, SmsCount(GSM7, 2, 161, 161)),
        ("a" * 306, SmsCount(GSM7, 2, 306, 306)),
        ("a" * 307, SmsCount(GSM7, 3, 307, 307)),
        ("€" * 80, SmsCount(GSM7, 1, 80, 160)),
        ("€" * 81, SmsCount(GSM7, 2, 81, 162)),
        ("ă" * 70, SmsCount(UCS2, 1, 70, 70)),
        ("ă" * 71, SmsCount(UCS2, 2, 71, 71)),
        ("ă" * 134, SmsCount(UCS2, 2, 134, 134)),
        ("ă" * 135, SmsCount(UCS2, 3, 135, 135)),
        ("😀", SmsCount(UCS2, 1, 1, 2)),
        ("😀" * 35, SmsCount(UCS2, 1, 35, 70)),
        ("😀" * 36, SmsCount(UCS2, 2, 36, 72)),
    ],
)
def test_the_vectors_of_the_standard(text: str, expected: SmsCount) -> None:
    assert count_sms(text) == expected


def test_an_empty_text_is_one_gsm7_segment_as_it_is_billed() -> None:
    assert count_sms("") == SmsCount(GSM7, 1, 0, 0)


def test_an_escape_pair_is_never_split_across_segments() -> None:
    # 152 + 2 + 152 = 306 septets would fit two segments of 153 if the pair could be cut after
    # its escape; it cannot, so segment 1 ends after 152 septets and the last "b" needs a third.
    text = "a" * 152 + "€" + "b" * 152
    assert count_sms(text) == SmsCount(GSM7, 3, 305, 306)
    # One septet less and the pair, moved whole to segment 2, still leaves room for the rest.
    assert count_sms("a" * 152 + "€" + "b" * 151).segments == 2
    # Where the pair does not straddle the boundary, 306 septets are two segments.
    assert count_sms("a" * 151 + "€" + "b" * 153).segments == 2


def test_a_surrogate_pair_is_never_split_across_segments() -> None:
    # 66 + 2 + 66 = 134 units would be exactly two segments of 67 if the emoji could be cut.
    text = "a" * 66 + "😀" + "b" * 66
    assert count_sms(text) == SmsCount(UCS2, 3, 133, 134)
    assert count_sms("a" * 65 + "😀" + "b" * 67).segments == 2


def test_a_vietnamese_sentence_costs_double_with_accents_and_one_segment_without() -> None:
    # 74 code points: over 70, so UCS-2 needs 2 segments; as GSM-7 it is 74 septets, 1 segment.
    assert count_sms(SHORT) == SmsCount(UCS2, 2, 74, 74)
    plain = unaccent(SHORT)
    assert plain == "BHXH tinh Ha Tinh: Tham gia BHXH tu nguyen - diem tua cua ban va gia dinh."
    assert count_sms(plain) == SmsCount(GSM7, 1, 74, 74)
    # 191 code points: 3 UCS-2 segments of 67 (134 < 191 <= 201); 2 GSM-7 segments of 153.
    assert count_sms(LONG) == SmsCount(UCS2, 3, 191, 191)
    assert count_sms(unaccent(LONG)) == SmsCount(GSM7, 2, 191, 191)


def test_decomposed_input_counts_as_its_composed_form() -> None:
    for text in (SHORT, LONG, "é" * 160):
        nfd = unicodedata.normalize("NFD", text)
        assert nfd != text
        assert count_sms(nfd) == count_sms(text)
    # "é" is GSM-7 once composed: 160 of them are one segment, not 320 UCS-2 units.
    assert count_sms(unicodedata.normalize("NFD", "é" * 160)) == SmsCount(GSM7, 1, 160, 160)
    # The ohm sign composes to the Greek capital omega, which is GSM-7.
    assert count_sms("\u2126").encoding == GSM7


def test_every_accented_vietnamese_letter_unaccents_to_an_ascii_letter() -> None:
    letters = vietnamese_accented_letters()
    assert len(letters) == 134
    assert all(len(c) == 1 for c in letters)  # all precomposed in NFC
    for letter in letters:
        plain = unaccent(letter)
        assert len(plain) == 1 and plain.isascii() and plain.isalpha(), letter
        assert plain.isupper() == letter.isupper(), letter
        assert plain in "aeiouydAEIOUYD"
        # The same from the decomposed form.
        assert unaccent(unicodedata.normalize("NFD", letter)) == plain
    assert unaccent("ĐƯỜNG Đi ườn") == "DUONG Di uon"


def test_unaccent_leaves_other_characters_alone() -> None:
    text = "Giá: 100.000đ “tốt” 😀 1️⃣ Ωmega `x` ç"
    assert unaccent(text) == "Gia: 100.000d “tot” 😀 1️⃣ Ωmega `x` c"
    assert unaccent("") == ""
    assert unicodedata.is_normalized("NFC", unaccent(unicodedata.normalize("NFD", SHORT)))


def test_render_can_unaccent_the_rendered_text() -> None:
    source = "Kính gửi {{ name }}: thẻ BHYT hết hạn {{ expiry | vn_date }}."
    context = {"name": "Nguyễn Thị Ánh", "expiry": "2026-05-31"}
    accented = render(source, context)
    assert accented == "Kính gửi Nguyễn Thị Ánh: thẻ BHYT hết hạn 31/05/2026."
    assert render(source, context, unaccent=True) == (
        "Kinh gui Nguyen Thi Anh: the BHYT het han 31/05/2026."
    )
    decomposed = {"name": unicodedata.normalize("NFD", context["name"]), "expiry": "2026-05-31"}
    assert render(source, decomposed, unaccent=True) == render(source, context, unaccent=True)


# Property-style checks on seeded random text (hypothesis is not a dependency of the project).

_ALPHABET = (
    list("abcXYZ019 .,:-\n")
    + list("€^{}[]~|\\")
    + vietnamese_accented_letters()
    + ["😀", "👍🏽", "`", "“"]
)


@pytest.mark.parametrize("seed", range(20))
def test_segments_never_decrease_as_text_grows(seed: int) -> None:
    rng = random.Random(seed)
    # Mostly one kind of text per run so that both encodings reach several segments.
    pool = _ALPHABET[:24] if seed % 2 else _ALPHABET
    text = "".join(rng.choice(pool) for _ in range(400))
    previous = count_sms("")
    for end in range(1, len(text) + 1):
        counted = count_sms(text[:end])
        assert counted.segments >= previous.segments, (seed, end)
        assert counted.characters == end
        if counted.encoding == UCS2:
            assert counted.units == len(text[:end].encode("utf-16-le")) // 2
        previous = counted
    assert previous.segments >= 3


@pytest.mark.parametrize("seed", range(20))
def test_unaccented_vietnamese_text_is_always_gsm7(seed: int) -> None:
    rng = random.Random(seed)
    words = [
        "".join(rng.choice([*vietnamese_accented_letters(), *"bcdghklmnpqrstvx"]) for _ in range(n))
        for n in (rng.randint(1, 7) for _ in range(60))
    ]
    text = " ".join(words) + rng.choice([".", "!", "?", ": 0912 345 678", " - 12/05/2026"])
    if seed % 2:
        text = unicodedata.normalize("NFD", text)
    assert count_sms(text).encoding == UCS2
    plain = unaccent(text)
    assert count_sms(plain).encoding == GSM7
    assert plain.isascii()
    assert len(plain) == len(unicodedata.normalize("NFC", text))
