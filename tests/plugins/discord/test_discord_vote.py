"""The ``vote`` process end to end: the message with buttons, clicks answered at once with a
deferred update and counted by the job (one vote per user, switching allowed, ineligible users
told privately), and closing, which removes the buttons and shows the tally."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import respx

from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.discord.support import (
    API,
    APPLICATION,
    BOT_TOKEN,
    CHANNEL,
    EVENTS,
    GUILD,
    MESSAGE,
    channel_object,
    click,
    driver_events,
    interact,
    message_object,
)

ANA, BO, CY = "80351110224678912", "80351110224678913", "80351110224678914"
URL = f"https://discord.com/channels/{GUILD}/{CHANNEL}/{MESSAGE}"
ORIGINAL = rf"^{API}/webhooks/{APPLICATION}/(?P<token>[^/]+)/messages/@original$"


def buttons(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (button["custom_id"], button["label"])
        for row in body["components"]
        for button in row["components"]
    ]


def mock_vote_message(api: respx.MockRouter) -> tuple[respx.Route, respx.Route]:
    api.get(f"{API}/channels/{CHANNEL}").respond(200, json=channel_object())
    posted = api.post(f"{API}/channels/{CHANNEL}/messages").respond(200, json=message_object())
    closed = api.patch(f"{API}/channels/{CHANNEL}/messages/{MESSAGE}").respond(
        200, json=message_object()
    )
    return posted, closed


async def test_vote_from_start_through_clicks_to_close(
    gw: TestGateway, installed: DriverCredentials, api: respx.MockRouter
) -> None:
    posted, closed = mock_vote_message(api)
    original = api.patch(url__regex=ORIGINAL).respond(200, json=message_object())
    follow_up = api.post(url__regex=rf"^{API}/webhooks/{APPLICATION}/[^/]+$").respond(
        200, json=message_object("1100000000000000099", flags=64)
    )
    events = api.post(EVENTS).respond(204)
    headers = installed.to("commons")

    started = await gw.client.post(
        "/api/internal/process/discord.vote",
        json={
            "title": "Lunch?",
            "options": ["Tacos", "Pizza"],
            "channel": CHANNEL,
            "details": "Friday's team lunch",
            "eligible_voters": [ANA, BO],
        },
        headers=headers,
    )

    assert started.status_code == 202, started.text
    assert started.json()["url"] == URL
    message = json.loads(posted.calls.last.request.content)
    assert posted.calls.last.request.headers["authorization"] == f"Bot {BOT_TOKEN}"
    assert buttons(message) == [("metagov-vote:0", "Tacos (0)"), ("metagov-vote:1", "Pizza (0)")]
    assert message["embeds"][0]["title"] == "Lunch?"
    assert message["embeds"][0]["description"] == "Friday's team lunch"
    assert message["allowed_mentions"] == {"parse": []}

    clicks = [
        click("1100000000000000001", ANA, "metagov-vote:0", name="ana"),
        click("1100000000000000002", BO, "metagov-vote:1", name="bo"),
        click("1100000000000000003", ANA, "metagov-vote:1", name="ana"),  # switches
        click("1100000000000000004", CY, "metagov-vote:0", name="cy"),  # not eligible
        click("1100000000000000005", BO, "metagov-vote:1", name="bo"),  # the same vote again
        click("1100000000000000006", BO, "metagov-vote:0", message_id="1100000000000000777"),
    ]
    for payload in clicks:
        answer = await interact(gw.client, payload)
        assert answer.status_code == 200
        assert answer.json() == {"type": 6}  # a deferred update, before any job ran
    assert not original.called and not follow_up.called

    await gw.drain()

    edits = [
        (call.request.url.path.split("/")[-3], buttons(json.loads(call.request.content)))
        for call in original.calls
    ]
    assert edits == [
        (
            "interaction-token-1100000000000000001",
            [("metagov-vote:0", "Tacos (1)"), ("metagov-vote:1", "Pizza (0)")],
        ),
        (
            "interaction-token-1100000000000000002",
            [("metagov-vote:0", "Tacos (1)"), ("metagov-vote:1", "Pizza (1)")],
        ),
        (
            "interaction-token-1100000000000000003",
            [("metagov-vote:0", "Tacos (0)"), ("metagov-vote:1", "Pizza (2)")],
        ),
    ]
    assert all("authorization" not in call.request.headers for call in original.calls)
    [told] = follow_up.calls
    assert told.request.url.path.endswith("/interaction-token-1100000000000000004")
    assert json.loads(told.request.content) == {
        "content": "You are not eligible to vote in this poll.",
        "flags": 64,
        "allowed_mentions": {"parse": []},
    }
    pending = await gw.client.get(started.headers["Location"], headers=headers)
    assert pending.json()["status"] == "pending"
    assert pending.json()["outcome"]["votes"] == {
        "Tacos": {"count": 0, "users": []},
        "Pizza": {"count": 2, "users": [BO, ANA]},
    }
    updates = [e for e in driver_events(events) if e["event_type"] == "process.updated"]
    assert len(updates) == 3

    done = await gw.client.delete(started.headers["Location"], headers=headers)

    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed"
    assert done.json()["outcome"] == {
        "votes": {"Tacos": {"count": 0, "users": []}, "Pizza": {"count": 2, "users": [BO, ANA]}},
        "channel": CHANNEL,
        "message_id": MESSAGE,
        "url": URL,
    }
    final = json.loads(closed.calls.last.request.content)
    assert closed.calls.last.request.headers["authorization"] == f"Bot {BOT_TOKEN}"
    assert final["components"] == []
    assert final["embeds"][0]["fields"] == [
        {"name": "Tacos", "value": "0 votes", "inline": True},
        {"name": "Pizza", "value": "2 votes", "inline": True},
    ]
    assert final["embeds"][0]["footer"] == {"text": "Voting has closed."}

    late = await interact(gw.client, click("1100000000000000008", BO, "metagov-vote:0"))
    assert late.json() == {"type": 6}
    await gw.drain()
    assert original.call_count == 3


async def test_boolean_vote_closes_at_its_deadline_and_survives_expired_tokens(
    gw: TestGateway, installed: DriverCredentials, api: respx.MockRouter
) -> None:
    posted, closed = mock_vote_message(api)
    expired = api.patch(url__regex=ORIGINAL).respond(
        401, json={"message": "Invalid Webhook Token", "code": 50027}
    )
    api.post(EVENTS).respond(204)
    closing_at = datetime.now(UTC) + timedelta(hours=1)
    started = await gw.client.post(
        "/api/internal/process/discord.vote",
        json={
            "title": "Adopt the code of conduct?",
            "poll_type": "boolean",
            "channel": CHANNEL,
            "closing_at": closing_at.isoformat(),
        },
        headers=installed.to("commons"),
    )
    assert started.status_code == 202, started.text
    message = json.loads(posted.calls.last.request.content)
    row = message["components"][0]["components"]
    assert [(b["emoji"], b["label"]) for b in row] == [
        ({"name": "👍"}, "Yes (0)"),
        ({"name": "👎"}, "No (0)"),
    ]
    assert f"<t:{int(closing_at.timestamp())}:R>" in message["embeds"][0]["description"]

    await interact(gw.client, click("1100000000000000011", ANA, "metagov-vote:0"))
    await gw.drain()

    # The click's token no longer worked: the bot rewrote the message instead.
    assert expired.called
    assert buttons(json.loads(closed.calls[0].request.content)) == [
        ("metagov-vote:0", "Yes (1)"),
        ("metagov-vote:1", "No (0)"),
    ]

    await gw.drain(now=closing_at + timedelta(seconds=1))

    record = await gw.client.get(started.headers["Location"], headers=installed.to("commons"))
    assert record.json()["status"] == "completed"
    assert record.json()["outcome"]["votes"] == {
        "Yes": {"count": 1, "users": [ANA]},
        "No": {"count": 0, "users": []},
    }
    final = json.loads(closed.calls.last.request.content)
    assert final["components"] == []
    assert [f["name"] for f in final["embeds"][0]["fields"]] == ["👍 Yes", "👎 No"]


async def test_vote_parameters_are_checked(
    gw: TestGateway, installed: DriverCredentials, api: respx.MockRouter
) -> None:
    headers = installed.to("commons")
    cases = [
        ({"title": "x", "channel": CHANNEL}, "a choice vote needs options"),
        (
            {"title": "x", "channel": CHANNEL, "poll_type": "boolean", "options": ["a"]},
            "takes no options",
        ),
        ({"title": "x", "channel": CHANNEL, "options": ["a", "a"]}, "distinct"),
        ({"title": "x", "channel": "general", "options": ["a"]}, "channel"),
        (
            {"title": "x", "channel": CHANNEL, "options": ["a"], "closing_at": "2030-01-01T00:00"},
            "closing_at",
        ),
    ]
    for body, words in cases:
        refused = await gw.client.post(
            "/api/internal/process/discord.vote", json=body, headers=headers
        )
        assert refused.status_code == 422, body
        assert words in json.dumps(refused.json()), refused.text
