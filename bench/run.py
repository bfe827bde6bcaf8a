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
import os
import secrets
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import procs
from bench.harness import (
    COMMUNITIES,
    CONCURRENCY,
    FULL,
    QUICK,
    RESULTS,
    RETRY_SCHEDULE,
    STARTED,
    Bench,
    claim_redis_db,
    log,
    machine,
    setup,
)
from bench.httpload import (
    use_fast_loop,
)
from bench.report import (
    cpu_rows,
    print_table,
    rss_rows,
    w1_rows,
    w2_rows,
    w3_rows,
    w4_rows,
    w5_rows,
)
from bench.workloads.w1 import w1
from bench.workloads.w2 import w2
from bench.workloads.w3 import w3
from bench.workloads.w4 import w4
from bench.workloads.w5 import w5


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
    bench.results["elapsed_s"] = round(time.perf_counter() - STARTED, 1)
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
        help="override one of the sizes (see Sizes in bench/harness.py), e.g. w5_events=2000",
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
        help="what-if: extra W1 targets, e.g. 'pool;pool,lifo' (bench.variants patches)",
    )
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--keep-tmp", action="store_true")
    args = parser.parse_args()
    args.loop = use_fast_loop()
    if sys.platform != "linux":
        print("the bench reads /proc: Linux only", file=sys.stderr)
        return 2
    return asyncio.run(amain(args))
