"""The identity API: each endpoint's answer and its errors, merge chains, and isolation between
Drivers. Alice's ``commons`` has the test plugin ``echo`` (team T1) and ``randomness``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from metagov.db.models import LinkedAccount, MetagovId
from metagov.errors import Conflict
from metagov.identity import repository
from metagov.runtime import Runtime
from tests.conftest import RANDOMNESS, DriverKey, count_rows, make_community

BASE = "/api/internal/identity"
ECHO = {"name": "echo", "config": {"team_id": "T1", "api_token": "tok-1"}}


@pytest.fixture
async def commons(client: httpx.AsyncClient, alice: DriverKey) -> dict[str, Any]:
    return await make_community(client, alice, "commons", [ECHO, RANDOMNESS])


async def new_ids(
    client: httpx.AsyncClient, driver: DriverKey, count: int = 1, community: str = "commons"
) -> list[str]:
    response = await client.post(
        f"{BASE}/create_id", json={"community": community, "count": count}, headers=driver.headers
    )
    assert response.status_code == 201, response.text
    ids: list[str] = response.json()
    return ids


async def link(
    client: httpx.AsyncClient,
    driver: DriverKey,
    metagov_id: str,
    identifier: str,
    *,
    community: str = "commons",
    platform_type: str = "echo",
    **extra: Any,
) -> httpx.Response:
    body = {
        "id": metagov_id,
        "community": community,
        "platform_type": platform_type,
        "platform_identifier": identifier,
        "community_platform_id": "T1",
        **extra,
    }
    return await client.post(f"{BASE}/link_account", json=body, headers=driver.headers)


async def linked(
    client: httpx.AsyncClient, driver: DriverKey, metagov_id: str, identifier: str
) -> dict[str, Any]:
    response = await link(client, driver, metagov_id, identifier)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def user(client: httpx.AsyncClient, driver: DriverKey, metagov_id: str) -> dict[str, Any]:
    response = await client.get(
        f"{BASE}/get_user", params={"id": metagov_id}, headers=driver.headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def accounts_of(body: dict[str, Any]) -> list[str]:
    return [a["platform_identifier"] for a in body["linked_accounts"]]


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["detail"]
    return body


# --- create_id and get_user ---------------------------------------------------------------------


@pytest.mark.usefixtures("commons")
async def test_created_ids_are_unguessable_strings(
    client: httpx.AsyncClient, alice: DriverKey
) -> None:
    ids = await new_ids(client, alice, 3)
    [single] = await new_ids(client, alice)

    assert len({*ids, single}) == 4
    for metagov_id in (*ids, single):
        assert metagov_id.startswith("mgid_")
        assert len(metagov_id) >= 26  # 128 random bits
        assert await user(client, alice, metagov_id) == {
            "id": metagov_id,
            "primary_id": metagov_id,
            "community": "commons",
            "linked_accounts": [],
        }


@pytest.mark.usefixtures("commons")
async def test_create_id_errors_create_nothing(
    client: httpx.AsyncClient, alice: DriverKey, bob: DriverKey, runtime: Runtime
) -> None:
    for count in (0, 101, "many"):
        response = await client.post(
            f"{BASE}/create_id",
            json={"community": "commons", "count": count},
            headers=alice.headers,
        )
        assert error(response, 422, "validation_error")["errors"][0]["loc"] == ["body", "count"]
    unknown = {"community": "nowhere"}
    error(
        await client.post(f"{BASE}/create_id", json=unknown, headers=alice.headers),
        404,
        "unknown_community",
    )
    # Bob cannot make ids in alice's community, and cannot tell it exists.
    theirs = {"community": "commons"}
    bobs = await client.post(f"{BASE}/create_id", json=theirs, headers=bob.headers)
    assert error(bobs, 404, "unknown_community")["detail"] == "community 'commons' not found"
    anonymous = await client.post(f"{BASE}/create_id", json=theirs)
    error(anonymous, 401, "unauthorized")
    assert await count_rows(runtime, "metagov_ids") == 0


# --- link_account, get_linked_account, unlink_account --------------------------------------------


@pytest.mark.usefixtures("commons")
async def test_link_read_relink_and_unlink(client: httpx.AsyncClient, alice: DriverKey) -> None:
    [person] = await new_ids(client, alice)
    created = await link(
        client,
        alice,
        person,
        "U1",
        custom_data={"display_name": "Ana"},
        link_type="oauth",
        link_quality="confirmed",
    )
    assert created.status_code == 201, created.text
    account = created.json()
    assert account == {
        "metagov_id": person,
        "community": "commons",
        "platform_type": "echo",
        "platform_identifier": "U1",
        "community_platform_id": "T1",
        "custom_data": {"display_name": "Ana"},
        "link_type": "oauth",
        "link_quality": "confirmed",
        "linked_at": account["linked_at"],
        "updated_at": account["updated_at"],
    }
    assert (await user(client, alice, person))["linked_accounts"] == [account]
    found = await client.get(
        f"{BASE}/get_linked_account",
        params={"id": person, "platform_type": "echo"},
        headers=alice.headers,
    )
    assert found.status_code == 200
    assert found.json() == account

    # Linking it again to the same person sets what the Driver sends (defaults included).
    again = await link(client, alice, person, "U1", link_quality="strong_confirm")
    assert again.status_code == 200, again.text
    assert again.json()["link_type"] == "manual"
    assert again.json()["link_quality"] == "strong_confirm"
    assert again.json()["custom_data"] == {}
    assert len((await user(client, alice, person))["linked_accounts"]) == 1

    # Without the optional fields: the defaults, and no platform tenant.
    bare = await link(client, alice, person, "U2", community_platform_id=None)
    assert bare.status_code == 201, bare.text
    assert bare.json()["link_type"] == "manual"
    assert bare.json()["link_quality"] == "unknown"
    assert bare.json()["community_platform_id"] is None

    key = {"community": "commons", "platform_type": "echo", "platform_identifier": "U1"}
    removed = await client.post(
        f"{BASE}/unlink_account", json={**key, "community_platform_id": "T1"}, headers=alice.headers
    )
    assert removed.status_code == 200, removed.text
    assert removed.json()["platform_identifier"] == "U1"
    assert removed.json()["metagov_id"] == person
    assert accounts_of(await user(client, alice, person)) == ["U2"]
    # Absent and empty community_platform_id both name the account without a tenant.
    no_tenant = await client.post(
        f"{BASE}/unlink_account",
        json={**key, "platform_identifier": "U2", "community_platform_id": ""},
        headers=alice.headers,
    )
    assert no_tenant.status_code == 200, no_tenant.text
    assert accounts_of(await user(client, alice, person)) == []


@pytest.mark.usefixtures("commons")
async def test_link_account_errors_change_nothing(
    client: httpx.AsyncClient, alice: DriverKey, bob: DriverKey, runtime: Runtime
) -> None:
    first, second = await new_ids(client, alice, 2)
    await linked(client, alice, first, "U1")
    await make_community(client, alice, "other", [ECHO])
    [elsewhere] = await new_ids(client, alice, community="other")
    await make_community(client, bob, "bobs", [ECHO])
    [bobs_id] = await new_ids(client, bob, community="bobs")

    error(await link(client, alice, "mgid_nope", "U2"), 404, "not_found")
    missing = await link(client, alice, second, "U2", platform_type="github")
    assert "'github' is not enabled" in error(missing, 404, "plugin_not_enabled")["detail"]
    taken = error(await link(client, alice, second, "U1"), 409, "account_linked")
    assert taken["metagov_id"] == first
    assert first in taken["detail"]
    mismatch = await link(client, alice, elsewhere, "U2")
    assert "belongs to community 'other'" in error(mismatch, 409, "community_mismatch")["detail"]
    bad = await link(client, alice, second, "U2", link_type="telepathy")
    assert error(bad, 422, "validation_error")["errors"][0]["loc"] == ["body", "link_type"]
    bad = await link(client, alice, second, "U2", link_quality="sure")
    assert error(bad, 422, "validation_error")["errors"][0]["loc"] == ["body", "link_quality"]
    # Bob: alice's community is unknown to him, and so are alice's ids, even in his community.
    error(await link(client, bob, second, "U2"), 404, "unknown_community")
    error(await link(client, bob, second, "U2", community="bobs"), 404, "not_found")
    error(await link(client, alice, bobs_id, "U2"), 404, "not_found")

    assert accounts_of(await user(client, alice, first)) == ["U1"]
    assert accounts_of(await user(client, alice, second)) == []
    assert await count_rows(runtime, "linked_accounts") == 1


@pytest.mark.usefixtures("commons")
async def test_unlink_and_get_linked_account_errors(
    client: httpx.AsyncClient, alice: DriverKey, bob: DriverKey
) -> None:
    [person] = await new_ids(client, alice)
    await linked(client, alice, person, "U1")
    key = {"community": "commons", "platform_type": "echo", "platform_identifier": "U1"}

    error(
        await client.post(f"{BASE}/unlink_account", json=key, headers=alice.headers),
        404,
        "not_found",
    )
    bobs = await client.post(
        f"{BASE}/unlink_account", json={**key, "community_platform_id": "T1"}, headers=bob.headers
    )
    error(bobs, 404, "unknown_community")

    async def get_linked(driver: DriverKey, **params: str) -> httpx.Response:
        return await client.get(f"{BASE}/get_linked_account", params=params, headers=driver.headers)

    error(await get_linked(alice, id=person, platform_type="randomness"), 404, "not_found")
    error(await get_linked(alice, id="mgid_nope", platform_type="echo"), 404, "not_found")
    error(await get_linked(bob, id=person, platform_type="echo"), 404, "not_found")
    error(
        await get_linked(alice, id=person, platform_type="echo", community_platform_id="T2"),
        404,
        "not_found",
    )
    # A second team's account: the Driver has to say which.
    assert (await link(client, alice, person, "U9", community_platform_id="T2")).status_code == 201
    ambiguous = error(
        await get_linked(alice, id=person, platform_type="echo"), 409, "ambiguous_account"
    )
    assert ambiguous["choices"] == [
        {"community_platform_id": "T1", "platform_identifier": "U1"},
        {"community_platform_id": "T2", "platform_identifier": "U9"},
    ]
    picked = await get_linked(alice, id=person, platform_type="echo", community_platform_id="T2")
    assert picked.json()["platform_identifier"] == "U9"

    error(
        await client.get(f"{BASE}/get_user", params={"id": person}, headers=bob.headers),
        404,
        "not_found",
    )
    error(
        await client.get(f"{BASE}/get_user", params={"id": "mgid_nope"}, headers=alice.headers),
        404,
        "not_found",
    )
    assert (
        await client.post(
            f"{BASE}/unlink_account",
            json={**key, "community_platform_id": "T1"},
            headers=alice.headers,
        )
    ).status_code == 200


# --- merge_ids ----------------------------------------------------------------------------------


async def merge(
    client: httpx.AsyncClient, driver: DriverKey, primary: str, secondary: str
) -> httpx.Response:
    return await client.post(
        f"{BASE}/merge_ids",
        json={"primary_id": primary, "secondary_id": secondary},
        headers=driver.headers,
    )


@pytest.mark.usefixtures("commons")
async def test_merge_chain_resolves_in_one_step(
    client: httpx.AsyncClient, alice: DriverKey, runtime: Runtime
) -> None:
    a, b, c, d = await new_ids(client, alice, 4)
    for person, account in ((a, "UA"), (b, "UB"), (c, "UC")):
        await linked(client, alice, person, account)

    # A ← B ← C: first C into B, then B into A.
    merged = await merge(client, alice, b, c)
    assert merged.status_code == 200, merged.text
    assert merged.json()["id"] == b
    assert merged.json()["primary_id"] == b
    assert accounts_of(merged.json()) == ["UB", "UC"]
    assert (await user(client, alice, c))["primary_id"] == b

    merged = await merge(client, alice, a, b)
    assert merged.status_code == 200, merged.text
    for person in (a, b, c):
        body = await user(client, alice, person)
        assert body["id"] == person
        assert body["primary_id"] == a
        assert accounts_of(body) == ["UA", "UB", "UC"]
        assert {acc["metagov_id"] for acc in body["linked_accounts"]} == {a}
    # Every merged id points at the primary itself, not along the chain.
    async with runtime.db.snapshot() as session:
        rows = {m.external_id: m for m in (await session.scalars(select(MetagovId))).all()}
    assert rows[a].primary_id is None
    assert rows[b].primary_id == rows[a].id
    assert rows[c].primary_id == rows[a].id

    # Naming a merged id as the primary merges into its primary.
    assert (await merge(client, alice, c, d)).status_code == 200
    assert (await user(client, alice, d))["primary_id"] == a
    # Ids of one person already: nothing changes.
    again = await merge(client, alice, b, c)
    assert again.status_code == 200
    assert again.json()["primary_id"] == a
    # Linking to a merged id links to its primary; the account's holder is the primary.
    through = await link(client, alice, c, "UC2")
    assert through.json()["metagov_id"] == a
    # Only primaries are listed as people.
    page = await client.get(
        f"{BASE}/get_users", params={"community": "commons"}, headers=alice.headers
    )
    assert [u["id"] for u in page.json()["users"]] == [a]


@pytest.mark.usefixtures("commons")
async def test_merge_errors_change_nothing(
    client: httpx.AsyncClient, alice: DriverKey, bob: DriverKey
) -> None:
    a, b = await new_ids(client, alice, 2)
    await make_community(client, alice, "other")
    [elsewhere] = await new_ids(client, alice, community="other")

    error(await merge(client, alice, a, "mgid_nope"), 404, "not_found")
    error(await merge(client, alice, "mgid_nope", a), 404, "not_found")
    itself = error(await merge(client, alice, a, a), 422, "validation_error")
    assert itself["errors"][0]["loc"] == ["body", "secondary_id"]
    mismatch = error(await merge(client, alice, a, elsewhere), 409, "community_mismatch")
    assert "'commons'" in mismatch["detail"] and "'other'" in mismatch["detail"]
    error(await merge(client, bob, a, b), 404, "not_found")
    for person in (a, b, elsewhere):
        assert (await user(client, alice, person))["primary_id"] == person


# --- get_users and filter_users_by_account ------------------------------------------------------


@pytest.mark.usefixtures("commons")
async def test_get_users_filters_and_pages(
    client: httpx.AsyncClient, alice: DriverKey, bob: DriverKey
) -> None:
    ids = await new_ids(client, alice, 5)
    await linked(client, alice, ids[0], "U0")
    assert (
        await link(client, alice, ids[1], "U1", link_type="oauth", link_quality="confirmed")
    ).status_code == 201
    assert (await link(client, alice, ids[2], "U2", community_platform_id="T2")).status_code == 201
    assert (
        await link(
            client, alice, ids[3], "7", platform_type="randomness", community_platform_id=None
        )
    ).status_code == 201

    async def listed(**params: Any) -> list[str]:
        response = await client.get(
            f"{BASE}/get_users", params={"community": "commons", **params}, headers=alice.headers
        )
        assert response.status_code == 200, response.text
        return [u["id"] for u in response.json()["users"]]

    assert await listed() == ids
    assert await listed(platform_type="echo") == ids[:3]
    assert await listed(platform_type="echo", community_platform_id="T1") == ids[:2]
    assert await listed(community_platform_id="") == [ids[3]]
    assert await listed(link_type="oauth") == [ids[1]]
    assert await listed(link_quality="unknown") == [ids[0], ids[2], ids[3]]
    assert await listed(platform_identifier="U2") == [ids[2]]
    assert await listed(platform_type="randomness", platform_identifier="U2") == []

    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"community": "commons", "limit": 2}
        if after:
            params["after"] = after
        page = (await client.get(f"{BASE}/get_users", params=params, headers=alice.headers)).json()
        pages += 1
        seen += [u["id"] for u in page["users"]]
        after = page["next"]
        if after is None:
            break
    assert seen == ids
    assert pages == 3
    first = (
        await client.get(
            f"{BASE}/get_users", params={"community": "commons", "limit": 1}, headers=alice.headers
        )
    ).json()
    assert first["users"][0]["linked_accounts"][0]["platform_identifier"] == "U0"

    async def get_users(driver: DriverKey, **params: Any) -> httpx.Response:
        return await client.get(f"{BASE}/get_users", params=params, headers=driver.headers)

    error(await get_users(bob, community="commons"), 404, "unknown_community")
    error(await get_users(alice, community="commons", after="mgid_nope"), 404, "not_found")
    bad = error(
        await get_users(alice, community="commons", link_quality="sure"), 422, "validation_error"
    )
    assert bad["errors"][0]["loc"] == ["query", "link_quality"]
    error(await get_users(alice, community="commons", limit=0), 422, "validation_error")


@pytest.mark.usefixtures("commons")
async def test_filter_users_by_account(
    client: httpx.AsyncClient, alice: DriverKey, bob: DriverKey
) -> None:
    a, b, c = await new_ids(client, alice, 3)
    assert (await link(client, alice, a, "UA", link_type="oauth")).status_code == 201
    await linked(client, alice, b, "UB")
    [merged] = await new_ids(client, alice)
    assert (await merge(client, alice, a, merged)).status_code == 200

    async def kept(driver: DriverKey, ids: list[str], **filters: str) -> httpx.Response:
        return await client.get(
            f"{BASE}/filter_users_by_account",
            params={"ids": ids, **filters},
            headers=driver.headers,
        )

    assert (await kept(alice, [c, b, merged, a])).json() == [b, merged, a]
    assert (await kept(alice, [c, b, merged, a], link_type="oauth")).json() == [merged, a]
    assert (
        await kept(alice, [a, b], platform_type="echo", community_platform_id="T2")
    ).json() == []
    assert (await kept(alice, [b, b], platform_identifier="UB")).json() == [b]
    missing = error(await kept(alice, [a, "mgid_nope"]), 404, "not_found")
    assert "mgid_nope" in missing["detail"]
    error(await kept(bob, [a]), 404, "not_found")
    error(
        await client.get(f"{BASE}/filter_users_by_account", headers=alice.headers),
        422,
        "validation_error",
    )


@pytest.mark.usefixtures("commons")
async def test_an_account_is_linked_once_per_community_and_goes_with_it(
    client: httpx.AsyncClient, alice: DriverKey, runtime: Runtime
) -> None:
    [here] = await new_ids(client, alice)
    await make_community(client, alice, "other", [ECHO])
    [there] = await new_ids(client, alice, community="other")
    await linked(client, alice, here, "U1")
    # The same platform account, in another community: another person there.
    elsewhere = await link(client, alice, there, "U1", community="other")
    assert elsewhere.status_code == 201, elsewhere.text
    merged = await new_ids(client, alice, community="other")
    assert (await merge(client, alice, there, merged[0])).status_code == 200

    deleted = await client.delete("/api/internal/community/other", headers=alice.headers)
    assert deleted.status_code == 204
    error(
        await client.get(f"{BASE}/get_user", params={"id": there}, headers=alice.headers),
        404,
        "not_found",
    )
    assert accounts_of(await user(client, alice, here)) == ["U1"]
    assert await count_rows(runtime, "metagov_ids") == 1
    assert await count_rows(runtime, "linked_accounts") == 1


@pytest.mark.usefixtures("commons")
async def test_concurrent_links_and_crossed_merges_stay_consistent(
    client: httpx.AsyncClient, alice: DriverKey, runtime: Runtime
) -> None:
    a, b = await new_ids(client, alice, 2)
    racing = await asyncio.gather(
        link(client, alice, a, "U1", community_platform_id=None),
        link(client, alice, b, "U1", community_platform_id=None),
    )
    assert sorted(r.status_code for r in racing) == [201, 409]
    # Crossed merges: one wins, the other then finds one person and changes nothing (no cycle).
    crossed = await asyncio.gather(merge(client, alice, a, b), merge(client, alice, b, a))
    assert [r.status_code for r in crossed] == [200, 200]
    primaries = {(await user(client, alice, x))["primary_id"] for x in (a, b)}
    assert len(primaries) == 1
    async with runtime.db.snapshot() as session:
        rows = (await session.scalars(select(MetagovId))).all()
    assert sorted(r.primary_id is None for r in rows) == [False, True]

    # The database refuses a second link of the account even past the service's check.
    [account] = (await user(client, alice, a))["linked_accounts"]
    async with runtime.db.snapshot() as session:
        holder = (
            await session.scalars(select(MetagovId).where(MetagovId.primary_id.is_(None)))
        ).one()
    with pytest.raises(Conflict) as refused:
        async with runtime.unit_of_work() as session:
            await repository.add_account(
                session,
                LinkedAccount(
                    metagov_id=holder.id,
                    community_id=holder.community_id,
                    platform_type="echo",
                    platform_identifier=account["platform_identifier"],
                    community_platform_id="",
                    link_type="manual",
                    link_quality="unknown",
                ),
            )
    assert refused.value.code == "account_linked"
    assert await count_rows(runtime, "linked_accounts") == 1
