"""GET /metrics in Prometheus' text format (api/metrics.py says what is in it).

Open when LOA_METRICS_TOKEN is unset (the embedded default, like /health); with a token set,
only a scraper that sends `Authorization: Bearer <token>` gets an answer.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from api.deps import SettingsDep
from loa.errors import NotAuthenticated

router = APIRouter()

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <LOA_METRICS_TOKEN>")


def _require_token(
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    token = settings.metrics_token.get_secret_value()
    if not token:
        return
    given = bearer.credentials if bearer is not None else ""
    # Constant time: the comparison must not tell a guesser how much of the token was right.
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise NotAuthenticated(
            "/metrics needs 'Authorization: Bearer <token>' with the token in LOA_METRICS_TOKEN"
        )


@router.get("/metrics", dependencies=[Depends(_require_token)], include_in_schema=False)
def prometheus_metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
