"""Identity against the real gateway: MetagovIDs, linked accounts, merges, the pages of people,
and the errors a Driver branches on; the async client in depth, the sync one through every
method."""

from __future__ import annotations

from typing import Any

import pytest

from metagov_client import (
    AsyncMetagovClient,
    ConflictError,
    InvalidInputError,
    LinkedAccount,
    MetagovClient,
    NotFoundError,
    User,
)

# Accounts can be linked only on plugins enabled in the community; these need no platform.
PLUGINS = {
    "randomness": {},
    "webhook": {"secret": "s3cret-s3cret", "source_name": "webhook"},
}


async def test_link_read_and_unlink(aclient: AsyncMetagovClient, slug: str) -> None:
    await aclient.create_community(slug, plugins=PLUGINS)
    [ana] = await aclient.create_ids(slug)
    more = await aclient.create_ids(slug, count=3)
    assert ana.startswith("mgid_")
    assert len(more) == 3
    assert len({ana, *more}) == 4

    linked = await aclient.link_account(
        ana,
        slug,
        "randomness",
        "U024BE7LH",
        community_platform_id="T0A1B2C3D",
        custom_data={"email": "ana@example.org"},
        link_type="email",
        link_quality="weak_confirm",
    )
    assert isinstance(linked, LinkedAccount)
    assert linked.metagov_id == ana
    assert linked.community == slug
    assert (linked.platform_type, linked.platform_identifier) == ("randomness", "U024BE7LH")
    assert linked.community_platform_id == "T0A1B2C3D"
    assert linked.custom_data == {"email": "ana@example.org"}
    assert (linked.link_type, linked.link_quality) == ("email", "weak_confirm")
    assert linked.linked_at.tzinfo is not None

    # The gateway's defaults: no tenant, manual, unknown, no custom data.
    plain = await aclient.link_account(ana, slug, "webhook", "ana")
    assert plain.community_platform_id is None
    assert (plain.link_type, plain.link_quality, plain.custom_data) == ("manual", "unknown", {})

    # Linking it again to the same person sets what was sent.
    relinked = await aclient.link_account(
        ana, slug, "webhook", "ana", link_type="oauth", link_quality="confirmed"
    )
    assert (relinked.link_type, relinked.link_quality) == ("oauth", "confirmed")
    assert relinked.linked_at == plain.linked_at

    user = await aclient.get_user(ana)
    assert isinstance(user, User)
    assert (user.id, user.primary_id, user.community) == (ana, ana, slug)
    assert user.is_primary
    assert {a.platform_type: a for a in user.linked_accounts} == {
        "randomness": linked,
        "webhook": relinked,
    }

    assert await aclient.get_linked_account(ana, "randomness") == linked
    assert (
        await aclient.get_linked_account(ana, "randomness", community_platform_id="T0A1B2C3D")
        == linked
    )
    assert await aclient.get_linked_account(ana, "webhook", community_platform_id="") == relinked

    gone = await aclient.unlink_account(
        slug, "randomness", "U024BE7LH", community_platform_id="T0A1B2C3D"
    )
    assert gone == linked
    with pytest.raises(NotFoundError) as none_left:
        await aclient.get_linked_account(ana, "randomness")
    assert none_left.value.code == "not_found"
    assert (await aclient.unlink_account(slug, "webhook", "ana")).metagov_id == ana
    assert (await aclient.get_user(ana)).linked_accounts == []

    events = [e.event_type for e in await aclient.list_events(slug)]
    assert events == ["identity.linked"] * 3 + ["identity.unlinked"] * 2


