"""Plugins and actions against the real gateway."""

from __future__ import annotations

import pytest

from metagov_client import (
    AsyncMetagovClient,
    BadRequestError,
    InvalidInputError,
    NotFoundError,
)


async def test_enable_configure_disable(aclient: AsyncMetagovClient, slug: str) -> None:
    await aclient.create_community(slug)
    enabled = await aclient.enable_plugin(
        slug, "webhook", {"secret": "s3cret-s3cret", "event_type_field": "type"}
    )
    assert enabled.name == "webhook"
    assert enabled.community_platform_id == "webhook"
    assert enabled.config == {"event_type_field": "type", "source_name": "webhook"}
    assert enabled.secrets_set == ["secret"]
    assert enabled.suspended_at is None

    # The secret may be left out of a re-configuration: it keeps its stored value.
    configured = await aclient.configure_plugin(
        slug, "webhook", enabled.id, {"event_type_field": "kind"}
    )
    assert configured.id == enabled.id
    assert configured.config["event_type_field"] == "kind"
    assert configured.secrets_set == ["secret"]

    await aclient.disable_plugin(slug, "webhook", enabled.id)
    assert (await aclient.get_community(slug)).plugins == []
    with pytest.raises(NotFoundError):
        await aclient.disable_plugin(slug, "webhook", enabled.id)


async def test_metadata_and_schemas(aclient: AsyncMetagovClient) -> None:
    meta = await aclient.plugin_metadata("randomness")
    assert meta.name == "randomness"
    assert meta.auth_type == "none"
    assert not meta.uses_webhook
    assert {a.id for a in meta.actions} >= {"randomness.random-int", "randomness.set-lucky-number"}
    [vote] = meta.processes
    assert vote.id == "randomness.delayed-stochastic-vote"
    assert "options" in vote.parameters_schema["properties"]
    assert vote.response_schema is not None
    assert [e.event_type for e in meta.events] == ["lucky_number_changed"]
    assert "default_low" in meta.config_schema["properties"]

    webhook = await aclient.plugin_metadata("webhook")
    assert webhook.uses_webhook
    assert webhook.community_platform_id_field == "source_name"
    assert webhook.secret_fields == ["secret"]

    schemas = await aclient.plugin_schemas()
    assert {"randomness", "webhook"} <= set(schemas)

    with pytest.raises(NotFoundError) as unknown:
        await aclient.plugin_metadata("no-such-plugin")
    assert unknown.value.code == "unknown_plugin"


async def test_actions(aclient: AsyncMetagovClient, slug: str) -> None:
    await aclient.create_community(slug, plugins={"randomness": {}})
    result = await aclient.perform_action(slug, "randomness.random-int", {"low": 3, "high": 3})
    assert result == {"value": 3}
    # No parameters: the body may be left empty when none is required.
    assert 0 <= (await aclient.perform_action(slug, "randomness.random-int"))["value"] <= 100

    assert await aclient.perform_action(slug, "randomness.set-lucky-number", {"number": 7}) == {
        "number": 7
    }
    assert await aclient.perform_action(slug, "randomness.get-lucky-number") == {"number": 7}


async def test_action_errors(aclient: AsyncMetagovClient, slug: str) -> None:
    await aclient.create_community(slug, plugins={"randomness": {}})
    with pytest.raises(InvalidInputError) as missing:
        await aclient.perform_action(slug, "randomness.set-lucky-number")
    assert [e.loc for e in missing.value.errors] == [["body", "parameters", "number"]]

    with pytest.raises(BadRequestError) as refused:
        await aclient.perform_action(slug, "randomness.random-int", {"low": 5, "high": 1})
    assert refused.value.code == "plugin_error"

    with pytest.raises(NotFoundError) as unknown:
        await aclient.perform_action(slug, "randomness.no-such-action")
    assert unknown.value.code == "not_found"

    await aclient.create_community(f"{slug}-bare")
    with pytest.raises(NotFoundError) as not_enabled:
        await aclient.perform_action(f"{slug}-bare", "randomness.random-int")
    assert not_enabled.value.code == "plugin_not_enabled"

    with pytest.raises(NotFoundError) as no_community:
        await aclient.perform_action(f"{slug}-missing", "randomness.random-int")
    assert no_community.value.code == "unknown_community"

    with pytest.raises(ValueError, match="plugin"):
        await aclient.perform_action(slug, "random-int")
