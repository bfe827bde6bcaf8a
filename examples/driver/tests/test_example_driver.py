"""The example Driver end to end: a platform's signed webhook reaches the gateway, the Driver
starts a vote, the vote's outcome reaches the Driver, which records the decision and acts."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
from metagov_client import MetagovClient, sign_headers

from driver_stack import Stack

VOTE = "randomness.delayed-stochastic-vote"


def _decisions(stack: Stack) -> list[dict[str, Any]]:
    response = httpx.get(f"{stack.driver_url}/decisions")
    response.raise_for_status()
    decisions: list[dict[str, Any]] = response.json()
    return decisions


def test_the_community_is_declared_on_start(stack: Stack) -> None:
    with MetagovClient(stack.gateway.url, stack.gateway.api_key) as mg:
        community = mg.get_community(stack.community)
    assert sorted(p.name for p in community.plugins) == ["randomness", "webhook"]


def test_unsigned_events_are_refused(stack: Stack) -> None:
    body = json.dumps({"id": "evt_1", "event_type": "process.completed"}).encode()
    unsigned = httpx.post(f"{stack.driver_url}/events", content=body)
    assert unsigned.status_code == 401
    assert unsigned.json()["reason"] == "missing_headers"
    forged = httpx.post(
        f"{stack.driver_url}/events",
        content=body,
        headers=sign_headers("whsec_bm90LXRoZS1nYXRld2F5", "evt_1", body),
    )
    assert forged.status_code == 401
    assert forged.json()["reason"] == "bad_signature"


def test_a_proposal_is_voted_on_decided_and_acted_on(stack: Stack) -> None:
    title = f"Adopt a code of conduct ({uuid.uuid4().hex[:6]})"
    body = json.dumps({"type": "proposal.created", "title": title}).encode()
    posted = httpx.post(
        f"{stack.gateway.url}/api/hooks/{stack.community}/webhook",
        content=body,
        headers={
            **sign_headers(stack.forum_secret, f"msg_{uuid.uuid4().hex}", body),
            "content-type": "application/json",
        },
    )
    assert posted.status_code == 200, posted.text

    deadline = time.monotonic() + 30
    while not (mine := [d for d in _decisions(stack) if d["proposal"] == title]):
        assert time.monotonic() < deadline, f"no decision; the Driver's log:\n{_log(stack)}"
        time.sleep(0.1)
    [decision] = mine
    assert decision["status"] == "completed"
    assert decision["winner"] in {"yes", "no"}
    assert decision["lucky_number"] == decision["votes"][decision["winner"]]

    with MetagovClient(stack.gateway.url, stack.gateway.api_key) as mg:
        process = mg.get_process(stack.community, VOTE, decision["process_id"])
        lucky = mg.perform_action(stack.community, "randomness.get-lucky-number")
    assert process.status == "completed"
    assert process.outcome["winner"] == decision["winner"]
    assert lucky == {"number": decision["lucky_number"]}


def _log(stack: Stack) -> str:
    driver, gateway = stack.driver_log.read_text(), stack.gateway.log()
    return f"{driver[-3000:]}\n--- gateway ---\n{gateway[-3000:]}"
