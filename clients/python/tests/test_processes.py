"""Governance processes against the real gateway: start, read, list, close, wait."""

from __future__ import annotations

import pytest

from metagov_client import (
    AsyncMetagovClient,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ProcessTimeoutError,
)

VOTE = "randomness.delayed-stochastic-vote"


async def test_start_read_list_close(aclient: AsyncMetagovClient, slug: str) -> None:
    await aclient.create_community(slug, plugins={"randomness": {}})
    started = await aclient.start_process(
        slug, VOTE, {"options": ["pizza", "tacos"], "delay_seconds": 3600}
    )
    assert started.name == VOTE and started.plugin == "randomness"
    assert started.community == slug
    assert started.status == "pending" and started.is_open
    assert started.outcome is None
    assert started.closing_at is not None and started.closing_at > started.created_at

    assert await aclient.get_process(slug, VOTE, started.id) == started
    assert [p.id for p in await aclient.list_processes(slug, status="pending")] == [started.id]
    assert await aclient.list_processes(slug, status="completed") == []
    assert [p.id for p in await aclient.list_processes(slug, plugin="randomness")] == [started.id]

    closed = await aclient.close_process(slug, VOTE, started.id)
    assert closed.status == "completed" and not closed.is_open
    assert closed.outcome["winner"] in {"pizza", "tacos"}
    assert set(closed.outcome["votes"]) == {"pizza", "tacos"}

    with pytest.raises(ConflictError) as again:
        await aclient.close_process(slug, VOTE, started.id)
    assert again.value.code == "invalid_transition"


async def test_wait_for_outcome(aclient: AsyncMetagovClient, slug: str) -> None:
    await aclient.create_community(slug, plugins={"randomness": {}})
    started = await aclient.start_process(
        slug, VOTE, {"options": ["yes", "no"], "delay_seconds": 0.2}
    )
    done = await aclient.wait_for_outcome(started, timeout=15)
    assert done.id == started.id
    assert done.status == "completed"
    assert done.outcome["winner"] in {"yes", "no"}


async def test_wait_for_outcome_gives_up(aclient: AsyncMetagovClient, slug: str) -> None:
    await aclient.create_community(slug, plugins={"randomness": {}})
    started = await aclient.start_process(slug, VOTE, {"options": ["yes"], "delay_seconds": 3600})
    with pytest.raises(ProcessTimeoutError) as timed_out:
        await aclient.wait_for_outcome(started, timeout=0.3, interval=0.1)
    assert timed_out.value.process.id == started.id
    assert timed_out.value.process.status == "pending"


async def test_process_errors(aclient: AsyncMetagovClient, slug: str) -> None:
    await aclient.create_community(slug, plugins={"randomness": {}})
    with pytest.raises(NotFoundError) as missing:
        await aclient.get_process(slug, VOTE, 424242)
    assert missing.value.code == "not_found"
    with pytest.raises(ValueError, match=r"<plugin>\.<process>"):
        await aclient.start_process(slug, "delayed-stochastic-vote", {})


async def test_a_callback_url_is_checked(aclient: AsyncMetagovClient, slug: str) -> None:
    await aclient.create_community(slug, plugins={"randomness": {}})
    with pytest.raises(InvalidInputError) as invalid:
        await aclient.start_process(slug, VOTE, {"options": ["a"]}, callback_url="not a url")
    assert [e.loc for e in invalid.value.errors] == [["body", "callback_url"]]
