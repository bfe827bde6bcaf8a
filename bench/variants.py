"""What-if runs: the ``metagov`` command with one or more suggested fixes applied as monkeypatches,
to measure a fix before anyone changes ``src/``. Nothing here is used by a normal bench run.

``python -m bench.variants pool,lifo,inline-deps -- serve --port 8000``

- ``pool``: a connection pool as large as the load (``pool_size=20, max_overflow=20``);
- ``inline-deps``: FastAPI runs sync dependencies (``get_runtime``, ``_community_header``) inline
  instead of in the thread pool: the effect of declaring them ``async def``;
- ``quiet``: no per-request or per-job INFO lines (the access log, httpx's "HTTP Request", arq's
  job start and end lines);
- ``uvloop``: uvloop's event loop (the worker uses asyncio's; ``metagov serve`` already has uvloop);
- ``lifo``: the pool hands out the most recently returned connection (``pool_use_lifo``) instead
  of the one idle longest, so that after a burst a light load keeps using a few warm PostgreSQL
  backends instead of cycling through all of them;
- ``cprofile``: not a fix: profiles the process on the CPU clock (see :func:`cprofile`).
"""

from __future__ import annotations

import sys
from typing import Any


def _engine_kwargs(**overrides: Any) -> None:
    import metagov.db.engine as engine

    original = getattr(engine, "create_async_engine")  # noqa: B009

    def create(url: Any, **kwargs: Any) -> Any:
        if not str(url).startswith("sqlite"):
            kwargs.update(overrides)
        return original(url, **kwargs)

    setattr(engine, "create_async_engine", create)  # noqa: B010


def pool() -> None:
    _engine_kwargs(pool_size=20, max_overflow=20)


def lifo() -> None:
    _engine_kwargs(pool_use_lifo=True)


def inline_deps() -> None:
    import fastapi.dependencies.utils as utils

    async def inline(func: Any, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    setattr(utils, "run_in_threadpool", inline)  # noqa: B010


def quiet() -> None:
    import logging

    for name in ("uvicorn.access", "metagov.access", "httpx", "arq.worker", "arq.jobs"):
        logging.getLogger(name).disabled = True


def use_uvloop() -> None:
    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def cprofile() -> None:
    """Profile the whole process with cProfile on the CPU clock (``time.process_time``), and
    write ``$BENCH_CPROFILE_DIR/<command>-<pid>.prof`` at exit (``python -m pstats`` reads it).
    cProfile roughly doubles the cost of Python-heavy code: read the shares, not the times."""
    import atexit
    import cProfile
    import os
    import time
    from pathlib import Path

    profiler = cProfile.Profile(time.process_time)
    command = next((a for a in sys.argv if a in ("serve", "worker")), "metagov")
    out = Path(os.environ.get("BENCH_CPROFILE_DIR", ".")) / f"{command}-{os.getpid()}.prof"

    def dump() -> None:
        profiler.disable()
        profiler.dump_stats(out)

    atexit.register(dump)
    profiler.enable()


PATCHES = {
    "pool": pool,
    "lifo": lifo,
    "inline-deps": inline_deps,
    "quiet": quiet,
    "uvloop": use_uvloop,
    "cprofile": cprofile,
}


def main() -> None:
    names, _, rest = " ".join(sys.argv[1:]).partition(" -- ")
    for name in filter(None, names.split(",")):
        PATCHES[name]()
    from metagov.cli import app

    if "quiet" in names.split(","):
        # logs.configure runs inside the command; disable the access logger again after it.
        import metagov.logs as logs

        configure = logs.configure

        def configure_quietly(level: str, fmt: str) -> None:
            configure(level, fmt)
            quiet()

        setattr(logs, "configure", configure_quietly)  # noqa: B010
    sys.argv = ["metagov", *rest.split()]
    app()


if __name__ == "__main__":
    main()
