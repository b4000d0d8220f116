"""The operator page's routes: `/` (the page), `/login` and `/logout` (forms), `/static/...`.

HTML for people, so errors a person can act on (a refused key, a forged form, an area the key
may not see) are shown on the page with the HTTP status they deserve, never as a JSON body."""

from __future__ import annotations

import secrets
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Form, Query, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlmodel import Session

from api.deps import ClockDep, EngineDep, ReadSessionDep, SettingsDep
from api.routes.districts import allowed_area, public_base_url
from broadcast.playlist import Playlist, district_playlist
from loa.apikeys import Caller, Role
from loa.errors import Forbidden, NotAuthenticated, NotFound
from loa.settings import Settings
from web.auth import (
    CSRF_FIELD,
    ForgedForm,
    check_form,
    cookie_options,
    csrf_token,
    forget_key,
    page_caller,
    remember_key,
    set_csrf_cookie,
    sign_in,
)
from web.dashboard import (
    OUTCOMES,
    area_figures,
    district_areas,
    failure_figures,
    local_zone,
    recent_campaigns,
)
from web.i18n import LANG_COOKIE, LANGUAGES, Translator, choose_language

HERE: Final = Path(__file__).parent
router = APIRouter(include_in_schema=False)
_templates = Jinja2Templates(
    env=Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=StrictUndefined,  # a misspelt name fails the test, not the page silently
    )
)

# Everything the page loads comes from Loa itself (no CDN: offices may be offline); nothing may
# frame it; forms post only to Loa. No inline script or style is needed, so none is allowed.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
LANG_COOKIE_AGE: Final = timedelta(days=365)
AREA_CODE: Final = r"^[A-Za-z0-9_-]{1,16}$"


def mount(app: FastAPI) -> None:
    """Add the page's routes and its static files to the app."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")


def _language(request: Request) -> str:
    return choose_language(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))


def _language_links(request: Request) -> list[tuple[str, str]]:
    """The same page in each language (other query parameters kept)."""
    query = dict(request.query_params)
    return [
        (lang, f"{request.url.path}?{urlencode({**query, 'lang': lang})}") for lang in LANGUAGES
    ]


def _render(request: Request, template: str, *, status: int = 200, **context: Any) -> Response:
    lang = _language(request)
    token, new_token = csrf_token(request)
    response = _templates.TemplateResponse(
        request,
        template,
        {
            "t": Translator(lang),
            "lang": lang,
            "languages": _language_links(request),
            "csrf_field": CSRF_FIELD,
            "csrf": token,
            **context,
        },
        status_code=status,
        headers=SECURITY_HEADERS,
    )
    if new_token:
        set_csrf_cookie(response, request, token)
    if request.query_params.get("lang") == lang:
        response.set_cookie(
            LANG_COOKIE,
            lang,
            max_age=int(LANG_COOKIE_AGE.total_seconds()),
            **{**cookie_options(request), "samesite": "lax"},  # a link in may keep the language
        )
    return response


def _login_page(
    request: Request,
    *,
    status: int = 200,
    notice: str | None = None,
    error: str | None = None,
    detail: str | None = None,
) -> Response:
    """The sign-in form, with a notice or an error (catalogue keys) and the error's detail."""
    return _render(request, "login.html", status=status, notice=notice, error=error, detail=detail)


def _redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303, headers={"Cache-Control": "no-store"})


@router.get("/login")
def login_form(
    request: Request,
    ended: Annotated[bool, Query()] = False,
    out: Annotated[bool, Query()] = False,
) -> Response:
    return _login_page(
        request, notice="login.ended" if ended else "login.signed_out" if out else None
    )


@router.post("/login")
def login(
    request: Request,
    engine: EngineDep,
    clock: ClockDep,
    settings: SettingsDep,
    key: Annotated[str, Form(max_length=200)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    try:
        check_form(request, settings, csrf)
    except ForgedForm as exc:
        return _login_page(request, status=403, error="login.forged", detail=exc.message)
    if not key.strip():
        return _login_page(request, status=422, error="login.empty")
    try:
        sign_in(engine, clock, key)
    except NotAuthenticated as exc:
        return _login_page(request, status=401, error="login.refused", detail=exc.message)
    response = _redirect("/")
    remember_key(response, request, key.strip())
    # A new form token with the new session: one learnt before sign-in is worth nothing after.
    set_csrf_cookie(response, request, secrets.token_urlsafe(32))
    return response


@router.post("/logout")
def logout(
    request: Request,
    settings: SettingsDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    try:
        check_form(request, settings, csrf)
    except ForgedForm as exc:
        return _login_page(request, status=403, error="login.forged", detail=exc.message)
    response = _redirect("/login?out=1")
    forget_key(response, request)
    return response


def _playlist(
    session: Session,
    caller: Caller,
    settings: Settings,
    request: Request,
    area: str | None,
    day: date,
) -> tuple[Playlist | None, str | None, int]:
    """Today's playlist of the area asked for (a district key: its own by default), or why not:
    (playlist, message key, HTTP status)."""
    code = area or (caller.area_code if caller.role == Role.DISTRICT else None)
    if code is None:
        return None, None, 200
    try:
        checked = allowed_area(session, caller, code)
    except Forbidden:
        return None, "playlist.forbidden", 403
    except NotFound:
        return None, "playlist.unknown", 404
    base_url = public_base_url(request, settings)
    playlist = district_playlist(session, checked.code, day, settings=settings, base_url=base_url)
    return playlist, None, 200


@router.get("/")
def dashboard(
    request: Request,
    engine: EngineDep,
    clock: ClockDep,
    settings: SettingsDep,
    session: ReadSessionDep,
    campaign: Annotated[int | None, Query(ge=1)] = None,
    area: Annotated[str | None, Query(pattern=AREA_CODE)] = None,
) -> Response:
    try:
        caller = page_caller(request, engine, clock)
    except NotAuthenticated:
        response = _redirect("/login?ended=1")
        forget_key(response, request)
        return response
    if caller is None:
        return _redirect("/login")
    local_now = clock().astimezone(local_zone(settings))
    province = caller.role != Role.DISTRICT
    playlist, playlist_error, status = _playlist(
        session, caller, settings, request, area, local_now.date()
    )
    return _render(
        request,
        "dashboard.html",
        status=status,
        caller=caller,
        province=province,
        campaigns=recent_campaigns(session) if province else None,
        districts=district_areas(session) if province else [],
        campaign=campaign,
        outcomes=list(OUTCOMES),
        area=area or "",
        as_of=local_now,
        playlist=playlist,
        playlist_error=playlist_error,
        areas=area_figures(session, caller, settings=settings, campaign_id=campaign),
        failures=failure_figures(session, caller, settings=settings, campaign_id=campaign),
    )
