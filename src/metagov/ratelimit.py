"""Rate limits on the HTTP API, counted with the ``limits`` library: in this process's memory, or
in Redis when the API uses Redis, so that every replica counts against the same windows.

Fixed windows: one counter increment per request. The webhook route, the busiest of all, is
counted in memory even with Redis (about 8 µs a request, against a Redis round trip of several
hundred): its limit is a flood guard set far above any platform's rate, which each replica can
enforce alone. A limit whose counter cannot be reached (Redis down) lets the request through:
losing a platform's webhooks or a Driver's calls to an outage of the rate limiter would be worse
than an unmetered minute.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter

from metagov.config import Settings

log = logging.getLogger(__name__)
# While the counters cannot be reached, say so at most this often.
_WARN_EVERY_SECONDS = 60.0
# Addresses blocked for failed authentications are remembered in memory; past this many, the
# expired ones are forgotten.
_MAX_BLOCKED = 10_000


def parse_limit(text: str) -> RateLimitItem | None:
    """``"600/minute"`` as a limit; an empty string (or ``off``) means no limit."""
    text = text.strip()
    if not text or text.lower() in ("off", "none", "0"):
        return None
    return parse(text)


@dataclass(frozen=True)
class Limits:
    """The limits the settings name, each None when switched off."""

    driver: RateLimitItem | None
    hooks: RateLimitItem | None
    public: RateLimitItem | None
    auth_failures: RateLimitItem | None

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            driver=parse_limit(settings.rate_limit_driver),
            hooks=parse_limit(settings.rate_limit_hooks),
            public=parse_limit(settings.rate_limit_public),
            auth_failures=parse_limit(settings.rate_limit_auth_failures),
        )


class RateLimiter:
    """Counts requests per key and says how long a key over its limit must wait."""

    def __init__(self, limits: Limits, storage: Storage) -> None:
        self.limits = limits
        self._strategy = FixedWindowRateLimiter(storage)
        self._local = (
            self._strategy
            if isinstance(storage, MemoryStorage)
            else FixedWindowRateLimiter(MemoryStorage())
        )
        self._warned_at = 0.0
        self._blocked: dict[str, float] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> RateLimiter:
        storage: Storage
        if settings.redis_url and not settings.runs_jobs_in_process:
            storage = RedisStorage(
                f"async+{settings.redis_url}",
                implementation="redispy",
                key_prefix="metagov:limits",
                socket_timeout=1.0,
                socket_connect_timeout=1.0,
            )
        else:
            storage = MemoryStorage()
        return cls(Limits.of(settings), storage)

    async def hit(self, item: RateLimitItem, key: str, *, local: bool = False) -> float | None:
        """Count one request of ``key``; None if it is within the limit, else the seconds until
        the window resets (at least 1). ``local`` counts in this process's memory only."""
        strategy = self._local if local else self._strategy
        try:
            if await strategy.hit(item, key):
                return None
            stats = await strategy.get_window_stats(item, key)
        except Exception as exc:  # the counters are out of reach: let the request through
            self._unavailable(exc)
            return None
        return max(1.0, stats.reset_time - time.time())

    async def failed(self, item: RateLimitItem, key: str) -> None:
        """Count a failure of ``key`` (shared); past the limit, ``key`` is blocked in this
        process until the window ends. Another process blocks it at its own next failure, so
        across N processes at most N - 1 failures get past the limit."""
        try:
            await self._strategy.hit(item, key)
            stats = await self._strategy.get_window_stats(item, key)
        except Exception as exc:
            self._unavailable(exc)
            return
        if stats.remaining <= 0:  # the limit is used up: the next attempt waits
            self._blocked[key] = time.monotonic() + max(1.0, stats.reset_time - time.time())
            if len(self._blocked) > _MAX_BLOCKED:
                now = time.monotonic()
                self._blocked = {k: v for k, v in self._blocked.items() if v > now}

    def blocked(self, key: str) -> float | None:
        """Seconds ``key`` stays blocked by :meth:`failed`, or None. No round trip: it is
        asked on every request."""
        until = self._blocked.get(key)
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            del self._blocked[key]
            return None
        return left

    def _unavailable(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning("rate limits not applied: their counters are unavailable (%s)", exc)
