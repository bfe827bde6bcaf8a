"""Liveness and readiness probes. Liveness checks nothing outside the process, so that a database
blip never makes an orchestrator restart every replica at once."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from metagov import metrics
from metagov.api.deps import RuntimeDep
from metagov.db import migrate
from metagov.inbox import service as inbox
from metagov.jobs.worker import ArqQueue
from metagov.outbox import service as outbox
from metagov.processes import service as processes

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
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        current = await migrate.schema_is_current(runtime.db.engine)
        checks["database"] = "ok" if current else "schema not migrated: run `metagov db upgrade`"
    except Exception as exc:
        log.warning("readiness: database check failed: %s", exc)
        checks["database"] = f"unreachable: {type(exc).__name__}"
    if isinstance(runtime.queue, ArqQueue):
        try:
            checks["redis"] = "ok" if await runtime.queue.ping() else "no answer"
        except Exception as exc:
            log.warning("readiness: redis check failed: %s", exc)
            checks["redis"] = f"unreachable: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "not ready", "checks": checks},
    )


@router.get("/metrics", operation_id="health.metrics", response_class=PlainTextResponse)
async def metrics_endpoint(runtime: RuntimeDep) -> PlainTextResponse:
    """Prometheus metrics: this process's counters, and backlog gauges read from the database."""
    async with runtime.db.snapshot() as session:
        metrics.set_backlog(
            outbox=await outbox.backlog(session),
            inbox=await inbox.pending_count(session),
            open_processes=await processes.open_counts(session),
        )
    return PlainTextResponse(
        generate_latest(metrics.REGISTRY).decode(), media_type=CONTENT_TYPE_LATEST
    )