async def test_a_merge_chain_resolves_to_its_first_primary(
    aclient: AsyncMetagovClient, slug: str
) -> None:
    await aclient.create_community(slug, plugins=PLUGINS)
    a, b, c = await aclient.create_ids(slug, count=3)
    for metagov_id, account in ((a, "a"), (b, "b"), (c, "c")):
        await aclient.link_account(metagov_id, slug, "randomness", account)

    into_b = await aclient.merge_ids(b, c)
    assert (into_b.id, into_b.primary_id) == (b, b)
    assert sorted(x.platform_identifier for x in into_b.linked_accounts) == ["b", "c"]

    into_a = await aclient.merge_ids(a, b)
    assert (into_a.id, into_a.primary_id) == (a, a)

    user = await aclient.get_user(c)
    assert (user.id, user.primary_id) == (c, a)
    assert not user.is_primary
    assert sorted(x.platform_identifier for x in user.linked_accounts) == ["a", "b", "c"]
    assert {x.metagov_id for x in user.linked_accounts} == {a}
    assert (await aclient.get_user(b)).primary_id == a

    # Merging two ids of one person again changes nothing; linking to a merged id links to its
    # primary.
    assert await aclient.merge_ids(a, c) == into_a
    assert (await aclient.link_account(c, slug, "webhook", "d")).metagov_id == a

    # The person has several randomness accounts: which one is ambiguous.
    with pytest.raises(ConflictError) as ambiguous:
        await aclient.get_linked_account(c, "randomness")
    assert ambiguous.value.code == "ambiguous_account"
    assert sorted(x["platform_identifier"] for x in ambiguous.value.choices) == ["a", "b", "c"]

    [merged] = [e for e in await aclient.list_events(slug) if e.event_type == "identity.merged"][1:]
    assert merged.data["primary_id"] == a
    assert sorted(merged.data["merged_ids"]) == sorted([b, c])


async def test_pages_and_filters(aclient: AsyncMetagovClient, slug: str) -> None:
    await aclient.create_community(slug, plugins=PLUGINS)
    ids = await aclient.create_ids(slug, count=5)
    await aclient.link_account(ids[0], slug, "randomness", "r0", link_type="email")
    await aclient.link_account(
        ids[1], slug, "randomness", "r1", community_platform_id="T1", link_quality="confirmed"
    )
    await aclient.link_account(ids[3], slug, "webhook", "w3")

    first = await aclient.get_users(slug, limit=2)
    assert [u.id for u in first.users] == ids[:2]
    assert first.next == ids[1]
    second = await aclient.get_users(slug, after=first.next, limit=2)
    assert [u.id for u in second.users] == ids[2:4]
    last = await aclient.get_users(slug, after=second.next, limit=2)
    assert ([u.id for u in last.users], last.next) == ([ids[4]], None)
    assert [u.id for u in (await aclient.get_users(slug)).users] == ids

    assert [u.id async for u in aclient.iter_users(slug, page_size=2)] == ids
    assert [u.id async for u in aclient.iter_users(slug, after=ids[2], page_size=1)] == ids[3:]
    everyone = [u async for u in aclient.iter_users(slug)]
    assert [len(u.linked_accounts) for u in everyone] == [1, 1, 0, 1, 0]

    async def users(**filters: Any) -> list[str]:
        return [u.id async for u in aclient.iter_users(slug, page_size=1, **filters)]

    assert await users(platform_type="randomness") == ids[:2]
    assert await users(platform_type="randomness", community_platform_id="") == ids[:1]
    assert await users(community_platform_id="T1") == ids[1:2]
    assert await users(link_type="email") == ids[:1]
    assert await users(link_quality="unknown") == [ids[0], ids[3]]
    assert await users(platform_identifier="w3") == ids[3:4]
    page = await aclient.get_users(slug, platform_type="webhook", link_type="manual")
    assert ([u.id for u in page.users], page.next) == ([ids[3]], None)

    # Those of the ids given, in their order; a merged id answers for its person.
    await aclient.merge_ids(ids[3], ids[4])
    reversed_ids = ids[::-1]
    assert await aclient.filter_users_by_account(reversed_ids) == [
        ids[4],
        ids[3],
        ids[1],
        ids[0],
    ]
    assert await aclient.filter_users_by_account(reversed_ids, platform_type="webhook") == [
        ids[4],
        ids[3],
    ]
    assert await aclient.filter_users_by_account(
        ids, platform_type="randomness", community_platform_id="T1", link_quality="confirmed"
    ) == [ids[1]]
    assert await aclient.filter_users_by_account(ids[2:3]) == []
    assert await aclient.filter_users_by_account(ids, platform_identifier="r0") == ids[:1]
    assert await aclient.filter_users_by_account(ids, link_type="oauth") == []
    with pytest.raises(TypeError):
        await aclient.filter_users_by_account(ids[0])


