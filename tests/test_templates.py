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
