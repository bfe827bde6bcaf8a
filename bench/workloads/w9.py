"""W9: the embedded default end to end: ``metagov serve`` on SQLite, jobs in the same process,
webhooks in and events out to the Driver at stepped rates. Reports the highest rate it sustains
and, there, how the acknowledgements' tail compares with their median."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.harness import Bench, create_communities, log, mem_mb, receiver_call, webhook_maker
from bench.httpload import RunResult, ms, open_loop, percentile
from bench.workloads.w1 import sqlite_backlog

RATES = (50.0, 100.0, 150.0, 200.0, 250.0, 300.0)


async def w9(bench: Bench) -> dict[str, Any]:
    folder = bench.tmp / "w9"
    folder.mkdir(exist_ok=True)
    sqlite_file = folder / "metagov.db"
    receiver_url = f"http://127.0.0.1:{bench.ports['receiver']}/events"
    env = bench.gateway_env(sqlite=sqlite_file, event_url=receiver_url)
    gw = await bench.start_gateway("gw-embedded", env)
    port = bench.ports["gw-embedded"]
    await create_communities(bench, port)
    steps: list[dict[str, Any]] = []
    for rate in RATES[: bench.sizes.w9_steps]:
        await receiver_call(bench, "POST", "/reset")
        make = webhook_maker(
            bench.communities[:1],
            f"127.0.0.1:{port}",
            "/api/hooks/{slug}/webhook",
            f"w9-{rate}",
            "bench.embedded",
        )
        result: RunResult = await open_loop(
            "127.0.0.1", port, make, rate=rate, duration=bench.sizes.w2_step_seconds
        )
        t_stop = time.perf_counter()
        while time.perf_counter() - t_stop < 30:
            stats = await receiver_call(bench, "GET", "/stats")
            if stats["unique"] >= result.ok:
                break
            await asyncio.sleep(0.2)
        drain_s = time.perf_counter() - t_stop
        stats = await receiver_call(bench, "GET", "/stats")
        p50, p99 = percentile(result.latencies, 50), percentile(result.latencies, 99)
        step = {
            "rate": rate,
            "sent_ok": result.ok,
            "errors": result.errors,
            "ack_p50_ms": ms(p50),
            "ack_p99_ms": ms(p99),
            "tail_ratio": round(p99 / p50, 2) if p50 else None,
            "delivered": stats["unique"],
            "drain_s": round(drain_s, 2),
            "inbox_backlog_after": await sqlite_backlog(sqlite_file),
            "sustained": result.errors == 0 and drain_s < 2.0 and stats["unique"] >= result.ok,
        }
        log(f"W9 embedded {rate:.0f}/s: {step}")
        steps.append(step)
        if not step["sustained"]:
            break
    held = [s for s in steps if s["sustained"]]
    best = held[-1] if held else None
    out = {
        "steps": steps,
        "max_sustained_rate": best["rate"] if best else None,
        "at_max_sustained": best,
        "peak_rss_mb": {"gateway-embedded": mem_mb(gw.memory())},
    }
    bench.stop("gw-embedded")
    return out
