"""Liveness and readiness probes. Liveness checks nothing outside the process, so that a database
blip never makes an orchestrator restart every replica at once.

In worker mode readiness also reports whether any worker is alive. A missing worker does not
make an API replica unready by default (taking every replica out of rotation would stop the
webhooks and requests that still succeed, and no replica can fix it), unless
``METAGOV_REQUIRE_WORKER`` says the deployment wants exactly that signal."""

from __future__ import annotations

import logging

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from metagov import metrics
from metagov.api.deps import RuntimeDep
from metagov.db import migrate
from metagov.health.service import WorkerWatch, worker_status
from metagov.inbox import service as inbox
from metagov.jobs.worker import ArqQueue
from metagov.outbox import service as outbox
from metagov.processes import service as processes
from metagov.runtime import Runtime

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/healthz", operation_id="health.live")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    operation_id="health.ready",
    responses={503: {"description": "A dependency is down or the schema is not migrated"}},
)
async def readyz(request: Request, runtime: RuntimeDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        current = await migrate.schema_is_current(runtime.db.engine)
        checks["database"] = "ok" if current else "schema not migrated: run `metagov db upgrade`"
    except Exception as exc:
        log.warning("readiness: database check failed: %s", exc)
        checks["database"] = f"unreachable: {type(exc).__name__}"
    if isinstance(runtime.queue, ArqQueue):
        try:
            checks["redis"] = "ok" if await runtime.queue.ping() else "unavailable"
        except Exception as exc:
            log.warning("readiness: redis check failed: %s", exc)
            checks["redis"] = "unavailable"
        metrics.REDIS_AVAILABLE.set(checks["redis"] == "ok")
        if checks["database"] == "ok":
            checks["workers"] = await _workers(request.app, runtime)
    ready = all(
        value == "ok"
        for name, value in checks.items()
        if name != "workers" or runtime.settings.require_worker
    )
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "not ready", "checks": checks},
    )


async def _workers(app: FastAPI, runtime: Runtime) -> str:
    """Whether a worker is alive, as readiness reports it; the gauges and the log follow."""
    async with runtime.db.snapshot() as session:
        status = await worker_status(session, runtime.settings)
    watch: WorkerWatch | None = getattr(app.state, "worker_watch", None)
    if watch is None:
        watch = app.state.worker_watch = WorkerWatch()
    watch.saw(status)
    return status.describe()


@router.get("/metrics", operation_id="health.metrics", response_class=PlainTextResponse)
async def metrics_endpoint(request: Request, runtime: RuntimeDep) -> PlainTextResponse:
    """Prometheus metrics: this process's counters, and backlog gauges read from the database."""
    async with runtime.db.snapshot() as session:
        metrics.set_backlog(
            outbox=await outbox.backlog(session),
            inbox=await inbox.pending_count(session),
            open_processes=await processes.open_counts(session),
        )
    if isinstance(runtime.queue, ArqQueue):
        await _workers(request.app, runtime)
    return PlainTextResponse(
        generate_latest(metrics.REGISTRY).decode(), media_type=CONTENT_TYPE_LATEST
    )
