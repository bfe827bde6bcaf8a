"""Runs the example Driver beside a real gateway, each a subprocess on a free loopback port,
wired as in the README: the gateway delivers the Driver's events to the Driver's ``/events``."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from metagov_client.testing import Gateway, free_port, new_secret, run_gateway

DRIVER = Path(__file__).resolve().parents[1] / "driver.py"


@dataclass(frozen=True)
class Stack:
    gateway: Gateway
    driver_url: str
    community: str
    forum_secret: str
    driver_log: Path


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Driver exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"the Driver was not ready:\n{log.read_text()[-3000:]}")


@contextmanager
def run_stack(*, vote_seconds: float = 0.2) -> Iterator[Stack]:
    port = free_port()
    driver_url = f"http://127.0.0.1:{port}"
    forum_secret = new_secret()
    with (
        run_gateway(event_url=f"{driver_url}/events") as gateway,
        tempfile.TemporaryDirectory(prefix="metagov-driver-") as tmp,
    ):
        env = {
            **os.environ,
            "DRIVER_METAGOV_URL": gateway.url,
            "DRIVER_API_KEY": gateway.api_key,
            "DRIVER_EVENT_SECRET": gateway.webhook_secret,
            "DRIVER_COMMUNITY": "example",
            "DRIVER_FORUM_SECRET": forum_secret,
            "DRIVER_VOTE_SECONDS": str(vote_seconds),
            "DRIVER_PORT": str(port),
        }
        log = Path(tmp) / "driver.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: S603 (our own script, no shell)
                [sys.executable, str(DRIVER)], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            _wait_ready(driver_url, proc, log, within=60)
            yield Stack(gateway, driver_url, "example", forum_secret, log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
