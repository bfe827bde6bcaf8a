"""W7: deadlines. Many processes due within the same second: how long after its ``closing_at``
each one's ``process.completed`` event reaches the Driver."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import httpx

from bench import procs
from bench.harness import Bench, log, mem_mb, receiver_call
from bench.httpload import ms, percentile

# Starting the processes takes a while; their deadlines are set this far ahead of the first start.
LEAD_SECONDS = 3.0


async def w7(bench: Bench) -> dict[str, Any]:
    count = bench.sizes.w7_processes
    await bench.clean()
    receiver_url = f"http://127.0.0.1:{bench.ports['receiver']}/events"
    await bench.sql("UPDATE drivers SET event_url = $1", receiver_url)
    await receiver_call(bench, "POST", "/reset")
    bench.flush_redis()
    gw = bench.procs["gw-pg"]
    worker = await bench.start_worker()
    procs.reset_peak(gw.pid)
    community = bench.communities[0].slug
    headers = {"Authorization": f"Bearer {bench.api_key}", "X-Metagov-Community": community}
    url = (
        f"http://127.0.0.1:{bench.ports['gw-pg']}"
        "/api/internal/process/randomness.delayed-stochastic-vote"
    )
    # Whole seconds of delay from each start: every deadline falls in [due, due + 1).
    due = time.time() + LEAD_SECONDS + count / 100
    started_all = time.perf_counter()
    async with httpx.AsyncClient(timeout=30) as client:
        gate = asyncio.Semaphore(16)

        async def start() -> None:
            async with gate:
                delay = max(1, math.ceil(due - time.time()))
                body = {"options": ["a", "b"], "delay_seconds": delay}
                response = await client.post(url, json=body, headers=headers)
                response.raise_for_status()

        await asyncio.gather(*(start() for _ in range(count)))
    start_s = time.perf_counter() - started_all
    if time.time() > due:
        raise RuntimeError("the processes took longer to start than their lead: lower the count")
    worker0, pg0 = worker.cpu(), await bench.backend_cpu()
    deadline = time.monotonic() + 60 + LEAD_SECONDS
    while time.monotonic() < deadline:
        stats = await receiver_call(bench, "GET", "/stats")
        if stats["deadlines_met"] >= count:
            break
        await asyncio.sleep(0.2)
    worker_cpu, (pg_cpu, _) = worker.cpu() - worker0, bench.pg_delta(pg0, await bench.backend_cpu())
    dump = await receiver_call(bench, "GET", "/dump")
    late = dump["deadline_latencies"]
    out = {
        "processes": count,
        "start_s": round(start_s, 2),
        "completed": len(late),
        "p50_ms": ms(percentile(late, 50)),
        "p99_ms": ms(percentile(late, 99)),
        "max_ms": ms(max(late)) if late else None,
        "duplicates": dump["duplicates"],
        # From the last start to the last outcome: the closes and their deliveries.
        "worker_cpu_ms_per_close": round(1000 * worker_cpu / count, 2),
        "pg_cpu_ms_per_close": round(1000 * pg_cpu / count, 2),
        "peak_rss_mb": {"gateway-pg api": mem_mb(gw.memory()), "worker": mem_mb(worker.memory())},
    }
    log(
        f"W7 {count} deadlines: p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms, worker CPU "
        f"{out['worker_cpu_ms_per_close']} ms and PostgreSQL {out['pg_cpu_ms_per_close']} ms each"
    )
    bench.stop("worker")
    return out
