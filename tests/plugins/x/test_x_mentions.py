"""The periodic read of mentions (and, when asked, the home timeline): what X is asked, the
``mention`` and ``timeline_tweet`` events the Driver receives, the last seen id kept between runs,
and the pause when X rate limits."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from metagov.plugins.sdk import PluginContext, State
from metagov.plugins.x import XPlugin
from metagov.plugins.x.schemas import XConfig
from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.x.conftest import ACCESS, ACCOUNT, API, CONFIG, delivered, enable, x_settings

MENTIONS = f"{API}/2/users/{ACCOUNT['id']}/mentions"
HOME = f"{API}/2/users/{ACCOUNT['id']}/timelines/reverse_chronological"
ANA = {"id": "1234567890", "name": "Ana", "username": "ana_votes"}
BO = {"id": "1357924680", "name": "Bo", "username": "bo"}


def post(post_id: str, author: dict[str, str], text: str) -> dict[str, Any]:
    return {
        "id": post_id,
        "text": text,
        "author_id": author["id"],
        "created_at": "2026-11-30T10:30:00.000Z",
        "conversation_id": post_id,
        "edit_history_tweet_ids": [post_id],
    }


def page(posts: list[dict[str, Any]], users: list[dict[str, str]], **meta: Any) -> httpx.Response:
    if not posts:
        return httpx.Response(200, json={"meta": {"result_count": 0}})
    ids = sorted((p["id"] for p in posts), key=int)
    return httpx.Response(
        200,
        json={
            "data": posts,
            "includes": {"users": users},
            "meta": {
                "newest_id": ids[-1],
                "oldest_id": ids[0],
                "result_count": len(posts),
                **meta,
            },
        },
    )


async def test_new_mentions_reach_the_driver_as_events(
    gw: TestGateway, driver: DriverCredentials, events: respx.Route, respx_mock: respx.MockRouter
) -> None:
    await enable(gw, driver)
    mentions = respx_mock.get(MENTIONS).mock(
        return_value=page(
            [
                post("1301573587187331075", BO, "@TwitterDev seconded"),
                post("1301573587187331074", ANA, "Hey @TwitterDev, I propose a vote"),
            ],
            [ANA, BO],
        )
    )

    await gw.drain()

    request = mentions.calls.last.request
    assert request.headers["authorization"] == f"Bearer {ACCESS}"
    params = dict(request.url.params)
    assert params["max_results"] == "100"
    assert params["expansions"] == "author_id"
    assert "author_id" in params["tweet.fields"].split(",")
    assert params["start_time"].endswith("Z")  # from when the account was connected
    assert "since_id" not in params
    received = delivered(events)
    assert [(e["source"], e["event_type"]) for e in received] == [("x", "mention")] * 2
    first = received[0]
    assert first["data"] == {
        "id": "1301573587187331074",
        "text": "Hey @TwitterDev, I propose a vote",
        "url": "https://x.com/ana_votes/status/1301573587187331074",
        "author_id": ANA["id"],
        "author_username": "ana_votes",
        "author_name": "Ana",
        "created_at": "2026-11-30T10:30:00.000Z",
        "conversation_id": "1301573587187331074",
        "in_reply_to_user_id": None,
    }
    assert first["initiator"] == {
        "user_id": ANA["id"],
        "provider": "x",
        "is_metagov_bot": False,
        "username": "ana_votes",
    }
    assert received[1]["data"]["author_username"] == "bo"
    assert ACCESS not in str(received)


# --- runs after the first, called directly with a hand-built context ----------------------------


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def context(http: httpx.AsyncClient, state: dict[str, Any], **config: Any) -> PluginContext[Any]:
    return PluginContext(
        community="commons",
        plugin_name="x",
        instance_id=1,
        community_platform_id=ACCOUNT["id"],
        config=XConfig.model_validate({**CONFIG, **config}),
        state=State(state),
        http=http,
        log=logging.LoggerAdapter(logging.getLogger("test"), {}),
        settings=x_settings(),
    )


async def test_later_runs_read_since_the_last_seen_id_across_pages(
    http: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(MENTIONS)
    route.side_effect = [
        page([post("205", ANA, "newest"), post("204", BO, "newer")], [ANA, BO], next_token="p2"),
        page([post("203", ANA, "oldest")], [ANA]),
    ]
    ctx = context(http, {"mentions_since_id": "200", "watch_since": "2026-11-30T09:00:00Z"})

    await XPlugin().read_timelines(ctx)

    first, second = (dict(call.request.url.params) for call in route.calls)
    assert first["since_id"] == "200"
    assert "start_time" not in first
    assert "pagination_token" not in first
    assert second["since_id"] == "200"
    assert second["pagination_token"] == "p2"
    assert [(e.event_type, e.data["id"]) for e in ctx.emitted] == [
        ("mention", "203"),
        ("mention", "204"),
        ("mention", "205"),
    ]
    assert ctx.state.get("mentions_since_id") == "205"
    assert "watch_since" not in ctx.state

    route.side_effect = [page([], [])]
    quiet = context(http, ctx.state.to_dict())
    await XPlugin().read_timelines(quiet)
    assert dict(route.calls.last.request.url.params)["since_id"] == "205"
    assert quiet.emitted == []
    assert quiet.state.get("mentions_since_id") == "205"


async def test_rate_limits_pause_the_reads_until_xs_reset(
    http: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    reset = int(time.time()) + 600
    route = respx_mock.get(MENTIONS).respond(
        429,
        headers={"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)},
        json={"title": "Too Many Requests", "detail": "Too Many Requests", "status": 429},
    )
    ctx = context(http, {"mentions_since_id": "200"})

    await XPlugin().read_timelines(ctx)  # no error: the next runs wait

    assert ctx.emitted == []
    assert ctx.state.get("mentions_since_id") == "200"
    assert reset - 5 <= ctx.state.get("paused_until") <= reset + 1
    paused = context(http, ctx.state.to_dict())
    await XPlugin().read_timelines(paused)
    assert route.call_count == 1


async def test_the_home_timeline_becomes_timeline_tweet_events_when_allowed(
    http: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(MENTIONS).mock(return_value=page([post("301", ANA, "@TwitterDev hi")], [ANA]))
    home = respx_mock.get(HOME).mock(return_value=page([post("302", BO, "lunch?")], [BO]))
    ctx = context(http, {"mentions_since_id": "300", "home_since_id": "290"}, home_timeline=True)

    await XPlugin().read_timelines(ctx)

    assert dict(home.calls.last.request.url.params)["since_id"] == "290"
    assert [(e.event_type, e.data["id"]) for e in ctx.emitted] == [
        ("mention", "301"),
        ("timeline_tweet", "302"),
    ]
    assert ctx.state.get("home_since_id") == "302"

    home.mock(
        return_value=httpx.Response(
            403,
            json={
                "title": "Client Forbidden",
                "detail": "When authenticating requests to the Twitter API v2 endpoints, you "
                "must use keys and tokens from a Twitter developer App that is attached to a "
                "Project. You can create a project via the developer portal.",
                "reason": "client-not-enrolled",
                "type": "https://api.twitter.com/2/problems/client-forbidden",
            },
        )
    )
    refused = context(http, ctx.state.to_dict(), home_timeline=True)
    await XPlugin().read_timelines(refused)
    assert [e.event_type for e in refused.emitted] == ["mention"]  # mentions still flow
    assert refused.state.get("home_timeline_unavailable_until") > time.time() + 3600
    later = context(http, refused.state.to_dict(), home_timeline=True)
    await XPlugin().read_timelines(later)
    assert home.call_count == 2  # not asked again for a day


async def test_a_failed_read_records_nothing(
    http: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(MENTIONS).mock(side_effect=httpx.ConnectError("down"))
    ctx = context(http, {"mentions_since_id": "200"})
    with pytest.raises(Exception, match="X could not be reached"):
        await XPlugin().read_timelines(ctx)
    assert ctx.emitted == []
    assert ctx.state.get("mentions_since_id") == "200"
