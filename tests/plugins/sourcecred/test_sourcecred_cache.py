"""The score cache on its own: concurrent misses share one read, a result is kept for its
time and no longer, and a failed read is shared but not kept."""

from __future__ import annotations

import asyncio

from metagov.errors import UpstreamError
from metagov.plugins.sourcecred.output import ScoreCache, Scores


class Upstream:
    """A read that waits until the test lets it finish, counting how often it was started."""

    def __init__(self) -> None:
        self.reads = 0
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.fail = False

    async def load(self) -> Scores:
        self.reads += 1
        self.started.set()
        await self.gate.wait()
        if self.fail:
            raise UpstreamError("the SourceCred site answered 503")
        return Scores(source="output/credGrainView", total=float(self.reads))


async def test_concurrent_misses_share_one_read_which_is_kept_for_its_time() -> None:
    now = [1000.0]
    cache = ScoreCache(clock=lambda: now[0])
    upstream = Upstream()
    waiting = [asyncio.ensure_future(cache.get("k", 60, upstream.load)) for _ in range(10)]
    await upstream.started.wait()  # the callers, scheduled first, all asked before it began
    assert upstream.reads == 1
    upstream.gate.set()
    assert {s.total for s in await asyncio.gather(*waiting)} == {1.0}

    now[0] += 59
    assert (await cache.get("k", 60, upstream.load)).total == 1.0
    now[0] += 2
    assert (await cache.get("k", 60, upstream.load)).total == 2.0
    assert upstream.reads == 2


async def test_a_caller_that_gives_up_does_not_cancel_the_read_for_the_others() -> None:
    cache = ScoreCache()
    upstream = Upstream()
    first = asyncio.ensure_future(cache.get("k", 0, upstream.load))
    second = asyncio.ensure_future(cache.get("k", 0, upstream.load))
    await upstream.started.wait()
    first.cancel()
    upstream.gate.set()
    assert (await second).total == 1.0
    assert upstream.reads == 1
    # ttl 0 keeps nothing: the next call reads again.
    assert (await cache.get("k", 0, upstream.load)).total == 2.0


async def test_a_failed_read_reaches_every_waiting_caller_and_is_not_kept() -> None:
    cache = ScoreCache()
    upstream = Upstream()
    upstream.fail = True
    waiting = [asyncio.ensure_future(cache.get("k", 60, upstream.load)) for _ in range(3)]
    await upstream.started.wait()
    upstream.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, UpstreamError) for r in results)
    assert upstream.reads == 1

    upstream.fail = False
    assert (await cache.get("k", 60, upstream.load)).total == 2.0


async def test_the_cache_keeps_a_bounded_number_of_instances() -> None:
    cache = ScoreCache(max_entries=2)
    upstream = Upstream()
    upstream.gate.set()
    for key in ("a", "b", "c"):
        await cache.get(key, 60, upstream.load)
    await cache.get("b", 60, upstream.load)  # still kept
    assert upstream.reads == 3
    await cache.get("a", 60, upstream.load)  # the oldest was dropped
    assert upstream.reads == 4
