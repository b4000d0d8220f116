"""Vietnamese mobile numbers as people write them, turned into E.164 or rejected with a reason."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType, ValidationResult, carrier
from phonenumbers import carrierdata as carrier_data

from loa.errors import InvalidInput

# The 2018 conversion of 11-digit mobile numbers to 10 digits: the old prefix was replaced and the
# last 7 digits were kept. Old numbers still turn up in lists kept since before 2018 (and the old
# prefixes were never reassigned), so an import can convert them instead of losing the person.
OLD_TO_NEW_PREFIX: Final[Mapping[str, str]] = MappingProxyType(
    {
        # MobiFone
        "0120": "070",
        "0121": "079",
        "0122": "077",
        "0126": "076",
        "0128": "078",
        # VinaPhone
        "0123": "083",
        "0124": "084",
        "0125": "085",
        "0127": "081",
        "0129": "082",
        # Viettel
        "0162": "032",
        "0163": "033",
        "0164": "034",
        "0165": "035",
        "0166": "036",
        "0167": "037",
        "0168": "038",
        "0169": "039",
        # Vietnamobile
        "0186": "056",
        "0188": "058",
        # Gmobile
        "0199": "059",
    }
)

_COUNTRY_CODE: Final = "84"
# People and spreadsheets put these between digit groups; anything else is not a phone number.
_SEPARATORS: Final = re.compile(r"[\s.\-()]+")
_DIALABLE: Final = re.compile(r"\+?[0-9]+", re.ASCII)

_TYPE_NAMES: Final[Mapping[int, str]] = MappingProxyType(
    {
        PhoneNumberType.FIXED_LINE: "landline",
        PhoneNumberType.TOLL_FREE: "toll-free",
        PhoneNumberType.PREMIUM_RATE: "premium-rate",
        PhoneNumberType.SHARED_COST: "shared-cost",
        PhoneNumberType.VOIP: "VoIP",
        PhoneNumberType.PERSONAL_NUMBER: "personal number",
        PhoneNumberType.PAGER: "pager",
        PhoneNumberType.UAN: "service number",
        PhoneNumberType.VOICEMAIL: "voicemail",
    }
)


class InvalidPhone(InvalidInput):
    """A phone number that cannot receive an SMS; `reason` is a short sentence for a person."""

    code = "invalid_phone"

    def __init__(self, reason: str) -> None:
        super().__init__(reason, field="phone")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NormalizedPhone:
    e164: str
    # Estimated from the prefix: since 2018 a subscriber may move to another network and keep the
    # number, so this is the network that was assigned the range, not necessarily the current one.
    carrier: str | None
    # True when the input was an old 11-digit number converted with OLD_TO_NEW_PREFIX.
    converted: bool


def normalize_phone(raw: str, *, allow_converted: bool = True) -> NormalizedPhone:
    """Turn any usual way of writing a Vietnamese mobile number into E.164, or raise InvalidPhone.

    Accepted: 0912345678, 84912345678, +84912345678, 0084912345678, with spaces, dots, dashes and
    parentheses; 912345678 (the leading zero that spreadsheets drop); old 11-digit numbers such as
    01691234567, which are converted (refused when `allow_converted` is false).
    """
    compact = _SEPARATORS.sub("", raw)
    if not compact:
        raise InvalidPhone("phone number is empty")
    if not _DIALABLE.fullmatch(compact):
        raise InvalidPhone("contains characters that are not part of a phone number")

    national = _national_number(compact)
    converted = False
    if len(national) == 10 and national.startswith("1"):
        new_prefix = OLD_TO_NEW_PREFIX.get("0" + national[:3])
        # An unknown 01xx prefix falls through: 1800/1900 service numbers also start with 1 and
        # deserve their own reason from phonenumbers below.
        if new_prefix is not None:
            if not allow_converted:
                raise InvalidPhone(
                    f"old 11-digit number from before the 2018 conversion "
                    f"(now {new_prefix}{national[-7:]})"
                )
            national = new_prefix[1:] + national[-7:]
            converted = True

    fast = _fast_mobile(national)
    if fast is not None:
        return NormalizedPhone(e164=fast[0], carrier=fast[1], converted=converted)
    try:
        number = phonenumbers.parse("+" + _COUNTRY_CODE + national)
    except phonenumbers.NumberParseException:
        raise InvalidPhone("too few digits for a Vietnamese number") from None
    # number_type() is UNKNOWN exactly when is_valid_number() is false for a +84 number; asking
    # once halves the cost, which shows on imports of a million rows.
    kind = phonenumbers.number_type(number)
    if kind == PhoneNumberType.UNKNOWN:
        raise InvalidPhone(_invalid_reason(number))
    if kind != PhoneNumberType.MOBILE:
        raise InvalidPhone(f"not a mobile number ({_TYPE_NAMES.get(kind, 'unknown type')})")
    return NormalizedPhone(
        e164=phonenumbers.format_number(number, PhoneNumberFormat.E164),
        carrier=carrier.name_for_valid_number(number, "en") or None,
        converted=converted,
    )


# The fast path. phonenumbers takes about 50 us per number (parse, type, format, carrier), which is
# most of the time of a million-row import. The common case, a current mobile number, is decided
# here from phonenumbers' own metadata for VN (the same patterns, in the same order, that
# number_type() applies) and its carrier table (a longest-prefix lookup on the E.164 digits).
# Anything this does not accept goes through phonenumbers, which also gives the reasons;
# tests/test_phones.py checks the agreement on every number it accepts.
def _anchored(desc: phonenumbers.PhoneNumberDesc) -> str:
    """phonenumbers' _is_number_matching_desc as a regex anchored at the start: one of the
    possible lengths (none listed: any) and the whole national pattern."""
    lengths = "|".join(f"[0-9]{{{n}}}" for n in sorted(desc.possible_length))
    length_check = f"(?=(?:{lengths})\\Z)" if lengths else ""
    return f"{length_check}(?:{desc.national_number_pattern})\\Z"


def _fast_mobile_pattern(region: str) -> re.Pattern[str] | None:
    """A national number that number_type() would call MOBILE: it matches the general and the
    mobile descriptions and none of those number_type() tries before mobile (fixed_line last:
    a number matching both would be FIXED_LINE_OR_MOBILE). One regex, so one call per number."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.general_desc is None or metadata.mobile is None:
        return None
    before = (
        metadata.premium_rate,
        metadata.toll_free,
        metadata.shared_cost,
        metadata.voip,
        metadata.personal_number,
        metadata.pager,
        metadata.uan,
        metadata.voicemail,
        metadata.fixed_line,
    )
    excluded = "".join(
        f"(?!{_anchored(desc)})"
        for desc in before
        if desc is not None and desc.national_number_pattern
    )
    general, mobile = _anchored(metadata.general_desc), _anchored(metadata.mobile)
    return re.compile(f"{excluded}(?={general}){mobile}")


