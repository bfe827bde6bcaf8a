"""Reading what a SourceCred instance publishes, and keeping it for a while.

Current SourceCred (``sourcecred go``) writes ``output/credGrainView``: the JSON
``{"participants": [{"identity": {name, aliases: [{address}]}, "cred": n, …}], "intervals": […]}``,
deflated (zlib) — or as ``output/credGrainView.json`` when written unzipped. Older instances, and
those that run ``sourcecred analysis``, have ``output/accounts.json``:
``{"accounts": [{"account": {"identity": …}, "totalCred": n, …}], "unclaimedAliases": […]}``.
Alias addresses are SourceCred node addresses: parts joined and ended by NUL characters, such as
``N\\0sourcecred\\0discord\\0MEMBER\\0user\\0140750062325202944\\0``.

Only the scores are kept (by name, alias and alias id): a whole output file can be megabytes.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from metagov.plugins.sdk import PluginError, RateLimited, UpstreamError

GRAIN_VIEW_FILES = ("output/credGrainView", "output/credGrainView.json")
ACCOUNTS_FILES = ("output/accounts.json",)
FILES = {
    "auto": GRAIN_VIEW_FILES + ACCOUNTS_FILES,
    "credGrainView": GRAIN_VIEW_FILES,
    "accounts": ACCOUNTS_FILES,
}


class OutputMissing(PluginError):
    code = "sourcecred_output_missing"


def alias_parts(address: str) -> tuple[str, ...]:
    """An alias address's parts, without the node marker ``N`` and the final NUL."""
    parts = address.split("\0")
    if parts and parts[0] == "N":
        parts = parts[1:]
    while parts and parts[-1] == "":
        parts.pop()
    return tuple(parts)


@dataclass
class Scores:
    """The cred of an instance's identities, read from one output file."""

    source: str
    total: float = 0.0
    by_name: dict[str, float] = field(default_factory=dict)
    by_folded_name: dict[str, float | None] = field(default_factory=dict)
    by_alias: dict[tuple[str, ...], float] = field(default_factory=dict)
    by_alias_id: dict[str, float] = field(default_factory=dict)

    def add(self, identity: Any, cred: Any, *, counted: bool = True) -> None:
        if not isinstance(identity, dict) or not isinstance(cred, int | float):
            return
        value = float(cred)
        if counted:
            self.total += value
        name = identity.get("name")
        if isinstance(name, str):
            self.by_name.setdefault(name, value)
            folded = name.casefold()
            # A name that differs only by case is ambiguous: it finds no one.
            self.by_folded_name[folded] = None if folded in self.by_folded_name else value
        for alias in identity.get("aliases") or []:
            address = alias.get("address") if isinstance(alias, dict) else None
            if isinstance(address, str):
                self.add_alias(address, value)

    def add_alias(self, address: str, value: float) -> None:
        parts = alias_parts(address)
        if parts:
            self.by_alias.setdefault(parts, value)
            self.by_alias_id.setdefault(parts[-1], value)

    def find(
        self, *, username: str | None, id: str | None, alias: list[str] | None
    ) -> float | None:
        if username is not None:
            if username in self.by_name:
                return self.by_name[username]
            return self.by_folded_name.get(username.casefold())
        if id is not None:
            return self.by_alias_id.get(id)
        if alias is not None:
            return self.by_alias.get(tuple(alias))
        return None


def parse(path: str, document: Any) -> Scores:
    """Scores from a credGrainView or an accounts.json document."""
    scores = Scores(source=path)
    if isinstance(document, dict) and isinstance(document.get("participants"), list):
        for participant in document["participants"]:
            if isinstance(participant, dict):
                scores.add(participant.get("identity"), participant.get("cred"))
        return scores
    if isinstance(document, dict) and isinstance(document.get("accounts"), list):
        for entry in document["accounts"]:
            if isinstance(entry, dict):
                account = entry.get("account")
                identity = account.get("identity") if isinstance(account, dict) else None
                scores.add(identity, entry.get("totalCred"))
        # Platform accounts no identity has claimed yet: findable by alias, not in the total.
        for unclaimed in document.get("unclaimedAliases") or []:
            alias = unclaimed.get("alias") if isinstance(unclaimed, dict) else None
            address = alias.get("address") if isinstance(alias, dict) else None
            cred = unclaimed.get("totalCred") if isinstance(unclaimed, dict) else None
            if isinstance(address, str) and isinstance(cred, int | float):
                scores.add_alias(address, float(cred))
        return scores
    raise UpstreamError(f"{path} is not a SourceCred cred output")


