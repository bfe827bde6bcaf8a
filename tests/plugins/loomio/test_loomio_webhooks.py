"""Loomio's unsigned webhooks: refused without the URL token, stored once, and only a hint: the
poll or thread they name is read again from Loomio before the Driver hears of it."""

from __future__ import annotations

from typing import Any

import pytest
import respx

from metagov.testing import TestGateway
from tests.plugins.loomio.conftest import (
    GROUP,
    LOOMIO,
    MAIN_KEY,
    SUB_KEY,
    FakeLoomio,
    chat_message,
    discussion_answer,
    events,
    legacy_message,
    poll_record,
    post_hook,
)

POLL_URL = f"{LOOMIO}/p/m20ZprvH/adopt-the-budget"


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789"])
async def test_a_webhook_without_the_token_is_refused_and_not_kept(
    gateway: TestGateway,
    enabled: dict[str, Any],
    loomio: FakeLoomio,
    driver_events: respx.Route,
    token: str | None,
) -> None:
    loomio.polls["m20ZprvH"] = poll_record()
    response = await post_hook(gateway, legacy_message("poll_created", POLL_URL), token=token)

    assert response.status_code == 401
    assert response.json()["code"] == "webhook_rejected"
    assert await gateway.drain() == 0
    assert not driver_events.called
    assert not loomio.poll_reads.called


async def test_a_vote_reaches_the_driver_once_with_the_poll_read_from_loomio(
    gateway: TestGateway, enabled: dict[str, Any], loomio: FakeLoomio, driver_events: respx.Route
) -> None:
    loomio.polls["m20ZprvH"] = poll_record(
        voters={"agree": [879750], "abstain": [], "disagree": []}
    )
    body = legacy_message("stance_created", POLL_URL)
    body["title"] = "Forged title"  # the body is not trusted; Loomio's answer is

    first = await post_hook(gateway, body)
    again = await post_hook(gateway, body)  # Loomio retried
    assert first.status_code == again.status_code == 200
    await gateway.drain()

    [event] = events(driver_events)
    assert event["source"] == "loomio"
    assert event["event_type"] == "stance_created"
    poll = event["data"]["poll"]
    assert poll["title"] == "Adopt the budget"
    assert poll["url"] == f"{LOOMIO}/p/m20ZprvH"
    assert poll["votes"]["agree"] == {"count": 1, "users": ["879750"], "score": 1}
    assert poll["voters_count"] == 3
    assert poll["undecided_voters_count"] == 2
    [read] = loomio.poll_reads.calls
    assert read.request.url.path == "/api/b1/polls/m20ZprvH"
    assert read.request.url.params["api_key"] == MAIN_KEY


KINDS_FROM_STATE: list[tuple[str, dict[str, Any], str]] = [
    ("NewP0ll1", {}, "poll_created"),
    ("V0tedP01", {"voters": {"agree": [879750], "disagree": []}}, "stance_created"),
    (
        "Cl0sedP1",
        {"closed_at": "2030-09-01T10:00:00.000Z", "closing_at": "2030-10-01T00:00:00.000Z"},
        "poll_closed_by_user",
    ),
    (
        "Exp1redP",
        {"closed_at": "2030-10-01T00:00:03.120Z", "closing_at": "2030-10-01T00:00:00.000Z"},
        "poll_expired",
    ),
    (
        "0utc0meP",
        {"closed_at": "2030-10-01T00:00:03.120Z", "current_outcome_id": 7001},
        "outcome_created",
    ),
]


async def test_without_a_kind_the_kind_is_told_from_the_poll(
    gateway: TestGateway, enabled: dict[str, Any], loomio: FakeLoomio, driver_events: respx.Route
) -> None:
    for number, (key, poll, _) in enumerate(KINDS_FROM_STATE):
        loomio.polls[key] = poll_record(id=300 + number, key=key, **poll)
        url = f"{LOOMIO}/p/{key}/adopt-the-budget"
        text = f"Ana Lima: [Adopt the budget]({url})\n**[Adopt the budget]({url})**\n\nDetails"
        assert (await post_hook(gateway, chat_message(text))).status_code == 200
    await gateway.drain()

    received = events(driver_events)
    assert [(e["data"]["poll"]["key"], e["event_type"]) for e in received] == [
        (key, kind) for key, _, kind in KINDS_FROM_STATE
    ]
    assert all(e["data"]["kind"] == e["event_type"] for e in received)
    assert received[0]["initiator"] == {
        "user_id": "4759171",
        "provider": "loomio",
        "is_metagov_bot": False,
    }
    assert received[1]["initiator"] is None  # Loomio's answer does not say who voted


