"""``python -m bench [--quick] [--only w1,w3] [--profile]``: run the workloads, print the table,
write ``bench/results/<timestamp>.json``.

Everything runs on loopback. This process is the load generator; every server is a subprocess:

- ``gw-pg``: ``metagov serve`` on a fresh PostgreSQL database (``metagov_bench_<random>``, created
  and dropped here) with Redis (a dedicated database number, flushed at the start of each
  workload), so it runs no job itself; ``worker``: one ``metagov worker``, started fresh for each
  workload that needs one;
- ``gw-sqlite``: ``metagov serve`` in the embedded mode (SQLite file, jobs in process), for W1;
- ``baseline``: a bare Starlette app on uvicorn (see ``bench.baseline``);
- ``fake``: the fake platform the ``benchfake`` plugin calls; ``receiver``: the Driver's endpoint.

Machines are noisy: each gateway figure is printed beside a baseline measured in the same run,
interleaved in rounds where it can be, and the ratio is what counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import procs
from bench.httpload import (
    RunResult,
    build_request,
    closed_loop,
    cpu_seconds_self,
    ms,
    open_loop,
    percentile,
    use_fast_loop,
)
from bench.procs import Proc
from metagov import signing

RESULTS = Path(__file__).resolve().parent / "results"
REDIS_CLAIM_KEY = "metagov-bench:claimed-by"
ARQ_QUEUE = "metagov:queue"  # metagov.jobs.worker.QUEUE_NAME
# Redis databases a run may take, highest first (the test suite uses 5). A run claims one that is
# empty, so that two runs at once (`make test` runs the quick bench) never share a queue.
REDIS_DBS = range(15, 7, -1)
COMMUNITIES = 8
CONCURRENCY = 32
# Deliveries retried after 1-2 s (±20 %) instead of 5 s, 30 s, 2 min...: W5 measures how fast a
# backlog drains once the Driver is back, not how long the back-off waits. 150 entries, about
# 5 minutes in all, so no delivery dies during the outage.
RETRY_SCHEDULE = ",".join(["1"] * 2 + ["2"] * 148)
PAD = "x" * 400  # webhook bodies of about 0.5 kB


@dataclass(frozen=True)
class Sizes:
    w1_rounds: int
    w1_with_worker: bool
    w1_seconds: float
    w1_warmup: float
    w2_step_seconds: float
    w2_latency_seconds: float
    w2_max_steps: int
    w3_requests: int
    w3_rounds: int
    w4_stored: int
    w4_stored_small: int
    w4_due: int
    w5_events: int
    drain_timeout: float
    w4_in_process: bool


# The counts are those the targets are set for: W4 closes 10,000 due processes with 100,000 and
# with 10,000 stored, and W5 emits 10,000 events; the full run takes 8-16 minutes here.
FULL = Sizes(
    3, True, 8.0, 1.5, 30.0, 20.0, 4, 300, 3, 100_000, 10_000, 10_000, 10_000, 300.0, False
)
QUICK = Sizes(1, False, 1.5, 0.5, 2.0, 1.5, 1, 40, 1, 2_000, 200, 50, 40, 30.0, False)


@dataclass
class Community:
    slug: str
    secret: str
    id: int = 0
    webhook_instance: int = 0
    randomness_instance: int = 0


@dataclass
class Bench:
    args: argparse.Namespace
    sizes: Sizes
    tmp: Path
    logs: Path
    admin_dsn: str
    db_name: str
    redis_host: str
    redis_port: int
    redis_db: int
    api_key: str = field(default_factory=lambda: "mgk_bench_" + secrets.token_urlsafe(24))
    driver_secret: str = field(default_factory=signing.generate_secret)
    fake_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    communities: list[Community] = field(default_factory=list)
    procs: dict[str, Proc] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    site: Path | None = None
    source: Path | None = None
    monitor: asyncpg.Connection | None = None
    postmaster: int | None = None
    stopped_cpu: float = 0.0
    results: dict[str, Any] = field(default_factory=dict)
    rows: list[list[str]] = field(default_factory=list)

    # --- connection strings ---------------------------------------------------------------------

    @property
    def pg_dsn(self) -> str:
        base, _, _ = self.admin_dsn.rpartition("/")
        return f"{base}/{self.db_name}"

    @property
    def sa_url(self) -> str:
        return self.pg_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)

    @property
    def redis_url(self) -> str:
        return f"redis://{self.redis_host}:{self.redis_port}/{self.redis_db}"

    def redis(self, *args: str) -> Any:
        return procs.redis_command(self.redis_host, self.redis_port, self.redis_db, *args)

    def flush_redis(self) -> None:
        """Empty the bench's Redis database, keeping the claim on it (see ``claim_redis_db``)."""
        self.redis("FLUSHDB")
        self.redis("SET", REDIS_CLAIM_KEY, self.db_name, "EX", "7200")

    # --- processes ------------------------------------------------------------------------------

    def gateway_env(
        self, *, sqlite: Path | None = None, event_url: str | None = None
    ) -> dict[str, str]:
        assert self.site is not None
        env = {
            "METAGOV_DATABASE_URL": f"sqlite+aiosqlite:///{sqlite}" if sqlite else self.sa_url,
            "METAGOV_DRIVER_API_KEY": self.api_key,
            "METAGOV_DRIVER_WEBHOOK_SECRET": self.driver_secret,
            "METAGOV_DELIVERY_RETRY_SCHEDULE": RETRY_SCHEDULE,
            "METAGOV_LOG_LEVEL": "INFO",
            # A stopped worker lets its jobs finish; within the 15 s the bench waits for it.
            "METAGOV_WORKER_SHUTDOWN_GRACE_SECONDS": "5",
            "PYTHONPATH": self.pythonpath(self.site),
            "BENCH_CPROFILE_DIR": str(self.logs),
        }
        if sqlite is None:
            env["METAGOV_REDIS_URL"] = self.redis_url
        if event_url:
            env["METAGOV_DRIVER_EVENT_URL"] = event_url
        return env

    def spawn(self, name: str, args: list[str], env: dict[str, str], profile: bool = False) -> Proc:
        if name in self.procs and self.procs[name].alive():
            raise RuntimeError(f"{name} is already running")
        profile_to = None
        if profile and self.args.profile:
            profile_to = self.logs / f"profile-{name}-{int(time.time())}.txt"
        proc = procs.spawn(name, args, env=env, cwd=self.tmp, logs=self.logs, profile_to=profile_to)
        self.procs[name] = proc
        return proc

    def pythonpath(self, *first: Path) -> str:
        """The snapshot of ``src/`` taken at the start (so that every process of one run runs the
        same code, even if the working tree changes meanwhile), then the repository (``bench``)."""
        assert self.source is not None
        return os.pathsep.join(str(p) for p in (*first, self.source / "src", procs.REPO))

    def metagov_args(self, *command: str, variant: str | None = None) -> list[str]:
        """``python -m metagov ...``, or through ``bench.variants`` with patches applied."""
        variant = self.args.variant if variant is None else variant
        if variant:
            return ["-m", "bench.variants", variant, "--", *command]
        return ["-m", "metagov", *command]

    async def start_gateway(
        self, name: str, env: dict[str, str], variant: str | None = None
    ) -> Proc:
        port = procs.free_port()
        args = self.metagov_args("serve", "--port", str(port), variant=variant)
        proc = self.spawn(name, args, env, profile=True)
        self.ports[name] = port
        await self._wait(proc, procs.wait_http(port))
        return proc

    async def start_worker(self) -> Proc:
        self.redis("DEL", f"{ARQ_QUEUE}:health-check")
        proc = self.spawn("worker", self.metagov_args("worker"), self.gateway_env(), profile=True)
        deadline = time.monotonic() + 60
        while not self.redis("EXISTS", f"{ARQ_QUEUE}:health-check"):
            if not proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{proc.log_tail()}")
            await asyncio.sleep(0.05)
        return proc

    async def _wait(self, proc: Proc, ready: Awaitable[None]) -> None:
        try:
            await ready
        except Exception:
            raise RuntimeError(f"{proc.name} did not start:\n{proc.log_tail()}") from None

    def stop(self, name: str) -> dict[str, int]:
        proc = self.procs.pop(name, None)
        if proc is None:
            return {}
        self.stopped_cpu += proc.cpu()
        return proc.stop()

    async def cpu_snapshot(self) -> dict[str, float]:
        """Machine CPU, and the CPU of everything this bench runs (servers, workers, this load
        generator, the PostgreSQL backends of the bench database), in seconds."""
        backends = await self.backend_cpu()
        ours = self.stopped_cpu + sum(p.cpu() for p in self.procs.values())
        ours += cpu_seconds_self() + sum(v for k, v in backends.items() if k > 0)
        return {**procs.machine_cpu(), "ours": ours}

    @staticmethod
    def cpu_share(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """Shares of the machine's CPU over a workload, in % of all CPUs."""
        total = max(1e-9, after["total"] - before["total"])
        busy = 100 * (after["busy"] - before["busy"]) / total
        ours = 100 * (after["ours"] - before["ours"]) / total
        return {
            "busy_pct": round(busy, 1),
            "ours_pct": round(ours, 1),
            "others_pct": round(max(0.0, busy - ours), 1),
            "steal_pct": round(100 * (after["steal"] - before["steal"]) / total, 1),
        }

    # --- database -------------------------------------------------------------------------------

    async def sql(self, query: str, *args: Any) -> Any:
        assert self.monitor is not None
        return await self.monitor.fetch(query, *args)

    async def sql_value(self, query: str, *args: Any) -> Any:
        assert self.monitor is not None
        return await self.monitor.fetchval(query, *args)

    async def backend_cpu(self) -> dict[int, float]:
        """CPU seconds of every PostgreSQL backend connected to the bench database; under key 0,
        the CPU of the postmaster's exited children (backends that ended, of any database) and
        under key -1 the number of sessions ever opened on the bench database."""
        rows = await self.sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            self.db_name,
        )
        found = {r["pid"]: procs.cpu_seconds(r["pid"]) for r in rows}
        if self.postmaster:
            found[0] = procs.children_cpu_seconds(self.postmaster)
        found[-1] = float(
            await self.sql_value(
                "SELECT sessions FROM pg_stat_database WHERE datname = $1", self.db_name
            )
            or 0
        )
        return found

    @staticmethod
    def pg_delta(before: dict[int, float], after: dict[int, float]) -> tuple[float, int]:
        """(CPU seconds used by PostgreSQL backends, sessions opened) between two snapshots."""
        cpu = sum(v - before.get(pid, 0.0) for pid, v in after.items() if pid != -1)
        return cpu, int(after.get(-1, 0) - before.get(-1, 0))

    async def clean(self) -> None:
        """Empty the tables the workloads fill, and the Redis queue; then vacuum, analyze and
        checkpoint, so that no workload pays for the writes of the one before (every event
        updates its community's row, so a busy workload leaves thousands of dead versions of a
        few rows, and the bench's tables would otherwise never be analyzed)."""
        await self.sql(
            "TRUNCATE inbound_webhooks, deliveries, events, processes, bench_baseline_webhooks"
        )
        await self.sql("UPDATE drivers SET event_url = NULL")
        await self.sql("VACUUM ANALYZE communities, plugin_instances, drivers")
        await self.sql("CHECKPOINT")
        self.flush_redis()

    async def backlog(self) -> tuple[int, int]:
        row = (
            await self.sql(
                "SELECT (SELECT count(*) FROM inbound_webhooks WHERE status = 'pending') AS inbox,"
                " (SELECT count(*) FROM deliveries WHERE status = 'pending') AS outbox"
            )
        )[0]
        return int(row["inbox"]), int(row["outbox"])

    # --- table ----------------------------------------------------------------------------------

    def row(self, *cells: Any) -> None:
        self.rows.append([_fmt(c) for c in cells])


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 3)


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "MISSED")


