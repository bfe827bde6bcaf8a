"""What Discord said about rate limits, remembered until they reset.

Discord limits a bot globally (every request) and per route (a bucket, counted per top-level
resource: a channel, a server, a webhook). After a 429 it expects no request on that limit before
``retry_after``: requests made anyway count towards the invalid-request ban (10,000 per 10
minutes, then the gateway's IP is locked out). So the client asks this gate before each request,
and a limited route is refused here, without a request, until its time is up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Path segments followed by a top-level resource id: Discord counts their limits per resource.
_TOP_LEVEL = frozenset({"channels", "guilds", "webhooks"})


def route_key(method: str, path: str) -> str:
    """The bucket a request counts against: its method and route, with the top-level resource
    (and a webhook's token) kept and every other id generalised."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    out: list[str] = []
    for index, part in enumerate(parts):
        if index == 1 and parts[0] in _TOP_LEVEL:
            out.append(part)
        elif index == 2 and parts[0] == "webhooks":
            out.append(part)  # an interaction's webhook: id and token make the resource
        elif index > 0 and parts[index - 1] == "reactions":
            out.append("{emoji}")
        elif part.isdigit():
            out.append("{id}")
        else:
            out.append(part)
    return f"{method.upper()} /{'/'.join(out)}"


@dataclass
class RateGate:
    """Until when the bot may not call Discord at all (a global limit), and until when each
    route may not be called (a per-route or shared-resource limit). In-memory and per process:
    each gateway process learns the limits from its own requests."""

    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _global_until: float = 0.0
    _routes: dict[str, float] = field(default_factory=dict)

    def _now(self) -> float:
        return self.clock()

    def wait_for(self, key: str, *, bot: bool) -> tuple[float, bool]:
        """How long ``key`` must still wait (0 if it may go), and whether the wait is the bot's
        global limit. Interaction webhooks (``bot=False``) are not under the global limit."""
        now = self._now()
        if bot and self._global_until > now:
            return self._global_until - now, True
        until = self._routes.get(key, 0.0)
        if until > now:
            return until - now, False
        self._routes.pop(key, None)
        return 0.0, False

    def limited(self, key: str, retry_after: float, *, is_global: bool) -> None:
        """Remember a 429: nothing (global) or nothing on ``key`` for ``retry_after`` seconds."""
        until = self._now() + max(0.0, retry_after)
        if is_global:
            self._global_until = max(self._global_until, until)
        else:
            self._routes[key] = max(self._routes.get(key, 0.0), until)
        if len(self._routes) > 1000:  # forget routes whose limit is over
            now = self._now()
            self._routes = {k: v for k, v in self._routes.items() if v > now}
