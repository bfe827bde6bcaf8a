"""Config, parameters and results of the randomness plugin."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RandomnessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_low: int = Field(0, description="Lower bound used when an action gives none")
    default_high: int = Field(100, description="Upper bound used when an action gives none")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.default_low > self.default_high:
            raise ValueError("default_low must not be greater than default_high")
        return self


class RandomIntParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    low: int | None = Field(None, description="Inclusive lower bound; the config's by default")
    high: int | None = Field(None, description="Inclusive upper bound; the config's by default")


class RandomIntResult(BaseModel):
    value: int


class LuckyNumber(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: int


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MaybeLuckyNumber(BaseModel):
    number: int | None = Field(description="The stored lucky number, or null if none was set")


class StochasticVoteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    options: list[str] = Field(min_length=1, max_length=100, description="The choices")
    delay_seconds: float = Field(
        60, ge=0, le=30 * 24 * 3600, description="How long until the vote closes by itself"
    )

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if len(set(self.options)) != len(self.options):
            raise ValueError("options must be distinct")
        return self


class StochasticVoteOutcome(BaseModel):
    winner: str | None = Field(description="The option with most votes (ties broken at random)")
    votes: dict[str, int] = Field(description="Simulated votes per option")