def mem_mb(memory: dict[str, int], key: str = "VmHWM") -> float | None:
    return round(memory[key] / 1024, 1) if key in memory else None


# --- requests ---------------------------------------------------------------------------------


def webhook_maker(
    communities: list[Community], host: str, path: str, prefix: str, kind: str
) -> Callable[[int], bytes]:
    """Signed Standard Webhooks requests, spread over the communities round-robin. The body
    carries ``sent_at`` (time.time() when the request is built, just before it is written)."""

    def make(n: int) -> bytes:
        community = communities[n % len(communities)]
        body = json.dumps(
            {"type": kind, "n": n, "sent_at": time.time(), "pad": PAD}, separators=(",", ":")
        ).encode()
        headers = signing.standard_headers([community.secret], f"{prefix}_{n}", body)
        headers["content-type"] = "application/json"
        return build_request("POST", path.format(slug=community.slug), host, headers, body)

    return make


async def measure_closed(
    bench: Bench, proc: Proc, port: int, make: Callable[[int], bytes], seconds: float
) -> dict[str, Any]:
    """One closed-loop window at the W1 concurrency, with the server's and PostgreSQL's CPU."""
    await closed_loop("127.0.0.1", port, make, concurrency=CONCURRENCY, duration=0.3)  # connect
    pg0, cpu0 = await bench.backend_cpu(), proc.cpu()
    result = await closed_loop("127.0.0.1", port, make, concurrency=CONCURRENCY, duration=seconds)
    cpu1, pg1 = proc.cpu(), await bench.backend_cpu()
    pg, sessions = bench.pg_delta(pg0, pg1)
    out = result.summary()
    out["server_cpu_pct"] = round(100 * (cpu1 - cpu0) / result.duration, 1)
    out["server_cpu_ms_per_req"] = round(1000 * (cpu1 - cpu0) / max(1, result.ok), 3)
    out["pg_cpu_ms_per_req"] = round(1000 * pg / max(1, result.ok), 3)
    out["pg_sessions_per_req"] = round(sessions / max(1, result.ok), 3)
    out["_latencies"] = result.latencies
    return out


