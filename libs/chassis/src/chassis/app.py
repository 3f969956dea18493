"""The app factory: every service is `create_app(ServiceSpec(...), settings)`.

The lifespan opens the database, the NATS connection (in the background), the outbox relay and
the consumers, and closes them in reverse order. Nothing expensive happens at import time."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chassis import deadletters, telemetry
from chassis.auth import KeySet, Verifier
from chassis.bodylimit import BodyLimitMiddleware
from chassis.bus import Bus, StreamSpec
from chassis.consumer import Consumer, ConsumerRunner
from chassis.db import Database
from chassis.housekeeping import housekeeper
from chassis.idempotency import IdempotencyMiddleware
from chassis.migrations import head_revision
from chassis.problemdocs import install_problem_docs
from chassis.problems import install_problem_handlers
from chassis.relay import Relay
from chassis.settings import ServiceSettings

log = logging.getLogger("chassis.app")

Hook = Callable[[FastAPI], Awaitable[None]]


@dataclass
class ServiceSpec:
    """What a service plugs into the chassis."""

    name: str
    title: str
    version: str = "0.1.0"
    description: str = ""
    routers: Sequence[APIRouter] = ()
    migrations_dir: Path | None = None
    # The context this service produces events for (one stream `crm.<context>.>`), if any.
    produces: str | None = None
    consumers: Sequence[Consumer] = ()
    on_startup: Sequence[Hook] = ()
    on_shutdown: Sequence[Hook] = ()
    openapi_tags: list[dict[str, Any]] = field(default_factory=list)
    # Path prefixes allowed a larger request body than `max_body_bytes` (file imports).
    body_limits: dict[str, int] = field(default_factory=dict)
    # Idempotency-Key handling; a pure proxy (the gateway) leaves it to the upstream.
    idempotency: bool = True

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.name.replace('-', '_')}"


class _MetricsMiddleware:
    """Request duration per route template (not per raw path, to keep cardinality bounded)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            telemetry.HTTP_REQUESTS.labels(
                self.service, scope["method"], path, str(status)
            ).observe(time.perf_counter() - start)


def create_app(spec: ServiceSpec, settings: ServiceSettings) -> FastAPI:
    telemetry.setup(spec.name, log_level=settings.log_level, json_logs=settings.log_json)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(
            settings.database_url,
            pool_size=settings.db_pool_size,
            read_pool_size=settings.db_read_pool_size,
        )
        if settings.trace_sql:
            telemetry.instrument_engine(db.engine)
        keys = KeySet(jwks_file=settings.jwks_file, jwks_url=settings.jwks_url)
        await keys.load()
        bus = Bus(settings.nats_url, name=f"crm-{spec.name}")
        bus.start()
        app.state.db = db
        app.state.bus = bus
        app.state.settings = settings
        app.state.verifier = Verifier(
            keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience
        )
        app.state.head_revision = (
            head_revision(spec.migrations_dir) if spec.migrations_dir else None
        )
        relay: Relay | None = None
        if spec.produces:
            relay = Relay(
                settings.database_url,
                bus,
                StreamSpec.for_context(
                    spec.produces, settings.stream_replicas, settings.stream_max_age_days * 86400
                ),
                service=spec.name,
                batch_size=settings.relay_batch_size,
                poll_seconds=settings.relay_poll_seconds,
            )
            relay.start()
        app.state.relay = relay
        runners = [
            ConsumerRunner(
                c,
                db,
                bus,
                service=spec.name,
                batch_size=settings.consumer_batch_size,
                max_deliver=settings.consumer_max_deliver,
                replicas=settings.stream_replicas,
            )
            for c in spec.consumers
        ]
        for r in runners:
            r.start()
        app.state.consumers = runners
        if runners:
            await deadletters.refresh_gauge(db, spec.name, [c.name for c in spec.consumers])
        cleaner = None
        if spec.migrations_dir is not None or spec.produces or spec.consumers:
            cleaner = housekeeper(
                db,
                service=spec.name,
                outbox_keep=timedelta(hours=settings.outbox_keep_hours),
                inbox_keep=timedelta(days=settings.stream_max_age_days + 1),
                every_seconds=settings.housekeeping_seconds,
            )
            await cleaner.start()
        app.state.housekeeper = cleaner
        for hook in spec.on_startup:
            await hook(app)
        try:
            yield
        finally:
            for hook in spec.on_shutdown:
                await hook(app)
            if cleaner is not None:
                await cleaner.stop()
            for r in runners:
                await r.stop()
            if relay is not None:
                await relay.stop()
            await bus.close()
            await db.dispose()

    app = FastAPI(
        title=spec.title,
        version=spec.version,
        description=spec.description,
        lifespan=lifespan,
        openapi_tags=spec.openapi_tags or None,
        telemetry={"operation_spans": False, "metrics": False},
    )
    install_problem_handlers(app)
    install_problem_docs(app)
    if spec.idempotency:
        app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, overrides=dict(spec.body_limits)
    )
    app.add_middleware(_MetricsMiddleware, service=spec.name)
    app.include_router(_ops_router(spec))
    if spec.consumers:
        app.include_router(deadletters.router(spec.name))
    for router in spec.routers:
        app.include_router(router)
    return app


def _ops_router(spec: ServiceSpec) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        """Ready when the database answers and migrations are at head; NATS is reported only."""
        db: Database = request.app.state.db
        bus: Bus = request.app.state.bus
        relay: Relay | None = request.app.state.relay
        checks: dict[str, Any] = {}
        ready = True
        try:
            async with db.engine.connect() as conn:
                if spec.migrations_dir is not None:
                    rev = (
                        await conn.execute(text(f"SELECT version_num FROM {spec.version_table}"))
                    ).scalar()
                    checks["migrations"] = {"current": rev, "head": request.app.state.head_revision}
                    ready = rev == request.app.state.head_revision
                else:
                    await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as e:
            checks["database"] = f"error: {type(e).__name__}"
            ready = False
        checks["nats"] = "connected" if bus.connected else "disconnected"
        if relay is not None:
            checks["relay"] = "leader" if relay.is_leader else "standby"
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