def decode(path: str, raw: bytes, max_bytes: int) -> Any:
    """The JSON of an output file, inflated first if SourceCred deflated it."""
    data = raw
    if raw[:1] in (b"\x78", b"\x1f"):  # zlib (pako's deflate) or gzip
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)
        try:
            data = inflater.decompress(raw, max_bytes)
        except zlib.error:
            data = raw
        else:
            if inflater.unconsumed_tail:
                raise UpstreamError(f"{path} is larger than {max_bytes} bytes once inflated")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise UpstreamError(f"{path} is not JSON") from None


async def download(http: httpx.AsyncClient, url: str, max_bytes: int) -> bytes | None:
    """The file at ``url``, or None if the server has no such file."""
    try:
        async with http.stream("GET", url) as response:
            status = response.status_code
            if status in (404, 410):
                return None
            if status == 429:
                wait = response.headers.get("retry-after", "")
                retry = float(wait) if wait.isdigit() else 1.0
                raise RateLimited(f"the SourceCred site is rate limiting {url}", retry_after=retry)
            if status >= 500:
                raise UpstreamError(f"the SourceCred site answered {status} to {url}")
            if status >= 400:
                raise PluginError(f"the SourceCred site refused {url} ({status})")
            if status >= 300:
                raise UpstreamError(f"the SourceCred site redirected {url}; check server_url")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise UpstreamError(f"{url} is larger than {max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise UpstreamError(
            f"the SourceCred site could not be reached: {type(exc).__name__}"
        ) from None


async def read_scores(
    http: httpx.AsyncClient, server_url: str, paths: tuple[str, ...], max_bytes: int
) -> Scores:
    """The first of ``paths`` the instance publishes, parsed."""
    for path in paths:
        raw = await download(http, f"{server_url}/{path}", max_bytes)
        if raw is not None:
            return parse(path, decode(path, raw, max_bytes))
    raise OutputMissing(
        f"no SourceCred output at {server_url}: looked for {', '.join(paths)} "
        "(run `sourcecred go`, and `sourcecred analysis` for accounts.json, then publish)"
    )


class ScoreCache:
    """Scores per instance URL, kept ``ttl`` seconds; concurrent misses share one read.

    The first caller that misses starts the read as a task of its own; the others await the
    same task, so a burst of calls makes one upstream request (a caller that gives up does not
    cancel it for the rest). A failed read is not kept. Held in memory, per gateway process.
    """

    def __init__(self, max_entries: int = 256, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Scores]] = OrderedDict()
        self._flights: dict[str, asyncio.Task[Scores]] = {}
        self.found: dict[str, str] = {}  # URL → the output file it publishes

    async def get(self, key: str, ttl: float, load: Callable[[], Awaitable[Scores]]) -> Scores:
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self._clock():
            return entry[1]
        loop = asyncio.get_running_loop()
        flight = self._flights.get(key)
        if flight is None or flight.done() or flight.get_loop() is not loop:
            flight = loop.create_task(self._fill(key, ttl, load))
            flight.add_done_callback(_consume)
            self._flights[key] = flight
        return await asyncio.shield(flight)

    async def _fill(self, key: str, ttl: float, load: Callable[[], Awaitable[Scores]]) -> Scores:
        try:
            scores = await load()
            if ttl > 0:
                self._entries[key] = (self._clock() + ttl, scores)
                self._entries.move_to_end(key)
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
            return scores
        finally:
            if self._flights.get(key) is asyncio.current_task():
                del self._flights[key]


def _consume(task: asyncio.Task[Scores]) -> None:
    """Mark a read's failure as seen: its callers got it, or all of them gave up."""
    if not task.cancelled():
        task.exception()
