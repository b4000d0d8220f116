"""Inbound SMS keywords: whether a body means "stop sending me messages" (opt-out) or "I agree
to receive advertising" (opt-in, the reply to the one consent request Decree 91/2020 allows,
labelled DKQC).

The rule is deliberately conservative. A body is an opt-out when, once case, Vietnamese
diacritics, Unicode form (NFC/NFD, full-width letters) and punctuation are set aside, it is
exactly one of the keywords: "Từ chối", " tu choi. ", "TỪ-CHỐI!", "Hủy" and "stop" all are.
A longer text that merely contains a keyword is NOT an opt-out, because in Vietnamese such texts
are often the opposite or something else: "không từ chối" (I do not refuse), "Huy" is a common
given name ("Anh Huy đây"), "dừng" appears in "dừng xe". Those are reported as mentioning the
keyword (`InboundKind.MENTIONS_KEYWORD`) so that a person reads them and, if meant, records the
opt-out by hand (`loa suppression add --reason opt_out` or `loa suppression inbound`). Forms that
an office sees often ("TU CHOI QC") can be added to LOA_OPT_OUT_KEYWORDS as keywords of their own.

An opt-in is the body being exactly one of LOA_OPT_IN_KEYWORDS, by the same rule. A sentence that
contains one ("không DK") is not a consent and is not flagged either: silence or anything but the
keyword means no, as the decree reads it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from loa.errors import InvalidInput
from templates.encoding import unaccent

# Anything that is not a letter or a digit separates words (spaces, punctuation, emoji).
_SEPARATORS: Final = re.compile(r"[\W_]+")


class InboundKind(StrEnum):
    OPT_OUT = "opt_out"  # the body is a keyword: the sender is suppressed
    OPT_IN = "opt_in"  # the body is a consent keyword: the sender's consent is recorded
    MENTIONS_KEYWORD = "mentions_keyword"  # a keyword inside a longer text: for a person to read
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Classified:
    kind: InboundKind
    keyword: str | None  # the keyword matched or mentioned, as normalised


def normalize_text(text: str) -> str:
    """Upper case, no diacritics, words separated by one space: "  Từ chối! " -> "TU CHOI"."""
    folded = unaccent(unicodedata.normalize("NFKC", text)).upper()
    return " ".join(_SEPARATORS.sub(" ", folded).split())


def parse_keywords(setting: str, field: str = "opt_out_keywords") -> tuple[str, ...]:
    """Comma-separated keywords (LOA_OPT_OUT_KEYWORDS, LOA_OPT_IN_KEYWORDS), normalised; longest
    first so that a mention reports "TU CHOI" rather than a shorter keyword inside it. `field`
    names the setting in errors."""
    keywords: list[str] = []
    for raw in setting.split(","):
        if not raw.strip():
            continue
        keyword = normalize_text(raw)
        if not keyword:
            raise InvalidInput(f"keyword {raw.strip()!r} has no letter or digit", field=field)
        if keyword not in keywords:
            keywords.append(keyword)
    if not keywords:
        raise InvalidInput(
            f"no keyword: LOA_{field.upper()} must list at least one (e.g. TU CHOI,STOP)",
            field=field,
        )
    return tuple(sorted(keywords, key=len, reverse=True))


def classify_inbound(
    body: str, keywords: tuple[str, ...], opt_in: tuple[str, ...] = ()
) -> Classified:
    """Whether an inbound SMS body is an opt-out (one of `keywords`) or an opt-in (one of
    `opt_in`); see the module's docstring for the rule."""
    text = normalize_text(body)
    if text in keywords:
        return Classified(InboundKind.OPT_OUT, text)
    if text in opt_in:
        return Classified(InboundKind.OPT_IN, text)
    padded = f" {text} "
    for keyword in keywords:
        if f" {keyword} " in padded:
            return Classified(InboundKind.MENTIONS_KEYWORD, keyword)
    return Classified(InboundKind.OTHER, None)
