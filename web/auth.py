"""How a browser signs in to the operator page: the API key, checked once at sign-in, is kept in
a cookie that scripts cannot read and that no other site's page sends; the sign-in and sign-out
forms carry a token and must come from Loa's own pages.

The cookie serves the pages only. The JSON API still wants the key in a header, so that a form
on another site can never make a browser call the API with the cookie.

Why both a token and an Origin check: SameSite=Strict keeps the key cookie off cross-site
requests, but a sign-in form has no key cookie yet, and a forged sign-in would put the person in
someone else's session (login CSRF). The token is a random value in a cookie of its own, repeated
in the form (another site can neither read nor set it); the Origin (or, without one, the Referer)
must be Loa's own address."""

from __future__ import annotations

import hmac
import secrets
from typing import Any, Final
from urllib.parse import urlsplit

from fastapi import Request, Response
from sqlalchemy import Engine

from loa.apikeys import Caller, verify_key
from loa.clock import Clock
from loa.db import session_scope
from loa.errors import Forbidden, NotAuthenticated
from loa.settings import Settings

KEY_COOKIE: Final = "loa_key"
CSRF_COOKIE: Final = "loa_csrf"
CSRF_FIELD: Final = "csrf"


class ForgedForm(Forbidden):
    """A sign-in or sign-out form without its token, or sent from another site."""

    code = "forged_form"


def cookie_options(request: Request) -> dict[str, Any]:
    """HttpOnly and SameSite=Strict always; Secure when the browser came over https (behind a
    proxy, uvicorn's proxy headers make the request's scheme the browser's)."""
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/",
    }


def remember_key(response: Response, request: Request, key: str) -> None:
    # No Max-Age: the cookie ends with the browser session; the key's own expiry and revocation
    # are checked on every page anyway.
    response.set_cookie(KEY_COOKIE, key, **cookie_options(request))


def forget_key(response: Response, request: Request) -> None:
    response.delete_cookie(KEY_COOKIE, **cookie_options(request))


def csrf_token(request: Request) -> tuple[str, bool]:
    """The browser's form token, and whether it is new (then it must be set as a cookie)."""
    token = request.cookies.get(CSRF_COOKIE)
    if token and len(token) >= 32:
        return token, False
    return secrets.token_urlsafe(32), True


def set_csrf_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, **cookie_options(request))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_form(request: Request, settings: Settings, token: str) -> None:
    """Refuse a form that lacks the browser's token or comes from another site's page."""
    sent_from = request.headers.get("origin")
    if sent_from is None or sent_from == "null":
        referer = request.headers.get("referer")
        sent_from = _origin(referer) if referer else None
    own = {_origin(str(request.base_url))}
    if settings.public_url:
        own.add(_origin(settings.public_url))
    if sent_from is None or sent_from.lower() not in own:
        raise ForgedForm(
            f"the form was sent from {sent_from or 'an unknown page'}, not from Loa's own "
            f"address ({', '.join(sorted(own))})"
        )
    expected = request.cookies.get(CSRF_COOKIE)
    if not expected or not token or not hmac.compare_digest(expected, token):
        raise ForgedForm("the form's token is missing or does not match this browser's")


def page_caller(request: Request, engine: Engine, clock: Clock) -> Caller | None:
    """The caller behind the key cookie; None without one; NotAuthenticated when the key is no
    longer good (revoked or expired since sign-in)."""
    presented = request.cookies.get(KEY_COOKIE)
    if not presented:
        return None
    # Its own short transaction, as for the API: the last-use stamp is kept whatever the page does.
    with session_scope(engine) as session:
        return verify_key(session, presented, now=clock())


def sign_in(engine: Engine, clock: Clock, presented: str) -> Caller:
    """Check a key pasted into the sign-in form; NotAuthenticated says why it was refused."""
    if not presented.strip():
        raise NotAuthenticated("no key was given")
    with session_scope(engine) as session:
        return verify_key(session, presented.strip(), now=clock())
