"""The randomness plugin: the kinds of declaration a plugin makes, with no platform behind it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from metagov.plugins.randomness.schemas import (
    LuckyNumber,
    MaybeLuckyNumber,
    NoParams,
    RandomIntParams,
    RandomIntResult,
    RandomnessConfig,
    StochasticVoteOutcome,
    StochasticVoteParams,
)
from metagov.plugins.sdk import (
    EventType,
    GovernanceProcess,
    Plugin,
    PluginContext,
    PluginError,
    ProcessContext,
    action,
)

# Nothing here is security-sensitive: this plugin simulates votes for demos and tests.
_rng = random.Random()  # noqa: S311

Ctx = PluginContext[RandomnessConfig]


class DelayedStochasticVote(
    GovernanceProcess[RandomnessConfig, StochasticVoteParams, StochasticVoteOutcome]
):
    """A pretend vote that closes by itself after ``delay_seconds`` with random votes."""

    slug = "delayed-stochastic-vote"
    params_model = StochasticVoteParams
    outcome_model = StochasticVoteOutcome

    async def start(
        self,
        ctx: ProcessContext[RandomnessConfig, StochasticVoteOutcome],
        params: StochasticVoteParams,
    ) -> None:
        # The deadline is stored with the process, so the vote closes on time even across restarts.
        ctx.closing_at = datetime.now(UTC) + timedelta(seconds=params.delay_seconds)

    async def close(
        self,
        ctx: ProcessContext[RandomnessConfig, StochasticVoteOutcome],
        params: StochasticVoteParams,
    ) -> None:
        votes = {option: _rng.randint(0, 10) for option in params.options}
        best = max(votes.values())
        winner = _rng.choice([option for option, count in votes.items() if count == best])
        ctx.complete(StochasticVoteOutcome(winner=winner, votes=votes))


class RandomnessPlugin(Plugin[RandomnessConfig]):
    """Random numbers, a remembered lucky number, and a vote that decides itself."""

    name = "randomness"
    config_model = RandomnessConfig
    processes = (DelayedStochasticVote,)
    event_types = (EventType("lucky_number_changed", "The community's lucky number was set"),)

    @action("random-int", description="A random integer between low and high, inclusive")
    async def random_int(self, ctx: Ctx, params: RandomIntParams) -> RandomIntResult:
        low = ctx.config.default_low if params.low is None else params.low
        high = ctx.config.default_high if params.high is None else params.high
        if low > high:
            raise PluginError(f"low ({low}) must not be greater than high ({high})")
        return RandomIntResult(value=_rng.randint(low, high))

    @action("set-lucky-number", description="Remember the community's lucky number")
    async def set_lucky_number(self, ctx: Ctx, params: LuckyNumber) -> LuckyNumber:
        ctx.state.set("lucky_number", params.number)
        ctx.emit_event("lucky_number_changed", {"number": params.number})
        return params

    @action("get-lucky-number", description="The lucky number last set, if any")
    async def get_lucky_number(self, ctx: Ctx, params: NoParams) -> MaybeLuckyNumber:
        number: Any = ctx.state.get("lucky_number")
        return MaybeLuckyNumber(number=number)
