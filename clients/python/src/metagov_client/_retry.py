"""When to send a request again: on 429 and 503, which the gateway (or a proxy in front of it)
answers when the request had no effect and may be sent again as it is."""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx

RETRY_STATUSES = frozenset({429, 503})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date.
    ``None`` if absent or unreadable (the caller then backs off on its own)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """At most ``max_retries`` retries. Each waits what ``Retry-After`` asks, or, without one,
    ``backoff * 2**attempt`` seconds. A ``Retry-After`` longer than ``max_wait`` is not waited
    out: the error is raised at once, with ``retry_after`` set, because blocking a Driver's
    request for minutes is worse than telling it when to come back."""

    max_retries: int = 3
    max_wait: float = 30.0
    backoff: float = 0.5

    def delay(self, response: httpx.Response, attempt: int) -> float | None:
        """How long to wait before retrying after ``response`` (the ``attempt``-th retry,
        from 0), or ``None`` not to retry."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
            return None
        asked = parse_retry_after(response.headers.get("retry-after"))
        wait = self.backoff * 2**attempt if asked is None else asked
        return None if wait > self.max_wait else wait


NO_RETRIES = RetryPolicy(max_retries=0)
