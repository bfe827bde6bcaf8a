"""Tracing with the SDK's in-memory exporter: one trace from a webhook's request through its job
to the delivery of its event (across the stored contexts), an action through its platform call,
log lines that carry the trace id; and tracing off by default, with neither the SDK nor an exporter
loaded."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select

from metagov import tracing
from metagov.app import create_app
from metagov.config import Settings
from metagov.db.models import Delivery, InboundWebhook
from metagov.inbox import handlers as webhooks
from metagov.runtime import Runtime
from metagov.tenancy import service as drivers
from tests.conftest import PluggableQueue, make_registry
from tests.inbox.test_webhooks import HOOK, SECRET, handle_all, standard_signed

EVENTS_URL = "https://driver.example/metagov/events"
MAILGUN = "https://api.mailgun.net/v3/mg.example.org/messages"
# A platform that traces sends its own context; the gateway's spans join that trace.
PLATFORM_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PLATFORM_TRACEPARENT = f"00-{PLATFORM_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


@pytest.fixture
async def app(spans: InMemorySpanExporter, settings: Settings) -> AsyncIterator[FastAPI]:
    """conftest's app, built once tracing is on (as ``metagov serve`` builds it)."""
    application = create_app(settings, make_registry(), queue=PluggableQueue())
    async with application.router.lifespan_context(application):
        yield application


