"""W8: what one event costs with a backlog. Webhooks from ONE community pile up while no worker
runs (the Driver is up); then one worker drains them: its CPU and PostgreSQL's per event
delivered, with a small and a large backlog. The cost per event must not grow with the backlog."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.harness import CONCURRENCY, Bench, log, ratio, receiver_call, webhook_maker
from bench.httpload import closed_loop


async def drain_cost(bench: Bench, pending: int) -> dict[str, Any]:
    await bench.clean()
    receiver_url = f"http://127.0.0.1:{bench.ports['receiver']}/events"
    await bench.sql("UPDATE drivers SET event_url = $1", receiver_url)
    await receiver_call(bench, "POST", "/reset")
    bench.flush_redis()
    port = bench.ports["gw-pg"]
    make = webhook_maker(
        bench.communities[:1],
        f"127.0.0.1:{port}",
        "/api/hooks/{slug}/webhook",
        f"w8-{pending}",
        "bench.backlog",
    )
    loaded = await closed_loop("127.0.0.1", port, make, concurrency=CONCURRENCY, count=pending)
    if loaded.errors:
        raise RuntimeError(f"W8: {loaded.errors} webhooks refused while loading the backlog")
    worker = await bench.start_worker()
    t0, cpu0, pg0 = time.perf_counter(), worker.cpu(), await bench.backend_cpu()
    deadline = time.perf_counter() + bench.sizes.drain_timeout
    while time.perf_counter() < deadline:
        stats = await receiver_call(bench, "GET", "/stats")
        if stats["unique"] >= pending:
            break
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - t0
    worker_cpu, (pg_cpu, _) = worker.cpu() - cpu0, bench.pg_delta(pg0, await bench.backend_cpu())
    stats = await receiver_call(bench, "GET", "/stats")
    bench.stop("worker")
    delivered = max(1, stats["unique"])
    out = {
        "pending": pending,
        "delivered": stats["unique"],
        "drain_s": round(elapsed, 2),
        "events_per_s": round(stats["unique"] / elapsed, 1),
        "worker_cpu_ms_per_event": round(1000 * worker_cpu / delivered, 3),
        "pg_cpu_ms_per_event": round(1000 * pg_cpu / delivered, 3),
        "order_violations": stats["order_violations"],
        "duplicates": stats["duplicates"],
    }
    log(f"W8 backlog {pending}: {out}")
    return out


async def w8(bench: Bench) -> dict[str, Any]:
    small = await drain_cost(bench, bench.sizes.w8_small)
    large = await drain_cost(bench, bench.sizes.w8_large)

    def per_event(run: dict[str, Any]) -> float:
        return float(run["worker_cpu_ms_per_event"] + run["pg_cpu_ms_per_event"])

    return {
        "small": small,
        "large": large,
        "ratio": ratio(per_event(large), per_event(small)),
    }
