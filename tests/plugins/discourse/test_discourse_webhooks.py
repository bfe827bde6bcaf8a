"""Webhooks from the forum: signed with the instance's secret and naming the configured forum,
or refused with 401 before anything is stored; once per X-Discourse-Event-Id; and turned into
the Driver events the original plugin sent."""

from __future__ import annotations

import json
from typing import Any

import respx

from tests.conftest import count_rows
from tests.plugins.discourse.conftest import (
    CONFIG,
    FORUM,
    Forum,
    Setup,
    deliver,
    post_payload,
    signed,
)


def user_payload(user_fields: dict[str, Any], username: str = "alice") -> dict[str, Any]:
    """A ``user`` webhook body (Discourse's WebHookUserSerializer), abridged."""
    return {
        "user": {
            "id": 7,
            "username": username,
            "name": "Alice",
            "avatar_template": "/user_avatar/forum.test/alice/{size}/2_2.png",
            "last_posted_at": "2024-05-01T12:00:00.000Z",
            "last_seen_at": "2024-05-02T08:00:00.000Z",
            "created_at": "2024-04-20T11:43:46.817Z",
            "ignored": False,
            "muted": False,
            "trust_level": 1,
            "moderator": False,
            "admin": False,
            "title": None,
            "badge_count": 0,
            "user_fields": user_fields,
            "custom_fields": {},
            "time_read": 180,
            "recent_time_read": 180,
            "primary_group_id": None,
            "primary_group_name": None,
            "flair_group_id": None,
            "featured_topic": None,
            "external_id": None,
        }
    }


async def test_a_signed_post_becomes_one_driver_event(setup: Setup, forum: Forum) -> None:
    payload = post_payload(1234, 42)
    first = await deliver(setup, "post_created", payload, "801")
    again = await deliver(setup, "post_created", payload, "801")  # the admin's "Redeliver"
    assert first.status_code == again.status_code == 200
    assert first.json() == {"ok": True}
    await setup.gw.drain()

    [event] = setup.received()
    assert event["source"] == "discourse"
    assert event["event_type"] == "post_created"
    assert event["data"] == {
        "id": 1234,
        "topic_id": 42,
        "post_number": 3,
        "raw": "I propose we meet on Fridays.",
        "url": f"{FORUM}/t/meeting-day/42/3",
        "username": "alice",
        "topic_title": "Meeting day",
        "category_id": 4,
    }
    assert event["initiator"] == {
        "user_id": "alice",
        "provider": "discourse",
        "is_metagov_bot": False,
    }


async def test_topics_and_other_events_are_forwarded(setup: Setup, forum: Forum) -> None:
    topic = {
        "topic": {
            "tags": ["governance"],
            "tags_descriptions": {},
            "id": 42,
            "title": "Meeting day",
            "fancy_title": "Meeting day",
            "posts_count": 1,
            "created_at": "2024-05-01T12:00:00.000Z",
            "views": 0,
            "reply_count": 0,
            "like_count": 0,
            "last_posted_at": "2024-05-01T12:00:00.000Z",
            "visible": True,
            "closed": False,
            "archived": False,
            "archetype": "regular",
            "slug": "meeting-day",
            "category_id": 4,
            "word_count": 6,
            "deleted_at": None,
            "user_id": -1,
            "featured_link": None,
            "pinned_globally": False,
            "pinned_at": None,
            "pinned_until": None,
            "unpinned": None,
            "pinned": False,
            "highest_post_number": 1,
            "deleted_by": None,
            "has_deleted": False,
            "bookmarked": None,
            "participant_count": 1,
            "thumbnails": None,
            "created_by": {
                "id": -1,
                "username": "system",
                "name": "system",
                "avatar_template": "/images/discourse-logo-sketch-small.png",
            },
            "last_poster": {
                "id": -1,
                "username": "system",
                "name": "system",
                "avatar_template": "/images/discourse-logo-sketch-small.png",
            },
        }
    }
    await deliver(setup, "topic_created", topic, "802")
    edited = post_payload(1234, 42, raw="Fridays or Mondays?", version=2)
    await deliver(setup, "post_edited", edited, "803")
    await setup.gw.drain()

    created, forwarded = setup.received()
    assert created["event_type"] == "topic_created"
    assert created["data"] == {
        "id": 42,
        "title": "Meeting day",
        "tags": ["governance"],
        "category": 4,
        "url": f"{FORUM}/t/meeting-day/42",
    }
    # The gateway's own user (api_username) is marked, so a Driver can ignore its own doings.
    assert created["initiator"]["user_id"] == "system"
    assert created["initiator"]["is_metagov_bot"] is True
    assert forwarded["event_type"] == "post_edited"
    assert forwarded["data"] == edited
    assert forwarded["initiator"]["user_id"] == "alice"


