"""A gateway with a Driver, and a fake Loomio at https://loomio.test answering its group API
(``/api/b1``) in Loomio's records shape: memberships, polls and discussions, one group per API
key. Payload fields follow what Loomio's serializers send (a real ``/api/b1/polls/:key`` answer
for the older ``poll_options``/``voter_scores`` shape; ``results`` for current Loomio)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx

from metagov.testing import DriverCredentials, TestGateway, open_gateway
from tests.conftest import make_registry, make_settings

BASE = "https://metagov.test"
EVENTS = "https://driver.test/events"
LOOMIO = "https://loomio.test"
API = f"{LOOMIO}/api/b1"
MAIN_KEY = "k5xTqGb8wRz2pLm9"
SUB_KEY = "s7vNcD3hJk1QaZ0e"
OTHER_KEY = "o0therGroupKey42"
TOKEN = "hook-token-0123456789abcdef"

GROUP = {
    "id": 710495,
    "key": "ZrSTqeyG",
    "handle": "metagov",
    "name": "Metagovernance Project",
    "full_name": "Metagovernance Project",
    "description": "",
    "description_format": "html",
    "created_at": "2021-01-05T16:10:21.149Z",
    "creator_id": 879750,
    "group_privacy": "open",
    "memberships_count": 3,
    "parent_id": None,
    "subgroups_count": 1,
}
SUBGROUP = {
    **GROUP,
    "id": 710496,
    "key": "Xy12AbCd",
    "handle": None,
    "name": "Finance",
    "full_name": "Metagovernance Project - Finance",
    "parent_id": 710495,
    "subgroups_count": 0,
}
OTHER_GROUP = {**GROUP, "id": 99, "key": "OtHeRgRp", "handle": "elsewhere", "name": "Elsewhere"}
GROUPS_BY_KEY = {MAIN_KEY: GROUP, SUB_KEY: SUBGROUP, OTHER_KEY: OTHER_GROUP}

USERS = [
    {
        "id": 4759171,
        "name": "policykit.org",
        "username": "policykitorg",
        "email": "bot@policykit.test",
        "avatar_initials": "P",
        "avatar_kind": "initials",
        "time_zone": "UTC",
        "locale": "en",
        "created_at": "2021-07-01T19:37:37.077Z",
        "bot": True,
    },
    {
        "id": 879750,
        "name": "Ana Lima",
        "username": "analima",
        "email": "ana@example.test",
        "avatar_initials": "AL",
        "avatar_kind": "initials",
        "time_zone": "UTC",
        "locale": "en",
        "created_at": "2020-03-01T10:00:00.000Z",
        "bot": False,
    },
]

LOOMIO_CONFIG = {
    "group_handle": "metagov",
    "api_key": MAIN_KEY,
    "server_url": LOOMIO,
    "webhook_token": TOKEN,
}


def memberships_answer(group: dict[str, Any]) -> dict[str, Any]:
    """``GET /api/b1/memberships``: the key's group's memberships, users and group sideloaded."""
    memberships = [
        {
            "id": 9000 + i,
            "group_id": group["id"],
            "user_id": user["id"],
            "inviter_id": None,
            "admin": user["id"] == 879750,
            "volume": "normal",
            "accepted_at": "2021-07-01T19:40:00.000Z",
            "created_at": "2021-07-01T19:37:37.077Z",
            "title": None,
        }
        for i, user in enumerate(USERS)
    ]
    return {
        "memberships": memberships,
        "users": USERS,
        "groups": [group],
        "parent_groups": [],
        "meta": {"root": "memberships", "total": len(memberships)},
    }


def poll_record(
    *,
    id: int = 234203,
    key: str = "m20ZprvH",
    group_id: int = 710495,
    poll_type: str = "proposal",
    title: str = "Adopt the budget",
    closed_at: str | None = None,
    closing_at: str = "2030-10-01T00:00:00.000Z",
    voters: dict[str, list[int]] | None = None,
    current_outcome_id: int | None = None,
) -> dict[str, Any]:
    """A poll as current Loomio serializes it, with ``results`` per option."""
    voters = voters if voters is not None else {"agree": [], "abstain": [], "disagree": []}
    decided = {u for users in voters.values() for u in users}
    results = [
        {
            "id": 940800 + i,
            "poll_id": id,
            "name": f"poll_proposal_options.{name}" if poll_type == "proposal" else name,
            "name_format": "i18n" if poll_type == "proposal" else "plain",
            "rank": i + 1,
            "score": len(users),
            "score_percent": 0,
            "max_score_percent": 0,
            "voter_percent": 0,
            "average": 1.0 if users else 0,
            "voter_scores": {str(u): 1 for u in users},
            "voter_ids": users,
            "voter_count": len(users),
            "color": "#00D177",
            "test_operator": None,
            "test_against": None,
            "test_percent": None,
            "test_result": None,
        }
        for i, (name, users) in enumerate(voters.items())
    ]
    return {
        "id": id,
        "key": key,
        "poll_type": poll_type,
        "title": title,
        "details": "Created by Metagov",
        "details_format": "md",
        "author_id": 4759171,
        "group_id": group_id,
        "discussion_id": None,
        "anonymous": False,
        "hide_results": "off",
        "closing_at": closing_at,
        "closed_at": closed_at,
        "created_at": "2021-09-28T18:47:59.776Z",
        "voters_count": 3,
        "decided_voters_count": len(decided),
        "undecided_voters_count": 3 - len(decided),
        "cast_stances_pct": round(100 * len(decided) / 3),
        "poll_option_names": list(voters),
        "current_outcome_id": current_outcome_id,
        "specified_voters_only": False,
        "results": results,
    }


def poll_answer(poll: dict[str, Any]) -> dict[str, Any]:
    return {
        "polls": [poll],
        "users": USERS[:1],
        "groups": [GROUP],
        "stances": [],
        "outcomes": [],
        "meta": {"root": "polls", "total": None},
    }


def discussion_answer(
    *, id: int = 55501, key: str = "dK3y9Abc", group_id: int = 710495
) -> dict[str, Any]:
    return {
        "discussions": [
            {
                "id": id,
                "key": key,
                "title": "Next quarter's budget",
                "description": "Let's talk.",
                "description_format": "md",
                "group_id": group_id,
                "author_id": 879750,
                "created_at": "2021-09-28T18:00:00.000Z",
                "private": True,
                "items_count": 1,
            }
        ],
        "users": USERS[1:],
        "groups": [GROUP],
        "meta": {"root": "discussions", "total": None},
    }


class FakeLoomio:
    """Loomio's group API at https://loomio.test, keyed by API key, with polls that tests
    change between requests."""

    def __init__(self, respx_mock: respx.MockRouter) -> None:
        self.polls: dict[str, dict[str, Any]] = {}
        # Whole answers given as they are, to any valid key (public polls, older shapes).
        self.poll_answers: dict[str, dict[str, Any]] = {}
        self.discussions: dict[str, dict[str, Any]] = {}
        self.created_poll = poll_record()
        self.memberships = respx_mock.get(f"{API}/memberships").mock(side_effect=self._memberships)
        self.poll_reads = respx_mock.get(
            host="loomio.test", path__regex=r"^/api/b1/polls/\w+$"
        ).mock(side_effect=self._poll)
        self.poll_creates = respx_mock.post(f"{API}/polls").mock(side_effect=self._create_poll)
        self.discussion_reads = respx_mock.get(
            host="loomio.test", path__regex=r"^/api/b1/discussions/\w+$"
        ).mock(side_effect=self._discussion)
        self.discussion_creates = respx_mock.post(f"{API}/discussions").respond(
            200, json=discussion_answer(id=55502, key="nEwD1scs")
        )

    @staticmethod
    def _key(request: httpx.Request) -> str | None:
        if request.method == "GET":
            return request.url.params.get("api_key")
        return json.loads(request.content).get("api_key")

    def _group(self, request: httpx.Request) -> dict[str, Any] | None:
        return GROUPS_BY_KEY.get(self._key(request) or "")

    @staticmethod
    def _denied() -> httpx.Response:
        return httpx.Response(403, json={"exception": "CanCan::AccessDenied"})

    def _memberships(self, request: httpx.Request) -> httpx.Response:
        group = self._group(request)
        return httpx.Response(200, json=memberships_answer(group)) if group else self._denied()

    def _poll(self, request: httpx.Request) -> httpx.Response:
        group = self._group(request)
        if group is None:
            return self._denied()
        ref = request.url.path.rsplit("/", 1)[1]
        if ref in self.poll_answers:
            return httpx.Response(200, json=self.poll_answers[ref])
        poll = self.polls.get(ref) or next(
            (p for p in self.polls.values() if str(p["id"]) == ref), None
        )
        if poll is None or poll["group_id"] != group["id"]:
            return httpx.Response(404, json={"exception": "ActiveRecord::RecordNotFound"})
        return httpx.Response(200, json=poll_answer(poll))

    def _create_poll(self, request: httpx.Request) -> httpx.Response:
        group = self._group(request)
        if group is None:
            return self._denied()
        poll = {**self.created_poll, "group_id": group["id"]}
        self.polls[poll["key"]] = poll
        return httpx.Response(200, json=poll_answer(poll))

    def _discussion(self, request: httpx.Request) -> httpx.Response:
        group = self._group(request)
        ref = request.url.path.rsplit("/", 1)[1]
        found = self.discussions.get(ref)
        if group is None or found is None or found["discussions"][0]["group_id"] != group["id"]:
            return httpx.Response(404, json={"exception": "ActiveRecord::RecordNotFound"})
        return httpx.Response(200, json=found)


@pytest.fixture
def respx_mock() -> Iterator[respx.MockRouter]:
    """Every outbound request must hit a route (nothing reaches the network); the fake's routes
    need not all be used by every test."""
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as mock:
        yield mock


@pytest.fixture
async def gateway(database_url: str) -> AsyncIterator[TestGateway]:
    settings = make_settings(database_url, base_url=BASE)
    async with open_gateway(settings, make_registry()) as gw:
        yield gw


@pytest.fixture
def loomio(respx_mock: respx.MockRouter) -> FakeLoomio:
    return FakeLoomio(respx_mock)


@pytest.fixture
def driver_events(respx_mock: respx.MockRouter) -> respx.Route:
    return respx_mock.post(EVENTS).respond(204)


@pytest.fixture
async def driver(gateway: TestGateway) -> DriverCredentials:
    created = await gateway.create_driver("alice", event_url=EVENTS)
    await gateway.create_community(created, "commons")
    return created


async def enable(gateway: TestGateway, driver: DriverCredentials, **config: Any) -> httpx.Response:
    return await gateway.client.post(
        "/api/internal/plugin/loomio",
        json={**LOOMIO_CONFIG, **config},
        headers=driver.to("commons"),
    )


@pytest.fixture
async def enabled(
    gateway: TestGateway, driver: DriverCredentials, loomio: FakeLoomio
) -> dict[str, Any]:
    """Loomio enabled in ``commons`` with the main group's key and one subgroup's key."""
    response = await enable(gateway, driver, subgroup_api_keys=[SUB_KEY])
    assert response.status_code == 201, response.text
    return dict(response.json())


def events(route: respx.Route) -> list[dict[str, Any]]:
    """The events the Driver received, oldest first."""
    return [json.loads(call.request.content) for call in route.calls]


async def post_hook(
    gateway: TestGateway, body: dict[str, Any], *, token: str | None = TOKEN
) -> httpx.Response:
    query = f"?community_platform_id=metagov&token={token}" if token is not None else ""
    return await gateway.client.post(
        f"/api/hooks/commons/loomio{query}",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )


def chat_message(text: str) -> dict[str, Any]:
    """A webhook as current Loomio's markdown chatbot posts it."""
    return {
        "text": text,
        "icon_url": "https://loomio.test/rails/active_storage/representations/logo.png",
        "username": "Loomio",
        "blocks": [],
    }


def legacy_message(kind: str, url: str, title: str = "Adopt the budget") -> dict[str, Any]:
    """A webhook as older Loomio's markdown chatbot posted it, with the event kind."""
    return {
        "text": f"policykit.org: [{title}]({url})",
        "icon_url": None,
        "username": "Loomio",
        "kind": kind,
        "url": url,
        "group_name": "Metagovernance Project",
        "actor_name": "policykit.org",
        "poll_type": "Proposal",
        "title": title,
        "attachments": [],
    }
