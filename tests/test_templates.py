"""Template rendering: strict variables, NFC, Vietnamese dates, the sandbox."""

from __future__ import annotations

import pytest

from templates.render import TemplateProblem, render, vn_date


def test_render_is_strict_nfc_and_formats_vietnamese_dates() -> None:
    decomposed = "Nguye\u0302\u0303n"  # "Nguyễn" with combining marks
    text = render(
        "{{ name }}: the BHYT het han ngay {{ card_expiry | vn_date }}.",
        {"name": decomposed, "card_expiry": "2026-05-30"},
    )
    assert text == "Nguyễn: the BHYT het han ngay 30/05/2026."
    assert vn_date("2026-01-02") == "02/01/2026"
    with pytest.raises(TemplateProblem, match="card_expiry"):
        render("het han {{ card_expiry }}", {"name": "An"})


def test_the_sandbox_blocks_reaching_python_internals() -> None:
    with pytest.raises(TemplateProblem):
        render("{{ name.__class__.__mro__[1].__subclasses__() }}", {"name": "x"})


def test_vn_money_writes_dong_with_dots_and_unaccents_to_d() -> None:
    from templates.render import vn_money

    assert vn_money(1500000) == "1.500.000 đ"
    assert vn_money("1500000") == "1.500.000 đ"  # as imported from a CSV
    assert vn_money(" 2500.5 ") == "2.501 đ"  # no subunit: rounded half up
    assert vn_money(-75000) == "-75.000 đ"
    assert vn_money(999) == "999 đ"
    assert vn_money(1500000, "VNĐ") == "1.500.000 VNĐ"
    assert render("Muc dong {{ m | vn_money }}.", {"m": 1500000}) == "Muc dong 1.500.000 đ."
    assert render("{{ m | vn_money }}", {"m": 1500000}, unaccent=True) == "1.500.000 d"
    for bad in ("mot trieu", True, "nan", ""):
        with pytest.raises(TemplateProblem, match="vn_money"):
            vn_money(bad)


def test_name_filters_give_the_given_name_and_capitalise_in_nfc() -> None:
    from templates.render import vn_given_name, vn_name

    decomposed = "NGUYE\u0302\u0303N  va\u0306n an"  # upper and lower, combining marks
    assert vn_name(decomposed) == "Nguyễn Văn An"
    assert vn_given_name(decomposed) == "An"
    assert vn_given_name("Trần Thị Bình") == "Bình"
    assert vn_given_name("đặng") == "Đặng"
    assert vn_given_name("") == vn_name(None) == ""
    assert render("Chao {{ name | vn_given_name }}!", {"name": "Lê Văn Đức"}) == "Chao Đức!"
    assert (
        render("Chao {{ name | vn_given_name }}!", {"name": "Lê Văn Đức"}, unaccent=True)
        == "Chao Duc!"
    )


def test_a_template_that_does_not_parse_is_named_as_such() -> None:
    from templates.render import check_template

    with pytest.raises(TemplateProblem, match="does not parse"):
        check_template("Chao {{ name ")
    with pytest.raises(TemplateProblem, match="does not parse"):
        check_template("{% if x %}no end")