async def test_changed_user_fields_are_reported_against_the_cached_list(
    setup: Setup, forum: Forum
) -> None:
    # Alice's fields at enable time were {"1": "Berlin", "2": "Yes"}.
    await deliver(setup, "user_updated", user_payload({"1": "Berlin", "2": "Yes"}), "810")
    await deliver(setup, "user_updated", user_payload({"1": "Paris", "2": "Yes"}), "811")
    await deliver(setup, "user_updated", user_payload({"1": "Paris", "2": "Yes"}), "812")
    await setup.gw.drain()

    types = [e["event_type"] for e in setup.received()]
    assert types == ["user_updated", "user_updated", "user_fields_changed", "user_updated"]
    [changed] = [e for e in setup.received() if e["event_type"] == "user_fields_changed"]
    assert changed["data"] == {
        "id": 7,
        "username": "alice",
        "user_fields": {"1": "Paris", "2": "Yes"},
        "old_user_fields": {"1": "Berlin", "2": "Yes"},
        "changed_fields": {"1": {"old": "Berlin", "new": "Paris"}},
    }
    assert changed["initiator"]["user_id"] == "alice"


async def test_forged_or_misdirected_webhooks_get_401_and_store_nothing(
    setup: Setup, forum: Forum
) -> None:
    body = json.dumps(post_payload(1234, 42)).encode()
    unsigned = signed(body, "post_created", "820")
    del unsigned["X-Discourse-Event-Signature"]
    attempts = {
        "bad_signature": {
            **signed(body, "post_created", "820"),
            "X-Discourse-Event-Signature": "sha256=" + "0" * 64,
        },
        "missing_signature": unsigned,
        "wrong_instance": signed(body, "post_created", "820", instance="https://elsewhere.test"),
        "other_secret": signed(body, "post_created", "820", secret="not-the-secret"),
    }
    for case, headers in attempts.items():
        response = await setup.gw.client.post(
            "/api/hooks/commons/discourse", content=body, headers=headers
        )
        assert response.status_code == 401, case
        assert response.json()["code"] == "webhook_rejected", case

    # The forum's "Ping" button is answered, and is no event either.
    assert (await deliver(setup, "ping", {"ping": "OK"}, "830")).status_code == 200
    assert await count_rows(setup.gw.runtime, "inbound_webhooks") == 0
    await setup.gw.drain()
    assert setup.received() == []


async def test_the_hook_url_of_a_community_with_several_forums_names_the_forum(
    setup: Setup, forum: Forum, respx_mock: respx.MockRouter
) -> None:
    other = "https://talk.example.org"
    respx_mock.get(f"{other}/about.json").respond(json={"about": {"title": "Other"}})
    respx_mock.get(f"{other}/admin/users/list/active.json").respond(json=[])
    assert (await setup.enable({**CONFIG, "server_url": other})).status_code == 201
    body = json.dumps(post_payload(9, 3)).encode()
    response = await setup.gw.client.post(
        "/api/hooks/commons/discourse",
        params={"community_platform_id": other},
        content=body,
        headers=signed(body, "post_created", "840", instance=other),
    )
    assert response.status_code == 200, response.text
    await setup.gw.drain()
    [event] = setup.received()
    assert event["data"]["url"] == f"{other}/t/meeting-day/3/3"
