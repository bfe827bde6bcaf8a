"""The baseline server: a bare Starlette app on uvicorn with the gateway's server settings.

``python -m bench.baseline --port P``, with ``BENCH_PG_DSN`` (an asyncpg DSN) and
``BENCH_BASELINE_COMMUNITIES`` (JSON ``{slug: [secret, community_id, plugin_instance_id]}``).

- ``POST /hooks/{community}/webhook``: checks the Standard Webhooks signature with the same code as
  the gateway (``metagov.signing.verify_standard``) and INSERTs the same row the gateway's inbox
  stores (same columns, unique key, indexes and foreign keys: ``bench_baseline_webhooks`` is
  created ``LIKE inbound_webhooks INCLUDING ALL``) with asyncpg, then answers ``{"ok": true}``.
  What it leaves out is exactly the gateway's own overhead: FastAPI, the ORM, the per-request
  community and plugin-instance lookups, the config decryption, the explicit transaction, the
  connection pre-ping and the Redis doorbell.
- ``POST /random``: ``{"value": <random int>}``, the baseline of the ``randomness.random-int``
  action.

Like ``metagov serve``, it runs one uvicorn process (uvloop and httptools when installed), logging
through ``metagov.logs`` at INFO, without uvicorn's access log (``access_log=False``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from metagov import logs, signing

_DROP_HEADERS = frozenset({"authorization", "cookie", "forwarded", "x-forwarded-for", "x-real-ip"})
_rng = random.Random()  # noqa: S311 (test data)

INSERT = """
INSERT INTO bench_baseline_webhooks
    (plugin_name, dedupe_key, community_id, plugin_instance_id, community_platform_id, headers,
     body, status, attempts, next_attempt_at, received_at)
VALUES ('webhook', $1, $2, $3, NULL, $4::jsonb, $5, 'pending', 0, $6, $6)
ON CONFLICT (plugin_name, dedupe_key) DO NOTHING
RETURNING id
"""


def create_app(dsn: str, communities: dict[str, tuple[str, int, int]]) -> Starlette:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["pool"] = await asyncpg.create_pool(dsn, min_size=5, max_size=15)
        try:
            yield
        finally:
            await state["pool"].close()

    async def hook(request: Request) -> JSONResponse:
        found = communities.get(request.path_params["community"])
        if found is None:
            return JSONResponse({"detail": "community not found"}, status_code=404)
        secret, community_id, instance_id = found
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            msg_id = signing.verify_standard(secret, headers, body)
        except signing.SignatureError as exc:
            return JSONResponse({"detail": f"webhook rejected: {exc.reason}"}, status_code=401)
        kept = {k: v for k, v in headers.items() if k not in _DROP_HEADERS}
        now = datetime.now(UTC)
        dedupe_key = f"i{instance_id}:{msg_id}"
        kept_json = json.dumps(kept)
        await state["pool"].fetchval(
            INSERT, dedupe_key, community_id, instance_id, kept_json, body, now
        )
        return JSONResponse({"ok": True})

    async def random_int(request: Request) -> JSONResponse:
        return JSONResponse({"value": _rng.randint(0, 100)})

    return Starlette(
        routes=[
            Route("/hooks/{community}/webhook", hook, methods=["POST"]),
            Route("/random", random_int, methods=["GET", "POST"]),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    raw = json.loads(os.environ["BENCH_BASELINE_COMMUNITIES"])
    communities = {slug: (s, int(c), int(i)) for slug, (s, c, i) in raw.items()}
    logs.configure(os.environ.get("METAGOV_LOG_LEVEL", "INFO"), "text")
    app = create_app(os.environ["BENCH_PG_DSN"], communities)
    # As `metagov serve` runs uvicorn (src/metagov/cli.py): its own log setup, no access log.
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