async def test_errors_carry_the_gateways_code(aclient: AsyncMetagovClient, slug: str) -> None:
    await aclient.create_community(slug, plugins=PLUGINS)
    a, b, c = await aclient.create_ids(slug, count=3)
    await aclient.link_account(a, slug, "randomness", "U1", community_platform_id="T1")

    with pytest.raises(ConflictError) as taken:
        await aclient.link_account(b, slug, "randomness", "U1", community_platform_id="T1")
    assert (taken.value.status_code, taken.value.code) == (409, "account_linked")
    assert taken.value.metagov_id == a
    # The same identifier in another tenant is another account.
    assert (
        await aclient.link_account(b, slug, "randomness", "U1", community_platform_id="T2")
    ).metagov_id == b
    # The holder named is the person's primary, whichever id the account was linked through.
    await aclient.merge_ids(c, a)
    with pytest.raises(ConflictError) as still_taken:
        await aclient.link_account(b, slug, "randomness", "U1", community_platform_id="T1")
    assert still_taken.value.metagov_id == c

    unknown = "mgid_unknown-unknown-unkno"
    for call in (
        aclient.get_user(unknown),
        aclient.get_linked_account(unknown, "randomness"),
        aclient.merge_ids(a, unknown),
        aclient.link_account(unknown, slug, "randomness", "U9"),
        aclient.filter_users_by_account([a, unknown]),
        aclient.get_users(slug, after=unknown),
        aclient.unlink_account(slug, "randomness", "U9"),
    ):
        with pytest.raises(NotFoundError) as missing:
            await call
        assert (missing.value.status_code, missing.value.code) == (404, "not_found")
        assert missing.value.metagov_id is None

    with pytest.raises(NotFoundError) as no_plugin:
        await aclient.link_account(a, slug, "slack", "U1")
    assert no_plugin.value.code == "plugin_not_enabled"
    with pytest.raises(NotFoundError) as no_community:
        await aclient.create_ids(f"{slug}-nowhere")
    assert no_community.value.code == "unknown_community"

    with pytest.raises(InvalidInputError) as into_itself:
        await aclient.merge_ids(a, a)
    assert into_itself.value.errors[0].loc == ["body", "secondary_id"]
    with pytest.raises(InvalidInputError) as too_many:
        await aclient.create_ids(slug, count=101)
    assert too_many.value.code == "validation_error"

    await aclient.create_community(f"{slug}-2", plugins=PLUGINS)
    [elsewhere] = await aclient.create_ids(f"{slug}-2")
    with pytest.raises(ConflictError) as mismatch:
        await aclient.merge_ids(a, elsewhere)
    assert mismatch.value.code == "community_mismatch"
    with pytest.raises(ConflictError) as wrong_community:
        await aclient.link_account(elsewhere, slug, "randomness", "U5")
    assert wrong_community.value.code == "community_mismatch"


def test_sync_client_every_identity_method(client: MetagovClient, slug: str) -> None:
    client.create_community(slug, plugins=PLUGINS)
    [a] = client.create_ids(slug)
    b, c = client.create_ids(slug, 2)

    linked = client.link_account(
        a, slug, "randomness", "U1", custom_data={"n": 1}, link_quality="strong_confirm"
    )
    assert (linked.metagov_id, linked.custom_data, linked.link_quality) == (
        a,
        {"n": 1},
        "strong_confirm",
    )
    client.link_account(c, slug, "webhook", "W1", community_platform_id="webhook")
    with pytest.raises(ConflictError) as taken:
        client.link_account(b, slug, "randomness", "U1")
    assert (taken.value.code, taken.value.metagov_id) == ("account_linked", a)

    client.merge_ids(b, c)
    merged = client.merge_ids(a, b)
    assert (merged.id, merged.primary_id, len(merged.linked_accounts)) == (a, a, 2)
    assert client.get_user(c).primary_id == a
    assert client.get_linked_account(c, "webhook", community_platform_id="webhook").metagov_id == a

    page = client.get_users(slug, limit=1)
    assert ([u.id for u in page.users], page.next) == ([a], None)  # b and c are merged into a
    assert [u.id for u in client.iter_users(slug, platform_type="webhook", page_size=1)] == [a]
    assert client.filter_users_by_account([c, b, a], link_quality="strong_confirm") == [c, b, a]

    assert client.unlink_account(slug, "randomness", "U1") == linked
    with pytest.raises(NotFoundError) as missing:
        client.get_linked_account(a, "randomness")
    assert missing.value.code == "not_found"
    with pytest.raises(NotFoundError) as unknown:
        client.get_user("mgid_nobody")
    assert unknown.value.code == "not_found"