async def test_a_subgroup_poll_is_read_with_the_subgroup_key(
    gateway: TestGateway, enabled: dict[str, Any], loomio: FakeLoomio, driver_events: respx.Route
) -> None:
    loomio.polls["SubP0ll1"] = poll_record(id=234300, key="SubP0ll1", group_id=710496)
    await post_hook(gateway, legacy_message("poll_created", f"{LOOMIO}/p/SubP0ll1/x"))
    await gateway.drain()

    [event] = events(driver_events)
    assert event["data"]["poll"]["group_id"] == 710496
    keys = [call.request.url.params["api_key"] for call in loomio.poll_reads.calls]
    assert keys == [MAIN_KEY, SUB_KEY]  # the main key cannot see it; the subgroup's can


async def test_polls_and_threads_of_other_groups_are_ignored(
    gateway: TestGateway, enabled: dict[str, Any], loomio: FakeLoomio, driver_events: respx.Route
) -> None:
    # A public poll of another group that the key can read: not this community's.
    loomio.poll_answers["PubL1cPo"] = {"polls": [poll_record(key="PubL1cPo", group_id=99)]}
    await post_hook(gateway, legacy_message("poll_created", f"{LOOMIO}/p/PubL1cPo/x"))
    await post_hook(gateway, legacy_message("new_discussion", f"{LOOMIO}/d/NoSuchD1/x"))
    await post_hook(gateway, chat_message("Loomio connection test successful"))
    await gateway.drain()

    assert not driver_events.called
    assert [c.request.url.path for c in loomio.poll_reads.calls] == ["/api/b1/polls/PubL1cPo"]
    assert len(loomio.discussion_reads.calls) == 2  # tried with the main and subgroup keys


async def test_a_new_thread_reaches_the_driver(
    gateway: TestGateway, enabled: dict[str, Any], loomio: FakeLoomio, driver_events: respx.Route
) -> None:
    loomio.discussions["dK3y9Abc"] = discussion_answer()
    text = f"Ana Lima started a new thread: [Next quarter's budget]({LOOMIO}/d/dK3y9Abc/next)"
    await post_hook(gateway, chat_message(text))
    comment = f"Ana Lima commented in [Next quarter's budget]({LOOMIO}/d/dK3y9Abc/comment/881)"
    await post_hook(gateway, chat_message(comment))
    await gateway.drain()

    started, commented = events(driver_events)
    assert started["event_type"] == "new_discussion"
    assert started["data"]["discussion"] == {
        "id": 55501,
        "key": "dK3y9Abc",
        "title": "Next quarter's budget",
        "url": f"{LOOMIO}/d/dK3y9Abc",
        "group_id": GROUP["id"],
        "author_id": 879750,
        "created_at": "2021-09-28T18:00:00.000Z",
    }
    assert started["initiator"]["user_id"] == "879750"
    assert commented["event_type"] == "new_comment"
    assert commented["data"]["comment_id"] == 881


async def test_the_older_poll_shape_is_counted_from_voter_scores(
    gateway: TestGateway, enabled: dict[str, Any], loomio: FakeLoomio, driver_events: respx.Route
) -> None:
    # Abridged from a real /api/b1/polls/:key answer of 2021 (no `results` yet).
    poll = {
        "id": 234203,
        "key": "m20ZprvH",
        "poll_type": "proposal",
        "title": "Expense 'test'",
        "group_id": 710495,
        "author_id": 4759171,
        "closed_at": "2021-09-28T18:50:14.603Z",
        "closing_at": "2021-10-01T00:00:00.000Z",
        "cast_stances_pct": 50,
        "decided_voters_count": 1,
        "undecided_voters_count": 1,
        "voters_count": 2,
        "current_outcome_id": None,
        "poll_option_names": ["disagree", "agree"],
        "stance_counts": [1, 0],
    }
    options = [
        {"name": "disagree", "id": 940810, "poll_id": 234203, "priority": 1, "voter_scores": {}},
        {
            "name": "agree",
            "id": 940809,
            "poll_id": 234203,
            "priority": 0,
            "voter_scores": {"879750": 1},
            "total_score": 1,
        },
    ]
    loomio.poll_answers["m20ZprvH"] = {
        "polls": [poll],
        "poll_options": options,
        "outcomes": [],
        "stances": [],
    }
    await post_hook(gateway, legacy_message("poll_closed_by_user", POLL_URL))
    await gateway.drain()

    [event] = events(driver_events)
    assert event["event_type"] == "poll_closed_by_user"
    assert event["data"]["poll"]["votes"] == {
        "agree": {"count": 1, "users": ["879750"], "score": 1},
        "disagree": {"count": 0, "users": [], "score": None},
    }
    assert event["data"]["poll"]["cast_stances_pct"] == 50