_FAST_MOBILE: Final = _fast_mobile_pattern("VN")
# The carrier of a number depends on at most this many leading national digits: the longest +84
# prefix in phonenumbers' carrier table, less the country code.
_CARRIER_DIGITS: Final = max(
    (len(prefix) for prefix in carrier_data.CARRIER_DATA if prefix.startswith(_COUNTRY_CODE)),
    default=carrier_data.CARRIER_LONGEST_PREFIX,
) - len(_COUNTRY_CODE)
_carrier_of_prefix: dict[str, str | None] = {}


def _fast_mobile(national: str) -> tuple[str, str | None] | None:
    """(E.164, carrier) when `national` is certainly a valid VN mobile number, else None."""
    if _FAST_MOBILE is None or _FAST_MOBILE.match(national) is None:
        return None
    e164 = "+" + _COUNTRY_CODE + national
    prefix = national[:_CARRIER_DIGITS]
    try:
        name = _carrier_of_prefix[prefix]
    except KeyError:
        number = phonenumbers.parse(e164)
        name = _carrier_of_prefix[prefix] = carrier.name_for_valid_number(number, "en") or None
    return e164, name


def _national_number(digits: str) -> str:
    """The digits after +84, without the trunk zero; rejects other countries."""
    if digits.startswith("+"):
        international = digits[1:]
    elif digits.startswith("00"):
        international = digits[2:]
    elif digits.startswith(_COUNTRY_CODE) and len(digits) in (11, 12):
        # 84 + 9 digits (current) or 84 + 10 digits (old 01xx or a kept trunk zero). A national
        # number without its zero is 9 or 10 digits, so the lengths cannot be confused.
        international = digits
    elif digits.startswith("0"):
        return digits[1:]
    else:
        return digits  # a spreadsheet dropped the leading zero
    if not international.startswith(_COUNTRY_CODE):
        country = _country_code(international)
        raise InvalidPhone(f"not a Vietnamese number (country code +{country})")
    national = international[len(_COUNTRY_CODE) :]
    # "+84 0912 345 678" is a common way of writing it: the trunk zero does not belong after +84.
    return national[1:] if national.startswith("0") else national


def _country_code(international: str) -> str:
    try:
        return str(phonenumbers.parse("+" + international).country_code)
    except phonenumbers.NumberParseException:
        return international[:3] or "?"


def _invalid_reason(number: phonenumbers.PhoneNumber) -> str:
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible == ValidationResult.TOO_SHORT:
        return "too few digits for a Vietnamese number"
    if possible == ValidationResult.TOO_LONG:
        return "too many digits for a Vietnamese number"
    if possible == ValidationResult.INVALID_LENGTH:
        return "wrong number of digits for a Vietnamese number"
    return "not a valid Vietnamese phone number"