def named(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def traceparent_of(span: ReadableSpan) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-01"


async def test_one_trace_from_webhook_to_delivery(
    client: httpx.AsyncClient,
    runtime: Runtime,
    spans: InMemorySpanExporter,
    respx_mock: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    alice: Any,
    community: dict[str, Any],
) -> None:
    driver = respx_mock.post(EVENTS_URL).respond(204)
    hooked = await client.post(
        "/api/internal/plugin/webhook",
        json={"secret": SECRET, "event_type_field": "action"},
        headers=alice.to("commons"),
    )
    assert hooked.status_code == 201
    async with runtime.unit_of_work() as session:
        await drivers.set_event_url(session, await drivers.get_driver(session, "alice"), EVENTS_URL)
    spans.clear()

    body = json.dumps({"action": "opened"}).encode()
    headers = {**standard_signed(body), "traceparent": PLATFORM_TRACEPARENT}
    assert (await client.post(HOOK, content=body, headers=headers)).status_code == 200
    caplog.set_level(logging.DEBUG, logger="metagov.outbox.handlers")
    caplog.handler.addFilter(tracing.TraceIds())
    await handle_all(runtime)  # in the worker, later: only the stored contexts link the two

    request = named(spans, "POST /api/hooks/{community}/{plugin}")
    receive = named(spans, "webhook.receive")
    handle = named(spans, "webhook.handle")
    attempt = named(spans, "delivery.attempt")
    post = named(spans, "HTTP POST")
    trace_ids = {s.context.trace_id for s in (request, receive, handle, attempt, post)}
    assert trace_ids == {int(PLATFORM_TRACE, 16)}, "one trace, the platform's"
    assert parent_of(request) == int("00f067aa0ba902b7", 16)
    assert parent_of(receive) == request.context.span_id
    assert parent_of(handle) == receive.context.span_id
    assert parent_of(attempt) == handle.context.span_id
    assert parent_of(post) == attempt.context.span_id
    assert post.attributes is not None
    assert post.attributes["server.address"] == "driver.example"
    assert post.attributes["http.response.status_code"] == 204
    assert "url.full" not in post.attributes, "a URL may hold a token"

    async with runtime.db.snapshot() as session:
        [stored] = (await session.scalars(select(InboundWebhook.trace_context))).all()
        [delivery] = (await session.scalars(select(Delivery.trace_context))).all()
    assert stored == traceparent_of(receive)
    assert delivery == traceparent_of(handle)

    [call] = driver.calls
    assert attempt.attributes is not None
    assert attempt.attributes["metagov.webhook_id"] == call.request.headers["webhook-id"]
    sent = call.request.headers["traceparent"]
    assert sent == traceparent_of(post), "the Driver can continue the trace"

    [line] = [r for r in caplog.records if r.getMessage() == "delivery attempt"]
    assert getattr(line, "trace_id", None) == PLATFORM_TRACE
    assert getattr(line, "span_id", None) == f"{attempt.context.span_id:016x}"


async def test_webhooks_handled_together_keep_their_own_traces(
    client: httpx.AsyncClient,
    runtime: Runtime,
    spans: InMemorySpanExporter,
    respx_mock: respx.MockRouter,
    alice: Any,
    community: dict[str, Any],
) -> None:
    """Webhooks waiting for the same sender are handled in one job and saved in one transaction;
    each one's event is still delivered in the trace its own platform request began."""
    driver = respx_mock.post(EVENTS_URL).respond(204)
    hooked = await client.post(
        "/api/internal/plugin/webhook",
        json={"secret": SECRET, "event_type_field": "action"},
        headers=alice.to("commons"),
    )
    assert hooked.status_code == 201
    async with runtime.unit_of_work() as session:
        await drivers.set_event_url(session, await drivers.get_driver(session, "alice"), EVENTS_URL)
    traces = ["0af7651916cd43dd8448eb211c80319c", "5b8efff798038103d269b633813fc60c"]
    for number, trace_id in enumerate(traces):
        body = json.dumps({"action": f"opened-{number}"}).encode()
        headers = {
            **standard_signed(body, msg_id=f"msg_{number}"),
            "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
        }
        assert (await client.post(HOOK, content=body, headers=headers)).status_code == 200
    spans.clear()

    async with runtime.db.snapshot() as session:
        first = min((await session.scalars(select(InboundWebhook.id))).all())
    await webhooks.handle(runtime, first)  # one job: it takes both

    assert len(driver.calls) == 2
    sent = {
        json.loads(call.request.content)["data"]["action"]: call.request.headers["traceparent"]
        for call in driver.calls
    }
    assert sent["opened-0"].split("-")[1] == traces[0]
    assert sent["opened-1"].split("-")[1] == traces[1]
    handled = [s for s in spans.get_finished_spans() if s.name == "webhook.handle"]
    attempts = [s for s in spans.get_finished_spans() if s.name == "delivery.attempt"]
    assert {parent_of(a) for a in attempts} == {h.context.span_id for h in handled}


async def test_an_action_traces_its_platform_call(
    client: httpx.AsyncClient,
    spans: InMemorySpanExporter,
    respx_mock: respx.MockRouter,
    alice: Any,
    community: dict[str, Any],
) -> None:
    respx_mock.post(MAILGUN).respond(200, json={"id": "<1@mg>", "message": "Queued."})
    config = {"domain": "mg.example.org", "api_key": "key-123456789", "default_from": "a@b.org"}
    enabled = await client.post(
        "/api/internal/plugin/mailgun", json=config, headers=alice.to("commons")
    )
    assert enabled.status_code == 201, enabled.text
    spans.clear()

    sent = await client.post(
        "/api/internal/action/mailgun.send-mail",
        json={"parameters": {"to": "x@example.org", "subject": "hi", "text": "hello"}},
        headers=alice.to("commons"),
    )
    assert sent.status_code == 200, sent.text

    request = named(spans, "POST /api/internal/action/mailgun.send-mail")
    action = named(spans, "action mailgun.send-mail")
    call = named(spans, "HTTP POST")
    assert parent_of(action) == request.context.span_id
    assert parent_of(call) == action.context.span_id
    assert call.attributes is not None and call.attributes["server.address"] == "api.mailgun.net"
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 200
    for span in spans.get_finished_spans():
        assert "key-123456789" not in json.dumps(dict(span.attributes or {}))


async def test_a_process_hook_is_a_span_of_its_request(
    client: httpx.AsyncClient, spans: InMemorySpanExporter, alice: Any, community: dict[str, Any]
) -> None:
    started = await client.post(
        "/api/internal/process/randomness.delayed-stochastic-vote",
        json={"options": ["a", "b"], "delay_seconds": 60},
        headers=alice.to("commons"),
    )
    assert started.status_code == 202
    hook = named(spans, "process randomness.delayed-stochastic-vote start")
    request = named(spans, "POST /api/internal/process/randomness.delayed-stochastic-vote")
    assert parent_of(hook) == request.context.span_id


def test_configuration_from_the_standard_variables() -> None:
    assert tracing.configure({}) is False
    assert tracing.configure({"OTEL_TRACES_EXPORTER": "none"}) is False
    assert tracing.configure({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) is False
    with pytest.raises(tracing.TracingConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        tracing.configure(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            }
        )
    with pytest.raises(tracing.TracingConfigError, match="OTEL_TRACES_EXPORTER"):
        tracing.configure({"OTEL_TRACES_EXPORTER": "zipkin"})
    try:
        assert tracing.configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
        assert tracing.enabled()
    finally:
        tracing.use(None)
    assert not tracing.enabled()


OFF_BY_DEFAULT = """
import asyncio, sys
from metagov import tracing
from metagov.app import create_app
from metagov.config import Settings
from metagov.inbox import handlers as webhooks
from metagov.runtime import Runtime

async def main():
    settings = Settings(_env_file=None, database_url=sys.argv[1])
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        assert runtime.http._transport.__class__.__name__ == "AsyncHTTPTransport"
    assert not tracing.enabled()
    assert tracing.current_traceparent() is None
    # FastAPI itself imports the OpenTelemetry API; the SDK and exporters stay unloaded.
    sdk = ("opentelemetry.sdk", "opentelemetry.exporter")
    loaded = sorted(m for m in sys.modules if m.startswith(sdk))
    assert not loaded, loaded

asyncio.run(main())
"""


def test_off_by_default_nothing_is_loaded(tmp_path: Any) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", OFF_BY_DEFAULT, f"sqlite+aiosqlite:///{tmp_path}/off.db"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_off_is_one_shared_no_op() -> None:
    """What ``python -m bench.tracing`` times: with tracing off, every hook returns at once, the
    same no-op context each time, and nothing is stored with a row."""
    assert not tracing.enabled()
    assert tracing.span("a", attributes={"x": 1}) is tracing.span("b", parent="00-x-y-01")
    assert tracing.current_traceparent() is None
    assert tracing.client_transport() is None
