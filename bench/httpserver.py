"""A minimal HTTP/1.1 server on bare asyncio, with keep-alive, for the bench's own helpers (the
Driver receiver and the fake platform). It costs far less CPU per request than any framework, so
the helpers disturb the measured processes as little as possible."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

Handler = Callable[[str, str, dict[str, str], bytes], Awaitable[tuple[int, Any]]]

_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized"}
_REASONS |= {404: "Not Found", 503: "Service Unavailable"}


def _response(status: int, payload: Any) -> bytes:
    body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def serve_connection(
    handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            status, payload = await handler(method, target, headers, body)
            writer.write(_response(status, payload))
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def start(handler: Handler, host: str, port: int) -> asyncio.Server:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_connection(handler, reader, writer)

    return await asyncio.start_server(on_connect, host, port, backlog=1024)


def run_main(make_handler: Callable[[str], Handler], secret_env: str) -> None:
    """Command-line entry of a helper server: ``--port N``, its secret from ``secret_env``, served
    forever on 127.0.0.1 (on uvloop when it is installed)."""
    import argparse
    import os

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    handler = make_handler(os.environ[secret_env])

    async def serve() -> None:
        server = await start(handler, "127.0.0.1", args.port)
        async with server:
            await server.serve_forever()

    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())
