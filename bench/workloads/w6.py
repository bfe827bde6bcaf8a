"""W6: the Driver's writes: process starts and community creates at 16 connections, beside the
baseline's verify+INSERT at the same concurrency."""

from __future__ import annotations

import json
from typing import Any

from bench import procs
from bench.harness import Bench, log, mem_mb, ratio, webhook_maker
from bench.httpload import RunResult, build_request, closed_loop, ms, percentile
from bench.workloads.w1 import start_baseline

CONCURRENCY = 16


def _summary(result: RunResult) -> dict[str, Any]:
    return {
        "requests": result.ok,
        "errors": result.errors,
        "rps": round(result.ok / result.duration, 1) if result.duration else None,
        "p50_ms": ms(percentile(result.latencies, 50)),
        "p99_ms": ms(percentile(result.latencies, 99)),
    }


async def w6(bench: Bench) -> dict[str, Any]:
    sizes = bench.sizes
    await bench.clean()
    gw = bench.procs["gw-pg"]
    procs.reset_peak(gw.pid)
    await start_baseline(bench)
    port, host = bench.ports["gw-pg"], f"127.0.0.1:{bench.ports['gw-pg']}"
    community = bench.communities[0].slug
    auth = {"authorization": f"Bearer {bench.api_key}", "content-type": "application/json"}
    vote = json.dumps({"options": ["a", "b"], "delay_seconds": 86400}).encode()

    def start(n: int) -> bytes:
        headers = {**auth, "x-metagov-community": community}
        path = "/api/internal/process/randomness.delayed-stochastic-vote"
        return build_request("POST", path, host, headers, vote)

    def create(n: int) -> bytes:
        body = json.dumps({"slug": f"w6-{bench.db_name}-{n}"}).encode()
        return build_request("POST", "/api/internal/community", host, auth, body)

    baseline_port = bench.ports["baseline"]
    baseline_make = webhook_maker(  # W1's baseline: a signed webhook verified and INSERTed
        bench.communities,
        f"127.0.0.1:{baseline_port}",
        "/hooks/{slug}/webhook",
        "w6base",
        "bench.ingest",
    )
    out: dict[str, Any] = {"concurrency": CONCURRENCY}
    for name, target_port, make in (
        ("process start", port, start),
        ("community create", port, create),
        ("baseline verify+INSERT", baseline_port, baseline_make),
    ):
        result = await closed_loop(
            "127.0.0.1",
            target_port,
            make,
            concurrency=CONCURRENCY,
            duration=sizes.w6_seconds,
            warmup=min(1.0, sizes.w6_seconds / 3),
        )
        out[name] = _summary(result)
        log(f"W6 {name}: {out[name]}")
    base = out["baseline verify+INSERT"]["rps"]
    out["ratio_start"] = ratio(out["process start"]["rps"], base)
    out["ratio_create"] = ratio(out["community create"]["rps"], base)
    out["peak_rss_mb"] = {"gateway-pg api": mem_mb(gw.memory())}
    bench.stop("baseline")
    return out
