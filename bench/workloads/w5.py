"""W5: a Driver outage: events pile up, then drain in order once it is back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import procs
from bench.harness import CONCURRENCY, Bench, log, mem_mb, receiver_call, webhook_maker
from bench.httpload import (
    closed_loop,
)


async def w5(bench: Bench, reference_rate: float | None) -> dict[str, Any]:
    sizes = bench.sizes
    await bench.clean()
    receiver_url = f"http://127.0.0.1:{bench.ports['receiver']}/events"
    await bench.sql("UPDATE drivers SET event_url = $1", receiver_url)
    await receiver_call(bench, "POST", "/reset")
    await receiver_call(bench, "POST", "/mode", {"status": 503})
    gw = bench.procs["gw-pg"]
    procs.reset_peak(gw.pid)
    worker = await bench.start_worker()
    port = bench.ports["gw-pg"]
    n = sizes.w5_events
    make = webhook_maker(
        bench.communities, f"127.0.0.1:{port}", "/api/hooks/{slug}/webhook", "w5", "bench.outage"
    )
    t_outage = time.time()
    api0, worker0 = gw.cpu(), worker.cpu()
    sent = await closed_loop("127.0.0.1", port, make, concurrency=CONCURRENCY, count=n)
    api1 = gw.cpu()
    # Wait until every webhook became an event with its delivery (all failing meanwhile).
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < bench.sizes.drain_timeout:
        inbox, _ = await bench.backlog()
        made = await bench.sql_value("SELECT count(*) FROM deliveries")
        if inbox == 0 and made >= n:
            break
        await asyncio.sleep(0.2)
    events_recorded_after = time.time() - t_outage
    worker1 = worker.cpu()
    # Every partition's head fails and backs off at least once more.
    await asyncio.sleep(1.0 if bench.args.quick else 3.0)
    before = await receiver_call(bench, "GET", "/stats")
    t_recover = time.time()
    worker2 = worker.cpu()
    await receiver_call(bench, "POST", "/mode", {"status": 200})
    log("W5: the Driver is back; draining")
    stats = before
    deadline = time.monotonic() + bench.sizes.drain_timeout * 2
    while time.monotonic() < deadline:
        stats = await receiver_call(bench, "GET", "/stats")
        if stats["unique"] >= n:
            break
        await asyncio.sleep(0.2)
    worker3 = worker.cpu()
    drain_s = (stats["last_ack_at"] or time.time()) - t_recover
    first_s = (stats["first_ack_at"] or time.time()) - t_recover
    await asyncio.sleep(0.5 if bench.args.quick else 1.5)  # late duplicates, if any
    stats = await receiver_call(bench, "GET", "/stats")
    rows = await bench.sql("SELECT status, count(*) AS n FROM deliveries GROUP BY status")
    by_status = {r["status"]: r["n"] for r in rows}
    attempts = await bench.sql_value("SELECT coalesce(max(attempts), 0) FROM deliveries")
    out = {
        "events": n,
        "webhooks_accepted": sent.ok,
        "ingest_rps": round(sent.rps, 1),
        "outage_s": round(t_recover - t_outage, 1),
        "events_recorded_after_s": round(events_recorded_after, 1),
        "attempts_during_outage": before["attempts"],
        "max_attempts_per_delivery": attempts,
        "delivered_unique": stats["unique"],
        "duplicates": stats["duplicates"],
        "order_violations": stats["order_violations"],
        "gaps": stats["gaps"],
        "bad_signatures": stats["bad_signatures"],
        "first_delivery_after_recovery_s": round(first_s, 2),
        "drain_s": round(drain_s, 2),
        "drain_rate": round(n / drain_s, 1) if drain_s > 0 else None,
        "api_cpu_ms_per_webhook": round(1000 * (api1 - api0) / max(1, n), 2),
        "worker_cpu_ms_per_event_recorded": round(1000 * (worker1 - worker0) / max(1, n), 2),
        "worker_cpu_ms_per_delivery": round(1000 * (worker3 - worker2) / max(1, n), 2),
        "worker_cpu_pct_during_drain": round(100 * (worker3 - worker2) / max(0.001, drain_s), 1),
        "reference_rate": reference_rate,
        "deliveries_by_status": by_status,
        "per_community": stats["per_community"],
        "peak_rss_mb": {"gateway-pg api": mem_mb(gw.memory()), "worker": mem_mb(worker.memory())},
    }
    out["once_and_in_order"] = (
        stats["unique"] == n
        and stats["order_violations"] == 0
        and stats["gaps"] == 0
        and by_status.get("dead", 0) == 0
    )
    bench.stop("worker")
    log(f"W5: drained {n} in {drain_s:.1f} s, once and in order: {out['once_and_in_order']}")
    return out
