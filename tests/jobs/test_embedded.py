"""The embedded mode end to end, as `metagov serve` runs it with no Redis: a signed webhook comes
in, the in-process jobs turn it into an event, and a real HTTP Driver receives it signed."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from metagov import signing
from metagov.app import create_app
from metagov.logs import JSONFormatter
from metagov.tenancy import service as drivers
from tests.conftest import DriverKey, make_community, make_driver, make_registry, make_settings
from tests.receiver import DriverReceiver

SECRET = "whsec_" + "A" * 43 + "="


@pytest.fixture
async def serving(database_url: str) -> AsyncIterator[FastAPI]:
    app = create_app(make_settings(database_url, jobs_in_process=True), make_registry())
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def http(serving: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=serving)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def setup_driver(serving: FastAPI, http: httpx.AsyncClient, url: str) -> DriverKey:
    runtime = serving.state.runtime
    driver = await make_driver(runtime, "alice")
    async with runtime.unit_of_work() as session:
        await drivers.set_event_url(session, await drivers.get_driver(session, "alice"), url)
    plugins: list[dict[str, Any]] = [{"name": "webhook", "config": {"secret": SECRET}}]
    await make_community(http, driver, "commons", plugins)
    return driver


async def test_webhook_in_signed_event_out(serving: FastAPI, http: httpx.AsyncClient) -> None:
    receiver = DriverReceiver()
    async with receiver.running():
        driver = await setup_driver(serving, http, receiver.url)
        body = json.dumps({"text": "hello"}).encode()
        headers = signing.standard_headers([SECRET], "msg_42", body)
        response = await http.post("/api/hooks/commons/webhook", content=body, headers=headers)
        assert response.status_code == 200
        await receiver.wait_answered(1)

    [received] = receiver.received
    assert received.path == "/events"
    assert signing.verify_standard(driver.webhook_secret, received.headers, received.body)
    event = received.json()
    assert event["event_type"] == "webhook"
    assert event["data"] == {"text": "hello"}
    assert event["community"] == "commons"


async def test_a_driver_that_is_down_gets_everything_after(
    serving: FastAPI, http: httpx.AsyncClient
) -> None:
    serving.state.runtime.settings.delivery_retry_schedule = [0.0] * 5
    receiver = DriverReceiver(failures=2)
    async with receiver.running():
        await setup_driver(serving, http, receiver.url)
        for n in range(3):
            body = json.dumps({"n": n}).encode()
            headers = signing.standard_headers([SECRET], f"msg_{n}", body)
            await http.post("/api/hooks/commons/webhook", content=body, headers=headers)
        await receiver.wait_answered(5)
    assert [r.json()["data"]["n"] for r in receiver.delivered] == [0, 1, 2]
    first_id = receiver.received[0].headers["webhook-id"]
    assert [r.headers["webhook-id"] for r in receiver.received[:3]] == [first_id] * 3


async def test_metrics_count_webhooks_and_deliveries(
    serving: FastAPI, http: httpx.AsyncClient
) -> None:
    receiver = DriverReceiver()
    async with receiver.running():
        await setup_driver(serving, http, receiver.url)
        body = b'{"a": 1}'
        good = signing.standard_headers([SECRET], "msg_m", body)
        await http.post("/api/hooks/commons/webhook", content=body, headers=good)
        forged = {**good, "webhook-signature": "v1,AAAA"}
        assert (
            await http.post("/api/hooks/commons/webhook", content=body, headers=forged)
        ).status_code == 401
        await receiver.wait_answered(1)
        await serving.state.runner.next_pass()
    text = (await http.get("/metrics")).text
    assert 'metagov_webhooks_rejected_total{plugin="webhook",reason="bad_signature"}' in text
    assert 'metagov_webhooks_received_total{plugin="webhook"}' in text
    assert "metagov_deliveries_succeeded_total" in text
    assert "metagov_outbox_pending 0.0" in text


def test_json_logs_carry_ids_and_drop_secrets() -> None:
    record = logging.makeLogRecord(
        {"msg": "delivery attempt", "levelname": "INFO", "name": "metagov"}
    )
    record.delivery_id = 12
    record.webhook_secret = "whsec_leak"
    line = json.loads(JSONFormatter().format(record))
    assert line["message"] == "delivery attempt"
    assert line["delivery_id"] == 12
    assert "webhook_secret" not in line
    assert "whsec_leak" not in json.dumps(line)


async def test_a_deadline_is_met_to_the_moment_not_at_the_next_sweep(
    database_url: str,
) -> None:
    """With a sweep only once a minute, a process still closes when its deadline passes: its
    own doorbell was rung for that moment when it started."""
    settings = make_settings(database_url, jobs_in_process=True, sweep_interval_seconds=60)
    app = create_app(settings, make_registry())
    receiver = DriverReceiver()
    async with app.router.lifespan_context(app), receiver.running():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            driver = await setup_driver(app, http, receiver.url)
            await app.state.runner.next_pass()  # the sweep at start-up has passed
            randomness = {"default_low": 1, "default_high": 6}
            enabled = await http.post(
                "/api/internal/plugin/randomness", json=randomness, headers=driver.to("commons")
            )
            assert enabled.status_code == 201
            started = await http.post(
                "/api/internal/process/randomness.delayed-stochastic-vote",
                json={"options": ["a", "b"], "delay_seconds": 1},
                headers=driver.to("commons"),
            )
            assert started.status_code == 202
            await receiver.wait_answered(1, within=15)  # well before the next sweep
    [completed] = [json.loads(r.body) for r in receiver.received]
    assert completed["event_type"] == "process.completed"
    assert completed["data"]["id"] == started.json()["id"]
