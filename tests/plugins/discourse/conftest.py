"""A gateway with a Driver and a community, and a fake Discourse forum at https://forum.test
(respx), answering with payloads shaped like Discourse's documented ones."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx

from metagov.testing import DriverCredentials, TestGateway, open_gateway
from tests.conftest import make_registry, make_settings

FORUM = "https://forum.test"
API_KEY = "2b7cb31a4b5d9d9d8f6e9c0e4a1f7c3e5d2b8a6f4c1e9d7b3a5f8c2e6d4b1a9f"
SECRET = "a-long-webhook-secret-0123456789"
EVENTS = "https://driver.test/events"
CONFIG = {"server_url": FORUM, "api_key": API_KEY, "webhook_secret": SECRET}

ABOUT = {
    "about": {
        "stats": {"topic_count": 12, "post_count": 80, "user_count": 3},
        "description": "A forum for the commons",
        "title": "Commons Forum",
        "locale": "en",
        "version": "3.2.0",
        "https": True,
        "moderators": [],
        "admins": [{"id": 1, "username": "admin", "name": "Admin"}],
    }
}


def list_row(user_id: int, username: str) -> dict[str, Any]:
    """A row of ``GET /admin/users/list/active.json``."""
    return {
        "id": user_id,
        "username": username,
        "name": username.title(),
        "avatar_template": f"/letter_avatar_proxy/v4/letter/{username[0]}/da6949/{{size}}.png",
        "active": True,
        "admin": user_id == 1,
        "moderator": False,
        "last_seen_at": "2024-05-01T15:21:21.243Z",
        "last_emailed_at": "2024-04-27T11:45:14.045Z",
        "created_at": "2024-04-20T11:43:46.817Z",
        "last_seen_age": 1704.2,
        "last_emailed_age": 3600.0,
        "created_at_age": 86400.0,
        "trust_level": 1,
        "manual_locked_trust_level": None,
        "flag_level": 0,
        "title": None,
        "time_read": 180,
        "staged": False,
        "days_visited": 3,
        "posts_read_count": 8,
        "topics_entered": 2,
        "post_count": 6,
    }


def admin_user(user_id: int, username: str, user_fields: dict[str, Any]) -> dict[str, Any]:
    """``GET /admin/users/{id}.json`` (abridged to the fields that matter, in their shape)."""
    return {
        **list_row(user_id, username),
        "can_send_activation_email": True,
        "ip_address": "198.51.100.7",
        "registration_ip_address": "198.51.100.7",
        "like_count": 0,
        "topic_count": 1,
        "badge_count": 0,
        "warnings_received_count": 0,
        "user_fields": user_fields,
        "bounce_score": 0,
        "single_sign_on_record": None,
        "approved_by": None,
        "suspended_by": None,
        "silenced_by": None,
        "groups": [],
    }


USERS = {1: ("admin", {"1": None}), 7: ("alice", {"1": "Berlin", "2": "Yes"})}


@dataclass
class Forum:
    """The fake forum's routes, to read what Discourse received."""

    about: respx.Route
    active: respx.Route
    details: respx.Route


def mock_forum(respx_mock: respx.MockRouter) -> Forum:
    rows = [list_row(user_id, name) for user_id, (name, _) in USERS.items()]
    rows.append(list_row(-1, "system"))

    def detail(request: httpx.Request, user_id: str) -> httpx.Response:
        name, fields = USERS[int(user_id)]
        return httpx.Response(200, json=admin_user(int(user_id), name, fields))

    return Forum(
        about=respx_mock.get(f"{FORUM}/about.json").respond(json=ABOUT),
        active=respx_mock.get(f"{FORUM}/admin/users/list/active.json").respond(json=rows),
        details=respx_mock.get(
            url__regex=rf"^{re.escape(FORUM)}/admin/users/(?P<user_id>\d+)\.json$"
        ).mock(side_effect=detail),
    )


@dataclass
class Setup:
    gw: TestGateway
    driver: DriverCredentials
    events: respx.Route

    @property
    def headers(self) -> dict[str, str]:
        return self.driver.to("commons")

    def received(self) -> list[dict[str, Any]]:
        """The events the Driver received, in order."""
        return [json.loads(call.request.content) for call in self.events.calls]

    async def enable(self, config: dict[str, Any] | None = None) -> httpx.Response:
        return await self.gw.client.post(
            "/api/internal/plugin/discourse", json=config or CONFIG, headers=self.headers
        )


@pytest.fixture
async def setup(database_url: str, respx_mock: respx.MockRouter) -> AsyncIterator[Setup]:
    settings = make_settings(database_url, base_url="https://metagov.test")
    async with open_gateway(settings, make_registry()) as gw:
        driver = await gw.create_driver("alice", event_url=EVENTS)
        await gw.create_community(driver, "commons")
        events = respx_mock.post(EVENTS).respond(204)
        yield Setup(gw, driver, events)


@pytest.fixture
async def forum(setup: Setup, respx_mock: respx.MockRouter) -> Forum:
    """The forum, connected to the community."""
    routes = mock_forum(respx_mock)
    response = await setup.enable()
    assert response.status_code == 201, response.text
    return routes


def signed(
    body: bytes,
    event: str,
    event_id: str,
    *,
    secret: str = SECRET,
    instance: str = FORUM,
) -> dict[str, str]:
    """The headers Discourse sends with a webhook delivery."""
    mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Discourse-Instance": instance,
        "X-Discourse-Event-Id": event_id,
        "X-Discourse-Event-Type": event.split("_")[0],
        "X-Discourse-Event": event,
        "X-Discourse-Event-Signature": f"sha256={mac}",
    }


async def deliver(
    setup: Setup, event: str, payload: dict[str, Any], event_id: str, **options: str
) -> httpx.Response:
    body = json.dumps(payload).encode()
    return await setup.gw.client.post(
        "/api/hooks/commons/discourse",
        content=body,
        headers=signed(body, event, event_id, **options),
    )


def post_payload(post_id: int, topic_id: int, **changes: Any) -> dict[str, Any]:
    """A ``post`` webhook body (Discourse's WebHookPostSerializer)."""
    post = {
        "id": post_id,
        "name": "Alice",
        "username": "alice",
        "avatar_template": "/user_avatar/forum.test/alice/{size}/2_2.png",
        "created_at": "2024-05-01T12:00:00.000Z",
        "cooked": "<p>I propose we meet on Fridays.</p>",
        "post_number": 3,
        "post_type": 1,
        "updated_at": "2024-05-01T12:00:00.000Z",
        "reply_count": 0,
        "reply_to_post_number": None,
        "quote_count": 0,
        "incoming_link_count": 0,
        "reads": 0,
        "score": 0,
        "topic_id": topic_id,
        "topic_slug": "meeting-day",
        "topic_title": "Meeting day",
        "category_id": 4,
        "display_username": "Alice",
        "primary_group_name": None,
        "flair_name": None,
        "version": 1,
        "user_title": None,
        "bookmarked": False,
        "raw": "I propose we meet on Fridays.",
        "moderator": False,
        "admin": False,
        "staff": False,
        "user_id": 7,
        "hidden": False,
        "trust_level": 1,
        "deleted_at": None,
        "user_deleted": False,
        "edit_reason": None,
        "wiki": False,
        "reviewable_id": None,
        "reviewable_score_count": 0,
        "reviewable_score_pending_count": 0,
        "topic_posts_count": 3,
        "topic_filtered_posts_count": 3,
        "topic_archetype": "regular",
        "category_slug": "general",
    }
    post.update(changes)
    return {"post": post}
