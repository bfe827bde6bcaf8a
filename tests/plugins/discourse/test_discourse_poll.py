"""The poll process from start to outcome: the BBCode Discourse receives, votes seen by polling
the post, a poll closed by hand on the forum, closes through the API (the Driver's and the
deadline's), post webhooks about the poll, and the parameters refused before anything is
posted."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import respx

from tests.plugins.discourse.conftest import FORUM, Forum, Setup, deliver, post_payload

POST_ID = 120
OPTION_IDS = ["4d8a15e3cc35750f016ce15a43937620", "a1b9c3d2e8f7a6b5c4d3e2f1a0b9c8d7"]


def poll(status: str, votes: list[int] | None, voters: int) -> dict[str, Any]:
    """A poll as Discourse serializes it in a post; ``votes=None`` when results are hidden."""
    options = []
    for index, html in enumerate(["Fridays", "Mondays &amp; Tuesdays"]):
        option: dict[str, Any] = {"id": OPTION_IDS[index], "html": html}
        if votes is not None:
            option["votes"] = votes[index]
        options.append(option)
    return {
        "name": "poll",
        "type": "regular",
        "status": status,
        "public": False,
        "results": "always",
        "options": options,
        "voters": voters,
        "chart_type": "bar",
        "title": "Meeting day",
    }


def poll_post(
    status: str = "open", votes: list[int] | None = None, voters: int = 0
) -> dict[str, Any]:
    """``POST /posts.json`` and ``GET /posts/{id}.json`` for the poll's post."""
    return {
        "id": POST_ID,
        "name": "system",
        "username": "system",
        "avatar_template": "/images/discourse-logo-sketch-small.png",
        "created_at": "2024-05-01T13:04:21.432Z",
        "cooked": '<div class="poll" data-poll-name="poll">…</div>',
        "post_number": 1,
        "post_type": 1,
        "updated_at": "2024-05-01T13:04:21.432Z",
        "reply_count": 0,
        "reply_to_post_number": None,
        "quote_count": 0,
        "incoming_link_count": 0,
        "reads": 1,
        "score": 0,
        "yours": True,
        "topic_id": 44,
        "topic_slug": "meeting-day-for-the-commons",
        "display_username": "system",
        "version": 1,
        "can_edit": True,
        "can_delete": False,
        "can_recover": False,
        "can_wiki": True,
        "user_title": None,
        "actions_summary": [],
        "moderator": True,
        "admin": True,
        "staff": True,
        "user_id": -1,
        "hidden": False,
        "trust_level": 4,
        "deleted_at": None,
        "user_deleted": False,
        "edit_reason": None,
        "can_view_edit_history": True,
        "wiki": False,
        "polls": [poll(status, [0, 0] if votes is None else votes, voters)],
    }


URL = f"{FORUM}/t/meeting-day-for-the-commons/44/1"
START = {
    "title": "Meeting day for the commons",
    "options": ["Fridays", "Mondays & Tuesdays"],
    "details": "Which day suits everyone?",
}


