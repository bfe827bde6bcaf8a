"""ASGI middleware: a cap on request body size, and a guard against NUL characters, both
enforced before any route reads the request."""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import unquote_plus

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metagov import tracing

access_log = logging.getLogger("metagov.access")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` mid-stream; the app's error handlers turn it into a 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body is larger than {max_bytes} bytes")


class BodySizeLimit:
    """Answer 413 to requests whose body is over ``max_bytes``.

    A declared ``Content-Length`` over the cap is refused before reading anything; a body sent
    without one (chunked) is counted as it streams in and refused once it passes the cap.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._refuse(send)
                    return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        detail = f"request body is larger than {self.max_bytes} bytes"
        await send_error(send, 413, detail, "payload_too_large")


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class RejectNulCharacters:
    """Answer 422 to requests whose path, query or JSON body holds a NUL character.

    PostgreSQL cannot store NUL in text or JSON, so such input would otherwise fail deep inside a
    transaction. Webhook bodies are exempt: they are stored as bytes, verified over their exact
    bytes, and NULs in the data they produce are replaced when events are recorded.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        if "\x00" in scope.get("path", "") or "\x00" in unquote_plus(query):
            await _unprocessable(send, "the URL")
            return
        headers = dict(scope.get("headers", []))
        is_json = headers.get(b"content-type", b"").startswith(b"application/json")
        if not is_json or scope.get("path", "").startswith("/api/hooks/"):
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            nul = _has_nul(json.loads(body)) if b"\\u0000" in body else False
        except ValueError:
            nul = False  # not JSON: the route's own validation reports it
        if nul:
            await _unprocessable(send, "the body")
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _unprocessable(send: Send, where: str) -> None:
    detail = f"{where} contains a NUL character, which cannot be stored"
    await send_error(send, 422, detail, "nul_character")


async def send_error(send: Send, status: int, detail: str, code: str) -> None:
    """Answer with the gateway's JSON error body, from middleware that runs outside the app."""
    payload = json.dumps({"detail": detail, "code": code}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class AccessLog:
    """One log line per request: method, path, status and duration. The query string is left
    out on purpose: OAuth callbacks carry one-time codes there."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            access_log.info(
                "%s %s %s",
                scope.get("method"),
                scope.get("path"),
                status,
                extra={
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )


class TraceRequests:
    """A server span for each request, continuing the caller's trace (``traceparent``) if it
    sent one. Added only when tracing is on; named after the route's template, never the path
    with its values, and without the query string (OAuth codes travel there)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        method = scope["method"]
        with tracing.server_span(method, headers) as current:
            try:
                await self.app(scope, receive, sending)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    current.update_name(f"{method} {route}")
                    current.set_attribute("http.route", route)
                current.set_attribute("http.response.status_code", status)
                if status >= 500:
                    from opentelemetry.trace import Status, StatusCode

                    current.set_status(Status(StatusCode.ERROR))
