"""The bench's harness: its sizes, the :class:`Bench` that starts and stops the servers (each a
subprocess on loopback), talks to PostgreSQL and Redis and samples CPU, and the setup every workload
starts from (a fresh database, communities, Drivers). Workloads are in ``bench.workloads``, the
table in ``bench.report``, the command in ``bench.run``."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import procs
from bench.httpload import (
    build_request,
    closed_loop,
    cpu_seconds_self,
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
    w6_seconds: float = 5.0
    w7_processes: int = 200
    w8_small: int = 100
    w8_large: int = 5_000
    w9_steps: int = 6


# The counts are those the targets are set for: W4 closes 10,000 due processes with 100,000 and
# with 10,000 stored, and W5 emits 10,000 events; the full run takes 8-16 minutes here.
FULL = Sizes(
    3, True, 8.0, 1.5, 30.0, 20.0, 4, 300, 3, 100_000, 10_000, 10_000, 10_000, 300.0, False
)
QUICK = Sizes(
    1, False, 1.5, 0.5, 2.0, 1.5, 1, 40, 1, 2_000, 200, 50, 40, 30.0, False, 1.0, 20, 20, 200, 1
)


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
            "TRUNCATE inbound_webhooks, delivery_failures, deliveries, events, "
            "process_listen_keys, processes, bench_baseline_webhooks"
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
        self.rows.append([fmt(c) for c in cells])


def fmt(value: Any) -> str:
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


STARTED = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f}s] {message}", flush=True)


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