# --- setup ------------------------------------------------------------------------------------


async def create_communities(bench: Bench, port: int) -> None:
    fake = f"http://127.0.0.1:{bench.ports['fake']}"
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {bench.api_key}"},
        timeout=30,
    ) as client:
        for community in bench.communities:
            response = await client.post(
                "/api/internal/community",
                json={
                    "slug": community.slug,
                    "readable_name": community.slug,
                    "plugins": [
                        {"name": "randomness", "config": {}},
                        {
                            "name": "webhook",
                            "config": {"secret": community.secret, "event_type_field": "type"},
                        },
                        {
                            "name": "benchfake",
                            "config": {"base_url": fake, "api_token": bench.fake_token},
                        },
                    ],
                },
            )
            if response.status_code != 201:
                raise RuntimeError(f"creating {community.slug}: {response.text}")


async def setup(bench: Bench) -> None:
    admin = await asyncpg.connect(bench.admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{bench.db_name}"')
    finally:
        await admin.close()
    bench.flush_redis()
    bench.site = procs.plugin_site(bench.tmp)
    bench.source = procs.snapshot_source(bench.tmp)
    bench.communities = [
        Community(f"bench-{i}", signing.generate_secret()) for i in range(COMMUNITIES)
    ]
    # The fake platform and the Driver receiver live for the whole run.
    bench.ports["fake"] = procs.free_port()
    fake = bench.spawn(
        "fake",
        ["-m", "bench.fakeplatform", "--port", str(bench.ports["fake"])],
        {"BENCH_FAKE_TOKEN": bench.fake_token, "PYTHONPATH": bench.pythonpath()},
    )
    bench.ports["receiver"] = procs.free_port()
    receiver = bench.spawn(
        "receiver",
        ["-m", "bench.receiver", "--port", str(bench.ports["receiver"])],
        {"BENCH_RECEIVER_SECRET": bench.driver_secret, "PYTHONPATH": bench.pythonpath()},
    )
    # The PostgreSQL gateway migrates the fresh database; it serves W1 to W5.
    await asyncio.gather(
        bench._wait(fake, procs.wait_http(bench.ports["fake"], "/healthz")),
        bench._wait(receiver, procs.wait_http(bench.ports["receiver"], "/stats")),
        bench.start_gateway("gw-pg", bench.gateway_env()),
    )
    await create_communities(bench, bench.ports["gw-pg"])
    bench.monitor = await asyncpg.connect(bench.pg_dsn)
    bench.postmaster = procs.parent_pid(await bench.sql_value("SELECT pg_backend_pid()"))
    rows = await bench.sql(
        "SELECT c.slug, c.id, p.id AS instance, p.name FROM communities c "
        "JOIN plugin_instances p ON p.community_id = c.id"
    )
    by_slug = {c.slug: c for c in bench.communities}
    for r in rows:
        community = by_slug[r["slug"]]
        community.id = r["id"]
        if r["name"] == "webhook":
            community.webhook_instance = r["instance"]
        elif r["name"] == "randomness":
            community.randomness_instance = r["instance"]
    await bench.sql("CREATE TABLE bench_baseline_webhooks (LIKE inbound_webhooks INCLUDING ALL)")
    await bench.sql(
        "ALTER TABLE bench_baseline_webhooks "
        "ADD FOREIGN KEY (community_id) REFERENCES communities (id) ON DELETE CASCADE, "
        "ADD FOREIGN KEY (plugin_instance_id) REFERENCES plugin_instances (id) ON DELETE SET NULL"
    )


# --- W1 ---------------------------------------------------------------------------------------


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


def w1_rows(bench: Bench, w: dict[str, Any]) -> None:
    s = w["summary"]
    b, g, q = s["baseline"], s["gateway-pg"], s["gateway-sqlite"]
    ok = w["ratio_pg_rps"] is not None and w["ratio_pg_rps"] >= 0.5
    bench.row(
        "W1 ingest c=32",
        "req/s, PostgreSQL",
        g["rps_median"],
        b["rps_median"],
        w["ratio_pg_rps"],
        ">= 0.5",
        verdict(ok),
    )
    bench.row(
        "", "p50 ms, PostgreSQL", g["p50_ms"], b["p50_ms"], ratio(g["p50_ms"], b["p50_ms"]), "", ""
    )
    bench.row(
        "", "p99 ms, PostgreSQL", g["p99_ms"], b["p99_ms"], ratio(g["p99_ms"], b["p99_ms"]), "", ""
    )
    bench.row(
        "",
        "API CPU ms/req",
        g["server_cpu_ms_per_req"],
        b["server_cpu_ms_per_req"],
        ratio(g["server_cpu_ms_per_req"], b["server_cpu_ms_per_req"]),
        "",
        "",
    )
    bench.row(
        "",
        "PostgreSQL CPU ms/req",
        g["pg_cpu_ms_per_req"],
        b["pg_cpu_ms_per_req"],
        ratio(g["pg_cpu_ms_per_req"], b["pg_cpu_ms_per_req"]),
        "",
        "",
    )
    bench.row(
        "",
        "req/s, SQLite embedded",
        q["rps_median"],
        b["rps_median"],
        w["ratio_sqlite_rps"],
        "(info)",
        "",
    )
    bench.row(
        "",
        "new PG connections/req",
        g["pg_sessions_per_req"],
        b["pg_sessions_per_req"],
        None,
        "",
        "",
    )
    bench.row(
        "",
        "p50 / p99 ms, SQLite",
        f"{_fmt(q['p50_ms'])} / {_fmt(q['p99_ms'])}",
        f"{_fmt(b['p50_ms'])} / {_fmt(b['p99_ms'])}",
        None,
        "",
        "",
    )
    backlog = ", ".join(_fmt(n) for n in w.get("sqlite_backlog_per_round", []))
    bench.row("", "SQLite: unhandled webhooks after each window", backlog, None, None, "", "")
    for name, value in w["ratio_variants_rps"].items():
        v = s[name]
        bench.row(
            "", f"what-if {name[11:-1]}: req/s", v["rps_median"], b["rps_median"], value, "", ""
        )
        bench.row(
            "",
            "  API CPU ms/req, new conn/req",
            f"{_fmt(v['server_cpu_ms_per_req'])}, {_fmt(v['pg_sessions_per_req'])}",
            None,
            None,
            "",
            "",
        )
    ww = w["with_worker"]
    if not ww:
        return
    bench.row(
        "",
        "req/s, PG + worker busy",
        ww["rps"],
        b["rps_median"],
        ratio(ww["rps"], b["rps_median"]),
        "(info)",
        "",
    )


# --- W2 ---------------------------------------------------------------------------------------


async def receiver_call(bench: Bench, method: str, path: str, body: Any = None) -> Any:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{bench.ports['receiver']}") as c:
        response = await c.request(method, path, json=body, timeout=30)
        response.raise_for_status()
        return response.json()


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value) points."""
    if len(points) < 2:
        return 0.0
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    den = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / den if den else 0.0


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


def w2_rows(bench: Bench, w: dict[str, Any]) -> None:
    ref = w["reference_w1_rps"]
    best = w["max_sustained_rate"]
    bench.row(
        "W2 end to end",
        "max sustained webhooks/s",
        best,
        ref,
        ratio(best, ref),
        ">= 0.5",
        verdict(w["target_sustained"]),
    )
    lat = w["latency_run"]
    ref_p50 = w["reference_w1_p50_ms"]
    limit = 10 * ref_p50 if ref_p50 else None
    ok = None if limit is None or lat["e2e_p99_ms"] is None else lat["e2e_p99_ms"] <= limit
    bench.row(
        "",
        f"e2e p50 ms @ {lat['rate']:.0f}/s",
        lat["e2e_p50_ms"],
        ref_p50,
        ratio(lat["e2e_p50_ms"], ref_p50),
        "",
        "",
    )
    bench.row(
        "",
        f"e2e p99 ms @ {lat['rate']:.0f}/s",
        lat["e2e_p99_ms"],
        ref_p50,
        ratio(lat["e2e_p99_ms"], ref_p50),
        "<= 10",
        verdict(ok),
    )
    best = w["at_max_sustained"]
    if best:
        text = f"{_fmt(best['e2e_p50_ms'])} / {_fmt(best['e2e_p99_ms'])}"
        bench.row("", f"e2e p50 / p99 ms @ {best['rate']:.0f}/s", text, None, None, "", "")
    for step in w["steps"]:
        bench.row(
            "",
            f"  step {step['rate']:.0f}/s: delivered/s, backlog end",
            f"{_fmt(step['delivered_per_s_during_load'])}, {step['backlog_end']}",
            None,
            None,
            "",
            "held" if step["sustained"] else "fell behind",
        )


# --- W3 ---------------------------------------------------------------------------------------


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


def w3_rows(bench: Bench, w: dict[str, Any]) -> None:
    t = w["targets"]
    pairs = [
        (
            "W3 actions c=1",
            "random-int",
            "gateway randomness.random-int",
            "baseline starlette /random",
            w["ratio_random"],
        ),
        (
            "",
            "benchfake",
            "gateway benchfake.fetch-thing",
            "fake platform direct (httpx)",
            w["ratio_fake"],
        ),
    ]
    for workload, label, gateway, baseline, p50_ratio in pairs:
        a, b = t[gateway], t[baseline]
        met = p50_ratio is not None and p50_ratio <= 3
        bench.row(
            workload, f"{label} p50 ms", a["p50_ms"], b["p50_ms"], p50_ratio, "<= 3", verdict(met)
        )
        p99_ratio = ratio(a["p99_ms"], b["p99_ms"])
        bench.row("", f"{label} p99 ms", a["p99_ms"], b["p99_ms"], p99_ratio, "", "")


# --- W4 ---------------------------------------------------------------------------------------


async def load_processes(bench: Bench, stored: int, due: int) -> None:
    """``stored`` pending randomness votes spread over the communities, ``due`` of them (evenly
    spread through the table) with a deadline in the past, the rest due tomorrow."""
    await bench.sql("TRUNCATE processes, deliveries, events")
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
    await bench.sql("TRUNCATE processes, deliveries, events")
    return out


def w4_rows(bench: Bench, w: dict[str, Any]) -> None:
    s, big = w["stored_small"], w["stored_large"]
    label = f"close {w['due']:,} due: {big:,} vs {s:,} stored"
    a, b = w["worker_large"], w["worker_small"]
    ok = w["ratio_worker"] is not None and w["ratio_worker"] <= 1.5
    bench.row(
        "W4 processes",
        f"worker pass s, {label}",
        a["elapsed_s"],
        b["elapsed_s"],
        w["ratio_worker"],
        "<= 1.5",
        verdict(ok),
    )
    bench.row(
        "",
        "  worker CPU ms per close",
        a["worker_cpu_ms_per_close"],
        b["worker_cpu_ms_per_close"],
        w["ratio_worker_cpu"],
        "",
        "",
    )
    bench.row(
        "",
        "  PostgreSQL CPU ms per close",
        a["pg_cpu_ms_per_close"],
        b["pg_cpu_ms_per_close"],
        ratio(a["pg_cpu_ms_per_close"], b["pg_cpu_ms_per_close"]),
        "",
        "",
    )
    flat = w["ratio_worker_peak_rss"]
    bench.row(
        "",
        "  worker peak RSS MB",
        a["peak_rss_mb"],
        b["peak_rss_mb"],
        flat,
        "flat",
        verdict(flat is not None and flat <= 1.1),
    )
    if "in_process_large" in w:
        a, b = w["in_process_large"], w["in_process_small"]
        ok = w["ratio_in_process"] is not None and w["ratio_in_process"] <= 1.5
        bench.row(
            "",
            "in-process pass s (same)",
            a["elapsed_s"],
            b["elapsed_s"],
            w["ratio_in_process"],
            "<= 1.5",
            verdict(ok),
        )
        bench.row(
            "",
            "  in-process peak RSS MB",
            round(a["peak_rss_kb"] / 1024, 1),
            round(b["peak_rss_kb"] / 1024, 1),
            ratio(a["peak_rss_kb"], b["peak_rss_kb"]),
            "",
            "",
        )


# --- W5 ---------------------------------------------------------------------------------------


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


def w5_rows(bench: Bench, w: dict[str, Any]) -> None:
    bench.row("W5 outage", f"drain s ({w['events']:,} events)", w["drain_s"], None, None, "", "")
    bench.row(
        "",
        "drain events/s vs W2 max",
        w["drain_rate"],
        w["reference_rate"],
        ratio(w["drain_rate"], w["reference_rate"]),
        "(info)",
        "",
    )
    bench.row("", "worker CPU ms per delivery", w["worker_cpu_ms_per_delivery"], None, None, "", "")
    detail = (
        f"{w['delivered_unique']:,} unique, {w['duplicates']} dup, "
        f"{w['order_violations']} out of order, {w['deliveries_by_status'].get('dead', 0)} dead"
    )
    bench.row(
        "", "delivered once, in order", detail, None, None, "all", verdict(w["once_and_in_order"])
    )


# --- main -------------------------------------------------------------------------------------

_T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f}s] {message}", flush=True)


def machine() -> dict[str, Any]:
    cpu_model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def print_table(bench: Bench) -> str:
    header = ["Workload", "Metric", "Gateway", "Baseline", "Ratio", "Target", "Result"]
    rows = [header, *bench.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def claim_redis_db(bench: Bench, wanted: int | None) -> int:
    """Take an empty Redis database for this run: ``SET NX`` a claim key in it (expiring in 2 h,
    renewed at each flush), and keep it only if nothing else is in it."""
    for db in [wanted] if wanted is not None else REDIS_DBS:
        bench.redis_db = db
        if bench.redis("SET", REDIS_CLAIM_KEY, bench.db_name, "NX", "EX", "7200") != "OK":
            continue
        if wanted is not None or bench.redis("DBSIZE") == 1:
            return db
        bench.redis("DEL", REDIS_CLAIM_KEY)
    raise RuntimeError("no empty Redis database among 15..8: pass --redis-db N (it is flushed)")


def cpu_rows(bench: Bench) -> None:
    """How busy the machine was, and how much of it was not this bench (the noise)."""
    for key in ("w1", "w2", "w3", "w4", "w5"):
        found = bench.results.get(key, {}).get("machine_cpu")
        if found:
            text = (
                f"busy {found['busy_pct']} %, bench {found['ours_pct']} %, "
                f"others {found['others_pct']} %, steal {found['steal_pct']} %"
            )
            bench.row("Machine CPU", key.upper(), text, None, None, "", "")


def rss_rows(bench: Bench) -> None:
    for key, label in [("w1", "W1"), ("w2", "W2"), ("w3", "W3"), ("w5", "W5")]:
        found = bench.results.get(key, {}).get("peak_rss_mb")
        if found:
            text = ", ".join(f"{k} {_fmt(v)}" for k, v in found.items())
            bench.row("Peak RSS MB", label, text, None, None, "", "")
    w4r = bench.results.get("w4")
    if w4r:
        big = w4r["worker_large"]
        text = (
            f"worker {_fmt(big['peak_rss_mb'])} (start {_fmt(big['rss_start_mb'])}, "
            f"end {_fmt(big['rss_end_mb'])})"
        )
        bench.row("Peak RSS MB", "W4 (100k stored)", text, None, None, "", "")


async def amain(args: argparse.Namespace) -> int:
    sizes = QUICK if args.quick else FULL
    for item in args.size:
        name, _, value = item.partition("=")
        kind = type(getattr(sizes, name))
        parsed = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
        sizes = dataclasses.replace(sizes, **{name: parsed})
    only = {w.strip().lower() for w in args.only.split(",")} if args.only else None
    tmp = Path(tempfile.mkdtemp(prefix="metagov-bench-"))
    logs = tmp / "logs"
    logs.mkdir()
    redis_host, _, rest = args.redis.partition(":")
    bench = Bench(
        args=args,
        sizes=sizes,
        tmp=tmp,
        logs=logs,
        admin_dsn=args.pg,
        db_name=f"metagov_bench_{secrets.token_hex(4)}",
        redis_host=redis_host,
        redis_port=int(rest or 6379),
        redis_db=-1,
    )
    started = datetime.now(UTC)
    bench.results["machine"] = machine()
    bench.results["source"] = procs.source_revision()
    bench.results["started_at"] = started.isoformat()
    bench.results["mode"] = "quick" if args.quick else "full"
    bench.results["loadgen_loop"] = args.loop
    bench.results["settings"] = {
        "communities": COMMUNITIES,
        "concurrency": CONCURRENCY,
        "retry_schedule": RETRY_SCHEDULE,
        "sizes": sizes.__dict__,
        "database": bench.db_name,
        "redis_db": None,
        "variant": args.variant,
        "w1_variants": args.w1_variants,
    }
    bench.redis_db = claim_redis_db(bench, args.redis_db)
    bench.results["settings"]["redis_db"] = bench.redis_db
    log(f"bench in {tmp}, database {bench.db_name}, redis db {bench.redis_db}")
    failed = False
    try:
        await setup(bench)
        log("setup done")
        bench.results["server_versions"] = {
            "postgresql": await bench.sql_value("SHOW server_version"),
            "synchronous_commit": await bench.sql_value("SHOW synchronous_commit"),
            "redis": bench.redis("INFO", "server").split("redis_version:")[1].split()[0],
        }

        def wanted(name: str) -> bool:
            return only is None or name in only

        async def run(name: str, work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
            before = await bench.cpu_snapshot()
            found = await work
            found["machine_cpu"] = bench.cpu_share(before, await bench.cpu_snapshot())
            shares = found["machine_cpu"]
            log(f"{name.upper()} machine CPU: {shares}")
            return found

        w1_rps, w1_p50 = args.w1_rps, None
        if wanted("w1"):
            bench.results["w1"] = await run("w1", w1(bench))
            s = bench.results["w1"]["summary"]["gateway-pg"]
            w1_rps, w1_p50 = s["rps_median"], s["p50_ms"]
            w1_rows(bench, bench.results["w1"])
        w2_best = None
        if wanted("w2"):
            bench.results["w2"] = await run("w2", w2(bench, w1_rps, w1_p50))
            w2_best = bench.results["w2"]["max_sustained_rate"]
            w2_rows(bench, bench.results["w2"])
        if wanted("w3"):
            bench.results["w3"] = await run("w3", w3(bench))
            w3_rows(bench, bench.results["w3"])
        if wanted("w4"):
            bench.results["w4"] = await run("w4", w4(bench))
            w4_rows(bench, bench.results["w4"])
        if wanted("w5"):
            bench.results["w5"] = await run("w5", w5(bench, w2_best))
            w5_rows(bench, bench.results["w5"])
        rss_rows(bench)
        cpu_rows(bench)
    except Exception:
        failed = True
        traceback.print_exc()
        for proc in bench.procs.values():
            print(f"--- last lines of {proc.name} ({proc.log_path}):\n{proc.log_tail(15)}")
    finally:
        for name in list(bench.procs):
            bench.stop(name)
        if bench.monitor is not None:
            await bench.monitor.close()
        if not args.keep_db:
            admin = await asyncpg.connect(bench.admin_dsn)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{bench.db_name}" WITH (FORCE)')
            finally:
                await admin.close()
        with contextlib.suppress(OSError):
            bench.redis("FLUSHDB")  # the claim goes with it
    bench.results["finished_at"] = datetime.now(UTC).isoformat()
    bench.results["elapsed_s"] = round(time.perf_counter() - _T0, 1)
    bench.results["machine"]["loadavg_end"] = os.getloadavg()
    table = print_table(bench)
    bench.results["table"] = table
    print()
    print(table)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(bench.results, indent=1, default=str))
    print(f"\nresults: {out}  ({bench.results['elapsed_s']} s)")
    if args.profile:
        print(f"profiles (py-spy raw stacks): {logs}")
    if not args.keep_tmp and not args.profile and not failed:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (CI smoke, < 60 s)")
    parser.add_argument("--only", help="comma-separated workloads, e.g. w1,w3")
    parser.add_argument(
        "--pg",
        default=os.environ.get("METAGOV_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test"),
        help="an existing database to connect to for CREATE/DROP DATABASE",
    )
    parser.add_argument("--redis", default=os.environ.get("METAGOV_BENCH_REDIS", "127.0.0.1:6379"))
    parser.add_argument(
        "--redis-db",
        type=int,
        default=None,
        help="Redis database to use (flushed); default: the first empty one of 15..8",
    )
    parser.add_argument(
        "--w1-rps", type=float, default=400.0, help="W1 throughput to use when W1 is not run"
    )
    parser.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one of the sizes (see Sizes in bench/run.py), e.g. w5_events=2000",
    )
    parser.add_argument("--profile", action="store_true", help="run the servers under py-spy")
    parser.add_argument(
        "--variant",
        default="",
        help="what-if: run gw-pg, the workers and W4's pass with these bench.variants patches",
    )
    parser.add_argument(
        "--w1-variants",
        default="",
        help="what-if: extra W1 targets, e.g. 'pool;pool,noping' (bench.variants patches)",
    )
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--keep-tmp", action="store_true")
    args = parser.parse_args()
    args.loop = use_fast_loop()
    if sys.platform != "linux":
        print("the bench reads /proc: Linux only", file=sys.stderr)
        return 2
    return asyncio.run(amain(args))
