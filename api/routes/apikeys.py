"""API keys over HTTP, for administrators: the same service functions as `loa apikey create`,
`list` and `revoke`. A key is named by its public prefix, as on the command line and in the audit
log (`key:<prefix>`); the whole key is in the answer to its creation and nowhere else, ever."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ClockDep, ReadSessionDep, SessionDep, require_roles
from api.paging import After, Limit, Page
from loa.apikeys import Caller, Role, create_key, list_keys, revoke_key
from loa.models import ApiKey
from loa.paging import DEFAULT_PAGE

# Not an IdempotentRoute: a replay would have to return the new key's secret, which must be
# stored nowhere (loa/apikeys.py); revoking is idempotent by itself.
router = APIRouter(prefix="/api/v1/apikeys", tags=["apikeys"])

Admin = Annotated[Caller, Depends(require_roles(Role.ADMIN))]
Prefix = Annotated[str, PathParam(pattern=r"^[0-9a-f]{1,16}$", description="the key's prefix")]


class ApiKeyPublic(BaseModel):
    prefix: str
    name: str
    role: str
    area_code: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    area: str | None = Field(
        default=None, max_length=16, description="The area a district key serves (district only)."
    )
    name: str | None = Field(default=None, min_length=1, max_length=200)
    expires_days: int | None = Field(
        default=None, ge=1, le=3650, description="Refuse the key after this many days."
    )


class NewApiKey(ApiKeyPublic):
    key: str = Field(description="The whole key. Shown only in this answer: Loa keeps a hash.")


def _public(api_key: ApiKey) -> ApiKeyPublic:
    return ApiKeyPublic.model_validate(api_key, from_attributes=True)


@router.get("")
def read_keys(
    _caller: Admin, session: ReadSessionDep, after: After = None, limit: Limit = DEFAULT_PAGE
) -> Page[ApiKeyPublic]:
    """Every key with its role, area and dates (never the secret), oldest first."""
    rows, next_after = list_keys(session, after=after, limit=limit)
    return Page(items=[_public(k) for k in rows], next_after=next_after)


@router.post("", status_code=201)
def create(body: ApiKeyCreate, caller: Admin, session: SessionDep, clock: ClockDep) -> NewApiKey:
    """Create a key; the answer holds the whole key, once."""
    created = create_key(
        session,
        role=body.role,
        actor=caller.actor,
        now=clock(),
        name=body.name,
        area_code=body.area,
        expires_in=timedelta(days=body.expires_days) if body.expires_days is not None else None,
    )
    return NewApiKey(**_public(created.api_key).model_dump(), key=created.key)


@router.post("/{prefix}/revoke")
def revoke(prefix: Prefix, caller: Admin, session: SessionDep, clock: ClockDep) -> ApiKeyPublic:
    """Refuse the key from now on; 409 if it was revoked already."""
    return _public(revoke_key(session, prefix, actor=caller.actor, now=clock()))
