"""Run a real gateway for a Driver's tests: ``metagov serve`` in a subprocess, on a free loopback
port, with a throw-away SQLite database and its jobs in the same process.

Testing a Driver against the real gateway catches what a mock cannot (status codes, event
envelopes, signatures, timing of deliveries). It needs the gateway installed (``pip install
metagov``) where the tests run; this module itself imports nothing of it.

    with run_gateway(event_url="http://127.0.0.1:8001/events") as gateway:
        client = MetagovClient(gateway.url, gateway.api_key)
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port free on loopback right now. (Another process may take it before it is used;
    :func:`run_gateway` tries again with a new port if the gateway cannot bind.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_secret() -> str:
    """A fresh Standard Webhooks secret, ``whsec_<base64 of 32 random bytes>``."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def metagov_command() -> list[str]:
    """How to run the gateway's CLI: ``metagov`` next to this Python (a virtualenv's), else on
    ``PATH``."""
    beside = Path(sys.executable).with_name("metagov")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("metagov")
    if found is None:
        raise RuntimeError("the `metagov` command is not installed (pip install metagov)")
    return [found]


@dataclass(frozen=True)
class Gateway:
    """A running gateway: where it is and the default Driver's credentials."""

    url: str
    api_key: str
    webhook_secret: str
    log_path: Path

    def log(self) -> str:
        """What the gateway has written so far (for a failing test's message)."""
        return self.log_path.read_text(errors="replace")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Poll ``/readyz`` until 200; ``False`` if the process exits (a port clash) first."""
    with httpx.Client(timeout=1.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                if http.get(f"{url}/readyz").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise TimeoutError(f"the gateway at {url} was not ready in time")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def run_gateway(
    *,
    api_key: str | None = None,
    webhook_secret: str | None = None,
    event_url: str | None = None,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
    startup_timeout: float = 60.0,
) -> Iterator[Gateway]:
    """Start ``metagov serve`` and stop it on exit.

    The gateway's Driver ``default`` gets ``api_key`` and ``webhook_secret`` (random ones if not
    given) and, if given, ``event_url``. ``env`` adds or overrides ``METAGOV_*`` settings, such as
    ``METAGOV_DELIVERY_RETRY_SCHEDULE``. The caller's own ``METAGOV_*`` variables are not passed
    on, and the gateway runs in an empty directory (no ``.env``), so a developer's settings (a
    Redis URL, say) cannot leak into the tests.
    """
    api_key = api_key or "mgk_test_" + secrets.token_urlsafe(16)
    webhook_secret = webhook_secret or new_secret()
    with tempfile.TemporaryDirectory(prefix="metagov-gateway-") as tmp:
        workdir = Path(tmp)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("METAGOV_")}
        settings = {
            "METAGOV_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'metagov.db'}",
            "METAGOV_DRIVER_API_KEY": api_key,
            "METAGOV_DRIVER_WEBHOOK_SECRET": webhook_secret,
            "METAGOV_JOBS_IN_PROCESS": "true",
            "METAGOV_SWEEP_INTERVAL_SECONDS": "0.2",
            "METAGOV_LOG_LEVEL": "WARNING",
        }
        if event_url is not None:
            settings["METAGOV_DRIVER_EVENT_URL"] = event_url
        full_env = {**base_env, **settings, **(env or {})}
        log_path = workdir / "gateway.log"
        deadline = time.monotonic() + startup_timeout
        for _ in range(3):
            chosen = port or free_port()
            url = f"http://127.0.0.1:{chosen}"
            with log_path.open("ab") as log:
                proc = subprocess.Popen(  # noqa: S603 (our own command, no shell)
                    [*(command or metagov_command()), "serve", "--port", str(chosen)],
                    cwd=workdir,
                    env=full_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                if _wait_ready(url, proc, deadline):
                    break
            except BaseException:
                _stop(proc)
                raise
            if port is not None:
                break
        else:
            raise RuntimeError(f"the gateway did not start:\n{log_path.read_text()[-3000:]}")
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway did not start:\n{log_path.read_text()[-3000:]}")
        try:
            yield Gateway(url, api_key, webhook_secret, log_path)
        finally:
            _stop(proc)
