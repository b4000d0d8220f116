"""What an SMS text must say, checked on the template before a wave may be approved.

Advertising (class `qc`, Decree 91/2020/ND-CP and Circular 22/2021/TT-BTTTT): the `[QC]` label
first, instructions for refusing further adverts, and a brandname as the sender. The checks read
the template's own text, not a rendered sample: the label and the instructions must be written in
the template (a variable could render them for some recipients and not for others), and a check
that needs no recipients can refuse a draft before anyone is imported.
"""

from __future__ import annotations

import re
import unicodedata

from audience.keywords import normalize_text, parse_keywords
from loa.settings import Settings

ADVERT_CLASSES = frozenset({"qc"})


def advert_problems(
    body: str, *, message_class: str, brandname: str | None, settings: Settings
) -> list[str]:
    """Why this template may not be sent as an advert; empty when it may, or is not one."""
    if message_class not in ADVERT_CLASSES:
        return []
    problems = []
    text = unicodedata.normalize("NFC", body).lstrip()
    if not text.startswith(settings.qc_label):
        problems.append(
            f"an advert (class qc) must start with {settings.qc_label!r} (Decree 91/2020); "
            f"the template starts with {text[:20]!r}"
        )
    keywords = parse_keywords(settings.qc_refusal_keywords)
    words = f" {normalize_text(text)} "
    if not any(f" {keyword} " in words for keyword in keywords):
        problems.append(
            "an advert (class qc) must tell how to refuse further adverts (Decree 91/2020): "
            f"the template names none of {', '.join(keywords)} (LOA_QC_REFUSAL_KEYWORDS), "
            "e.g. 'Tu choi QC soan TU CHOI gui 789'"
        )
    number = settings.qc_refusal_number.strip()
    # Digits compared alone, so that "9 0 9 0" or "9090." in the text still count.
    if number and not re.search(rf"(?<!\d){re.escape(number)}(?!\d)", re.sub(r"[ .]", "", text)):
        problems.append(
            f"an advert (class qc) must give the number to send the refusal to: the template "
            f"does not mention {number} (LOA_QC_REFUSAL_NUMBER)"
        )
    if not (brandname or settings.sms_brandname):
        problems.append(
            "an advert (class qc) must be sent under a brandname (Decree 91/2020): give the wave "
            "or the campaign a brandname, or set LOA_SMS_BRANDNAME"
        )
    return problems


def length_problem(characters: int, *, how_many: int, of: int, settings: Settings) -> str | None:
    """A refusal when rendered texts are longer than one SMS may be (`how_many` of `of` sampled)."""
    if characters <= settings.sms_max_characters:
        return None
    return (
        f"the text is {characters:,} characters long for {how_many} of {of} sampled "
        f"recipient(s); an SMS carries at most {settings.sms_max_characters:,} "
        "(LOA_SMS_MAX_CHARACTERS)"
    )
