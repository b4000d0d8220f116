from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import EngineDep
from loa import schema
from loa.db import check_database
from loa.errors import LoaError

router = APIRouter()


@router.get("/health")
def health(engine: EngineDep) -> JSONResponse:
    """Database reachability and schema revision; 503 when the database is not usable."""
    database: dict[str, str | None] = {"backend": engine.dialect.name}
    try:
        check_database(engine)
        database["revision"] = schema.require_current(engine)
        database["status"] = "ok"
    except LoaError as exc:
        database["status"] = "error"
        database["error"] = exc.message
    ok = database["status"] == "ok"
    return JSONResponse(
        {"status": "ok" if ok else "error", "database": database}, status_code=200 if ok else 503
    )
