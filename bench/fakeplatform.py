"""A fake community platform, as a subprocess: ``python -m bench.fakeplatform --port P`` with the
API token it expects in ``BENCH_FAKE_TOKEN``.

``GET /thing`` answers ``{"id": n, "value": <random int>}`` to a request bearing the token, at once:
the cost of a platform call measured in W3 is then the HTTP round trip, not the platform.
"""

from __future__ import annotations

import random
from typing import Any

from bench import httpserver

_rng = random.Random()  # noqa: S311 (test data)


def make_handler(token: str) -> httpserver.Handler:
    expected = f"Bearer {token}"
    counter = 0

    async def handle(
        method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        nonlocal counter
        if target == "/healthz":
            return 200, {"status": "ok"}
        if not target.startswith("/thing"):
            return 404, {"detail": "not found"}
        if headers.get("authorization") != expected:
            return 401, {"detail": "bad token"}
        counter += 1
        return 200, {"id": counter, "value": _rng.randint(0, 100)}

    return handle


def main() -> None:
    httpserver.run_main(make_handler, "BENCH_FAKE_TOKEN")


if __name__ == "__main__":
    main()
