"""``twitter``, the original plugin's name: its actions (send-tweet, send-dm, get-user-id) reach
X exactly as the ``x`` plugin's do, with the same gate, install, credentials and errors."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import respx

from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.x.conftest import (
    ACCESS,
    ACCOUNT,
    API,
    BASE,
    DONE,
    act,
    enable,
    granted,
    problem,
)

DEVS = {"id": "2244994945", "name": "Developers", "username": "XDevelopers"}


async def test_the_original_actions_call_x(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    instance = await enable(gw, driver, "twitter")
    assert instance["name"] == "twitter"
    tweets = respx_mock.post(f"{API}/2/tweets").respond(
        201, json={"data": {"id": "1445880548472328192", "text": "Passed."}}
    )
    dm = respx_mock.post(f"{API}/2/dm_conversations/with/1346889436626259968/messages").respond(
        201, json={"data": {"dm_conversation_id": "c-1", "dm_event_id": "e-1"}}
    )
    respx_mock.get(f"{API}/2/users/by/username/XDevelopers").respond(200, json={"data": DEVS})

    gated = await act(gw, driver, "twitter.send-tweet", text="Passed.")
    assert gated.status_code == 400
    assert gated.json()["code"] == "posting_disabled"
    await gw.client.put(
        f"/api/internal/plugin/twitter/{instance['id']}",
        json={"user_id": ACCOUNT["id"], "username": ACCOUNT["username"], "allow_posting": True},
        headers=driver.to("commons"),
    )
    tweeted = await act(gw, driver, "twitter.send-tweet", text="Passed.")
    assert tweeted.json() == {
        "id": "1445880548472328192",
        "text": "Passed.",
        "url": "https://x.com/TwitterDev/status/1445880548472328192",
    }
    assert json.loads(tweets.calls.last.request.content) == {"text": "Passed."}
    assert tweets.calls.last.request.headers["authorization"] == f"Bearer {ACCESS}"

    sent = await act(
        gw, driver, "twitter.send-dm", user_id="1346889436626259968", text="Vote today"
    )
    assert sent.json() == {"dm_conversation_id": "c-1", "dm_event_id": "e-1"}
    assert json.loads(dm.calls.last.request.content) == {"text": "Vote today"}

    by_screen_name = await act(gw, driver, "twitter.get-user-id", screen_name="XDevelopers")
    by_username = await act(gw, driver, "twitter.get-user-id", username="XDevelopers")
    assert by_screen_name.json() == by_username.json() == {"user_id": "2244994945"}

    x_names = await act(gw, driver, "twitter.post", text="Passed.")
    assert x_names.status_code == 404  # only the original names are served under twitter


async def test_the_original_actions_fail_like_xs(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    await enable(gw, driver, "twitter", allow_posting=True)
    token = respx_mock.post(f"{API}/2/oauth2/token").mock(return_value=granted("AT2", "RT2"))
    calls = [
        (respx_mock.post(f"{API}/2/tweets"), "twitter.send-tweet", {"text": "hi"}),
        (
            respx_mock.post(f"{API}/2/dm_conversations/with/42/messages"),
            "twitter.send-dm",
            {"user_id": "42", "text": "hi"},
        ),
        (
            respx_mock.get(f"{API}/2/users/by/username/XDevelopers"),
            "twitter.get-user-id",
            {"screen_name": "XDevelopers"},
        ),
    ]
    reset = int(time.time()) + 60
    for route, name, parameters in calls:
        route.mock(return_value=problem(401, "Unauthorized", "Unauthorized"))
        rejected = await act(gw, driver, name, **parameters)
        assert rejected.status_code == 400, (name, rejected.text)
        assert rejected.json()["code"] == "x_unauthorized"

        route.mock(
            return_value=httpx.Response(
                429, headers={"x-rate-limit-reset": str(reset)}, json={"title": "Too Many"}
            )
        )
        limited = await act(gw, driver, name, **parameters)
        assert limited.status_code == 429, (name, limited.text)
        assert 55 <= int(limited.headers["retry-after"]) <= 60

        route.mock(side_effect=httpx.ConnectError("down"))
        down = await act(gw, driver, name, **parameters)
        assert down.status_code == 502, (name, down.text)
        for answer in (rejected, limited, down):
            assert ACCESS not in answer.text and "AT2" not in answer.text
    assert token.call_count == 3  # one renewal per rejected call


async def test_it_installs_through_its_own_oauth_routes(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    started = await gw.start_install(driver, "twitter", "commons", redirect_uri=DONE, state="s")
    assert started.status_code == 302
    sent = {k: v[0] for k, v in parse_qs(urlsplit(started.headers["location"]).query).items()}
    assert sent["redirect_uri"] == f"{BASE}/auth/twitter/callback"
    respx_mock.post(f"{API}/2/oauth2/token").mock(return_value=granted(ACCESS, "RT"))
    respx_mock.get(f"{API}/2/users/me").respond(200, json={"data": ACCOUNT})
    done = await gw.client.get(
        f"/auth/twitter/callback?{urlencode({'state': sent['state'], 'code': 'c'})}"
    )
    assert done.headers["location"] == f"{DONE}?community=commons&state=s"
    community = await gw.client.get("/api/internal/community/commons", headers=driver.headers)
    assert [(p["name"], p["community_platform_id"]) for p in community.json()["plugins"]] == [
        ("twitter", ACCOUNT["id"])
    ]


async def test_its_mentions_are_events_of_the_twitter_source(
    gw: TestGateway,
    driver: DriverCredentials,
    events: respx.Route,
    respx_mock: respx.MockRouter,
) -> None:
    await enable(gw, driver, "twitter")
    respx_mock.get(f"{API}/2/users/{ACCOUNT['id']}/mentions").respond(
        200,
        json={
            "data": [{"id": "77", "text": "@TwitterDev hi", "author_id": "5"}],
            "includes": {"users": [{"id": "5", "name": "Cy", "username": "cy"}]},
            "meta": {"newest_id": "77", "oldest_id": "77", "result_count": 1},
        },
    )
    await gw.drain()
    [event] = [json.loads(call.request.content) for call in events.calls]
    assert (event["source"], event["event_type"]) == ("twitter", "mention")
    assert event["initiator"]["provider"] == "twitter"
    assert event["data"]["url"] == "https://x.com/cy/status/77"
