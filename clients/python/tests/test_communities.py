"""Communities against the real gateway: create, read, declarative PUT, delete, and the errors
a Driver branches on."""

from __future__ import annotations

import pytest

from metagov_client import (
    AsyncMetagovClient,
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PluginConfig,
)
from metagov_client.testing import Gateway


async def test_create_read_update_delete(aclient: AsyncMetagovClient, slug: str) -> None:
    created = await aclient.create_community(
        slug, readable_name="Readers", plugins={"randomness": {"default_low": 1}}
    )
    assert created.slug == slug
    assert created.readable_name == "Readers"
    randomness = created.plugin("randomness")
    assert randomness is not None
    assert randomness.config == {"default_low": 1, "default_high": 100}
    assert randomness.community == slug

    read = await aclient.get_community(slug)
    assert read == created

    # Declarative: exactly the listed plugins are enabled afterwards; a re-listed one keeps its id.
    updated = await aclient.update_community(
        slug,
        readable_name="Readers' Club",
        plugins=[
            PluginConfig("randomness", {"default_high": 6}),
            PluginConfig("webhook", {"secret": "whsec_c2VjcmV0LXNlY3JldA=="}),
        ],
    )
    assert updated.readable_name == "Readers' Club"
    assert sorted(p.name for p in updated.plugins) == ["randomness", "webhook"]
    kept = updated.plugin("randomness")
    assert kept is not None and kept.id == randomness.id
    assert kept.config["default_high"] == 6
    webhook = updated.plugin("webhook")
    assert webhook is not None and webhook.secrets_set == ["secret"]
    assert "secret" not in webhook.config

    only_webhook = await aclient.update_community(
        slug, plugins={"webhook": {"secret": "s3cret-s3cret", "source_name": "webhook"}}
    )
    assert [p.name for p in only_webhook.plugins] == ["webhook"]

    await aclient.delete_community(slug)
    with pytest.raises(NotFoundError) as missing:
        await aclient.get_community(slug)
    assert missing.value.code == "unknown_community"
    assert missing.value.status_code == 404


async def test_relisting_a_plugin_that_leaves_its_platform_id_to_the_default(
    aclient: AsyncMetagovClient, slug: str
) -> None:
    plugins = {"webhook": {"secret": "s3cret-s3cret"}}
    await aclient.create_community(slug, plugins=plugins)
    community = await aclient.update_community(slug, plugins=plugins)
    assert [p.name for p in community.plugins] == ["webhook"]


async def test_declare_community_creates_then_converges(
    aclient: AsyncMetagovClient, slug: str
) -> None:
    first = await aclient.declare_community(
        slug, readable_name="Declared", plugins={"randomness": {}}
    )
    assert first.slug == slug and [p.name for p in first.plugins] == ["randomness"]
    again = await aclient.declare_community(slug, plugins={"randomness": {}})
    assert again.readable_name == "Declared"  # left as it was
    assert again.plugins[0].id == first.plugins[0].id


async def test_rename(aclient: AsyncMetagovClient, slug: str) -> None:
    await aclient.create_community(slug)
    renamed = await aclient.update_community(slug, new_slug=f"{slug}-2")
    assert renamed.slug == f"{slug}-2"
    with pytest.raises(NotFoundError):
        await aclient.get_community(slug)


async def test_a_generated_slug(aclient: AsyncMetagovClient) -> None:
    created = await aclient.create_community(readable_name="No slug")
    assert len(created.slug) >= 32  # a UUID


async def test_errors_carry_the_gateway_code(aclient: AsyncMetagovClient, slug: str) -> None:
    await aclient.create_community(slug)
    with pytest.raises(ConflictError) as taken:
        await aclient.create_community(slug)
    assert taken.value.code == "slug_taken"

    with pytest.raises(InvalidInputError) as invalid:
        await aclient.create_community("not a slug!")
    assert invalid.value.code == "validation_error"
    assert [e.loc for e in invalid.value.errors] == [["body", "slug"]]

    with pytest.raises(InvalidInputError) as bad_config:
        await aclient.update_community(
            slug, plugins={"randomness": {"default_low": 9, "default_high": 1}}
        )
    assert bad_config.value.errors, bad_config.value

    with pytest.raises(InvalidInputError) as unknown_plugin:
        await aclient.update_community(slug, plugins={"no-such-plugin": {}})
    assert [e.loc for e in unknown_plugin.value.errors] == [["body", "plugins", 0, "name"]]


async def test_a_wrong_key_is_refused(gateway: Gateway, slug: str) -> None:
    async with AsyncMetagovClient(gateway.url, "mgk_wrong") as wrong:
        with pytest.raises(AuthenticationError) as refused:
            await wrong.get_community(slug)
    assert refused.value.code == "unauthorized"
    assert refused.value.status_code == 401
    assert refused.value.method == "GET" and refused.value.url.endswith(f"/community/{slug}")


async def test_is_ready(aclient: AsyncMetagovClient) -> None:
    assert await aclient.is_ready()
    async with AsyncMetagovClient("http://127.0.0.1:9", "k") as nowhere:
        assert not await nowhere.is_ready()
