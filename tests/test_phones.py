"""Phone normalization: pure logic, no database."""

from __future__ import annotations

import random

import phonenumbers
import phonenumbers.carrier
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from audience.phones import (
    OLD_TO_NEW_PREFIX,
    InvalidPhone,
    NormalizedPhone,
    _fast_mobile,
    normalize_phone,
)
from loa.errors import InvalidInput


@pytest.mark.parametrize(
    "raw",
    [
        "0912345678",
        "84912345678",
        "+84912345678",
        "0084912345678",
        "091 234 5678",
        "0912.345.678",
        "0912-345-678",
        "(091) 234-5678",
        "(+84) 912 345 678",
        "+84 (0) 912 345 678",
        "+84 0912345678",
        "  0912345678\t",
        "912345678",  # a spreadsheet ate the leading zero
    ],
)
def test_every_usual_form_gives_the_same_e164(raw: str) -> None:
    assert normalize_phone(raw) == NormalizedPhone(
        e164="+84912345678", carrier="Vinaphone", converted=False
    )


@pytest.mark.parametrize(("old", "new"), sorted(OLD_TO_NEW_PREFIX.items()))
def test_every_old_prefix_is_converted_keeping_the_last_seven_digits(old: str, new: str) -> None:
    result = normalize_phone(f"{old}2345678")
    assert result.e164 == f"+84{new[1:]}2345678"
    assert result.converted is True
    # The international way of writing an old number converts the same way.
    assert normalize_phone(f"+84 {old[1:]} 234 5678") == result


def test_the_2018_table_is_complete() -> None:
    assert len(OLD_TO_NEW_PREFIX) == 21
    expected_viettel = {f"016{d}": f"03{d}" for d in range(2, 10)}
    assert expected_viettel.items() <= OLD_TO_NEW_PREFIX.items()
    # Every new prefix is distinct: two old ranges never merged into one.
    assert len(set(OLD_TO_NEW_PREFIX.values())) == len(OLD_TO_NEW_PREFIX)


def test_old_numbers_are_refused_when_conversion_is_not_allowed() -> None:
    with pytest.raises(InvalidPhone, match=r"2018 conversion \(now 0394567890\)"):
        normalize_phone("0169 456 7890", allow_converted=False)
    # A current number is unaffected by the flag.
    assert normalize_phone("0394567890", allow_converted=False).converted is False


def test_carrier_comes_from_the_prefix() -> None:
    assert normalize_phone("0862345678").carrier == "Viettel"
    assert normalize_phone("0702345678").carrier == "MobiFone"
    assert normalize_phone("0592345678").carrier == "G-Mobile"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("02393855555", "not a mobile number (landline)"),  # Hà Tĩnh landline
        ("+84 239 385 5555", "not a mobile number (landline)"),
        ("02438253456", "not a mobile number (landline)"),  # Hà Nội landline
        ("1800 1234", "not a mobile number (toll-free)"),
        ("1800123456", "not a mobile number (toll-free)"),  # starts with 1 but is not an old mobile
        ("", "phone number is empty"),
        (" - ", "phone number is empty"),
        ("không có", "contains characters that are not part of a phone number"),
        ("0912345678 (Lan)", "contains characters that are not part of a phone number"),
        ("9.12345678E+08", "contains characters that are not part of a phone number"),
        ("091234567", "not a valid Vietnamese phone number"),
        ("0912", "too few digits for a Vietnamese number"),
        ("+84", "too few digits for a Vietnamese number"),
        ("0912345678901234", "too many digits for a Vietnamese number"),
        ("01804567890", "not a valid Vietnamese phone number"),  # 0180 was never a mobile prefix
        ("+1 202 555 0100", "not a Vietnamese number (country code +1)"),
        ("0085512345678", "not a Vietnamese number (country code +855)"),
        ("+8491+2345678", "contains characters that are not part of a phone number"),
    ],
)
def test_what_cannot_receive_an_sms_is_rejected_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhone) as caught:
        normalize_phone(raw)
    assert caught.value.reason == reason
    assert isinstance(caught.value, InvalidInput)  # the CLI and API translate it like any input


def test_agrees_with_phonenumbers_on_random_ten_digit_numbers() -> None:
    rng = random.Random(20260508)
    mobiles = 0
    for _ in range(4000):
        national = "0" + rng.choice("123456789") + "".join(rng.choices("0123456789", k=8))
        parsed = phonenumbers.parse(national, "VN")
        is_mobile = (
            phonenumbers.is_valid_number(parsed)
            and phonenumbers.number_type(parsed) == PhoneNumberType.MOBILE
        )
        try:
            result = normalize_phone(_styled(national, rng))
        except InvalidPhone:
            assert not is_mobile, national
            continue
        assert is_mobile, national
        assert result.e164 == phonenumbers.format_number(parsed, PhoneNumberFormat.E164)
        assert result.converted is False
        mobiles += 1
    # The sample must contain plenty of both kinds, or the loop proves nothing.
    assert 1000 < mobiles < 3500


def _styled(national: str, rng: random.Random) -> str:
    """The same number the way a person or a spreadsheet might have written it."""
    digits = national[1:]
    style = rng.randrange(5)
    if style == 0:
        return national
    if style == 1:
        return "84" + digits
    if style == 2:
        return f"+84 {digits[:2]} {digits[2:5]} {digits[5:]}"
    if style == 3:
        return "0084" + digits
    return f"{national[:4]}.{national[4:7]}.{national[7:]}"


def _phonenumbers_says(national: str) -> NormalizedPhone | None:
    """What phonenumbers alone makes of a national number (without the trunk zero)."""
    try:
        parsed = phonenumbers.parse("+84" + national)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.number_type(parsed) != PhoneNumberType.MOBILE:
        return None
    return NormalizedPhone(
        e164=phonenumbers.format_number(parsed, PhoneNumberFormat.E164),
        carrier=phonenumbers.carrier.name_for_valid_number(parsed, "en") or None,
        converted=False,
    )


def test_the_fast_path_agrees_with_phonenumbers_on_every_number_it_accepts() -> None:
    """The importer decides current mobile numbers without phonenumbers' parser (audience.phones
    _fast_mobile). Every three-digit start, every length from 7 to 11 digits, random endings:
    whatever the fast path accepts must be exactly what phonenumbers says, and it must accept
    every mobile number phonenumbers accepts, or it does not pay."""
    rng = random.Random(4)
    accepted = 0
    for start in range(1000):
        for length in range(7, 12):
            for _ in range(6):
                national = f"{start:03d}" + "".join(rng.choices("0123456789", k=length - 3))
                fast = _fast_mobile(national)
                expected = _phonenumbers_says(national)
                if fast is None:
                    # phonenumbers strips a leading trunk zero itself; normalize_phone has done
                    # that already, so such a number only reaches the slow path, which is fine.
                    assert expected is None or national.startswith("0"), national
                    continue
                accepted += 1
                assert NormalizedPhone(fast[0], fast[1], False) == expected, national
    assert accepted > 2000  # mobiles are 9 digits: over a third of the 6,000 9-digit numbers


def test_the_fast_path_is_taken_for_the_usual_forms() -> None:
    # Every written form of a current mobile reaches the fast path with the same national number,
    # and normalize_phone gives what phonenumbers gives.
    for raw in ("0912345678", "+84 912 345 678", "84912345678", "0084912345678", "912345678"):
        assert normalize_phone(raw) == _phonenumbers_says("912345678")
    assert _fast_mobile("912345678") is not None
    assert _fast_mobile("2393855555") is None  # a landline goes to phonenumbers for its reason
    assert _fast_mobile("18001234") is None
