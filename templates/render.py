"""Rendering message templates: Jinja2 in a sandbox, strict about undefined variables, NFC out."""

from __future__ import annotations

import unicodedata
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, UndefinedError, meta
from jinja2.sandbox import SandboxedEnvironment

from loa.errors import InvalidInput
from templates.encoding import unaccent as strip_diacritics


class TemplateProblem(InvalidInput):
    code = "invalid_template"


def vn_date(value: Any) -> str:
    """A date as Vietnamese write it, dd/mm/yyyy, from a date or an ISO string (as stored)."""
    if isinstance(value, datetime | date):
        return value.strftime("%d/%m/%Y")
    try:
        return date.fromisoformat(str(value)[:10]).strftime("%d/%m/%Y")
    except ValueError:
        raise TemplateProblem(f"vn_date: {value!r} is not a date (expected YYYY-MM-DD)") from None


def _environment() -> SandboxedEnvironment:
    # The sandbox because templates are written by office staff, not developers; autoescape off
    # because SMS is plain text.
    env = SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
    )
    env.filters["vn_date"] = vn_date
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
        raise TemplateProblem(f"template variable missing: {exc.message}") from None
    except TemplateError as exc:
        raise TemplateProblem(f"template failed: {exc}") from None
    text = unicodedata.normalize("NFC", text).strip()
    return strip_diacritics(text) if unaccent else text
