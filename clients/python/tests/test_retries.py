"""Retries on 429 and 503. The gateway's Driver API only answers those when a platform limits it,
so the faults are injected by a transport in front of the real gateway: the first requests get
the injected answer, the next ones reach the gateway itself."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from metagov_client import (
    AsyncMetagovClient,
    MetagovClient,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    UnavailableError,
)
from metagov_client._retry import parse_retry_after
from metagov_client.testing import Gateway

FAST = RetryPolicy(max_retries=3, max_wait=5.0, backoff=0.01)


def _fault(status: int, retry_after: str | None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    code = "rate_limited" if status == 429 else "unavailable"
    return httpx.Response(status, headers=headers, json={"detail": "injected", "code": code})


class Faulty(httpx.BaseTransport):
    """Answers the given faults first, then passes every request to the real gateway."""

    def __init__(self, *faults: tuple[int, str | None]) -> None:
        self.faults: Iterator[tuple[int, str | None]] = iter(faults)
        self.real = httpx.HTTPTransport()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        fault = next(self.faults, None)
        return self.real.handle_request(request) if fault is None else _fault(*fault)


class AsyncFaulty(httpx.AsyncBaseTransport):
    def __init__(self, *faults: tuple[int, str | None]) -> None:
        self.faults: Iterator[tuple[int, str | None]] = iter(faults)
        self.real = httpx.AsyncHTTPTransport()
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        fault = next(self.faults, None)
        return await self.real.handle_async_request(request) if fault is None else _fault(*fault)


def test_retries_until_the_gateway_answers(gateway: Gateway, slug: str) -> None:
    transport = Faulty((429, "0"), (503, None), (503, "0.01"))
    with MetagovClient(gateway.url, gateway.api_key, retry=FAST, transport=transport) as mg:
        created = mg.create_community(slug)
    assert created.slug == slug
    assert transport.requests == 4


async def test_retries_async(gateway: Gateway, slug: str) -> None:
    transport = AsyncFaulty((503, "0"), (429, None))
    async with AsyncMetagovClient(
        gateway.url, gateway.api_key, retry=FAST, transport=transport
    ) as mg:
        created = await mg.create_community(slug)
    assert created.slug == slug
    assert transport.requests == 3


def test_a_long_retry_after_is_not_waited_out(gateway: Gateway) -> None:
    transport = Faulty((429, "120"))
    with (
        MetagovClient(gateway.url, gateway.api_key, retry=FAST, transport=transport) as mg,
        pytest.raises(RateLimitedError) as limited,
    ):
        mg.get_community("anything")
    assert transport.requests == 1
    assert limited.value.code == "rate_limited"
    assert limited.value.retry_after == 120


def test_retries_are_bounded(gateway: Gateway) -> None:
    transport = Faulty(*[(503, "0")] * 10)
    policy = RetryPolicy(max_retries=2, backoff=0.01)
    with (
        MetagovClient(gateway.url, gateway.api_key, retry=policy, transport=transport) as mg,
        pytest.raises(UnavailableError) as unavailable,
    ):
        mg.plugin_schemas()
    assert transport.requests == 3
    assert unavailable.value.status_code == 503


def test_other_errors_are_not_retried(gateway: Gateway) -> None:
    transport = Faulty((500, None))
    with (
        MetagovClient(gateway.url, gateway.api_key, retry=FAST, transport=transport) as mg,
        pytest.raises(ServerError) as failed,
    ):
        mg.plugin_schemas()
    assert transport.requests == 1
    assert failed.value.status_code == 500


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
    in_a_minute = format_datetime(now + timedelta(minutes=1), usegmt=True)
    assert parse_retry_after(in_a_minute, now=now.timestamp()) == pytest.approx(60)
    assert parse_retry_after(format_datetime(now - timedelta(1), usegmt=True)) == 0
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("-3") == 0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
