"""Webhooks of the App at ``/api/hooks/github``: signed with the App's webhook secret, routed by
installation id, delivered once to the Driver as ``"{action} {event}"``; the installation's own
events disable, suspend and resume the instance."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.github.fake import (
    BOT,
    INSTALLATION,
    OWNER,
    REPO,
    WEBHOOK_SECRET,
    FakeGitHub,
    installation_json,
    installation_ref,
    issue_json,
    post_webhook,
    repository_json,
    sign,
    user,
)

OCTOCAT = user("octocat", 583231)


def issue_opened(sender: dict[str, Any] = OCTOCAT) -> dict[str, Any]:
    return {
        "action": "opened",
        "issue": {**issue_json(12, "Spelling error in the README file"), "user": sender},
        "repository": repository_json(),
        "organization": {"login": OWNER, "id": 38302899, "node_id": "MDEyOk9yZ2FuaXphdGlvbjE="},
        "sender": sender,
        "installation": installation_ref(),
    }


def push() -> dict[str, Any]:
    return {
        "ref": "refs/heads/main",
        "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "after": "0000000000000000000000000000000000000000",
        "repository": repository_json(),
        "pusher": {"name": "octocat", "email": "octocat@github.test"},
        "sender": OCTOCAT,
        "installation": installation_ref(),
        "created": False,
        "deleted": True,
        "forced": False,
        "base_ref": None,
        "compare": f"https://github.test/{OWNER}/{REPO}/compare/6113728f27ae...000000000000",
        "commits": [],
        "head_commit": None,
    }


def installation_event(action: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "action": action,
        "installation": installation_json(
            suspended_at="2024-03-02T10:00:00Z" if action == "suspend" else None
        ),
        "sender": OCTOCAT,
    }
    if action == "deleted":
        body["repositories"] = [
            {"id": 186853002, "node_id": "MDEw", "name": REPO, "full_name": f"{OWNER}/{REPO}"}
        ]
    return body


async def test_a_signed_webhook_becomes_a_signed_driver_event_once(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    payload = issue_opened()
    first = await post_webhook(gateway, "issues", payload, "72d3162e-cc78-11e3-81ab-4c9367dc0958")
    again = await post_webhook(gateway, "issues", payload, "72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert first.status_code == again.status_code == 200

    await gateway.drain()

    [event] = github.events()
    assert event["community"] == "commons"
    assert event["source"] == "github"
    assert event["event_type"] == "opened issues"
    assert event["data"] == payload
    assert event["initiator"] == {
        "user_id": "octocat",
        "provider": "github",
        "is_metagov_bot": False,
    }
    [call] = github.driver.calls
    assert call.request.headers["webhook-signature"].startswith("v1,")


async def test_events_without_an_action_and_the_apps_own_events(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    await post_webhook(gateway, "push", push(), "d-push")
    await post_webhook(gateway, "issues", issue_opened(sender=BOT), "d-bot")
    await gateway.drain()

    pushed, by_bot = github.events()
    assert pushed["event_type"] == "push"
    assert by_bot["event_type"] == "opened issues"
    assert by_bot["initiator"] == {
        "user_id": "metagov-governance[bot]",
        "provider": "github",
        "is_metagov_bot": True,
    }


async def test_unsigned_or_forged_webhooks_get_401_and_store_nothing(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    payload = issue_opened()
    body = json.dumps(payload).encode()
    sha1 = "sha1=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha1).hexdigest()
    forgeries: dict[str, tuple[str, dict[str, str] | None]] = {
        "tampered": (sign(body.replace(b"Spelling", b"Spellinf")), None),
        "wrong_secret": (sign(body, "not the secret"), None),
        "unsigned": ("", None),
        "sha1_only": ("", {"X-Hub-Signature": sha1}),
    }
    for n, (forgery, (signature, extra)) in enumerate(forgeries.items(), start=1):
        delivery = f"d-{forgery}"
        response = await post_webhook(
            gateway, "issues", payload, delivery, signature=signature, extra=extra
        )

        assert response.status_code == 401, forgery
        assert response.json()["code"] == "webhook_rejected"
        assert await gateway.drain() == 0, forgery
        assert len(github.events()) == n - 1, forgery
        # Nothing was stored under that delivery id: the genuine delivery still gets through.
        assert (await post_webhook(gateway, "issues", payload, delivery)).status_code == 200
        await gateway.drain()
        assert len(github.events()) == n, forgery


async def test_pings_and_other_installations_reach_no_community(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    ping = {
        "zen": "Design for failure.",
        "hook_id": 292430182,
        "hook": {"type": "App", "id": 292430182, "app_id": 424242, "active": True},
        "sender": OCTOCAT,
    }
    other = {**issue_opened(), "installation": {"id": 999, "node_id": "MDIzOkludGVn"}}

    assert (await post_webhook(gateway, "ping", ping, "d-ping")).status_code == 200
    assert (await post_webhook(gateway, "issues", other, "d-other")).status_code == 200
    await gateway.drain()

    assert github.events() == []


async def test_a_suspended_installation_suspends_the_instance_until_unsuspended(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    created = github.router.post(github.repo("/issues")).respond(201, json=issue_json(3))

    async def create_issue() -> int:
        response = await gateway.client.post(
            "/api/internal/action/github.create-issue",
            json={"parameters": {"repo": REPO, "title": "Hello"}},
            headers=driver.to("commons"),
        )
        return response.status_code

    await post_webhook(gateway, "installation", installation_event("suspend"), "d-suspend")
    await gateway.drain()
    assert await create_issue() == 409
    assert not created.called

    await post_webhook(gateway, "installation", installation_event("unsuspend"), "d-unsuspend")
    await gateway.drain()
    assert await create_issue() == 200

    events = github.events()
    assert [e["event_type"] for e in events] == [
        "suspend installation",
        "plugin.disabled",
        "unsuspend installation",
        "plugin.enabled",
    ]
    assert events[1]["data"]["suspended"] is True
    assert events[1]["data"]["community_platform_id"] == str(INSTALLATION)


async def test_uninstalling_the_app_disables_the_instance_and_cancels_its_votes(
    gateway: TestGateway, driver: DriverCredentials, github: FakeGitHub, installed: dict[str, Any]
) -> None:
    github.router.post(github.repo("/issues")).respond(201, json=issue_json(8))
    started = await gateway.client.post(
        "/api/internal/process/github.issue-comment-vote",
        json={"repo": REPO, "question": "Lunch?", "options": ["Tacos", "Pizza"]},
        headers=driver.to("commons"),
    )
    assert started.status_code == 202, started.text

    await post_webhook(gateway, "installation", installation_event("deleted"), "d-deleted")
    await gateway.drain()

    types = [e["event_type"] for e in github.events()]
    assert types[0] == "deleted installation"
    assert "plugin.disabled" in types and "process.cancelled" in types
    community = await gateway.client.get("/api/internal/community/commons", headers=driver.headers)
    assert community.json()["plugins"] == []
    vote = await gateway.client.get(started.headers["location"], headers=driver.to("commons"))
    assert vote.json()["status"] == "cancelled"
