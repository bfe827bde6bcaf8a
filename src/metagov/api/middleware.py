"""ASGI middleware: rate limits, a cap on request body size, and a guard against NUL characters,
all enforced before any route reads the request."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from urllib.parse import unquote_plus

from limits import RateLimitItem
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metagov import tracing
from metagov.ratelimit import RateLimiter

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


async def send_error(
    send: Send,
    status: int,
    detail: str,
    code: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer with the gateway's JSON error body, from middleware that runs outside the app."""
    payload = json.dumps({"detail": detail, "code": code}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
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


class RateLimit:
    """Answer 429 (``rate_limited``, with ``Retry-After``) past the configured limits: per Driver
    API key on ``/api/internal/*``, per client address on the routes that take no key
    (``/api/hooks/*``, ``/api/action/*``, ``/auth/*``), and per client address for failed Driver
    authentications, which stop that address's ``/api/internal/*`` requests for the rest of the
    window (key guessing). Health, metrics and docs are never limited. Refused requests are
    answered before their body is read.

    The client address is the connection's; behind a proxy, run the gateway with the proxy's
    address in ``FORWARDED_ALLOW_IPS`` so that uvicorn takes it from ``X-Forwarded-For``.
    """

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        limits = self.limiter.limits
        if path.startswith("/api/internal/"):
            await self._internal(scope, receive, send)
            return
        item: RateLimitItem | None = None
        hooks = path.startswith("/api/hooks/")
        if hooks:
            item = limits.hooks
        elif path.startswith(("/api/action/", "/auth/")):
            item = limits.public
        if item is not None:
            kind = "h:" if hooks else "p:"
            wait = await self.limiter.hit(item, kind + _address(scope), local=hooks)
            if wait is not None:
                await _refuse(send, wait)
                return
        await self.app(scope, receive, send)

    async def _internal(self, scope: Scope, receive: Receive, send: Send) -> None:
        limits = self.limiter.limits
        address = _address(scope)
        if limits.auth_failures is not None:
            wait = self.limiter.blocked("f:" + address)
            if wait is not None:
                await _refuse(send, wait, "too many failed authentications from this address")
                return
        key = _bearer(scope)
        if limits.driver is not None and key is not None:
            # Counted by the key's hash: Redis never holds a key.
            digest = hashlib.sha256(key).hexdigest()[:32]
            wait = await self.limiter.hit(limits.driver, "k:" + digest)
            if wait is not None:
                await _refuse(send, wait)
                return
        if limits.auth_failures is None:
            await self.app(scope, receive, send)
            return
        status = 0

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watching_send)
        if status == 401:
            await self.limiter.failed(limits.auth_failures, "f:" + address)


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return bytes(value)
    return None


async def _refuse(send: Send, wait: float, detail: str = "too many requests") -> None:
    seconds = str(max(1, math.ceil(wait))).encode()
    await send_error(
        send,
        429,
        f"{detail}; retry after {seconds.decode()} s",
        "rate_limited",
        [(b"retry-after", seconds)],
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
