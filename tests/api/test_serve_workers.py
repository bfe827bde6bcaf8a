"""``metagov serve --workers 2``: two API processes on one port, sharing only the database. A
change made through one is seen by the very next request in the other: an action reads the new
config, and a webhook signed with a new secret is accepted, whichever process answers."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from metagov import signing
from metagov.crypto import generate_key

KEY = "serve-workers-key"
OLD, NEW = "whsec_" + "A" * 43 + "=", "whsec_" + "B" * 43 + "="


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {
        **os.environ,
        "METAGOV_DATABASE_URL": f"sqlite+aiosqlite:///{folder}/gateway.db",
        "METAGOV_SECRET_KEYS": generate_key(),
        "METAGOV_DRIVER_API_KEY": KEY,
    }
    command = [sys.executable, "-m", "metagov", "serve", "--port", str(port), "--workers", "2"]
    log = (folder / "serve.log").open("w")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)  # noqa: S603
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
async def http(gateway: str) -> AsyncIterator[httpx.AsyncClient]:
    # A new connection per request, so that the kernel spreads them over both processes.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=gateway, limits=limits, timeout=10) as client:
        for _ in range(300):
            try:
                if (await client.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)  # the processes are starting; nothing to await on
        else:
            pytest.fail("the gateway did not start")
        yield client


async def test_a_change_through_one_process_is_seen_by_every_other(
    http: httpx.AsyncClient,
) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    here = {**auth, "X-Metagov-Community": "commons"}
    created = await http.post(
        "/api/internal/community",
        json={
            "slug": "commons",
            "plugins": [
                {"name": "randomness", "config": {"default_low": 1, "default_high": 1}},
                {"name": "webhook", "config": {"secret": OLD}},
            ],
        },
        headers=auth,
    )
    assert created.status_code == 201, created.text
    ids = {p["name"]: p["id"] for p in created.json()["plugins"]}
    for _ in range(10):  # every process has the old config cached now
        value = await http.post("/api/internal/action/randomness.random-int", headers=here)
        assert value.json() == {"value": 1}
        body = b'{"warm": true}'
        hooked = await http.post(
            "/api/hooks/commons/webhook",
            content=body,
            headers=signing.standard_headers([OLD], f"warm-{_}", body),
        )
        assert hooked.status_code == 200

    changed = await http.put(
        f"/api/internal/plugin/randomness/{ids['randomness']}",
        json={"default_low": 2, "default_high": 2},
        headers=here,
    )
    assert changed.status_code == 200
    rotated = await http.put(
        f"/api/internal/plugin/webhook/{ids['webhook']}", json={"secret": NEW}, headers=here
    )
    assert rotated.status_code == 200

    for n in range(20):
        value = await http.post("/api/internal/action/randomness.random-int", headers=here)
        assert value.json() == {"value": 2}
        body = b'{"after": true}'
        old = await http.post(
            "/api/hooks/commons/webhook",
            content=body,
            headers=signing.standard_headers([OLD], f"old-{n}", body),
        )
        new = await http.post(
            "/api/hooks/commons/webhook",
            content=body,
            headers=signing.standard_headers([NEW], f"new-{n}", body),
        )
        assert (old.status_code, new.status_code) == (401, 200)
