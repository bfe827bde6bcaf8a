"""The Interactions endpoint: Discord's signature and timestamp checked before anything is
stored, PING answered, slash commands acknowledged at once and delivered to the Driver by the
job."""

from __future__ import annotations

import json
import time

import respx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from metagov.plugins.discord import DiscordPlugin
from metagov.plugins.sdk import WebhookRequest
from metagov.testing import DriverCredentials, TestGateway
from tests.plugins.discord.support import (
    EVENTS,
    GUILD,
    MESSAGE,
    OTHER_GUILD,
    click,
    driver_events,
    interact,
    ping,
    signed,
    slash_command,
)


async def test_ping_is_answered_with_pong_and_nothing_is_stored(gw: TestGateway) -> None:
    answer = await interact(gw.client, ping())
    body = json.dumps(ping()).encode()
    nearly_stale = await gw.client.post(
        "/api/hooks/discord", content=body, headers=signed(body, stamp=int(time.time()) - 290)
    )

    assert answer.status_code == nearly_stale.status_code == 200
    assert answer.json() == nearly_stale.json() == {"type": 1}
    assert await gw.drain() == 0


FORGERIES = ("wrong_key", "tampered_body", "stale", "future", "no_signature", "not_hex", "no_stamp")


def forge(body: bytes, forgery: str) -> tuple[bytes, dict[str, str]]:
    """A request Discord did not send (or sent more than five minutes ago)."""
    headers = signed(body)
    if forgery == "wrong_key":
        headers = signed(body, signer=Ed25519PrivateKey.generate())
    elif forgery == "tampered_body":
        body = body.replace(b"Gitrog", b"Gitrag")
    elif forgery == "stale":
        headers = signed(body, stamp=int(time.time()) - 301)
    elif forgery == "future":
        headers = signed(body, stamp=int(time.time()) + 301)
    elif forgery == "no_signature":
        del headers["X-Signature-Ed25519"]
    elif forgery == "not_hex":
        headers["X-Signature-Ed25519"] = "zz" * 64
    else:
        del headers["X-Signature-Timestamp"]
    return body, headers


async def test_forged_or_stale_interactions_get_401_and_are_not_stored(
    gw: TestGateway, installed: DriverCredentials, api: respx.MockRouter
) -> None:
    events = api.post(EVENTS).respond(204)
    original = json.dumps(slash_command("1200000000000000001")).encode()
    for forgery in FORGERIES:
        body, headers = forge(original, forgery)
        answer = await gw.client.post("/api/hooks/discord", content=body, headers=headers)
        assert answer.status_code == 401, forgery
        assert answer.json()["code"] == "webhook_rejected"

    assert await gw.drain() == 0
    assert not events.called
    # Nothing of the forgeries was kept: the genuine interaction with the same id still counts.
    genuine = await gw.client.post("/api/hooks/discord", content=original, headers=signed(original))
    assert genuine.status_code == 200
    await gw.drain()
    assert [e["event_type"] for e in driver_events(events)] == ["slash_command"]


async def test_slash_command_is_acknowledged_at_once_and_reaches_the_driver_once(
    gw: TestGateway, installed: DriverCredentials, api: respx.MockRouter
) -> None:
    events = api.post(EVENTS).respond(204)
    payload = slash_command("786008729715212338")

    first = await interact(gw.client, payload)
    again = await interact(gw.client, payload)

    expected = {"type": 4, "data": {"content": "Received `/cardsearch`.", "flags": 64}}
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() == expected
    assert not events.called  # the answer came before any job ran

    await gw.drain()

    [event] = driver_events(events)
    assert event["source"] == "discord"
    assert event["event_type"] == "slash_command"
    assert event["data"] == {
        "command": "cardsearch",
        "options": {"cardname": "The Gitrog Monster"},
        "channel_id": "645027906669510667",
        "guild_id": GUILD,
        "user": {"id": "53908232506183680", "username": "mason", "global_name": "Mason"},
        "interaction_id": "786008729715212338",
        "command_id": "771825006014889984",
    }
    assert event["initiator"] == {
        "user_id": "53908232506183680",
        "provider": "discord",
        "is_metagov_bot": False,
    }


async def test_subcommands_are_named_in_full(
    gw: TestGateway, installed: DriverCredentials, api: respx.MockRouter
) -> None:
    events = api.post(EVENTS).respond(204)
    options = [
        {
            "type": 2,
            "name": "proposal",
            "options": [
                {
                    "type": 1,
                    "name": "open",
                    "options": [
                        {"type": 3, "name": "title", "value": "Adopt a code of conduct"},
                        {"type": 4, "name": "days", "value": 3},
                    ],
                }
            ],
        }
    ]
    answer = await interact(gw.client, slash_command("1200000000000000007", options=options))
    assert answer.json()["data"]["content"] == "Received `/cardsearch proposal open`."
    await gw.drain()
    [event] = driver_events(events)
    assert event["data"]["command"] == "cardsearch proposal open"
    assert event["data"]["options"] == {"title": "Adopt a code of conduct", "days": 3}


async def test_commands_of_servers_without_an_instance_are_answered_and_dropped(
    gw: TestGateway, installed: DriverCredentials, api: respx.MockRouter
) -> None:
    events = api.post(EVENTS).respond(204)
    elsewhere = await interact(gw.client, slash_command("1200000000000000002", guild=OTHER_GUILD))
    in_a_dm = await interact(gw.client, slash_command("1200000000000000003", guild=None))

    assert elsewhere.json()["type"] == 4
    assert in_a_dm.json() == {
        "type": 4,
        "data": {"content": "Metagov commands work in servers only.", "flags": 64},
    }
    assert await gw.drain() == 0
    assert not events.called


async def test_autocomplete_gets_no_choices_and_odd_shapes_no_error(gw: TestGateway) -> None:
    payload = slash_command("1200000000000000004")
    payload["type"] = 4
    answer = await interact(gw.client, payload)
    assert answer.json() == {"type": 8, "data": {"choices": []}}
    odd = {**slash_command("1200000000000000006", guild=OTHER_GUILD), "data": [], "member": []}
    assert (await interact(gw.client, odd)).status_code == 200
    assert await gw.drain() == 0


def test_a_click_concerns_the_vote_of_its_message_only() -> None:
    """``webhook_keys``: a click maps to its message id (what a vote listens to); a command or
    an unreadable body concerns no vote."""
    plugin = DiscordPlugin()

    def keys(payload: object) -> object:
        return plugin.webhook_keys(WebhookRequest(headers={}, body=json.dumps(payload).encode()))

    assert keys(click("1200000000000000005", "80351110224678912", "metagov-vote:0")) == [MESSAGE]
    assert keys(slash_command()) == []
    assert plugin.webhook_keys(WebhookRequest(headers={}, body=b"not json")) == []
