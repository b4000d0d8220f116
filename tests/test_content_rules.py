"""Content rules that need no database: Decree 91 checks on an advert's template, the length
limit, prices per adapter, carrier and class, and the settings behind them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from loa.settings import Settings
from scheduler.pricing import segment_price
from templates.content_rules import advert_problems, length_problem

GOOD = "[QC] BHXH tu nguyen: diem tua cua ban. Tu choi QC soan TU CHOI gui 789"


def _settings(**values: object) -> Settings:
    return Settings.model_validate(values)


def test_a_compliant_advert_passes_and_other_classes_are_not_checked() -> None:
    assert advert_problems(GOOD, message_class="qc", brandname="BHXH", settings=_settings()) == []
    # Leading spaces and decomposed text do not hide the label; diacritics do not hide the words.
    accented = "  [QC] Tham gia BHXH. Từ chối QC soạn TỪ CHỐI gửi 789"
    assert advert_problems(accented, message_class="qc", brandname="B", settings=_settings()) == []
    assert advert_problems("x", message_class="info", brandname=None, settings=_settings()) == []


def test_each_missing_part_of_an_advert_is_named() -> None:
    problems = advert_problems(
        "Tham gia BHXH {{ name }}", message_class="qc", brandname=None, settings=_settings()
    )
    assert len(problems) == 3
    assert "must start with '[QC]'" in problems[0]
    assert "starts with 'Tham gia BHXH {{ nam'" in problems[0]
    assert "refuse" in problems[1] and "TU CHOI" in problems[1]
    assert "brandname" in problems[2] and "LOA_SMS_BRANDNAME" in problems[2]
    # The label must come first, not somewhere in the text.
    late = advert_problems(
        "BHXH [QC] Tu choi: TU CHOI", message_class="qc", brandname="B", settings=_settings()
    )
    assert len(late) == 1 and "must start with" in late[0]
    # A keyword inside another word is not an instruction ("TU CHOIX").
    assert advert_problems(
        "[QC] TU CHOIX", message_class="qc", brandname="B", settings=_settings()
    )[0].startswith("an advert (class qc) must tell how to refuse")


def test_the_refusal_number_and_the_brandname_setting() -> None:
    settings = _settings(qc_refusal_number="9090", sms_brandname="BHXH-HT")
    assert advert_problems(GOOD, message_class="qc", brandname=None, settings=settings) == [
        "an advert (class qc) must give the number to send the refusal to: the template does "
        "not mention 9090 (LOA_QC_REFUSAL_NUMBER)"
    ]
    with_number = GOOD.replace("789", "9090")
    assert advert_problems(with_number, message_class="qc", brandname=None, settings=settings) == []
    # 90901 is another number.
    other = GOOD.replace("789", "90901")
    assert advert_problems(other, message_class="qc", brandname=None, settings=settings)


def test_refusal_keywords_must_be_opt_out_keywords() -> None:
    with pytest.raises(ValidationError, match="not among LOA_OPT_OUT_KEYWORDS"):
        _settings(qc_refusal_keywords="TU CHOI,NGUNG")
    assert _settings(qc_refusal_keywords="Từ chối, stop").qc_refusal_keywords


def test_length_limit() -> None:
    settings = _settings()
    assert length_problem(1600, how_many=0, of=3, settings=settings) is None
    problem = length_problem(1601, how_many=2, of=3, settings=settings)
    assert problem is not None and "1,601 characters long for 2 of 3" in problem
    assert "at most 1,600" in problem


def test_prices_most_specific_first_then_the_fallback() -> None:
    settings = _settings(
        sms_price_per_segment=500,
        sms_prices={
            "twilio": {"*": {"*": 1900}},
            "*": {"Viettel": {"qc": 800, "*": 350}, "*": {"qc": 700}},
        },
    )

    def price(adapter: str, carrier: str | None, cls: str) -> float | None:
        return segment_price(settings, adapter=adapter, carrier=carrier, message_class=cls)

    assert price("console", "Viettel", "qc") == 800
    assert price("console", "viettel", "care") == 350  # carriers without case
    assert price("console", "Vinaphone", "qc") == 700
    assert price("console", None, "qc") == 700
    assert price("console", "Vinaphone", "info") == 500  # no entry: the single price
    assert price("twilio", "Viettel", "qc") == 1900  # the adapter counts most
    assert segment_price(_settings(), adapter="console", carrier=None, message_class="qc") is None


def test_prices_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOA_SMS_PRICES", '{"*": {"MobiFone": {"info": 320}}}')
    assert Settings().sms_prices == {"*": {"mobifone": {"info": 320}}}
    monkeypatch.setenv("LOA_SMS_PRICES", '{"*": {"MobiFone": {"promo": 320}}}')
    with pytest.raises(ValidationError, match="unknown class 'promo'"):
        Settings()
    monkeypatch.setenv("LOA_SMS_PRICES", '{"*": {"MobiFone": {"qc": -1}}}')
    with pytest.raises(ValidationError, match="price below 0"):
        Settings()
