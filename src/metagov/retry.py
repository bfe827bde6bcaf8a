"""When to try again: the one backoff policy type every retry in the gateway uses (deliveries to
Drivers, stored webhooks whose handler failed, scheduled process hooks), and the reading of a
``Retry-After`` header (from Drivers and from platforms).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

_jitter = random.Random()  # noqa: S311 (spreads retries; not security-sensitive)


@dataclass(frozen=True)
class Backoff:
    """How long to wait after each failure, and when to give up.

    ``delays[n]`` is the wait after failure ``n + 1``; past the end, the last delay repeats until
    ``max_failures`` (None: never give up). Each wait is varied by ``±jitter`` (a fraction), so
    that failures that happened together are not retried together.
    """

    delays: tuple[float, ...]
    max_failures: int | None = None
    jitter: float = 0.0

    @classmethod
    def schedule(cls, delays: Sequence[float], *, jitter: float = 0.0) -> Backoff:
        """Retry once after each of ``delays``, then give up."""
        return cls(tuple(delays), max_failures=len(delays) + 1, jitter=jitter)

    @classmethod
    def exponential(cls, first: float, *, cap: float, max_failures: int | None = None) -> Backoff:
        """``first``, then doubling, never more than ``cap``."""
        delays: list[float] = []
        delay = first
        while delay < cap:
            delays.append(delay)
            delay *= 2
        return cls((*delays, cap), max_failures=max_failures)

    @classmethod
    def constant(cls, delay: float) -> Backoff:
        return cls((delay,))

    def gives_up(self, failures: int) -> bool:
        """Whether ``failures`` failures are enough to stop trying."""
        return self.max_failures is not None and failures >= self.max_failures

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure (1 for the first)."""
        base = self.delays[min(max(failures, 1), len(self.delays)) - 1]
        if self.jitter:
            base *= _jitter.uniform(1 - self.jitter, 1 + self.jitter)
        return base


def retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
