"""The forum actions, checked by what Discourse receives, and Discourse's errors as the Driver
sees them."""

from __future__ import annotations

import json
from typing import Any

import httpx
import respx

from tests.plugins.discourse.conftest import API_KEY, FORUM, Forum, Setup

CREATED = {
    "id": 20,
    "name": "system",
    "username": "system",
    "avatar_template": "/images/discourse-logo-sketch-small.png",
    "created_at": "2024-05-01T13:04:21.432Z",
    "cooked": "<p>Welcome to the governance category.</p>",
    "post_number": 1,
    "post_type": 1,
    "updated_at": "2024-05-01T13:04:21.432Z",
    "reply_count": 0,
    "reply_to_post_number": None,
    "quote_count": 0,
    "incoming_link_count": 0,
    "reads": 0,
    "score": 0,
    "yours": True,
    "topic_id": 17,
    "topic_slug": "governance-rules",
    "display_username": "system",
    "primary_group_name": None,
    "version": 1,
    "can_edit": True,
    "can_delete": False,
    "can_recover": True,
    "can_wiki": True,
    "user_title": None,
    "actions_summary": [],
    "moderator": True,
    "admin": True,
    "staff": True,
    "user_id": -1,
    "draft_sequence": 0,
    "hidden": False,
    "trust_level": 4,
    "deleted_at": None,
    "user_deleted": False,
    "edit_reason": None,
    "can_view_edit_history": True,
    "wiki": False,
}


async def act(setup: Setup, slug: str, parameters: dict[str, Any]) -> httpx.Response:
    return await setup.gw.client.post(
        f"/api/internal/action/discourse.{slug}",
        json={"parameters": parameters},
        headers=setup.headers,
    )


async def test_posts_topics_and_messages_are_created_as_the_api_user(
    setup: Setup, forum: Forum, respx_mock: respx.MockRouter
) -> None:
    posts = respx_mock.post(f"{FORUM}/posts.json").respond(json=CREATED)
    expected = {"url": f"{FORUM}/t/governance-rules/17/1", "topic_id": 17, "post_id": 20}

    topic = await act(
        setup,
        "create-topic",
        {"title": "Governance rules", "raw": "Welcome.", "category": 4, "tags": ["rules"]},
    )
    post = await act(setup, "create-post", {"topic_id": 17, "raw": "A reply."})
    message = await act(
        setup,
        "create-message",
        {"title": "Hello", "raw": "Hi both", "target_usernames": ["alice", "bob"]},
    )
    reply = await act(
        setup, "create-message", {"topic_id": 17, "raw": "Hi again", "target_usernames": ["alice"]}
    )

    for response in (topic, post, message, reply):
        assert response.status_code == 200, response.text
        assert response.json() == expected
    bodies = [json.loads(call.request.content) for call in posts.calls]
    assert bodies == [
        {"raw": "Welcome.", "title": "Governance rules", "category": 4, "tags": ["rules"]},
        {"raw": "A reply.", "topic_id": 17},
        {
            "title": "Hello",
            "raw": "Hi both",
            "target_recipients": "alice,bob",
            "archetype": "private_message",
        },
        {"raw": "Hi again", "topic_id": 17},
    ]
    sent = posts.calls.last.request
    assert (sent.headers["api-key"], sent.headers["api-username"]) == (API_KEY, "system")


async def test_moderation_actions_reach_their_routes(
    setup: Setup, forum: Forum, respx_mock: respx.MockRouter
) -> None:
    routes = {
        "delete-post": respx_mock.delete(f"{FORUM}/posts/5.json").respond(200),
        "delete-topic": respx_mock.delete(f"{FORUM}/t/6.json").respond(200),
        "recover-post": respx_mock.put(f"{FORUM}/posts/5/recover.json").respond(200),
        "recover-topic": respx_mock.put(f"{FORUM}/t/6/recover.json").respond(
            200, json={"success": "OK"}
        ),
    }
    for slug, route in routes.items():
        response = await act(setup, slug, {"id": 5 if "post" in slug else 6})
        assert response.status_code == 204, (slug, response.text)
        assert route.call_count == 1, slug

    locked = respx_mock.put(f"{FORUM}/posts/5/locked.json").respond(json={"locked": True})
    response = await act(setup, "lock-post", {"id": 5, "locked": True})
    assert response.json() == {"locked": True}
    assert locked.calls.last.request.content == b"locked=true"


