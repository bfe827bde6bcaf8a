"""A small, cheap HTTP/1.1 load generator on bare asyncio (keep-alive, no pipelining).

httpx costs several times more CPU per request than the servers it would measure here, and on a
2-core machine every cycle the load generator burns is taken from the server. This client writes
pre-built request bytes and parses only the status line, ``content-length`` (or chunked) and the
body, so the same cheap client drives the gateway and its baselines.

Runners:

- :func:`closed_loop`: ``concurrency`` connections each sending its next request as soon as the
  previous answer arrives (throughput and latency under saturation);
- :func:`open_loop`: requests started on a fixed schedule (``rate`` per second) whatever the
  answers do, so a slow server shows up as latency and backlog, not as a lower offered load.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

Request = bytes  # a complete HTTP/1.1 request, headers and body
MakeRequest = Callable[[int], Request]


def build_request(
    method: str, path: str, host: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None:
            self._parse()

    def _parse(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        status = int(head[9:12])
        start = end + 4
        pos = head.find(b"\r\ncontent-length:")
        if pos >= 0:
            stop = head.find(b"\r\n", pos + 2)
            length = int(head[pos + 17 : stop if stop >= 0 else len(head)])
            if len(self.buf) < start + length:
                return
            body = bytes(self.buf[start : start + length])
            del self.buf[: start + length]
        elif b"transfer-encoding: chunked" in head:
            parsed = _dechunk(self.buf, start)
            if parsed is None:
                return
            body, consumed = parsed
            del self.buf[:consumed]
        else:
            body = b""
            del self.buf[:start]
        if b"\r\nconnection: close" in head:
            self.close_after = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((status, body))


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", eol)
            if trailer_end == eol:  # no trailers: the terminating CRLF follows the 0 line
                return bytes(out), eol + 4
            if trailer_end < 0:
                if len(buf) >= eol + 4:
                    return bytes(out), eol + 4
                return None
            return bytes(out), trailer_end + 4
        if len(buf) < eol + 2 + size + 2:
            return None
        out += buf[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2


class Connection:
    """One keep-alive connection; reconnects transparently when the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.proto: _Client | None = None

    async def _connect(self) -> _Client:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(_Client, self.host, self.port)
        return proto

    async def send(
        self,
        request: bytes,
        timeout: float = 30.0,  # noqa: ASYNC109
    ) -> tuple[int, bytes]:
        if self.proto is None or self.proto.closed or self.proto.close_after:
            self.close()
            self.proto = await self._connect()
        proto = self.proto
        proto.waiter = asyncio.get_running_loop().create_future()
        assert proto.transport is not None
        proto.transport.write(request)
        try:
            return await asyncio.wait_for(proto.waiter, timeout)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()
        self.proto = None


def cpu_seconds_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class RunResult:
    """What one run measured. ``latencies`` are seconds, in completion order."""

    duration: float = 0.0
    ok: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    loadgen_cpu: float = 0.0
    offered: int = 0
    late_starts: int = 0  # open loop: requests started > 50 ms after their slot

    @property
    def rps(self) -> float:
        return self.ok / self.duration if self.duration else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "duration_s": round(self.duration, 3),
            "ok": self.ok,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "rps": round(self.rps, 1),
            "p50_ms": ms(percentile(self.latencies, 50)),
            "p90_ms": ms(percentile(self.latencies, 90)),
            "p99_ms": ms(percentile(self.latencies, 99)),
            "max_ms": ms(max(self.latencies) if self.latencies else float("nan")),
            "loadgen_cpu_pct": round(100 * self.loadgen_cpu / self.duration, 1)
            if self.duration
            else None,
            "offered": self.offered,
            "late_starts": self.late_starts,
        }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 2)


def _ok(status: int) -> bool:
    return 200 <= status < 300


