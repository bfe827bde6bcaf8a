"""A real HTTP server on loopback that plays the Driver: it records what it receives and can be
told to fail, so delivery tests cross a real socket instead of a mock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class DriverReceiver:
    """Answers ``fail_with`` (e.g. 503) to the first ``failures`` requests, then 200.

    ``hang`` makes it accept requests and never answer (a Driver that stalls), until cleared.
    """

    failures: int = 0
    fail_with: int = 503
    hang: asyncio.Event | None = None
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    port: int = 0
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    @property
    def delivered(self) -> list[Received]:
        """Requests it acknowledged with 200."""
        return [r for r in self.received if r.status == 200]

    async def wait_for(self, count: int, within: float = 20.0) -> None:
        """Wait until ``count`` requests have arrived (answered or not)."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: self.attempts >= count)

    async def wait_answered(self, count: int, within: float = 20.0) -> None:
        """Wait until ``count`` requests have been answered (and recorded in ``received``)."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            async with self._arrived:
                self.attempts += 1
                self._arrived.notify_all()
            if self.hang is not None and not self.hang.is_set():
                await self.hang.wait()
            status = self.fail_with if self.failures > 0 else 200
            self.failures -= 1 if self.failures > 0 else 0
            async with self._arrived:
                self.received.append(Received(path, headers, body, status))
                self._arrived.notify_all()
            reason = {200: "OK", 410: "Gone", 429: "Too Many", 503: "Unavailable"}.get(status, "X")
            head = f"HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n"
            writer.write(head.encode() + b"\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[DriverReceiver]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self
            server.close()
