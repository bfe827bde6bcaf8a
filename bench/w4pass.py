"""W4's in-process scheduler pass, run in its own process so that its memory is its own:
``python -m bench.w4pass`` with ``METAGOV_DATABASE_URL`` set; prints one JSON line.

It opens a :class:`metagov.runtime.Runtime` exactly as the worker does (with the queue left a
``NullQueue``: doorbells are not needed, nothing is delivered) and calls the scheduler's service
code, :func:`metagov.processes.handlers.run_due_processes`, until a pass closes nothing. Each call
handles at most the 500 processes ``due_process_ids`` returns, so closing 10,000 takes 20 calls;
their sum is "the pass".
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from metagov.config import Settings
from metagov.processes.handlers import run_due_processes
from metagov.processes.service import due_process_ids
from metagov.runtime import Runtime


def _memory_kb() -> dict[str, int]:
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, value = line.split(":", 1)
            found[name] = int(value.split()[0])
    return found


async def amain() -> dict[str, Any]:
    settings = Settings(_env_file=None)
    async with Runtime.open(settings) as runtime:
        # Warm up imports, the pool and the statement cache without closing anything.
        await due_process_ids(runtime, limit=1)
        before = _memory_kb()
        cpu0, t0 = time.process_time(), time.perf_counter()
        calls, closed, per_call = 0, 0, []
        while True:
            c0 = time.perf_counter()
            ran = await run_due_processes(runtime)
            per_call.append(round(time.perf_counter() - c0, 4))
            calls += 1
            closed += ran
            if ran == 0:
                break
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    after = _memory_kb()
    return {
        "elapsed_s": round(elapsed, 3),
        "cpu_s": round(cpu, 3),
        "closed": closed,
        "calls": calls,
        "per_call_s": per_call,
        "rss_before_kb": before.get("VmRSS"),
        "rss_after_kb": after.get("VmRSS"),
        "peak_rss_kb": after.get("VmHWM"),
    }


def main() -> None:
    variant = os.environ.get("BENCH_VARIANT")
    if variant:  # what-if runs: the same patches as the gateway and the workers
        from bench.variants import PATCHES

        for name in variant.split(","):
            PATCHES[name]()
    # The plain asyncio loop, as in `metagov worker` (arq does not install uvloop).
    print(json.dumps(asyncio.run(amain())))


if __name__ == "__main__":
    main()
