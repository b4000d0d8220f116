"""Opt-out keywords: what counts as "stop sending me messages" in an inbound SMS (pure logic)."""

from __future__ import annotations

import unicodedata

import pytest
from pydantic import ValidationError

from audience.keywords import (
    Classified,
    InboundKind,
    classify_inbound,
    normalize_text,
    parse_keywords,
)
from loa.errors import InvalidInput
from loa.settings import Settings

KEYWORDS = parse_keywords(Settings().opt_out_keywords)


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        ("TU CHOI", "TU CHOI"),
        ("Từ chối", "TU CHOI"),
        (unicodedata.normalize("NFD", "TỪ CHỐI"), "TU CHOI"),  # as some phones send it
        ("  tu choi.  ", "TU CHOI"),
        ("TỪ-CHỐI!!!", "TU CHOI"),
        ("Tu   Choi", "TU CHOI"),
        ("tuchoi", "TUCHOI"),
        ("Hủy", "HUY"),
        ("Huỷ", "HUY"),  # the old placement of the tone mark is another code point sequence
        ('"HUY"', "HUY"),
        ("stop", "STOP"),
        ("ＳＴＯＰ", "STOP"),  # full-width letters from an East Asian keyboard
        ("Dừng.", "DUNG"),
        ("\nSTOP\n", "STOP"),
    ],
)
def test_a_keyword_alone_is_an_opt_out(body: str, keyword: str) -> None:
    assert classify_inbound(body, KEYWORDS) == Classified(InboundKind.OPT_OUT, keyword)


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        # Conservative: a sentence is for a person to read. "Do not refuse", a name, a request.
        ("Tôi không từ chối", "TU CHOI"),
        ("Anh Huy đây, gọi lại cho em", "HUY"),
        ("STOP STOP", "STOP"),
        ("Từ chối nhận tin quảng cáo", "TU CHOI"),
    ],
)
def test_a_keyword_inside_a_sentence_is_only_a_mention(body: str, keyword: str) -> None:
    assert classify_inbound(body, KEYWORDS) == Classified(InboundKind.MENTIONS_KEYWORD, keyword)


@pytest.mark.parametrize("body", ["Cảm ơn", "STOPPED", "Huyện Đức Thọ", "", "   ", "👍", "TU"])
def test_other_texts_are_neither(body: str) -> None:
    assert classify_inbound(body, KEYWORDS).kind == InboundKind.OTHER


def test_keywords_are_configurable_and_validated() -> None:
    custom = parse_keywords("Từ chối QC, stop ,STOP,,")
    assert custom == ("TU CHOI QC", "STOP")  # normalised, deduplicated, longest first
    assert classify_inbound("tu choi qc", custom).kind == InboundKind.OPT_OUT
    assert classify_inbound("tu choi", custom).kind == InboundKind.OTHER
    assert normalize_text(" Đ.ồng ý ") == "D ONG Y"
    for bad in ("", " , ", "!!!"):
        with pytest.raises(InvalidInput):
            parse_keywords(bad)
    with pytest.raises(ValidationError, match="opt_out_keywords"):
        Settings(opt_out_keywords=" , ")


OPT_IN = parse_keywords(Settings().opt_in_keywords, "opt_in_keywords")


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ("DKQC", InboundKind.OPT_IN),
        ("dk qc", InboundKind.OPT_IN),
        ("Đồng ý.", InboundKind.OTHER),  # "I agree" answers anything: not consent to adverts
        # Only the keyword alone is consent: a sentence around it, even a yes-sounding one, is not.
        ("không DKQC", InboundKind.OTHER),
        ("DKQC 0912000001", InboundKind.OTHER),
        ("Từ chối", InboundKind.OPT_OUT),
    ],
)
def test_an_opt_in_is_a_consent_keyword_alone(body: str, kind: InboundKind) -> None:
    assert classify_inbound(body, KEYWORDS, OPT_IN).kind == kind


def test_a_keyword_cannot_both_refuse_and_agree() -> None:
    with pytest.raises(ValidationError, match="DONG Y is also an opt-out keyword"):
        Settings(opt_in_keywords="DKQC,Đồng ý", opt_out_keywords="TU CHOI,DONG Y")
    with pytest.raises(ValidationError, match="opt_in_keywords"):
        Settings(opt_in_keywords=" , ")