async def start(setup: Setup, respx_mock: respx.MockRouter, **params: Any) -> dict[str, Any]:
    respx_mock.post(f"{FORUM}/posts.json").respond(json=poll_post())
    response = await setup.gw.client.post(
        "/api/internal/process/discourse.poll", json={**START, **params}, headers=setup.headers
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def later(minutes: int) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


def outcomes(setup: Setup) -> list[tuple[str, Any]]:
    return [
        (e["event_type"], e["data"]["outcome"])
        for e in setup.received()
        if e["event_type"].startswith("process.")
    ]


async def test_a_poll_from_start_to_a_close_by_hand(
    setup: Setup, forum: Forum, respx_mock: respx.MockRouter
) -> None:
    process = await start(setup, respx_mock, results="always", public=True, chart_type="pie")

    created = json.loads(respx_mock.calls.last.request.content)
    assert created == {
        "title": "Meeting day for the commons",
        "raw": "Which day suits everyone?\n\n"
        "[poll type=regular results=always public=true chartType=pie]\n"
        "# Meeting day for the commons\n"
        "* Fridays\n"
        "* Mondays & Tuesdays\n"
        "[/poll]",
    }
    assert process["status"] == "pending"
    assert process["url"] == URL
    assert process["outcome"] == {
        "votes": {"Fridays": 0, "Mondays & Tuesdays": 0},
        "voters": 0,
        "url": URL,
    }

    # Votes come in on the forum; the plugin sees them when it polls the post.
    read = respx_mock.get(f"{FORUM}/posts/{POST_ID}.json").respond(
        json=poll_post(votes=[3, 1], voters=4)
    )
    await setup.gw.drain(now=later(2))
    assert read.call_count == 1
    assert outcomes(setup) == [
        (
            "process.updated",
            {"votes": {"Fridays": 3, "Mondays & Tuesdays": 1}, "voters": 4, "url": URL},
        )
    ]

    # Someone closes the poll by hand on the forum.
    read.respond(json=poll_post(status="closed", votes=[3, 2], voters=5))
    await setup.gw.drain(now=later(4))
    kind, outcome = outcomes(setup)[-1]
    assert kind == "process.completed"
    assert outcome == {"votes": {"Fridays": 3, "Mondays & Tuesdays": 2}, "voters": 5, "url": URL}
    record = await setup.gw.client.get(
        f"/api/internal/process/discourse.poll/{process['id']}", headers=setup.headers
    )
    assert record.json()["status"] == "completed"
    assert not any(call.request.method == "PUT" for call in respx_mock.calls)


async def test_the_driver_closes_a_poll_through_the_api(
    setup: Setup, forum: Forum, respx_mock: respx.MockRouter
) -> None:
    process = await start(setup, respx_mock, poll_type="multiple", min=1, max=2, groups=["members"])
    raw = json.loads(respx_mock.calls.last.request.content)["raw"]
    assert "[poll type=multiple min=1 max=2 groups=members]" in raw

    toggled = respx_mock.put(f"{FORUM}/polls/toggle_status").respond(
        json={"poll": poll("closed", [2, 2], 3)}
    )
    closed = await setup.gw.client.delete(
        f"/api/internal/process/discourse.poll/{process['id']}", headers=setup.headers
    )

    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "completed"
    assert closed.json()["outcome"] == {
        "votes": {"Fridays": 2, "Mondays & Tuesdays": 2},
        "voters": 3,
        "url": URL,
    }
    sent = toggled.calls.last.request
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(sent.content.decode()) == {
        "post_id": [str(POST_ID)],
        "poll_name": ["poll"],
        "status": ["closed"],
    }
    await setup.gw.drain()
    assert outcomes(setup)[-1][0] == "process.completed"


async def test_a_poll_closes_at_its_deadline_and_follows_its_posts_webhooks(
    setup: Setup, forum: Forum, respx_mock: respx.MockRouter
) -> None:
    closing = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    process = await start(setup, respx_mock, closing_at=closing.isoformat())
    raw = json.loads(respx_mock.calls.last.request.content)["raw"]
    assert f"close={closing.strftime('%Y-%m-%dT%H:%M:%S')}.000Z]" in raw
    assert process["closing_at"] is not None

    # An edit of the poll's post is read back from the forum (results hidden: counts kept).
    read = respx_mock.get(f"{FORUM}/posts/{POST_ID}.json").respond(
        json={**poll_post(), "polls": [poll("open", None, 6)]}
    )
    await deliver(setup, "post_edited", post_payload(POST_ID, 44, version=2), "901")
    await deliver(setup, "post_edited", post_payload(999, 45, version=2), "902")  # another post
    await setup.gw.drain()
    assert read.call_count == 1
    assert outcomes(setup)[-1] == (
        "process.updated",
        {"votes": {"Fridays": 0, "Mondays & Tuesdays": 0}, "voters": 6, "url": URL},
    )

    toggled = respx_mock.put(f"{FORUM}/polls/toggle_status").respond(
        json={"poll": poll("closed", [4, 2], 6)}
    )
    await setup.gw.drain(now=closing + timedelta(seconds=1))
    assert toggled.call_count == 1
    assert outcomes(setup)[-1] == (
        "process.completed",
        {"votes": {"Fridays": 4, "Mondays & Tuesdays": 2}, "voters": 6, "url": URL},
    )


async def test_a_deleted_poll_post_fails_the_process(
    setup: Setup, forum: Forum, respx_mock: respx.MockRouter
) -> None:
    process = await start(setup, respx_mock, topic_id=44)
    created = json.loads(respx_mock.calls.last.request.content)
    assert created["topic_id"] == 44 and "title" not in created

    await deliver(setup, "post_destroyed", post_payload(POST_ID, 44), "950")
    await setup.gw.drain()
    record = await setup.gw.client.get(
        f"/api/internal/process/discourse.poll/{process['id']}", headers=setup.headers
    )
    assert record.json()["status"] == "failed"
    assert record.json()["errors"][-1]["message"] == "the poll's post was deleted on Discourse"


async def test_bad_poll_parameters_are_refused_before_anything_is_posted(
    setup: Setup, forum: Forum, respx_mock: respx.MockRouter
) -> None:
    posts = respx_mock.post(f"{FORUM}/posts.json").respond(json=poll_post())
    cases = [
        ({"title": "Pick a day", "poll_type": "regular"}, 422, "needs options"),
        ({"title": "Pick a number", "poll_type": "number", "options": ["1"]}, 422, "no options"),
        ({**START, "options": ["Fridays", "fridays"]}, 422, "distinct"),
        ({**START, "options": ["A [/poll] B"]}, 422, "poll markup"),
        ({**START, "topic_id": 4, "category": 2}, 422, "not both"),
        ({**START, "min": 3, "max": 2}, 422, "min must not be greater"),
        ({**START, "closing_at": "2030-01-01T00:00:00"}, 422, "timezone"),
        ({**START, "closing_at": "2020-01-01T00:00:00Z"}, 400, "in the future"),
    ]
    for body, status, words in cases:
        response = await setup.gw.client.post(
            "/api/internal/process/discourse.poll", json=body, headers=setup.headers
        )
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["detail"].lower() or words in response.text, (
            body,
            response.text,
        )
    assert not posts.called

    number = await setup.gw.client.post(
        "/api/internal/process/discourse.poll",
        json={
            "title": "How many meetings a month?",
            "poll_type": "number",
            "min": 1,
            "max": 4,
            "step": 1,
        },
        headers=setup.headers,
    )
    assert number.status_code == 202, number.text
    raw = json.loads(posts.calls.last.request.content)["raw"]
    assert raw == "[poll type=number min=1 max=4 step=1]\n# How many meetings a month?\n[/poll]"


async def test_a_failing_forum_keeps_the_poll_open_and_a_closed_one_is_accepted(
    setup: Setup, forum: Forum, respx_mock: respx.MockRouter
) -> None:
    process = await start(setup, respx_mock)
    respx_mock.put(f"{FORUM}/polls/toggle_status").mock(return_value=httpx.Response(503))
    closed = await setup.gw.client.delete(
        f"/api/internal/process/discourse.poll/{process['id']}", headers=setup.headers
    )
    assert closed.status_code == 502
    record = await setup.gw.client.get(
        f"/api/internal/process/discourse.poll/{process['id']}", headers=setup.headers
    )
    assert record.json()["status"] == "pending"

    # Discourse refuses the toggle because its own `close` time already closed the poll: the
    # poll's results stand.
    respx_mock.put(f"{FORUM}/polls/toggle_status").respond(
        422, json={"errors": ["This poll is closed."]}
    )
    respx_mock.get(f"{FORUM}/posts/{POST_ID}.json").respond(
        json=poll_post(status="closed", votes=[1, 0], voters=1)
    )
    closed = await setup.gw.client.delete(
        f"/api/internal/process/discourse.poll/{process['id']}", headers=setup.headers
    )
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "completed"
    assert closed.json()["outcome"]["votes"] == {"Fridays": 1, "Mondays & Tuesdays": 0}
