"""The Loomio poll process from start to outcome: created through Loomio's API, refreshed when a
webhook names it and on its interval, completed when Loomio reports it closed, and never closed
early by the Driver."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import respx

from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.loomio.conftest import (
    API,
    LOOMIO,
    MAIN_KEY,
    SUB_KEY,
    FakeLoomio,
    events,
    legacy_message,
    poll_record,
    post_hook,
)

START = {
    "title": "Adopt the budget",
    "poll_type": "proposal",
    "options": ["agree", "abstain", "disagree"],
    "closing_at": "2030-10-01T00:00:00+00:00",
    "details": "See the attached sheet.",
    "details_format": "md",
    "notify_on_closing_soon": "voters",
    "recipient_audience": "group",
}


async def start(gateway: TestGateway, driver: DriverCredentials, **params: Any) -> httpx.Response:
    return await gateway.client.post(
        "/api/internal/process/loomio.poll", json={**START, **params}, headers=driver.to("commons")
    )


async def test_a_poll_from_start_to_outcome(
    gateway: TestGateway,
    driver: DriverCredentials,
    enabled: dict[str, Any],
    loomio: FakeLoomio,
    driver_events: respx.Route,
) -> None:
    started = await start(gateway, driver)

    assert started.status_code == 202, started.text
    record = started.json()
    assert record["status"] == "pending"
    assert record["url"] == f"{LOOMIO}/p/m20ZprvH"
    assert record["outcome"]["votes"] == {
        "agree": {"count": 0, "users": [], "score": 0},
        "abstain": {"count": 0, "users": [], "score": 0},
        "disagree": {"count": 0, "users": [], "score": 0},
    }
    [created] = loomio.poll_creates.calls
    assert created.request.url == f"{API}/polls"
    assert json.loads(created.request.content) == {
        **START,
        "closing_at": "2030-10-01T00:00:00Z",
        "api_key": MAIN_KEY,
    }

    # Someone votes; Loomio's chatbot posts about it.
    loomio.polls["m20ZprvH"] = poll_record(
        voters={"agree": [879750], "abstain": [], "disagree": []}
    )
    await post_hook(gateway, legacy_message("stance_created", f"{LOOMIO}/p/m20ZprvH/adopt"))
    await gateway.drain()
    updated = [e for e in events(driver_events) if e["event_type"] == "process.updated"]
    assert updated[-1]["data"]["outcome"]["votes"]["agree"] == {
        "count": 1,
        "users": ["879750"],
        "score": 1,
    }
    assert updated[-1]["data"]["outcome"]["cast_stances_pct"] == 33

    # Loomio closes it at its closing time; the next scheduled update sees it.
    loomio.polls["m20ZprvH"] = poll_record(
        voters={"agree": [879750, 4759171], "abstain": [], "disagree": []},
        closed_at="2030-10-01T00:00:02.000Z",
    )
    reads = len(loomio.poll_reads.calls)
    await gateway.drain(now=datetime.now(UTC) + timedelta(minutes=6))
    assert len(loomio.poll_reads.calls) == reads + 1

    final = await gateway.client.get(started.headers["Location"], headers=driver.to("commons"))
    assert final.json()["status"] == "completed"
    assert final.json()["outcome"] == {
        "votes": {
            "agree": {"count": 2, "users": ["879750", "4759171"], "score": 2},
            "abstain": {"count": 0, "users": [], "score": 0},
            "disagree": {"count": 0, "users": [], "score": 0},
        },
        "voters_count": 3,
        "undecided_voters_count": 1,
        "cast_stances_pct": 67,
        "url": f"{LOOMIO}/p/m20ZprvH",
        "closed_at": "2030-10-01T00:00:02.000Z",
    }
    completed = [e for e in events(driver_events) if e["event_type"] == "process.completed"]
    assert len(completed) == 1


async def test_a_webhook_about_another_poll_leaves_the_process_alone(
    gateway: TestGateway,
    driver: DriverCredentials,
    enabled: dict[str, Any],
    loomio: FakeLoomio,
    driver_events: respx.Route,
) -> None:
    started = await start(gateway, driver)
    loomio.polls["0therP01"] = poll_record(id=5, key="0therP01", closed_at="2030-01-01T00:00:00Z")
    await post_hook(gateway, legacy_message("poll_closed_by_user", f"{LOOMIO}/p/0therP01/x"))
    await gateway.drain()

    process = await gateway.client.get(started.headers["Location"], headers=driver.to("commons"))
    assert process.json()["status"] == "pending"
    paths = [call.request.url.path for call in loomio.poll_reads.calls]
    assert paths == ["/api/b1/polls/0therP01"]  # read once, for the event; not for the process
    assert [e["event_type"] for e in events(driver_events)] == ["poll_closed_by_user"]


async def test_the_driver_cannot_close_it_early(
    gateway: TestGateway, driver: DriverCredentials, enabled: dict[str, Any], loomio: FakeLoomio
) -> None:
    started = await start(gateway, driver)
    refused = await gateway.client.delete(started.headers["Location"], headers=driver.to("commons"))

    assert refused.status_code == 409
    assert "cannot be closed early" in refused.json()["detail"]
    process = await gateway.client.get(started.headers["Location"], headers=driver.to("commons"))
    assert process.json()["status"] == "pending"


async def test_a_subgroup_poll_uses_the_subgroup_key_throughout(
    gateway: TestGateway, driver: DriverCredentials, enabled: dict[str, Any], loomio: FakeLoomio
) -> None:
    started = await start(
        gateway,
        driver,
        poll_type="score",
        options=["Venue A", "Venue B"],
        min_score=0,
        max_score=5,
        subgroup="Xy12AbCd",
    )
    assert started.status_code == 202, started.text
    body = json.loads(loomio.poll_creates.calls[0].request.content)
    assert body["api_key"] == SUB_KEY
    assert (body["poll_type"], body["min_score"], body["max_score"]) == ("score", 0, 5)
    assert "subgroup" not in body

    await gateway.drain(now=datetime.now(UTC) + timedelta(minutes=6))
    [read] = loomio.poll_reads.calls
    assert read.request.url.params["api_key"] == SUB_KEY


async def test_poll_parameters_are_checked(
    gateway: TestGateway, driver: DriverCredentials, enabled: dict[str, Any], loomio: FakeLoomio
) -> None:
    naive = await start(gateway, driver, closing_at="2030-10-01T00:00:00")
    assert naive.status_code == 422
    assert naive.json()["errors"][0]["loc"] == ["body", "closing_at"]

    meeting = await start(gateway, driver, poll_type="meeting", options=["2030-05-01", "soon"])
    assert meeting.status_code == 422
    assert "ISO 8601" in meeting.json()["detail"]

    unknown = await start(gateway, driver, poll_type="stv")
    assert unknown.status_code == 422
    assert not loomio.poll_creates.called


async def test_a_refused_poll_starts_nothing(
    gateway: TestGateway, driver: DriverCredentials, enabled: dict[str, Any], loomio: FakeLoomio
) -> None:
    loomio.poll_creates.mock(
        return_value=httpx.Response(422, json={"errors": {"closing_at": ["must be in the future"]}})
    )
    refused = await start(gateway, driver)

    assert refused.status_code == 400
    assert refused.json()["detail"] == "Loomio refused the poll: closing_at must be in the future"
    listed = await gateway.client.get("/api/internal/process", headers=driver.to("commons"))
    assert listed.json() == []
