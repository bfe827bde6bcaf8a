"""X's actions against a mocked X API v2: what X receives for post (only when allowed), send-dm
and get-user; X's refusals named; a rejected token renewed once and the call retried; rate
limits with X's reset time; outages; tokens never shown."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs

import httpx
import respx

from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.x.conftest import (
    ACCESS,
    ACCOUNT,
    API,
    REFRESH,
    act,
    enable,
    granted,
    problem,
)

DEVS = {"id": "2244994945", "name": "Developers", "username": "XDevelopers"}


async def test_posting_is_refused_until_the_community_allows_it(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    instance = await enable(gw, driver)
    tweets = respx_mock.post(f"{API}/2/tweets").respond(
        201,
        json={
            "data": {
                "id": "1445880548472328192",
                "text": "The proposal passed.",
                "edit_history_tweet_ids": ["1445880548472328192"],
            }
        },
    )
    refused = await act(gw, driver, "x.post", text="The proposal passed.")
    assert refused.status_code == 400
    assert refused.json()["code"] == "posting_disabled"
    assert not tweets.called

    allowed = await gw.client.put(
        f"/api/internal/plugin/x/{instance['id']}",
        json={"user_id": ACCOUNT["id"], "username": ACCOUNT["username"], "allow_posting": True},
        headers=driver.to("commons"),
    )
    assert allowed.status_code == 200, allowed.text
    posted = await act(
        gw, driver, "x.post", text="The proposal passed.", reply_to="1445880548472320000"
    )

    assert posted.status_code == 200, posted.text
    assert posted.json() == {
        "id": "1445880548472328192",
        "text": "The proposal passed.",
        "url": "https://x.com/TwitterDev/status/1445880548472328192",
    }
    request = tweets.calls.last.request
    assert request.headers["authorization"] == f"Bearer {ACCESS}"
    assert json.loads(request.content) == {
        "text": "The proposal passed.",
        "reply": {"in_reply_to_tweet_id": "1445880548472320000"},
    }


async def test_send_dm_by_id_or_by_username(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    await enable(gw, driver)
    dm = respx_mock.post(url__regex=rf"{API}/2/dm_conversations/with/\d+/messages").respond(
        201,
        json={
            "data": {
                "dm_conversation_id": "1346889436626259968-2244994945",
                "dm_event_id": "1580705921830768647",
            }
        },
    )
    lookup = respx_mock.get(f"{API}/2/users/by/username/XDevelopers").respond(
        200, json={"data": DEVS}
    )

    by_id = await act(gw, driver, "x.send-dm", user_id="1346889436626259968", text="Vote today")
    by_name = await act(gw, driver, "x.send-dm", username="XDevelopers", text="Vote today")

    assert by_id.status_code == by_name.status_code == 200, by_id.text
    assert by_id.json() == {
        "dm_conversation_id": "1346889436626259968-2244994945",
        "dm_event_id": "1580705921830768647",
    }
    first, second = dm.calls
    assert first.request.url.path == "/2/dm_conversations/with/1346889436626259968/messages"
    assert json.loads(first.request.content) == {"text": "Vote today"}
    assert second.request.url.path == "/2/dm_conversations/with/2244994945/messages"
    assert lookup.call_count == 1
    both = await act(gw, driver, "x.send-dm", user_id="1", username="a", text="x")
    assert both.status_code == 422


async def test_get_user_and_a_username_x_does_not_know(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    await enable(gw, driver)
    respx_mock.get(f"{API}/2/users/by/username/XDevelopers").respond(200, json={"data": DEVS})
    respx_mock.get(f"{API}/2/users/by/username/nobody_here").respond(
        200,
        json={
            "errors": [
                {
                    "value": "nobody_here",
                    "detail": "Could not find user with username: [nobody_here].",
                    "title": "Not Found Error",
                    "resource_type": "user",
                    "parameter": "username",
                    "resource_id": "nobody_here",
                    "type": "https://api.twitter.com/2/problems/resource-not-found",
                }
            ]
        },
    )
    found = await act(gw, driver, "x.get-user", username="XDevelopers")
    assert found.status_code == 200
    assert found.json() == DEVS
    missing = await act(gw, driver, "x.get-user", username="nobody_here")
    assert missing.status_code == 404
    assert missing.json() == {
        "detail": "Could not find user with username: [nobody_here].",
        "code": "x_not_found",
    }
    bad = await act(gw, driver, "x.get-user", username="no/slashes")
    assert bad.status_code == 422


async def test_a_rejected_token_is_renewed_once_and_the_call_retried(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    await enable(gw, driver)
    token = respx_mock.post(f"{API}/2/oauth2/token").mock(return_value=granted("AT2", "RT2"))
    lookup = respx_mock.get(f"{API}/2/users/by/username/XDevelopers")
    lookup.side_effect = [
        problem(401, "Unauthorized", "Unauthorized"),
        httpx.Response(200, json={"data": DEVS}),
        httpx.Response(200, json={"data": DEVS}),
    ]

    first = await act(gw, driver, "x.get-user", username="XDevelopers")
    again = await act(gw, driver, "x.get-user", username="XDevelopers")

    assert first.status_code == again.status_code == 200, first.text
    assert token.call_count == 1
    assert {k: v[0] for k, v in parse_qs(token.calls[0].request.content.decode()).items()} == {
        "grant_type": "refresh_token",
        "refresh_token": REFRESH,
        "client_id": "M1M5R3BMVy13QmpScXkzTUt5OE46MTpjaQ",
    }
    assert [c.request.headers["authorization"] for c in lookup.calls] == [
        f"Bearer {ACCESS}",
        "Bearer AT2",
        "Bearer AT2",  # the renewed token was saved
    ]


async def test_bad_credentials_are_named_and_never_shown(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    await enable(gw, driver, allow_posting=True)
    token = respx_mock.post(f"{API}/2/oauth2/token").mock(return_value=granted("AT2", "RT2"))
    respx_mock.post(f"{API}/2/tweets").mock(
        return_value=problem(401, "Unauthorized", "Unauthorized")
    )
    rejected = await act(gw, driver, "x.post", text="hello")
    assert rejected.status_code == 400
    assert rejected.json() == {
        "detail": "X refused the access token: Unauthorized",
        "code": "x_unauthorized",
    }
    assert token.call_count == 1

    token.mock(
        return_value=httpx.Response(
            400,
            json={
                "error": "invalid_request",
                "error_description": "Value passed for the token was invalid.",
            },
        )
    )
    dead = await act(gw, driver, "x.post", text="hello")
    assert dead.status_code == 400
    assert dead.json()["code"] == "x_reauthorize"
    assert "Value passed for the token was invalid." in dead.json()["detail"]
    for answer in (rejected, dead):
        for secret in (ACCESS, REFRESH, "AT2", "RT2"):
            assert secret not in answer.text


async def test_x_refusals_rate_limits_and_outages(
    gw: TestGateway, driver: DriverCredentials, respx_mock: respx.MockRouter
) -> None:
    await enable(gw, driver, allow_posting=True)
    tweets = respx_mock.post(f"{API}/2/tweets")
    dm = respx_mock.post(f"{API}/2/dm_conversations/with/42/messages")
    lookup = respx_mock.get(f"{API}/2/users/by/username/XDevelopers")
    calls = [
        (tweets, "x.post", {"text": "hello"}),
        (dm, "x.send-dm", {"user_id": "42", "text": "hello"}),
        (lookup, "x.get-user", {"username": "XDevelopers"}),
    ]
    token = respx_mock.post(f"{API}/2/oauth2/token").mock(return_value=granted("AT2", "RT2"))
    for route, name, parameters in calls:
        route.mock(return_value=problem(401, "Unauthorized", "Unauthorized"))
        rejected = await act(gw, driver, name, **parameters)
        assert rejected.status_code == 400, (name, rejected.text)
        assert rejected.json()["detail"] == "X refused the access token: Unauthorized"

        route.mock(
            return_value=problem(
                403, "Forbidden", "You are not allowed to create a Tweet with duplicate content."
            )
        )
        forbidden = await act(gw, driver, name, **parameters)
        assert forbidden.status_code == 400, (name, forbidden.text)
        assert forbidden.json()["code"] == "x_error"
        assert "duplicate content" in forbidden.json()["detail"]

        reset = int(time.time()) + 300  # X's reset: a moment, not a delay
        route.mock(
            return_value=httpx.Response(
                429,
                headers={
                    "x-rate-limit-limit": "200",
                    "x-rate-limit-remaining": "0",
                    "x-rate-limit-reset": str(reset),
                },
                json={
                    "title": "Too Many Requests",
                    "detail": "Too Many Requests",
                    "type": "about:blank",
                    "status": 429,
                },
            )
        )
        limited = await act(gw, driver, name, **parameters)
        assert limited.status_code == 429, (name, limited.text)
        assert 295 <= int(limited.headers["retry-after"]) <= 300

        route.mock(side_effect=httpx.ConnectTimeout("slow"))
        down = await act(gw, driver, name, **parameters)
        assert down.status_code == 502, (name, down.text)
        assert down.json()["detail"] == "X could not be reached: ConnectTimeout"

        route.mock(return_value=httpx.Response(503, text="Service Unavailable"))
        failing = await act(gw, driver, name, **parameters)
        assert failing.status_code == 502, (name, failing.text)
    assert token.call_count == len(calls)  # one renewal per rejected call
