"""Both votes from start to close: the issue GitHub is asked to open, the reactions polled or the
comments received, the outcome the Driver hears as votes come, and the tally commented on the
issue before it is closed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import respx

from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.github.fake import (
    BOT,
    OWNER,
    REPO,
    FakeGitHub,
    comment_json,
    installation_ref,
    issue_json,
    post_webhook,
    reaction_json,
    repository_json,
    user,
)

ALICE, BOB, CAROL, DAVE = (
    user(n, i) for n, i in [("alice", 1), ("bob", 2), ("carol", 3), ("dave", 4)]
)
DEPENDABOT = user("dependabot[bot]", 49699333, "Bot")
PROCESS = "/api/internal/process/github."


def later(**delta: float) -> datetime:
    return datetime.now(UTC) + timedelta(**delta)


async def start(
    gateway: TestGateway, driver: DriverCredentials, slug: str, **params: Any
) -> dict[str, Any]:
    response = await gateway.client.post(
        f"{PROCESS}{slug}", json={"repo": REPO, **params}, headers=driver.to("commons")
    )
    assert response.status_code == 202, response.text
    return {**response.json(), "location": response.headers["location"]}


async def record(gateway: TestGateway, driver: DriverCredentials, vote: dict[str, Any]) -> Any:
    response = await gateway.client.get(vote["location"], headers=driver.to("commons"))
    assert response.status_code == 200, response.text
    return response.json()


def process_events(github: FakeGitHub, vote: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        (e["event_type"], e["data"]["outcome"])
        for e in github.events()
        if e["event_type"].startswith("process.") and e["data"]["id"] == vote["id"]
    ]


def json_body(route: respx.Route) -> Any:
    return json.loads(route.calls.last.request.content)


def comment_webhook(
    action: str, comment: dict[str, Any], number: int, *, repo: str = REPO
) -> dict[str, Any]:
    return {
        "action": action,
        "issue": issue_json(number, repo=repo),
        "comment": comment,
        "repository": repository_json(repo),
        "sender": comment["user"],
        "installation": installation_ref(),
    }


def mock_closing(github: FakeGitHub, number: int) -> tuple[respx.Route, respx.Route]:
    tallied = github.router.post(github.repo(f"/issues/{number}/comments")).respond(
        201, json=comment_json(BOT, "tally", number)
    )
    closed = github.router.patch(github.repo(f"/issues/{number}")).respond(
        json=issue_json(number, state="closed")
    )
    return tallied, closed


def no(count: int = 0, users: list[str] | None = None) -> dict[str, Any]:
    return {"count": count, "users": users or []}


# --- reaction vote ---------------------------------------------------------------------------


async def test_reaction_vote_polls_and_closes_at_max_votes(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    opened = github.router.post(github.repo("/issues")).respond(201, json=issue_json(5))
    reactions = github.router.get(github.repo("/issues/5/reactions"))
    tallied, closed = mock_closing(github, 5)

    vote = await start(
        gateway,
        driver,
        "issue-react-vote",
        question="Adopt the new code of conduct?",
        help_text="The draft is in #4.",
        max_votes=3,
    )

    assert vote["url"] == f"https://github.test/{OWNER}/{REPO}/issues/5"
    sent = json_body(opened)
    assert sent["title"] == "Adopt the new code of conduct?"
    assert sent["body"].startswith("The draft is in #4.")
    assert "👍" in sent["body"] and "👎" in sent["body"] and "after 3 votes" in sent["body"]
    assert vote["outcome"] == {
        "issue_number": 5,
        "url": vote["url"],
        "votes": {"yes": no(), "no": no()},
        "result": "tie",
    }

    # First poll: alice 👍, bob 👎 then 👍 (his latest counts), a bot 👍, a 🎉 that is no vote.
    reactions.respond(
        json=[
            reaction_json(1, ALICE, "+1", "2024-03-01T10:01:00Z"),
            reaction_json(2, BOB, "-1", "2024-03-01T10:02:00Z"),
            reaction_json(3, DEPENDABOT, "+1", "2024-03-01T10:03:00Z"),
            reaction_json(4, BOT, "-1", "2024-03-01T10:03:30Z"),
            reaction_json(5, CAROL, "hooray", "2024-03-01T10:04:00Z"),
            reaction_json(6, BOB, "+1", "2024-03-01T10:05:00Z"),
        ]
    )
    await gateway.drain(now=later(minutes=2))
    assert dict(reactions.calls.last.request.url.params) == {"per_page": "100", "page": "1"}
    assert reactions.calls.last.request.headers["authorization"] == "Bearer ghs_token001"
    assert (await record(gateway, driver, vote))["outcome"]["votes"] == {
        "yes": {"count": 2, "users": ["alice", "bob"]},
        "no": no(),
    }
    assert not tallied.called

    # Second poll: carol 👎 is the third voter, which closes the vote.
    reactions.respond(
        json=[
            reaction_json(1, ALICE, "+1", "2024-03-01T10:01:00Z"),
            reaction_json(6, BOB, "+1", "2024-03-01T10:05:00Z"),
            reaction_json(7, CAROL, "-1", "2024-03-01T10:06:00Z"),
        ]
    )
    await gateway.drain(now=later(minutes=4))

    final = await record(gateway, driver, vote)
    assert final["status"] == "completed"
    assert final["outcome"] == {
        "issue_number": 5,
        "url": vote["url"],
        "votes": {"yes": {"count": 2, "users": ["alice", "bob"]}, "no": no(1, ["carol"])},
        "result": "pass",
    }
    tally = json_body(tallied)["body"]
    assert "| 👍 yes | 2 | alice, bob |" in tally and "| 👎 no | 1 | carol |" in tally
    assert "**Result: pass**" in tally
    assert json_body(closed) == {"state": "closed", "state_reason": "completed"}
    assert [kind for kind, _ in process_events(github, vote)] == [
        "process.updated",
        "process.completed",
    ]


async def test_reaction_vote_closed_by_the_driver(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    github.router.post(github.repo("/issues")).respond(201, json=issue_json(6))
    reactions = github.router.get(github.repo("/issues/6/reactions"))
    tallied, closed = mock_closing(github, 6)
    vote = await start(gateway, driver, "issue-react-vote", question="Rename the project?")

    # A poll GitHub fails is tried again at the next one, without an error on the process.
    reactions.respond(503)
    await gateway.drain(now=later(minutes=2))
    unchanged = await record(gateway, driver, vote)
    assert (unchanged["status"], unchanged["errors"]) == ("pending", [])
    # A poll whose token GitHub rejects gets a new token and polls again at once.
    ballots = [
        reaction_json(1, ALICE, "-1", "2024-03-01T10:01:00Z"),
        reaction_json(2, BOB, "-1", "2024-03-01T10:02:00Z"),
        reaction_json(3, CAROL, "+1", "2024-03-01T10:02:30Z"),
    ]
    reactions.mock(
        side_effect=lambda request: (
            httpx.Response(401, json={"message": "Bad credentials"})
            if request.headers["authorization"] == "Bearer ghs_token001"
            else httpx.Response(200, json=ballots)
        )
    )
    await gateway.drain(now=later(minutes=4))
    assert (await record(gateway, driver, vote))["outcome"]["votes"]["no"]["count"] == 2
    assert github.tokens == ["ghs_token001", "ghs_token002"]

    response = await gateway.client.delete(vote["location"], headers=driver.to("commons"))

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert response.json()["outcome"]["result"] == "fail"
    assert "**Result: fail**" in json_body(tallied)["body"]
    assert closed.called


# --- comment vote ----------------------------------------------------------------------------


async def test_comment_vote_counts_comments_as_they_come_and_closes_at_its_deadline(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    opened = github.router.post(github.repo("/issues")).respond(201, json=issue_json(9))
    closing_at = later(days=1)
    vote = await start(
        gateway,
        driver,
        "issue-comment-vote",
        question="Where do we meet?",
        options=["Town hall", "Online"],
        closing_at=closing_at.isoformat(),
    )
    body = json_body(opened)["body"]
    assert "`/vote Town hall`" in body and "`/vote Online`" in body
    assert vote["outcome"]["votes"] == {"Town hall": no(), "Online": no()}
    assert vote["outcome"]["result"] is None

    alice_first = comment_json(ALICE, "/vote town   HALL\n\nIt's closer.", 9)
    comments = [
        alice_first,
        comment_json(BOB, "I prefer meeting online, honestly.", 9),
        comment_json(BOB, "/vote Online", 9),
        comment_json(ALICE, "/vote Online", 9),  # alice already voted: her first vote counts
        comment_json(DEPENDABOT, "/vote Online", 9),  # bots do not vote
    ]
    carols = comment_json(CAROL, "/vote Online", 9)
    for i, comment in enumerate([*comments, carols]):
        await post_webhook(
            gateway, "issue_comment", comment_webhook("created", comment, 9), f"c{i}"
        )
    await gateway.drain()
    assert (await record(gateway, driver, vote))["outcome"]["votes"] == {
        "Town hall": no(1, ["alice"]),
        "Online": no(2, ["bob", "carol"]),
    }
    await post_webhook(gateway, "issue_comment", comment_webhook("deleted", carols, 9), "c-del")
    await gateway.drain()
    updates = process_events(github, vote)
    assert [kind for kind, _ in updates] == ["process.updated"] * 4  # alice, bob, carol, -carol
    assert updates[-1][1]["votes"]["Online"] == no(1, ["bob"])
    assert updates[-1][1]["result"] is None  # a tie: no option leads

    # GitHub never delivered dave's vote: it is found when the vote closes.
    daves = comment_json(DAVE, "/vote Town hall", 9)
    listed = github.router.get(github.repo("/issues/9/comments")).respond(json=[*comments, daves])
    tallied, closed = mock_closing(github, 9)
    await gateway.drain(now=closing_at + timedelta(minutes=1))

    final = await record(gateway, driver, vote)
    assert final["status"] == "completed"
    assert final["outcome"] == {
        "issue_number": 9,
        "url": f"https://github.test/{OWNER}/{REPO}/issues/9",
        "votes": {"Town hall": no(2, ["alice", "dave"]), "Online": no(1, ["bob"])},
        "result": "Town hall",
    }
    assert dict(listed.calls.last.request.url.params) == {"per_page": "100", "page": "1"}
    tally = json_body(tallied)["body"]
    assert "| Town hall | 2 | alice, dave |" in tally and "**Result: Town hall**" in tally
    assert json_body(closed) == {"state": "closed", "state_reason": "completed"}


async def test_comment_vote_closes_itself_at_max_votes(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    github.router.post(github.repo("/issues")).respond(201, json=issue_json(10))
    vote = await start(
        gateway, driver, "issue-comment-vote", question="Q?", options=["A", "B"], max_votes=2
    )
    first, second = comment_json(ALICE, "/vote B", 10), comment_json(BOB, "/vote b", 10)
    github.router.get(github.repo("/issues/10/comments")).respond(json=[first, second])
    tallied, closed = mock_closing(github, 10)

    await post_webhook(gateway, "issue_comment", comment_webhook("created", first, 10), "m1")
    await gateway.drain()
    assert not closed.called
    await post_webhook(gateway, "issue_comment", comment_webhook("created", second, 10), "m2")
    await gateway.drain()

    final = await record(gateway, driver, vote)
    assert final["status"] == "completed"
    assert final["outcome"]["votes"] == {"A": no(), "B": no(2, ["alice", "bob"])}
    assert final["outcome"]["result"] == "B"
    assert tallied.called and closed.called


async def test_a_webhook_about_one_issue_does_not_touch_votes_on_other_issues(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    github.router.post(github.repo("/issues")).mock(
        side_effect=[
            respx.MockResponse(201, json=issue_json(21)),
            respx.MockResponse(201, json=issue_json(22)),
        ]
    )
    github.router.post(github.repo("/issues", "other-repo")).respond(
        201, json=issue_json(21, repo="other-repo")
    )
    options = {"question": "Q?", "options": ["A", "B"]}
    here = await start(gateway, driver, "issue-comment-vote", **options)
    there = await start(gateway, driver, "issue-comment-vote", **options)
    elsewhere = await start(
        gateway, driver, "issue-comment-vote", **{**options, "repo": "other-repo"}
    )
    assert (here["outcome"]["issue_number"], there["outcome"]["issue_number"]) == (21, 22)

    ballot = comment_json(ALICE, "/vote A", 22)
    await post_webhook(gateway, "issue_comment", comment_webhook("created", ballot, 22), "x1")
    await gateway.drain()

    assert (await record(gateway, driver, there))["outcome"]["votes"]["A"] == no(1, ["alice"])
    for untouched in (here, elsewhere):
        assert (await record(gateway, driver, untouched))["outcome"]["votes"]["A"] == no()
        assert process_events(github, untouched) == []
    assert [kind for kind, _ in process_events(github, there)] == ["process.updated"]


async def test_a_vote_ends_when_someone_closes_its_issue_on_github(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    github.router.post(github.repo("/issues")).respond(201, json=issue_json(30))
    github.router.get(github.repo("/issues/30/reactions")).respond(
        json=[reaction_json(1, ALICE, "+1", "2024-03-01T10:01:00Z")]
    )
    tallied, closed = mock_closing(github, 30)
    vote = await start(gateway, driver, "issue-react-vote", question="Ship it?")

    closed_by_hand = {
        "action": "closed",
        "issue": issue_json(30, state="closed"),
        "repository": repository_json(),
        "sender": BOB,
        "installation": installation_ref(),
    }
    await post_webhook(gateway, "issues", closed_by_hand, "closed-30")
    await gateway.drain()

    final = await record(gateway, driver, vote)
    assert final["status"] == "completed"
    assert final["outcome"]["result"] == "pass"
    assert "**Result: pass**" in json_body(tallied)["body"]
    assert not closed.called  # already closed: the tally is only commented
