"""Helpers shared by the client's tests (a module of its own: test modules cannot import a
``conftest``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TypeVar

import pytest

T = TypeVar("T")


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records every POST. Paths under ``/fail/`` answer 500 until put in ``healed``; every
    other path answers 200."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    healed: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/events") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]


def receiver_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with receiver.lock:
                receiver.received.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                failing = self.path.startswith("/fail/") and self.path not in receiver.healed
            self.send_response(500 if failing else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: pytest shows what matters."""

    return Handler


def eventually(probe: Callable[[], T | None], *, timeout: float = 15.0) -> T:
    """Call ``probe`` until it returns something other than ``None`` (or falsy), and return
    that; fail after ``timeout`` seconds. For effects of the gateway's background jobs."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"nothing after {timeout} s")
        time.sleep(0.05)


async def eventually_async(probe: Callable[[], Awaitable[T | None]], *, timeout: float = 15.0) -> T:
    """:func:`eventually` for a coroutine probe, such as a call of the async client."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"nothing after {timeout} s")
        await asyncio.sleep(0.05)
