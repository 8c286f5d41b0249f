"""The exact embedding cache's bookkeeping: keys compared whole, bounded bytes, least recently used out."""

import numpy as np
import pytest

from serving.engines.cache import ENTRY_OVERHEAD, EmbeddingCache, ids_bytes


def vector(seed: int, width: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(width).astype(np.float32)


def entry_size(cache: EmbeddingCache, ids: list[int], width: int = 8, scope: str = "t") -> int:
    return width * 4 + len(ids_bytes(ids)) + len(scope) + ENTRY_OVERHEAD


def test_a_key_holds_scope_ids_dimensions_and_normalisation():
    cache = EmbeddingCache(1 << 20)
    key = cache.key("t", ids_bytes([1, 2, 3]), None, True)
    cache.put(key, vector(0))
    assert np.array_equal(cache.get(cache.key("t", ids_bytes([1, 2, 3]), None, True)), vector(0))
    for other in (cache.key("u", ids_bytes([1, 2, 3]), None, True), cache.key("t", ids_bytes([1, 2, 3]), 4, True),
                  cache.key("t", ids_bytes([1, 2, 3]), None, False), cache.key("t", ids_bytes([1, 2]), None, True),
                  cache.key("t", ids_bytes([3, 2, 1]), None, True)):
        assert cache.get(other) is None


def test_ids_are_compared_whole_not_by_a_prefix_or_width():
    # 256 and [0, 1] share no int32 encoding; the key is the ids' full bytes.
    assert ids_bytes([256]) != ids_bytes([0, 1]) and ids_bytes([1, 0]) != ids_bytes([1])


def test_least_recently_used_goes_first_and_bytes_stay_bounded():
    size = entry_size(EmbeddingCache(0), [1])
    cache = EmbeddingCache(3 * size)
    keys = [cache.key("t", ids_bytes([i]), None, True) for i in range(4)]
    for i in range(3):
        cache.put(keys[i], vector(i))
    assert cache.stats.bytes == 3 * size and cache.stats.entries == 3
    cache.get(keys[0])  # now the most recently used
    cache.put(keys[3], vector(3))
    assert cache.get(keys[1]) is None and cache.stats.evictions == 1
    assert all(cache.get(k) is not None for k in (keys[0], keys[2], keys[3]))
    assert cache.stats.bytes == 3 * size <= cache.max_bytes


def test_an_entry_larger_than_the_cache_is_not_kept():
    cache = EmbeddingCache(100)
    cache.put(cache.key("t", ids_bytes([1]), None, True), vector(0, width=64))
    assert not cache.entries and cache.stats.bytes == 0


def test_a_cached_vector_is_a_read_only_copy():
    cache = EmbeddingCache(1 << 20)
    key = cache.key("t", ids_bytes([1]), None, True)
    original = vector(0)
    cache.put(key, original)
    original[0] = 99  # the caller's array changing later does not reach the cache
    stored = cache.get(key)
    assert stored[0] == vector(0)[0]
    with pytest.raises(ValueError):
        stored[0] = 1
