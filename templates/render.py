"""Rendering message templates: Jinja2 in a sandbox, strict about undefined variables, NFC out."""

from __future__ import annotations

import unicodedata
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, UndefinedError, meta
from jinja2.sandbox import SandboxedEnvironment

from loa.errors import InvalidInput
from templates.encoding import unaccent as strip_diacritics


class TemplateProblem(InvalidInput):
    code = "invalid_template"


class VariableMissing(TemplateProblem):
    """The recipient's data lacks a variable the template reads."""

    code = "template_variable_missing"


def vn_date(value: Any) -> str:
    """A date as Vietnamese write it, dd/mm/yyyy, from a date or an ISO string (as stored)."""
    if isinstance(value, datetime | date):
        return value.strftime("%d/%m/%Y")
    try:
        return date.fromisoformat(str(value)[:10]).strftime("%d/%m/%Y")
    except ValueError:
        raise TemplateProblem(f"vn_date: {value!r} is not a date (expected YYYY-MM-DD)") from None


def vn_money(value: Any, unit: str = "đ") -> str:
    """An amount of đồng as Vietnamese write it: 1500000 -> '1.500.000 đ' (dots between thousands,
    no decimals: the đồng has no subunit in use). Takes a number or its text as imported ("1500000",
    "1500000.0"). Hand-written because Babel writes the symbol ₫, which few phones' SMS fonts
    have and which is not GSM-7 even unaccented; 'đ' unaccents to 'd'."""
    if isinstance(value, bool):  # bool is an int in Python; a flag is not an amount
        raise TemplateProblem(f"vn_money: {value!r} is not an amount")
    try:
        amount = Decimal(str(value).strip().replace(" ", ""))
    except InvalidOperation:
        raise TemplateProblem(
            f"vn_money: {value!r} is not an amount (expected e.g. 1500000)"
        ) from None
    if not amount.is_finite():
        raise TemplateProblem(f"vn_money: {value!r} is not an amount")
    whole = int(amount.quantize(Decimal(1), rounding="ROUND_HALF_UP"))
    digits = f"{abs(whole):,}".replace(",", ".")
    text = f"-{digits}" if whole < 0 else digits
    return f"{text} {unit}" if unit else text


def _words(value: Any) -> list[str]:
    return unicodedata.normalize("NFC", "" if value is None else str(value)).split()


def vn_name(value: Any) -> str:
    """A full name with each word capitalised, in NFC: 'NGUYỄN văn  an' -> 'Nguyễn Văn An'.
    Not str.title(): on decomposed text it capitalises the letter after a combining mark
    ('NguyêN'), and it treats an apostrophe as a word break."""
    return " ".join(word[:1].upper() + word[1:].lower() for word in _words(value))


def vn_given_name(value: Any) -> str:
    """The given name, which Vietnamese address people by: the last word of the full name, written
    family name first ('Nguyễn Văn An' -> 'An'), capitalised as vn_name does."""
    words = _words(value)
    return vn_name(words[-1]) if words else ""


def _environment() -> SandboxedEnvironment:
    # The sandbox because templates are written by office staff, not developers; autoescape off
    # because SMS is plain text.
    env = SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
    )
    env.filters["vn_date"] = vn_date
    env.filters["vn_money"] = vn_money
    env.filters["vn_name"] = vn_name
    env.filters["vn_given_name"] = vn_given_name
    return env


_ENV = _environment()


@lru_cache(maxsize=256)
def _compile(source: str) -> Any:
    return _ENV.from_string(unicodedata.normalize("NFC", source))


def check_template(source: str) -> None:
    """Raise TemplateProblem when the template does not even parse."""
    try:
        _compile(source)
    except TemplateError as exc:
        raise TemplateProblem(f"template does not parse: {exc}") from None


def template_variables(source: str) -> set[str]:
    """The variables a template reads (that the recipient's data must supply)."""
    try:
        return set(meta.find_undeclared_variables(_ENV.parse(unicodedata.normalize("NFC", source))))
    except TemplateError as exc:
        raise TemplateProblem(f"template does not parse: {exc}") from None


def render(source: str, context: dict[str, Any], *, unaccent: bool = False) -> str:
    """Render for one recipient. A missing variable is an error, never a gap in a sent SMS.
    With `unaccent`, diacritics are stripped from the whole result, the variables' values too."""
    try:
        text = _compile(source).render(**context)
    except UndefinedError as exc:
        raise VariableMissing(f"template variable missing: {exc.message}") from None
    except TemplateError as exc:
        raise TemplateProblem(f"template failed: {exc}") from None
    text = unicodedata.normalize("NFC", text).strip()
    return strip_diacritics(text) if unaccent else text
