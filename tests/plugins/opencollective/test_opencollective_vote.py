"""The Open Collective vote from start to outcome: a conversation tagged metagov-vote, 👍/👎
reactions counted on each update, and on close the conversation renamed ``[CLOSED] …`` with the
tally posted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import respx

from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.opencollective.conftest import (
    WEBSITE,
    FakeOpenCollective,
    conversation,
    events,
)

URL = (
    f"{WEBSITE}/metagov/conversations/should-we-pay-for-the-server-"
    "d4yx5jen-gl0kzpq9-v7b3z8ma-wr9b6ok8"
)


def comment(variables: dict[str, Any], request: Any) -> dict[str, Any]:
    return {"data": {"createComment": {"id": "c0mment9", "createdAt": "x", "html": "y"}}}


async def test_a_vote_from_start_to_close(
    gateway: TestGateway,
    driver: DriverCredentials,
    enabled: dict[str, Any],
    oc: FakeOpenCollective,
    driver_events: respx.Route,
) -> None:
    oc.on("CreateConversation", {"data": {"createConversation": conversation()}})
    started = await gateway.client.post(
        "/api/internal/process/opencollective.vote",
        json={"title": "Should we pay for the server?", "details": "It costs <$120>.\n\nVote!"},
        headers=driver.to("commons"),
    )

    assert started.status_code == 202, started.text
    assert started.json()["url"] == URL
    assert started.json()["outcome"] == {"votes": {"yes": 0, "no": 0}, "url": URL}
    [created] = oc.variables("CreateConversation")
    assert created == {
        "title": "Should we pay for the server?",
        "html": "<p>It costs &lt;$120&gt;.</p><p>Vote!</p>"
        "<p>Vote by reacting to this message with \N{THUMBS UP SIGN} (yes) or "
        "\N{THUMBS DOWN SIGN} (no).</p>",
        "account": {"slug": "metagov"},
        "tags": ["metagov-vote"],
    }

    # People react; the next update counts them (👍 as Open Collective's picker sends it).
    oc.on(
        "Conversation",
        {"data": {"conversation": conversation(reactions={"👍️": 2, "👎": 1, "🎉": 4})}},
    )
    await gateway.drain(now=datetime.now(UTC) + timedelta(minutes=3))
    process = await gateway.client.get(started.headers["Location"], headers=driver.to("commons"))
    assert process.json()["outcome"] == {"votes": {"yes": 2, "no": 1}, "url": URL}
    updated = [e for e in events(driver_events) if e["event_type"] == "process.updated"]
    assert updated[-1]["data"]["outcome"]["votes"] == {"yes": 2, "no": 1}

    oc.on(
        "Conversation",
        {"data": {"conversation": conversation(reactions={"👍️": 3, "👎": 1})}},
    )
    oc.on("EditConversation", {"data": {"editConversation": conversation(title="[CLOSED] x")}})
    oc.on("CreateComment", comment)
    closed = await gateway.client.delete(started.headers["Location"], headers=driver.to("commons"))

    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "completed"
    assert closed.json()["outcome"] == {"votes": {"yes": 3, "no": 1}, "url": URL}
    assert oc.variables("EditConversation") == [
        {
            "id": "d4yx5jen-gl0kzpq9-v7b3z8ma-wr9b6ok8",
            "title": "[CLOSED] Should we pay for the server?",
        }
    ]
    assert oc.variables("CreateComment") == [
        {
            "comment": {
                "html": "<p>Voting is closed. Final count: 3 for (\N{THUMBS UP SIGN}), "
                "1 against (\N{THUMBS DOWN SIGN}).</p>",
                "conversation": {"id": "d4yx5jen-gl0kzpq9-v7b3z8ma-wr9b6ok8"},
            }
        }
    ]


async def test_a_vote_closes_itself_at_closing_at_and_renames_once(
    gateway: TestGateway,
    driver: DriverCredentials,
    enabled: dict[str, Any],
    oc: FakeOpenCollective,
    driver_events: respx.Route,
) -> None:
    oc.on("CreateConversation", {"data": {"createConversation": conversation()}})
    closing = datetime.now(UTC) + timedelta(hours=1)
    started = await gateway.client.post(
        "/api/internal/process/opencollective.vote",
        json={"title": "Should we pay for the server?", "closing_at": closing.isoformat()},
        headers=driver.to("commons"),
    )
    assert started.status_code == 202, started.text

    # Renamed already (a close that failed after renaming is tried again): not renamed twice.
    renamed = conversation(title="[CLOSED] Should we pay for the server?", reactions={"👎": 2})
    oc.on("Conversation", {"data": {"conversation": renamed}})
    oc.on("CreateComment", comment)
    await gateway.drain(now=closing + timedelta(minutes=1))

    process = await gateway.client.get(started.headers["Location"], headers=driver.to("commons"))
    assert process.json()["status"] == "completed"
    assert process.json()["outcome"]["votes"] == {"yes": 0, "no": 2}
    assert "EditConversation" not in oc.operations()
    assert len(oc.variables("CreateComment")) == 1
    completed = [e for e in events(driver_events) if e["event_type"] == "process.completed"]
    assert len(completed) == 1


async def test_vote_parameters_are_checked(
    gateway: TestGateway, driver: DriverCredentials, enabled: dict[str, Any], oc: FakeOpenCollective
) -> None:
    naive = await gateway.client.post(
        "/api/internal/process/opencollective.vote",
        json={"title": "x", "closing_at": "2030-01-01T00:00:00"},
        headers=driver.to("commons"),
    )
    assert naive.status_code == 422
    assert naive.json()["errors"][0]["loc"] == ["body", "closing_at"]
    assert oc.calls == []
