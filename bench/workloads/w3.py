"""W3: actions, against the baseline handler and a direct call of a fake platform."""

from __future__ import annotations

import time
from typing import Any

import httpx

from bench import procs
from bench.harness import Bench, log, mem_mb, ratio
from bench.httpload import (
    ms,
    percentile,
)
from bench.workloads.w1 import start_baseline


async def w3(bench: Bench) -> dict[str, Any]:
    sizes = bench.sizes
    await bench.clean()
    gw = bench.procs["gw-pg"]
    await start_baseline(bench)
    procs.reset_peak(gw.pid)
    community = bench.communities[0].slug
    gw_url = f"http://127.0.0.1:{bench.ports['gw-pg']}"
    auth = {"Authorization": f"Bearer {bench.api_key}", "X-Metagov-Community": community}
    targets: dict[str, tuple[str, str, dict[str, str]]] = {
        "gateway randomness.random-int": (
            "POST",
            f"{gw_url}/api/internal/action/randomness.random-int",
            auth,
        ),
        "baseline starlette /random": (
            "POST",
            f"http://127.0.0.1:{bench.ports['baseline']}/random",
            {},
        ),
        "gateway benchfake.fetch-thing": (
            "POST",
            f"{gw_url}/api/internal/action/benchfake.fetch-thing",
            auth,
        ),
        "fake platform direct (httpx)": (
            "GET",
            f"http://127.0.0.1:{bench.ports['fake']}/thing",
            {"Authorization": f"Bearer {bench.fake_token}"},
        ),
    }
    latencies: dict[str, list[float]] = {name: [] for name in targets}
    cpu: dict[str, float] = {name: 0.0 for name in targets}
    errors = dict.fromkeys(targets, 0)
    names = list(targets)
    async with httpx.AsyncClient(timeout=30) as client:
        for name in names:  # warm up connections, caches, prepared statements
            method, url, headers = targets[name]
            for _ in range(20):
                await client.request(method, url, headers=headers)
        for r in range(sizes.w3_rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                method, url, headers = targets[name]
                c0 = gw.cpu()
                for _ in range(sizes.w3_requests):
                    t0 = time.perf_counter()
                    response = await client.request(method, url, headers=headers)
                    elapsed = time.perf_counter() - t0
                    if response.status_code == 200 and "value" in response.json():
                        latencies[name].append(elapsed)
                    else:
                        errors[name] += 1
                cpu[name] += gw.cpu() - c0
    out: dict[str, Any] = {"targets": {}}
    for name in names:
        lat = latencies[name]
        out["targets"][name] = {
            "requests": len(lat),
            "errors": errors[name],
            "p50_ms": ms(percentile(lat, 50)),
            "p90_ms": ms(percentile(lat, 90)),
            "p99_ms": ms(percentile(lat, 99)),
            "gateway_cpu_ms_per_req": round(1000 * cpu[name] / max(1, len(lat)), 3)
            if name.startswith("gateway")
            else None,
        }
        log(f"W3 {name}: p50 {out['targets'][name]['p50_ms']} ms")
    t = out["targets"]
    out["ratio_random"] = ratio(
        t["gateway randomness.random-int"]["p50_ms"], t["baseline starlette /random"]["p50_ms"]
    )
    out["ratio_fake"] = ratio(
        t["gateway benchfake.fetch-thing"]["p50_ms"], t["fake platform direct (httpx)"]["p50_ms"]
    )
    out["peak_rss_mb"] = {"gateway-pg api": mem_mb(gw.memory())}
    return out
