"""Installation tokens: minted with the App's JWT, reused until shortly before they expire, and
renewed once when GitHub rejects one."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.github.fake import (
    APP_ID,
    GITHUB_CONFIG,
    INSTALLATION,
    REPO,
    FakeGitHub,
    installation_ref,
    post_webhook,
    user,
)

BAD_CREDENTIALS = {
    "message": "Bad credentials",
    "documentation_url": "https://docs.github.com/rest",
    "status": "401",
}


async def comment(gateway: TestGateway, driver: DriverCredentials) -> httpx.Response:
    return await gateway.client.post(
        "/api/internal/action/github.comment",
        json={"parameters": {"repo": REPO, "issue_number": 1, "body": "Thanks!"}},
        headers=driver.to("commons"),
    )


def comment_created(number: int = 1) -> dict[str, Any]:
    return {
        "id": 1,
        "node_id": "MDEyOklzc3VlQ29tbWVudDE=",
        "html_url": f"https://github.test/octo-org/{REPO}/issues/{number}#issuecomment-1",
        "body": "Thanks!",
        "user": user("metagov-governance[bot]", 98765, "Bot"),
    }


async def test_a_token_is_reused_until_shortly_before_it_expires(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub
) -> None:
    github.expires_in = timedelta(minutes=3)  # inside the five minutes before expiry
    await gateway.create_community(driver, "commons", [{"name": "github", "config": GITHUB_CONFIG}])
    assert github.tokens == ["ghs_token001"]
    github.expires_in = timedelta(hours=1)
    posted = github.router.post(github.repo("/issues/1/comments")).respond(
        201, json=comment_created()
    )

    for _ in range(3):
        assert (await comment(gateway, driver)).status_code == 200

    # The short-lived token was renewed before the first call; the new one served all three.
    assert github.tokens == ["ghs_token001", "ghs_token002"]
    used = {call.request.headers["authorization"] for call in posted.calls}
    assert used == {"Bearer ghs_token002"}
    renewal = github.minted.calls.last.request
    assert renewal.url.path == f"/app/installations/{INSTALLATION}/access_tokens"
    assert github.claims(renewal)["iss"] == APP_ID


async def test_a_rejected_token_is_renewed_once_and_the_call_retried(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] == "Bearer ghs_token001":
            return httpx.Response(401, json=BAD_CREDENTIALS)
        return httpx.Response(201, json=comment_created())

    posted = github.router.post(github.repo("/issues/1/comments")).mock(side_effect=answer)

    response = await comment(gateway, driver)

    assert response.status_code == 200, response.text
    assert [c.request.headers["authorization"] for c in posted.calls] == [
        "Bearer ghs_token001",
        "Bearer ghs_token002",
    ]
    # The renewed token was kept: the next call uses it without minting again.
    assert (await comment(gateway, driver)).status_code == 200
    assert posted.calls.last.request.headers["authorization"] == "Bearer ghs_token002"
    assert github.tokens == ["ghs_token001", "ghs_token002"]


async def test_a_token_rejected_twice_is_a_502(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    posted = github.router.post(github.repo("/issues/1/comments")).respond(
        401, json=BAD_CREDENTIALS
    )

    response = await comment(gateway, driver)

    assert response.status_code == 502
    assert response.json()["code"] == "credentials_rejected"
    assert "ghs_" not in response.text
    assert len(posted.calls) == 2
    assert github.tokens == ["ghs_token001", "ghs_token002"]


async def test_a_removed_installation_is_reported_and_its_uninstall_still_gets_through(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub
) -> None:
    github.expires_in = timedelta(minutes=2)
    await gateway.create_community(driver, "commons", [{"name": "github", "config": GITHUB_CONFIG}])
    gone = {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}
    github.minted.mock(side_effect=None, return_value=httpx.Response(404, json=gone))

    response = await comment(gateway, driver)

    assert response.status_code == 404
    assert response.json()["code"] == "github_error"
    assert "uninstalled" in response.json()["detail"]

    # The token is due for renewal and cannot be renewed: the uninstall is handled all the same.
    uninstalled = {
        "action": "deleted",
        "installation": {**installation_ref(), "account": user("octo-org", 38302899)},
        "repositories": [],
        "sender": user("octocat", 583231),
    }
    assert (await post_webhook(gateway, "installation", uninstalled, "d-1")).status_code == 200
    await gateway.drain()
    assert [e["event_type"] for e in github.events()] == ["deleted installation", "plugin.disabled"]
