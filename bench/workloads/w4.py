"""W4: a scheduler pass over due processes, with few and with many stored."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bench import procs
from bench.harness import Bench, log, mem_mb, ratio


async def load_processes(bench: Bench, stored: int, due: int) -> None:
    """``stored`` pending randomness votes spread over the communities, ``due`` of them (evenly
    spread through the table) with a deadline in the past, the rest due tomorrow."""
    await bench.sql(
        "TRUNCATE process_listen_keys, processes, delivery_failures, deliveries, events"
    )
    communities = [c.id for c in bench.communities]
    instances = [c.randomness_instance for c in bench.communities]
    await bench.sql(
        """
        INSERT INTO processes (community_id, plugin_instance_id, plugin_name, name, status,
                               parameters, errors, state, closing_at, created_at, updated_at)
        SELECT ($3::int[])[1 + g % $5], ($4::int[])[1 + g % $5], 'randomness',
               'delayed-stochastic-vote', 'pending',
               '{"options": ["a", "b"], "delay_seconds": 0}'::jsonb, '[]'::jsonb, '{}'::jsonb,
               CASE WHEN (g::bigint * $2) / $1 > ((g - 1)::bigint * $2) / $1
                    THEN now() - interval '1 hour' + g * interval '1 ms'
                    ELSE now() + interval '1 day' + g * interval '1 ms' END,
               now(), now()
        FROM generate_series(1, $1) AS g
        """,
        stored,
        due,
        communities,
        instances,
        len(communities),
    )
    await bench.sql("ANALYZE processes")
    found = await bench.sql_value(
        "SELECT count(*) FROM processes WHERE status = 'pending' AND closing_at <= now()"
    )
    assert found == due, (found, due)


async def in_process_pass(bench: Bench, stored: int, due: int) -> dict[str, Any]:
    await load_processes(bench, stored, due)
    env = bench.gateway_env()
    env.pop("METAGOV_REDIS_URL")
    env["BENCH_VARIANT"] = bench.args.variant or ""
    proc = bench.spawn("w4pass", ["-m", "bench.w4pass"], env, profile=True)
    deadline = time.monotonic() + 900
    while proc.alive() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    bench.stop("w4pass")
    lines = proc.log_path.read_text().strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(f"w4pass failed:\n{proc.log_tail()}") from None
    proc.log_path.unlink()
    result["closed_in_db"] = await bench.sql_value(
        "SELECT count(*) FROM processes WHERE status = 'completed'"
    )
    log(f"W4 in-process {stored} stored / {due} due: {result['elapsed_s']} s")
    return result


async def worker_pass(bench: Bench, stored: int, due: int) -> dict[str, Any]:
    await load_processes(bench, stored, due)
    bench.flush_redis()
    worker = await bench.start_worker()
    t0, cpu0, pg0 = time.perf_counter(), worker.cpu(), await bench.backend_cpu()
    rss_start = worker.memory().get("VmRSS")
    with procs.Sampler({"worker": worker.pid}) as sampler:
        while True:
            left = await bench.sql_value(
                "SELECT count(*) FROM processes WHERE status = 'pending' AND closing_at <= now()"
            )
            if left == 0 or time.perf_counter() - t0 > 900:
                break
            await asyncio.sleep(0.25)
        elapsed = time.perf_counter() - t0
        cpu, (pg, _) = worker.cpu() - cpu0, bench.pg_delta(pg0, await bench.backend_cpu())
        await asyncio.sleep(1.0)  # one more sweep with nothing due, for the memory series
    memory = bench.stop("worker")
    series = sampler.series["worker"]
    log(f"W4 worker {stored} stored / {due} due: {elapsed:.2f} s")
    return {
        "elapsed_s": round(elapsed, 3),
        "worker_cpu_s": round(cpu, 2),
        "worker_cpu_ms_per_close": round(1000 * cpu / max(1, due), 2),
        "pg_cpu_ms_per_close": round(1000 * pg / max(1, due), 2),
        "left": left,
        "rss_start_mb": round(rss_start / 1024, 1) if rss_start else None,
        "rss_end_mb": round(series[-1][1] / 1024, 1) if series else None,
        "peak_rss_mb": mem_mb(memory),
        "rss_series_mb": [(t, round(v / 1024, 1)) for t, v in series[:: max(1, len(series) // 60)]],
    }


async def w4(bench: Bench) -> dict[str, Any]:
    sizes = bench.sizes
    await bench.clean()
    small, large = max(sizes.w4_stored_small, sizes.w4_due), sizes.w4_stored
    out: dict[str, Any] = {"stored_small": small, "stored_large": large, "due": sizes.w4_due}
    if sizes.w4_in_process:
        out["in_process_small"] = await in_process_pass(bench, small, sizes.w4_due)
        out["in_process_large"] = await in_process_pass(bench, large, sizes.w4_due)
        out["ratio_in_process"] = ratio(
            out["in_process_large"]["elapsed_s"], out["in_process_small"]["elapsed_s"]
        )
    out["worker_small"] = await worker_pass(bench, small, sizes.w4_due)
    out["worker_large"] = await worker_pass(bench, large, sizes.w4_due)
    out["ratio_worker"] = ratio(out["worker_large"]["elapsed_s"], out["worker_small"]["elapsed_s"])
    out["ratio_worker_cpu"] = ratio(
        out["worker_large"]["worker_cpu_s"], out["worker_small"]["worker_cpu_s"]
    )
    out["ratio_worker_peak_rss"] = ratio(
        out["worker_large"]["peak_rss_mb"], out["worker_small"]["peak_rss_mb"]
    )
    await bench.sql(
        "TRUNCATE process_listen_keys, processes, delivery_failures, deliveries, events"
    )
    return out
