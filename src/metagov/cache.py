"""A small per-process cache for values that are costly to derive and keyed by what changes them.

Every entry is keyed so that a change of the underlying row gives a new key (an ``updated_at``, a
ciphertext), or is checked against the database before it is relied on; nothing here is ever
invalidated by hand. A full cache is simply emptied: the working set of a gateway (its plugin
instances, its Drivers) is far smaller than the bound, so this only caps memory when keys churn.
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._entries: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        if len(self._entries) >= self.size and key not in self._entries:
            self._entries.clear()
        self._entries[key] = value

    def __len__(self) -> int:
        return len(self._entries)
