"""Governance processes: start, read, list, close early, close at the deadline, restarts."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import respx
from fastapi import FastAPI

from metagov.app import create_app
from metagov.config import Settings
from metagov.db.base import utcnow
from metagov.db.models import Process
from metagov.processes.handlers import run_due_process, run_due_processes
from metagov.processes.service import due_process_ids
from metagov.runtime import Runtime
from tests.conftest import (
    RANDOMNESS,
    DriverKey,
    count_rows,
    make_community,
    make_driver,
    make_registry,
    make_settings,
    plug_queue,
)
from tests.fakes import RecordingQueue

VOTE = "/api/internal/process/randomness.delayed-stochastic-vote"
APPROVAL = "/api/internal/process/echo.approval"


async def start_vote(client: httpx.AsyncClient, driver: DriverKey, **params: Any) -> httpx.Response:
    body = {"options": ["yes", "no"], "delay_seconds": 600, **params}
    return await client.post(VOTE, json=body, headers=driver.to("commons"))


async def enable_echo(client: httpx.AsyncClient, driver: DriverKey) -> None:
    response = await client.post(
        "/api/internal/plugin/echo",
        json={"team_id": "T1", "api_token": "tok"},
        headers=driver.to("commons"),
    )
    assert response.status_code == 201


async def test_start_read_and_close_early(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    before = utcnow()
    started = await start_vote(client, alice)
    assert started.status_code == 202, started.text
    record = started.json()
    assert started.headers["Location"] == f"{VOTE}/{record['id']}"
    assert record["name"] == "randomness.delayed-stochastic-vote"
    assert record["community"] == "commons"
    assert record["status"] == "pending"
    assert record["outcome"] is None
    closing = record["closing_at"]
    assert closing > (before + timedelta(seconds=599)).isoformat().replace("+00:00", "Z")

    read = await client.get(started.headers["Location"], headers=alice.to("commons"))
    assert read.json() == record

    closed = await client.delete(started.headers["Location"], headers=alice.to("commons"))
    assert closed.status_code == 200
    final = closed.json()
    assert final["status"] == "completed"
    assert set(final["outcome"]["votes"]) == {"yes", "no"}
    assert final["outcome"]["winner"] in {"yes", "no"}
    votes = final["outcome"]["votes"]
    assert votes[final["outcome"]["winner"]] == max(votes.values())

    again = await client.delete(started.headers["Location"], headers=alice.to("commons"))
    assert again.status_code == 409
    assert again.json()["code"] == "invalid_transition"
    reread = await client.get(started.headers["Location"], headers=alice.to("commons"))
    assert reread.json()["outcome"] == final["outcome"]


async def test_bad_parameters_name_the_field_and_store_nothing(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any], runtime: Runtime
) -> None:
    empty = await start_vote(client, alice, options=[])
    assert empty.status_code == 422
    assert empty.json()["errors"][0]["loc"] == ["body", "options"]
    dupes = await start_vote(client, alice, options=["a", "a"])
    assert dupes.status_code == 422
    for url in ("not a url", "file:///etc/passwd", "gopher://127.0.0.1:6379/", "http://u:p@h/"):
        bad_callback = await start_vote(client, alice, callback_url=url)
        assert bad_callback.status_code == 422, url
        error = bad_callback.json()["errors"][0]
        assert error["loc"] == ["body", "callback_url"]
        assert "http:// or https:// URL with a host" in error["msg"]
    assert await count_rows(runtime, "processes") == 0


async def test_a_failing_start_stores_nothing(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any], runtime: Runtime
) -> None:
    await enable_echo(client, alice)
    response = await client.post(
        APPROVAL, json={"question": "q", "fail_on_start": True}, headers=alice.to("commons")
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "the platform refused to create the vote"
    assert await count_rows(runtime, "processes") == 0


async def test_start_needs_the_plugin_enabled(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    response = await client.post(APPROVAL, json={"question": "q"}, headers=alice.to("commons"))
    assert response.status_code == 404
    assert response.json()["code"] == "plugin_not_enabled"


async def test_url_and_outcome_set_at_start(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    await enable_echo(client, alice)
    started = await client.post(
        APPROVAL,
        json={"question": "q", "callback_url": "https://driver.example/cb"},
        headers=alice.to("commons"),
    )
    record = started.json()
    assert record["url"] == f"https://echo.example/T1/votes/{record['id']}"
    assert record["outcome"] == {"approvals": 0, "closed_by": None}


async def test_process_that_ends_on_the_platform_cannot_be_closed(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    await enable_echo(client, alice)
    started = await client.post(
        "/api/internal/process/echo.platform-poll", json={}, headers=alice.to("commons")
    )
    closed = await client.delete(started.headers["Location"], headers=alice.to("commons"))
    assert closed.status_code == 409
    still = await client.get(started.headers["Location"], headers=alice.to("commons"))
    assert still.json()["status"] == "pending"


async def test_list_filters_by_status_and_plugin(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any]
) -> None:
    await enable_echo(client, alice)
    headers = alice.to("commons")
    vote = (await start_vote(client, alice)).json()
    approval = (await client.post(APPROVAL, json={"question": "q"}, headers=headers)).json()
    await client.delete(f"{VOTE}/{vote['id']}", headers=headers)

    everything = await client.get("/api/internal/process", headers=headers)
    assert [p["id"] for p in everything.json()] == [approval["id"], vote["id"]]
    completed = await client.get("/api/internal/process?status=completed", headers=headers)
    assert [p["id"] for p in completed.json()] == [vote["id"]]
    echo = await client.get("/api/internal/process?plugin=echo", headers=headers)
    assert [p["id"] for p in echo.json()] == [approval["id"]]
    bad = await client.get("/api/internal/process?status=done", headers=headers)
    assert bad.status_code == 422


async def test_scheduler_closes_due_processes_once(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any], runtime: Runtime
) -> None:
    due = (await start_vote(client, alice, delay_seconds=0)).json()
    later = (await start_vote(client, alice, delay_seconds=600)).json()

    results = await asyncio.gather(
        run_due_process(runtime, due["id"]), run_due_process(runtime, due["id"])
    )
    assert sorted(results) == [False, True]
    assert await run_due_processes(runtime) == 0

    headers = alice.to("commons")
    closed = (await client.get(f"{VOTE}/{due['id']}", headers=headers)).json()
    assert closed["status"] == "completed"
    assert closed["outcome"]["winner"] in {"yes", "no"}
    assert (await client.get(f"{VOTE}/{later['id']}", headers=headers)).json()[
        "status"
    ] == "pending"


async def test_the_job_that_closes_a_process_delivers_its_event(
    client: httpx.AsyncClient,
    alice: DriverKey,
    community: dict[str, Any],
    runtime: Runtime,
    respx_mock: respx.MockRouter,
) -> None:
    callback = "https://driver.example/callbacks/7"
    route = respx_mock.post(callback).respond(200)
    due = (await start_vote(client, alice, delay_seconds=0, callback_url=callback)).json()
    queue = RecordingQueue()
    plug_queue(runtime, queue)

    assert await run_due_process(runtime, due["id"])

    [call] = route.calls
    assert json.loads(call.request.content)["event_type"] == "process.completed"
    assert queue.jobs == [], "no second job is needed to deliver the event"


async def test_scheduler_runs_update_hooks_when_due(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any], runtime: Runtime
) -> None:
    await enable_echo(client, alice)
    headers = alice.to("commons")
    started = (await client.post(APPROVAL, json={"question": "q"}, headers=headers)).json()
    assert await run_due_processes(runtime) == 0  # not due for 30 s
    assert await run_due_processes(runtime, now=utcnow() + timedelta(seconds=31)) == 1
    record = (await client.get(f"{APPROVAL}/{started['id']}", headers=headers)).json()
    assert record["outcome"]["approvals"] == 1
    closed = (await client.delete(f"{APPROVAL}/{started['id']}", headers=headers)).json()
    assert closed["outcome"] == {"approvals": 1, "closed_by": "driver"}


async def test_failing_deadline_close_is_recorded_and_retried_later(
    client: httpx.AsyncClient, alice: DriverKey, community: dict[str, Any], runtime: Runtime
) -> None:
    await enable_echo(client, alice)
    headers = alice.to("commons")
    started = (await client.post(APPROVAL, json={"question": "explode"}, headers=headers)).json()
    async with runtime.unit_of_work() as session:
        process = await session.get_one(Process, started["id"])
        process.closing_at = utcnow()
    assert await run_due_processes(runtime) == 0
    record = (await client.get(f"{APPROVAL}/{started['id']}", headers=headers)).json()
    assert record["status"] == "pending"
    assert record["errors"][0]["message"] == "scheduled hook failed: RuntimeError"
    # Backed off: the next pass does not hammer the platform again at once.
    assert await due_process_ids(runtime) == ([], [])


async def test_deadline_survives_a_restart(settings: Settings) -> None:
    url = settings.database_url

    # A gateway whose scheduler is off starts a vote, then stops.
    first = create_app(make_settings(url), make_registry())
    async with first.router.lifespan_context(first), _client(first) as client:
        driver = await make_driver(first.state.runtime, "alice")
        await make_community(client, driver, "commons", [RANDOMNESS])
        location = (await start_vote(client, driver, delay_seconds=0)).headers["Location"]

    # A new gateway on the same database, scheduler on, finishes the vote by itself.
    second = create_app(make_settings(url, jobs_in_process=True), make_registry())
    async with second.router.lifespan_context(second), _client(second) as client:
        await second.state.runner.next_pass()
        record = await client.get(location, headers=driver.to("commons"))
        assert record.json()["status"] == "completed"


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
