"""W2: webhooks in, events out to the Driver, end to end, at stepped rates."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from bench import procs
from bench.harness import ARQ_QUEUE, Bench, log, mem_mb, receiver_call, slope, webhook_maker
from bench.httpload import (
    RunResult,
    ms,
    open_loop,
    percentile,
)


async def e2e_step(bench: Bench, rate: float, seconds: float, label: str) -> dict[str, Any]:
    """Offer ``rate`` webhooks/s for ``seconds``; watch the backlog; wait for it to drain."""
    await receiver_call(bench, "POST", "/reset")
    port = bench.ports["gw-pg"]
    samples: list[tuple[float, int, int]] = []

    async def tick(t: float) -> None:
        inbox, outbox = await bench.backlog()
        samples.append((round(t, 2), inbox, outbox))

    make = webhook_maker(
        bench.communities, f"127.0.0.1:{port}", "/api/hooks/{slug}/webhook", label, "bench.e2e"
    )
    gw, worker = bench.procs["gw-pg"], bench.procs["worker"]
    api0, worker0, pg0 = gw.cpu(), worker.cpu(), await bench.backend_cpu()
    result: RunResult = await open_loop(
        "127.0.0.1", port, make, rate=rate, duration=seconds, on_tick=tick
    )
    # A last sample once the load stopped.
    inbox_end, outbox_end = await bench.backlog()
    samples.append((round(result.duration, 2), inbox_end, outbox_end))
    api1, worker1, pg1 = gw.cpu(), worker.cpu(), await bench.backend_cpu()
    delivered_during_load = (await receiver_call(bench, "GET", "/stats"))["unique"]
    t_stop = time.perf_counter()
    drained = False
    while time.perf_counter() - t_stop < bench.sizes.drain_timeout:
        stats = await receiver_call(bench, "GET", "/stats")
        inbox, outbox = await bench.backlog()
        if inbox == 0 and outbox == 0 and stats["unique"] >= result.ok:
            drained = True
            break
        await asyncio.sleep(0.2)
    drain_s = time.perf_counter() - t_stop
    # After an overload the queue still holds jobs whose work is done (the sweep re-rings every
    # pending webhook each second): let the worker run them before the next step starts, so that
    # one step's leftovers do not slow the next.
    queued = bench.redis("ZCARD", ARQ_QUEUE)
    while queued > 2 and time.perf_counter() - t_stop < bench.sizes.drain_timeout:
        await asyncio.sleep(0.2)
        queued = bench.redis("ZCARD", ARQ_QUEUE)
    leftover_s = time.perf_counter() - t_stop - drain_s
    dump = await receiver_call(bench, "GET", "/dump")
    latencies = dump.pop("latencies")
    second_half = [(t, i + o) for t, i, o in samples if t >= seconds / 2]
    growth = slope(second_half)
    backlog_end = inbox_end + outbox_end
    late_ok = result.late_starts <= 0.01 * max(1, result.offered)
    sustained = (
        result.errors == 0
        and late_ok
        and delivered_during_load >= 0.8 * result.ok
        and growth <= 0.05 * rate + 2
        and backlog_end <= max(50, 2 * rate)
        and drained
    )
    pg, sessions = bench.pg_delta(pg0, pg1)
    out = {
        "rate": round(rate, 1),
        "seconds": seconds,
        "sent_ok": result.ok,
        "errors": result.errors,
        "late_starts": result.late_starts,
        "http_p50_ms": ms(percentile(result.latencies, 50)),
        "http_p99_ms": ms(percentile(result.latencies, 99)),
        "e2e_received": len(latencies),
        "delivered_per_s_during_load": round(delivered_during_load / result.duration, 1),
        "e2e_p50_ms": ms(percentile(latencies, 50)),
        "e2e_p90_ms": ms(percentile(latencies, 90)),
        "e2e_p99_ms": ms(percentile(latencies, 99)),
        "e2e_max_ms": ms(max(latencies)) if latencies else None,
        "backlog_samples": samples,
        "backlog_growth_per_s": round(growth, 2),
        "backlog_end": backlog_end,
        "drained": drained,
        "drain_s": round(drain_s, 2),
        "leftover_jobs_s": round(leftover_s, 2),
        "sustained": sustained,
        "duplicates": dump["duplicates"],
        "order_violations": dump["order_violations"],
        "bad_signatures": dump["bad_signatures"],
        "api_cpu_pct": round(100 * (api1 - api0) / result.duration, 1),
        "worker_cpu_pct": round(100 * (worker1 - worker0) / result.duration, 1),
        "pg_cpu_pct": round(100 * pg / result.duration, 1),
        "pg_sessions_opened": sessions,
        "loadgen_cpu_pct": result.summary()["loadgen_cpu_pct"],
    }
    log(
        f"W2 {label}: {rate:.0f}/s -> sustained={sustained} e2e p50 {out['e2e_p50_ms']} ms "
        f"(drain {drain_s:.1f} s + leftover jobs {leftover_s:.1f} s) "
        f"p99 {out['e2e_p99_ms']} ms, backlog growth {growth:.1f}/s, end {backlog_end}, "
        f"API {out['api_cpu_pct']}% worker {out['worker_cpu_pct']}% PG {out['pg_cpu_pct']}%"
    )
    return out


async def w2(bench: Bench, reference_rps: float, reference_p50: float | None) -> dict[str, Any]:
    sizes = bench.sizes
    await bench.clean()
    receiver_url = f"http://127.0.0.1:{bench.ports['receiver']}/events"
    await bench.sql("UPDATE drivers SET event_url = $1", receiver_url)
    gw = bench.procs["gw-pg"]
    procs.reset_peak(gw.pid)
    worker = await bench.start_worker()
    target = 0.5 * reference_rps
    latency_rate = 0.5 * target
    latency = await e2e_step(bench, latency_rate, sizes.w2_latency_seconds, "w2lat")
    # The search starts at the target. A step that fails tells how much went through meanwhile,
    # so the next one starts just under the most any failing step (the latency run included) got
    # through: far over capacity, the API's own work starves the worker, so the step that fails
    # worst says least. A step that holds is followed by a faster one.
    steps = []
    rate, lo, hi = target, 0.0, math.inf
    # The latency run is shorter than a step: it informs the search but proves no rate.
    went_through = 0.0 if latency["sustained"] else latency["delivered_per_s_during_load"]
    for i in range(sizes.w2_max_steps):
        step = await e2e_step(bench, rate, sizes.w2_step_seconds, f"w2step{i}")
        steps.append(step)
        if step["sustained"]:
            lo = max(lo, rate)
        else:
            hi = min(hi, rate)
            went_through = max(went_through, step["delivered_per_s_during_load"])
        if lo and hi < math.inf:
            if hi / lo < 1.15:
                break
            rate = math.sqrt(lo * hi)
        elif lo:
            rate = lo * 1.4
        else:
            rate = max(1.0, min(hi / 1.5, 0.85 * went_through))
    target_step = next((s for s in steps if s["rate"] == round(target, 1)), None)
    best_step = max((s for s in steps if s["sustained"]), key=lambda s: s["rate"], default=None)
    out = {
        "reference_w1_rps": reference_rps,
        "reference_w1_p50_ms": reference_p50,
        "target_rate": round(target, 1),
        "latency_run": latency,
        "steps": steps,
        "max_sustained_rate": round(lo, 1) if lo else None,
        "target_sustained": bool(target_step and target_step["sustained"]),
        "at_max_sustained": best_step,
        "peak_rss_mb": {
            "gateway-pg api": mem_mb(gw.memory()),
            "worker": mem_mb(worker.memory()),
        },
    }
    bench.stop("worker")
    return out
