"""GET /metrics in Prometheus' text format (api/metrics.py says what is in it).

Open when LOA_METRICS_TOKEN is unset (the embedded default, like /health); with a token set,
only a scraper that sends `Authorization: Bearer <token>` gets an answer.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from api.deps import SettingsDep
from loa.errors import NotAuthenticated
from loa.metrics import bearer_matches

router = APIRouter()


def _require_token(request: Request, settings: SettingsDep) -> None:
    token = settings.metrics_token.get_secret_value()
    if token and not bearer_matches(request.headers.get("Authorization"), token):
        raise NotAuthenticated(
            "/metrics needs 'Authorization: Bearer <token>' with the token in LOA_METRICS_TOKEN"
        )


# Not in the OpenAPI description: it is for Prometheus, not for API clients.
@router.get("/metrics", dependencies=[Depends(_require_token)], include_in_schema=False)
def prometheus_metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
