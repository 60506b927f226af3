"""The FastAPI application: settings, engine, pipeline and worker composed once per app."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .db import init_db, make_engine, session_scope
from .errors import ServiceError
from .pipeline import Pipeline
from .settings import Settings, get_settings
from .worker import Worker

logger = logging.getLogger(__name__)

PROBLEM = "application/problem+json"


def problem_response(status: int, title: str, detail: str, type_: str = "about:blank", **extra) -> JSONResponse:
    body = {"type": type_, "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def create_app(settings: Settings | None = None, *, start_worker: bool = True) -> FastAPI:
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    init_db(engine)
    read_engine = make_engine(settings.db_url, readonly=True) if settings.db_url.startswith("sqlite:///") else engine
    pipeline = Pipeline(settings, engine)
    worker = Worker(settings, engine, pipeline)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if start_worker:
            worker.start()  # job threads (EARMARK_WORKERS), webhook deliveries, WeCom sync
        yield
        worker.stop()
        engine.dispose()
        read_engine.dispose()

    app = FastAPI(
        title="Earmark",
        version="0.1.0",
        summary="Badge and avatar audio in, tagged customer profiles out.",
        description=(
            "Conversation intelligence for medical-aesthetics clinics. Authenticate with "
            "`Authorization: Bearer <API key>` (create keys with `earmark keys create`). Errors are "
            "`application/problem+json`."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.read_engine = read_engine  # GET routes: snapshot reads that never take the write lock
    app.state.pipeline = pipeline
    app.state.worker = worker

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError):
        return JSONResponse(exc.problem(), status_code=exc.status, media_type=PROBLEM)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        errors = [
            {"loc": list(e.get("loc", [])), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem_response(422, "Invalid request", detail, "/problems/validation", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        return problem_response(exc.status_code, str(exc.detail), str(exc.detail))

    from .api import router
    from .compliance_api import router as compliance_router
    from .crm_api import router as crm_router
    from .taxonomy_api import router as taxonomy_router
    from .webhooks import router as webhooks_router
    from .wecom import router as wecom_router

    app.include_router(router)
    app.include_router(crm_router)
    app.include_router(webhooks_router)
    app.include_router(wecom_router)
    app.include_router(taxonomy_router)
    app.include_router(compliance_router)
    return app


def ensure_admin_key(settings: Settings) -> str | None:
    """Create the first admin key if the default tenant has none; return it (else None)."""
    from .auth import create_key, has_admin_key

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    init_db(engine)
    try:
        with session_scope(engine) as s:
            if has_admin_key(s):
                return None
            return create_key(s, role="admin", name="initial admin key")
    finally:
        engine.dispose()
