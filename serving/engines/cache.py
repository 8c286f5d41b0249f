"""An exact embedding cache, bounded in bytes, least recently used out first.

A vector is kept under everything that decides it: the caller's cache scope (a tenant or a group of
tenants), the token ids the model reads (so the prompt format, the instruction, the input type and
truncation are all in the key, as they decide the ids), the output dimensions and whether it is
normalised. One cache serves one engine, so the model and checkpoint are fixed. Keys are compared
whole (the ids' bytes), not by a hash of them: a hit is never another input's vector.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

# What an entry costs beyond its vector and its ids' bytes: the dict slot, the key tuple, the bytes
# and ndarray objects (CPython 3.11, numpy 2, measured with tracemalloc: about 300 B). Rounded up,
# so `max_bytes` is never exceeded.
ENTRY_OVERHEAD = 320

Key = tuple[str, int | None, bool, bytes]


def ids_bytes(ids: list[int]) -> bytes:
    return np.asarray(ids, dtype=np.int32).tobytes()


@dataclass
class CacheStats:
    hits: int = 0  # inputs answered without the engine (cached, or a repeat within the request)
    misses: int = 0  # vectors the engine computed
    evictions: int = 0
    bytes: int = 0
    entries: int = 0


class EmbeddingCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: OrderedDict[Key, np.ndarray] = OrderedDict()
        self.stats = CacheStats()

    @staticmethod
    def key(scope: str, ids: bytes, dimensions: int | None, normalize: bool) -> Key:
        return scope, dimensions, normalize, ids

    def get(self, key: Key) -> np.ndarray | None:
        vector = self.entries.get(key)
        if vector is not None:
            self.entries.move_to_end(key)
        return vector

    def put(self, key: Key, vector: np.ndarray) -> None:
        size = _size(key, vector)
        if size > self.max_bytes or key in self.entries:
            return
        stored = vector.copy()
        stored.flags.writeable = False  # handed out on every hit: nobody may change it
        self.entries[key] = stored
        self.stats.bytes += size
        while self.stats.bytes > self.max_bytes:
            old_key, old = self.entries.popitem(last=False)
            self.stats.bytes -= _size(old_key, old)
            self.stats.evictions += 1
        self.stats.entries = len(self.entries)


def _size(key: Key, vector: np.ndarray) -> int:
    return vector.nbytes + len(key[3]) + len(key[0]) + ENTRY_OVERHEAD