async def closed_loop(
    host: str,
    port: int,
    make: MakeRequest,
    *,
    concurrency: int,
    duration: float | None = None,
    count: int | None = None,
    warmup: float = 0.0,
    check: Callable[[int, bytes], bool] | None = None,
) -> RunResult:
    """``concurrency`` connections, each sending back to back, for ``duration`` seconds or until
    ``count`` requests were sent. ``warmup`` seconds are run first and not recorded."""
    result = RunResult()
    counter = iter(range(10**12))
    recording = False
    stop_at = math.inf

    async def worker() -> None:
        conn = Connection(host, port)
        try:
            while True:
                if time.perf_counter() >= stop_at:
                    return
                n = next(counter)
                if count is not None and n >= count:
                    return
                request = make(n)
                t0 = time.perf_counter()
                try:
                    status, body = await conn.send(request)
                except (OSError, TimeoutError, ConnectionError):
                    if recording:
                        result.errors += 1
                    await asyncio.sleep(0.01)
                    continue
                if not recording:
                    continue
                elapsed = time.perf_counter() - t0
                result.statuses[status] = result.statuses.get(status, 0) + 1
                good = _ok(status) if check is None else check(status, body)
                if good:
                    result.ok += 1
                    result.latencies.append(elapsed)
                else:
                    result.errors += 1
        finally:
            conn.close()

    if warmup > 0:
        stop_at = time.perf_counter() + warmup
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    recording = True
    cpu0, t0 = cpu_seconds_self(), time.perf_counter()
    stop_at = t0 + duration if duration is not None else math.inf
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.duration = time.perf_counter() - t0
    result.loadgen_cpu = cpu_seconds_self() - cpu0
    result.offered = result.ok + result.errors
    return result


async def open_loop(
    host: str,
    port: int,
    make: MakeRequest,
    *,
    rate: float,
    duration: float,
    max_connections: int = 256,
    on_tick: Callable[[float], Coroutine[Any, Any, None]] | None = None,
) -> RunResult:
    """Start ``rate`` requests per second for ``duration`` seconds, on a schedule that does not
    wait for answers (up to ``max_connections`` in flight). ``on_tick`` is awaited about once a
    second with the elapsed time (for sampling backlogs)."""
    result = RunResult()
    idle: list[Connection] = []
    in_flight: set[asyncio.Task[Any]] = set()
    slots = asyncio.Semaphore(max_connections)
    total = int(rate * duration)
    result.offered = total

    async def one(n: int) -> None:
        conn = idle.pop() if idle else Connection(host, port)
        try:
            request = make(n)
            t0 = time.perf_counter()
            try:
                status, _ = await conn.send(request)
            except (OSError, TimeoutError, ConnectionError):
                result.errors += 1
                return
            elapsed = time.perf_counter() - t0
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if _ok(status):
                result.ok += 1
                result.latencies.append(elapsed)
            else:
                result.errors += 1
        finally:
            idle.append(conn)
            slots.release()

    cpu0 = cpu_seconds_self()
    start = time.perf_counter()
    next_tick = 1.0
    sent = 0
    while sent < total:
        now = time.perf_counter() - start
        due = min(total, int(now * rate) + 1)
        while sent < due:
            slot_time = sent / rate
            await slots.acquire()
            if time.perf_counter() - start - slot_time > 0.05:
                result.late_starts += 1
            task = asyncio.create_task(one(sent))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            sent += 1
        if on_tick is not None and now >= next_tick:
            next_tick += 1.0
            tick = asyncio.create_task(on_tick(now))  # not awaited here: sends stay on time
            in_flight.add(tick)
            tick.add_done_callback(in_flight.discard)
        wait = sent / rate - (time.perf_counter() - start)
        await asyncio.sleep(max(0.0, min(wait, 0.05)))
    if in_flight:
        await asyncio.wait(in_flight, timeout=60)
    result.duration = time.perf_counter() - start
    result.loadgen_cpu = cpu_seconds_self() - cpu0
    for conn in idle:
        conn.close()
    return result


def use_fast_loop() -> str:
    """Use uvloop for the load generator when installed (it comes with uvicorn[standard])."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    return "asyncio"


def nproc() -> int:
    return os.cpu_count() or 1
