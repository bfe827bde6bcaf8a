"""Connecting a forum: the key is checked against Discourse, the users are cached, the address is
normalised into the community_platform_id, and a community may connect several forums."""

from __future__ import annotations

import httpx
import respx

from tests.plugins.discourse.conftest import (
    API_KEY,
    CONFIG,
    FORUM,
    SECRET,
    Forum,
    Setup,
    mock_forum,
)


async def test_enable_checks_the_key_and_caches_the_users(
    setup: Setup, respx_mock: respx.MockRouter
) -> None:
    forum = mock_forum(respx_mock)
    response = await setup.enable({**CONFIG, "server_url": "HTTPS://Forum.test:443/"})

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["community_platform_id"] == FORUM
    assert body["config"] == {"server_url": FORUM, "api_username": "system"}
    assert sorted(body["secrets_set"]) == ["api_key", "webhook_secret"]
    assert API_KEY not in response.text and SECRET not in response.text
    # Where to point the forum's webhook, shown once.
    assert body["notices"] == {
        "hook_url": "https://metagov.test/api/hooks/commons/discourse"
        "?community_platform_id=https%3A%2F%2Fforum.test"
    }
    sent = forum.about.calls.last.request
    assert sent.headers["api-key"] == API_KEY
    assert sent.headers["api-username"] == "system"
    listed = forum.active.calls.last.request.url
    assert listed.params["page"] == "1"
    # Each real user's fields are read once; the system user (id -1) is not a person.
    read = sorted(call.request.url.path for call in forum.details.calls)
    assert read == ["/admin/users/1.json", "/admin/users/7.json"]


async def test_refused_configs_store_nothing(setup: Setup, respx_mock: respx.MockRouter) -> None:
    # A key Discourse rejects: its own message comes back.
    about = respx_mock.get(f"{FORUM}/about.json").respond(
        403,
        json={
            "errors": [
                "You are not permitted to view the requested resource. "
                "The API username or key is invalid."
            ],
            "error_type": "invalid_access",
        },
    )
    response = await setup.enable()
    assert response.status_code == 400
    assert response.json()["code"] == "discourse_auth_failed"
    assert "The API username or key is invalid." in response.json()["detail"]
    assert API_KEY not in response.text

    # A key whose user is no admin: the admin user list is not found for it.
    about.respond(json={"about": {"title": "Commons Forum"}})
    respx_mock.get(f"{FORUM}/admin/users/list/active.json").respond(
        404,
        json={
            "errors": ["The requested URL or resource could not be found."],
            "error_type": "not_found",
        },
    )
    response = await setup.enable({**CONFIG, "api_username": "bob"})
    assert response.status_code == 400
    assert "api_username 'bob' an admin" in response.json()["detail"]

    # A forum that cannot be reached.
    about.mock(side_effect=httpx.ConnectError("refused"))
    response = await setup.enable()
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_error"

    # Addresses that are unsafe or not a forum's base URL, and a secret Discourse would refuse.
    for config, status, words in [
        ({"server_url": "http://forum.test"}, 400, "must use https"),
        ({"server_url": "https://127.0.0.1"}, 400, "private or reserved"),
        ({"server_url": "https://localhost:8443"}, 400, "this machine"),
        ({"server_url": "ftp://forum.test"}, 422, "https://"),
        ({"server_url": "https://forum.test/?x=1"}, 422, "query"),
        ({"server_url": "https://user:pw@forum.test"}, 422, "credentials"),
        ({"webhook_secret": "short"}, 422, "at least 12 characters"),
    ]:
        response = await setup.enable({**CONFIG, **config})
        assert response.status_code == status, (config, response.text)
        assert words in response.json()["detail"], (config, response.text)

    community = await setup.gw.client.get(
        "/api/internal/community/commons", headers=setup.driver.headers
    )
    assert community.json()["plugins"] == []


async def test_a_community_connects_two_forums(
    setup: Setup, forum: Forum, respx_mock: respx.MockRouter
) -> None:
    other = "https://talk.example.org/forum"
    respx_mock.get(f"{other}/about.json").respond(json={"about": {"title": "Other"}})
    respx_mock.get(f"{other}/admin/users/list/active.json").respond(json=[])
    second = await setup.enable({**CONFIG, "server_url": other + "/"})
    assert second.status_code == 201, second.text
    assert second.json()["community_platform_id"] == other

    # With two forums, an action names the one it means.
    ambiguous = await setup.gw.client.post(
        "/api/internal/action/discourse.delete-post",
        json={"parameters": {"id": 5}},
        headers=setup.headers,
    )
    assert ambiguous.status_code == 409
    assert {c["community_platform_id"] for c in ambiguous.json()["choices"]} == {FORUM, other}
    deleted = respx_mock.delete(f"{other}/posts/5.json").respond(200)
    chosen = await setup.gw.client.post(
        "/api/internal/action/discourse.delete-post",
        params={"community_platform_id": other},
        json={"parameters": {"id": 5}},
        headers=setup.headers,
    )
    assert chosen.status_code == 204, chosen.text
    assert deleted.called
