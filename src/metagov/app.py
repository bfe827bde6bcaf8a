"""Builds the FastAPI application and its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from metagov import __version__, tracing
from metagov.api import (
    auth,
    communities,
    docs,
    events,
    generated,
    health,
    hooks,
    identity,
    openapi,
    plugins,
)
from metagov.api.middleware import (
    AccessLog,
    BodySizeLimit,
    RateLimit,
    RejectNulCharacters,
    TraceRequests,
)
from metagov.config import Settings
from metagov.console import routes as console
from metagov.db import migrate
from metagov.errors import install_error_handlers
from metagov.jobs.embedded import EmbeddedRunner
from metagov.jobs.queue import JobQueue, LocalQueue, NullQueue
from metagov.jobs.worker import ArqQueue, connect
from metagov.plugins.registry import PluginRegistry
from metagov.ratelimit import RateLimiter
from metagov.runtime import Runtime
from metagov.tenancy import service as tenancy

log = logging.getLogger(__name__)

DESCRIPTION = """
Metagov is a governance gateway: one API for a **Driver** (a governance engine) to listen to
community platforms, run votes there and act on the outcome.

Routes under `/api/internal/` need `Authorization: Bearer <Driver API key>`; community-scoped
routes also need the header `X-Metagov-Community: <slug>`. Each plugin's actions and processes
have their own typed operations, with operation id `{plugin}.{action}`.
"""


def create_app(
    settings: Settings | None = None,
    registry: PluginRegistry | None = None,
    *,
    queue: JobQueue | None = None,
) -> FastAPI:
    """The gateway for ``settings``. Its jobs go to the queue of its mode (in-process without
    Redis, arq with it) unless ``queue`` is given (tests decide themselves when jobs run)."""
    settings = settings or Settings()
    registry = registry or PluginRegistry.discover(
        allow=settings.plugins_allow, block=settings.plugins_block
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.uses_development_key:
            log.warning(
                "plugin secrets are encrypted with the public development key; "
                "set METAGOV_SECRET_KEYS before storing real credentials"
            )
        if settings.auto_migrate:
            await migrate.upgrade(settings.database_url)
        runner: EmbeddedRunner | None = None
        chosen: JobQueue
        if queue is not None:
            chosen = queue
        elif settings.runs_jobs_in_process:
            chosen = LocalQueue()
        elif settings.redis_url:
            chosen = ArqQueue(await connect(settings.redis_url))
        else:
            log.warning("no Redis and jobs_in_process is off: no job will run")
            chosen = NullQueue()
        async with Runtime.open(settings, registry, queue=chosen) as runtime:
            if settings.driver_api_key is not None:
                secret = settings.driver_webhook_secret
                async with runtime.unit_of_work() as session:
                    await tenancy.ensure_env_driver(
                        session,
                        runtime.secrets,
                        api_key=settings.driver_api_key.get_secret_value(),
                        event_url=settings.driver_event_url,
                        webhook_secret=secret.get_secret_value() if secret else None,
                    )
            app.state.runtime = runtime
            if isinstance(chosen, LocalQueue) and queue is None:
                runner = EmbeddedRunner(runtime, chosen)
                runner.start()
            app.state.runner = runner
            try:
                yield
            finally:
                if runner is not None:
                    await runner.stop()
                await chosen.close()

    app = FastAPI(
        title="Metagov",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # FastAPI's own spans would follow whatever global provider a library set; the gateway
        # traces through :mod:`metagov.tracing` alone, so that OTEL_* decide, and once.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    install_error_handlers(app)
    openapi.install(app)
    app.add_middleware(RejectNulCharacters)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RateLimit, limiter=RateLimiter.for_settings(settings))
    app.add_middleware(AccessLog)
    if tracing.enabled():  # outermost, so that the access log line carries the trace id
        app.add_middleware(TraceRequests)
    app.include_router(health.router)
    app.include_router(hooks.router)
    app.include_router(auth.router)
    app.include_router(auth.internal)
    app.include_router(events.router)
    app.include_router(communities.router)
    app.include_router(identity.router)
    app.include_router(plugins.router)
    for spec in registry:
        app.include_router(generated.plugin_router(spec))
    app.include_router(plugins.fallback)
    docs.install(app)
    console.install(app, [k.get_secret_value() for k in settings.secret_keys])
    return app


def serve_app() -> FastAPI:
    """The app of one of several API processes (``metagov serve --workers N``): each process
    reads the settings from the environment and sets up its own logging. They share nothing but
    the database and Redis; every cache in a process is checked against the database."""
    from metagov import logs

    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    return create_app(settings)
