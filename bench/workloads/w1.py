"""W1: webhook ingest, against a bare verify+INSERT baseline in the same rounds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import procs
from bench.harness import (
    CONCURRENCY,
    Bench,
    create_communities,
    log,
    measure_closed,
    mem_mb,
    webhook_maker,
)
from bench.httpload import (
    closed_loop,
    ms,
    percentile,
)
from bench.procs import Proc


async def start_baseline(bench: Bench) -> Proc:
    """The bare Starlette baseline (W1 and W3), started once."""
    if "baseline" in bench.procs:
        return bench.procs["baseline"]
    communities_json = json.dumps(
        {c.slug: [c.secret, c.id, c.webhook_instance] for c in bench.communities}
    )
    bench.ports["baseline"] = procs.free_port()
    baseline = bench.spawn(
        "baseline",
        ["-m", "bench.baseline", "--port", str(bench.ports["baseline"])],
        {
            "BENCH_PG_DSN": bench.pg_dsn,
            "BENCH_BASELINE_COMMUNITIES": communities_json,
            "METAGOV_LOG_LEVEL": "INFO",
            "PYTHONPATH": bench.pythonpath(),
        },
    )
    await bench._wait(baseline, procs.wait_http(bench.ports["baseline"], "/random"))
    return baseline


async def w1(bench: Bench) -> dict[str, Any]:
    sizes = bench.sizes
    await bench.clean()
    gw = bench.procs["gw-pg"]
    procs.reset_peak(gw.pid)
    sqlite_file = bench.tmp / "sqlite" / "metagov.db"
    sqlite_file.parent.mkdir(exist_ok=True)
    variants = [v for v in (bench.args.w1_variants or "").split(";") if v]
    started = await asyncio.gather(
        start_baseline(bench),
        bench.start_gateway("gw-sqlite", bench.gateway_env(sqlite=sqlite_file)),
        *(
            bench.start_gateway(f"gateway-pg[{v}]", bench.gateway_env(), variant=v)
            for v in variants
        ),
    )
    baseline, gws = started[0], started[1]
    assert gws is not None
    await create_communities(bench, bench.ports["gw-sqlite"])

    targets = {
        "baseline": (baseline, bench.ports["baseline"], "/hooks/{slug}/webhook"),
        "gateway-pg": (gw, bench.ports["gw-pg"], "/api/hooks/{slug}/webhook"),
        "gateway-sqlite": (gws, bench.ports["gw-sqlite"], "/api/hooks/{slug}/webhook"),
    }
    # What-if targets: the PostgreSQL gateway with suggested fixes patched in (bench.variants).
    for variant, proc in zip(variants, started[2:], strict=True):
        name = f"gateway-pg[{variant}]"
        assert proc is not None
        targets[name] = (proc, bench.ports[name], "/api/hooks/{slug}/webhook")
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    names = list(targets)
    # The embedded gateway keeps handling its webhooks in the background after its window: it
    # is stopped (SIGSTOP) while the other targets are measured, so that it takes no CPU from
    # them, and continued for its own windows (which then include that backlog, as they would
    # under sustained load).
    gws.pause()
    for r in range(sizes.w1_rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            proc, port, path = targets[name]
            if name == "gateway-sqlite":
                gws.resume()
            make = webhook_maker(
                bench.communities, f"127.0.0.1:{port}", path, f"w1{name}{r}", "bench.ingest"
            )
            await closed_loop(
                "127.0.0.1",
                port,
                make_warm(make),
                concurrency=CONCURRENCY,
                duration=sizes.w1_warmup,
            )
            outcome = await measure_closed(bench, proc, port, make, sizes.w1_seconds)
            if name == "gateway-sqlite":
                outcome["inbox_backlog_at_end"] = await sqlite_backlog(sqlite_file)
                gws.pause()
            rounds[name].append(outcome)
            log(f"W1 round {r + 1} {name}: {outcome['rps']} req/s, p50 {outcome['p50_ms']} ms")

    for name in targets:
        if name.startswith("gateway-pg["):
            bench.stop(name)
    out: dict[str, Any] = {"rounds": {}, "summary": {}}
    out["with_worker"], worker_mem = (
        await w1_with_worker(bench) if sizes.w1_with_worker else ({}, {})
    )
    out["peak_rss_mb"] = {
        "gateway-pg api": mem_mb(gw.memory()),
        "gateway-sqlite api": mem_mb(bench.stop("gw-sqlite")),
        "baseline": mem_mb(baseline.memory()),
        "worker (with-worker run)": mem_mb(worker_mem),
    }
    return w1_summary(out, rounds)


async def w1_with_worker(bench: Bench) -> tuple[dict[str, Any], dict[str, int]]:
    """The production topology, once: the same ingest while a worker handles the webhooks."""
    gw = bench.procs["gw-pg"]
    await bench.clean()
    worker = await bench.start_worker()
    make = webhook_maker(
        bench.communities,
        f"127.0.0.1:{bench.ports['gw-pg']}",
        "/api/hooks/{slug}/webhook",
        "w1withworker",
        "bench.ingest",
    )
    await closed_loop(
        "127.0.0.1", bench.ports["gw-pg"], make_warm(make), concurrency=CONCURRENCY, duration=0.5
    )
    wcpu0 = worker.cpu()
    with_worker = await measure_closed(
        bench, gw, bench.ports["gw-pg"], make, bench.sizes.w1_seconds
    )
    with_worker["worker_cpu_pct"] = round(
        100 * (worker.cpu() - wcpu0) / with_worker["duration_s"], 1
    )
    with_worker.pop("_latencies")
    inbox, _ = await bench.backlog()
    with_worker["inbox_backlog_at_end"] = inbox
    return with_worker, bench.stop("worker")


def w1_summary(out: dict[str, Any], rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    for name, runs in rounds.items():
        latencies = [x for run in runs for x in run.pop("_latencies")]
        out["rounds"][name] = runs
        out["summary"][name] = {
            "rps_median": round(statistics.median(run["rps"] for run in runs), 1),
            "p50_ms": ms(percentile(latencies, 50)),
            "p99_ms": ms(percentile(latencies, 99)),
            "server_cpu_ms_per_req": round(
                statistics.median(run["server_cpu_ms_per_req"] for run in runs), 3
            ),
            "pg_cpu_ms_per_req": round(
                statistics.median(run["pg_cpu_ms_per_req"] for run in runs), 3
            ),
            "pg_sessions_per_req": round(
                statistics.median(run["pg_sessions_per_req"] for run in runs), 3
            ),
            "errors": sum(run["errors"] for run in runs),
            "loadgen_cpu_pct": round(statistics.median(run["loadgen_cpu_pct"] for run in runs), 1),
        }
    # Per-round ratios: neighbours in time share the machine's mood.
    per_round = [
        round(g["rps"] / b["rps"], 3)
        for g, b in zip(rounds["gateway-pg"], rounds["baseline"], strict=True)
        if b["rps"]
    ]
    out["ratio_pg_rps_per_round"] = per_round
    out["ratio_pg_rps"] = round(statistics.median(per_round), 3) if per_round else None
    per_round_sqlite = [
        round(g["rps"] / b["rps"], 3)
        for g, b in zip(rounds["gateway-sqlite"], rounds["baseline"], strict=True)
        if b["rps"]
    ]
    out["ratio_sqlite_rps"] = (
        round(statistics.median(per_round_sqlite), 3) if per_round_sqlite else None
    )
    out["sqlite_backlog_per_round"] = [
        run.get("inbox_backlog_at_end") for run in out["rounds"]["gateway-sqlite"]
    ]
    out["ratio_variants_rps"] = {
        name: round(
            statistics.median(
                g["rps"] / b["rps"]
                for g, b in zip(rounds[name], rounds["baseline"], strict=True)
                if b["rps"]
            ),
            3,
        )
        for name in rounds
        if name.startswith("gateway-pg[")
    }
    return out


async def sqlite_backlog(path: Path) -> int | None:
    """Webhooks the embedded gateway has stored but not handled yet."""

    def count() -> int | None:
        import sqlite3

        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                row = db.execute(
                    "SELECT count(*) FROM inbound_webhooks WHERE status = 'pending'"
                ).fetchone()
                return int(row[0])
        except sqlite3.Error:
            return None

    return await asyncio.to_thread(count)


def make_warm(make: Callable[[int], bytes]) -> Callable[[int], bytes]:
    """Warm-up requests: distinct webhook ids from the measured ones."""
    return lambda n: make(10**9 + n)