async def test_topics_and_users_are_read(
    setup: Setup, forum: Forum, respx_mock: respx.MockRouter
) -> None:
    topic = {
        "post_stream": {"posts": [], "stream": [20]},
        "timeline_lookup": [[1, 0]],
        "tags": ["rules"],
        "id": 17,
        "title": "Governance rules",
        "fancy_title": "Governance rules",
        "posts_count": 1,
        "created_at": "2024-05-01T13:04:21.432Z",
        "views": 3,
        "reply_count": 0,
        "like_count": 0,
        "last_posted_at": "2024-05-01T13:04:21.432Z",
        "visible": True,
        "closed": False,
        "archived": False,
        "archetype": "regular",
        "slug": "governance-rules",
        "category_id": 4,
        "word_count": 3,
        "deleted_at": None,
        "user_id": -1,
        "details": {
            "can_edit": True,
            "created_by": {"id": -1, "username": "system", "name": "system"},
            "last_poster": {"id": -1, "username": "system", "name": "system"},
        },
    }
    respx_mock.get(f"{FORUM}/t/17.json").respond(json=topic)
    read = await act(setup, "get-topic", {"id": 17})
    assert read.status_code == 200, read.text
    body = read.json()
    assert {k: v for k, v in body.items() if k != "data"} == {
        "id": 17,
        "title": "Governance rules",
        "slug": "governance-rules",
        "url": f"{FORUM}/t/governance-rules/17",
        "category_id": 4,
        "posts_count": 1,
        "closed": False,
        "archived": False,
        "tags": ["rules"],
        "created_by": "system",
    }
    assert body["data"]["post_stream"] == {"posts": [], "stream": [20]}

    respx_mock.get(f"{FORUM}/u/alice.json").respond(
        json={
            "user_badges": [],
            "user": {
                "id": 7,
                "username": "alice",
                "name": "Alice",
                "trust_level": 1,
                "admin": False,
                "moderator": False,
                "user_fields": {"1": "Berlin"},
            },
        }
    )
    user = await act(setup, "get-user", {"username": "alice"})
    assert {k: v for k, v in user.json().items() if k != "data"} == {
        "id": 7,
        "username": "alice",
        "name": "Alice",
        "url": f"{FORUM}/u/alice",
        "admin": False,
        "moderator": False,
        "trust_level": 1,
        "user_fields": {"1": "Berlin"},
    }
    by_id = await act(setup, "get-user", {"id": 7})  # the admin route, mocked by `forum`
    assert by_id.json()["user_fields"] == {"1": "Berlin", "2": "Yes"}
    both = await act(setup, "get-user", {"username": "alice", "id": 7})
    assert both.status_code == 422
    assert "exactly one of username and id" in both.json()["detail"]


async def test_discourse_errors_reach_the_driver_clearly(
    setup: Setup, forum: Forum, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(f"{FORUM}/posts.json")
    cases = [
        (
            httpx.Response(
                422,
                json={
                    "action": "create_post",
                    "errors": ["Title is too short (minimum is 15 characters)"],
                },
            ),
            400,
            "discourse_error",
            "Title is too short (minimum is 15 characters)",
        ),
        (
            httpx.Response(
                403,
                json={
                    "errors": ["You are not permitted to view the requested resource."],
                    "error_type": "invalid_access",
                },
            ),
            400,
            "discourse_error",
            "You are not permitted to view the requested resource.",
        ),
        (
            httpx.Response(
                404,
                json={
                    "errors": ["The requested URL or resource could not be found."],
                    "error_type": "not_found",
                },
            ),
            404,
            "discourse_not_found",
            "could not be found",
        ),
        (
            httpx.Response(
                429,
                headers={"Retry-After": "12"},
                json={
                    "errors": [
                        "You\u2019ve performed this action too many times. "
                        "Please wait 12 seconds before trying again."
                    ],
                    "error_type": "rate_limit",
                    "extras": {"wait_seconds": 12, "time_left": "12 seconds"},
                },
            ),
            429,
            "rate_limited",
            "Please wait 12 seconds",
        ),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), 502, "upstream_error", "502"),
    ]
    for answer, status, code, words in cases:
        route.mock(return_value=answer)
        response = await act(setup, "create-topic", {"title": "Short", "raw": "Body text here"})
        assert response.status_code == status, response.text
        assert response.json()["code"] == code
        assert words in response.json()["detail"]
        assert API_KEY not in response.text
        if status == 429:
            assert response.headers["retry-after"] == "12"

    route.mock(side_effect=httpx.ConnectTimeout("timed out"))
    response = await act(setup, "create-topic", {"title": "Short", "raw": "Body text here"})
    assert response.status_code == 502
    assert "could not be reached" in response.json()["detail"]
