"""The sync client, once through every method (the async tests cover the behaviour in depth;
both clients run the same operation definitions)."""

from __future__ import annotations

from client_support import Receiver, eventually
from metagov_client import MetagovClient, verify_event
from metagov_client.testing import Gateway

VOTE = "randomness.delayed-stochastic-vote"


def test_every_method(
    client: MetagovClient, gateway: Gateway, receiver: Receiver, slug: str
) -> None:
    assert client.is_ready()
    community = client.declare_community(slug, readable_name="Sync", plugins={"randomness": {}})
    assert client.get_community(slug) == community
    assert client.create_community(f"{slug}-other").slug == f"{slug}-other"
    client.update_community(f"{slug}-other", readable_name="Other")
    client.delete_community(f"{slug}-other")

    hook = client.enable_plugin(slug, "webhook", {"secret": "s3cret-s3cret"})
    assert (
        client.configure_plugin(slug, "webhook", hook.id, {"event_type_field": "t"}).id == hook.id
    )
    client.disable_plugin(slug, "webhook", hook.id)
    assert client.plugin_metadata("webhook").secret_fields == ["secret"]
    assert "randomness" in client.plugin_schemas()

    assert client.perform_action(slug, "randomness.random-int", {"low": 2, "high": 2}) == {
        "value": 2
    }
    started = client.start_process(
        slug, VOTE, {"options": ["x"], "delay_seconds": 3600}, callback_url=receiver.url("/sync")
    )
    assert client.get_process(slug, VOTE, started.id).status == "pending"
    assert [p.id for p in client.list_processes(slug)] == [started.id]
    assert client.close_process(slug, VOTE, started.id).outcome["winner"] == "x"
    again = client.start_process(slug, VOTE, {"options": ["y"], "delay_seconds": 0.1})
    assert client.wait_for_outcome(again, timeout=15).status == "completed"

    events = client.list_events(slug)
    assert [e.event_type for e in events] == ["process.completed", "process.completed"]
    assert list(client.iter_events(slug, page_size=1)) == events
    assert client.set_subscriptions(slug, ["process.*"]) == ["process.*"]
    assert client.get_subscriptions(slug) == ["process.*"]

    [received] = eventually(lambda: receiver.at("/sync"))
    assert verify_event(gateway.webhook_secret, received.headers, received.body).id == events[0].id
    [delivery] = [d for d in client.list_deliveries() if d.url == receiver.url("/sync")]
    assert client.replay_delivery(delivery.id).status == "pending"
    assert client.replay_dead_deliveries() >= 0
