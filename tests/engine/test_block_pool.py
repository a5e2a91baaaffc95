"""The block manager's growing pool (engine/block_manager.py): ids handed out low first, so the runner's KV pool
(engine/model_runner.py) holds about the blocks in use; the prefix cache keeps working inside it."""

from __future__ import annotations

from athanor.engine.block_manager import BlockManager
from athanor.engine.sampling_params import SamplingParams
from athanor.engine.sequence import Sequence


def _seq(tokens: list[int]) -> Sequence:
    return Sequence(tokens, SamplingParams(max_tokens=1))


def _run(bm: BlockManager, tokens: list[int]) -> Sequence:
    seq = _seq(tokens)
    assert bm.can_allocate(seq)
    bm.allocate(seq)
    seq.num_computed_tokens = seq.num_tokens
    bm.commit_computed(seq)
    return seq


def test_fixed_pool_by_default_marches_through_fresh_blocks():
    bm = BlockManager(8, 4)
    a = _run(bm, list(range(8)))
    assert a.block_table == [0, 1]
    bm.free(a)
    b = _run(bm, list(range(100, 108)))
    assert b.block_table == [2, 3]  # the cached blocks of a are kept


def test_ids_stay_low_uncached_blocks_first_then_resident_then_eviction():
    bm = BlockManager(64, 4, resident_blocks=4)
    assert bm.num_free_blocks == 64  # the budget: admission sees the whole cap
    a = _run(bm, list(range(6)))  # blocks 0 (full, cached) and 1 (partial: caches nothing)
    bm.free(a)
    b = _run(bm, list(range(200, 206)))
    assert b.block_table == [1, 2]  # the uncached block first, then an unused id the pool holds; 0 stays cached
    bm.free(b)
    c = _run(bm, list(range(300, 311)))  # 3 blocks: uncached 2, fresh 3, then the cached 0 (evicted)
    assert max(c.block_table) < 4 and bm.num_touched == 4 and bm.resident_blocks == 4
    bm.free(c)
    d = _run(bm, list(range(6)) + [9])  # a's prefix: evicted by c (least recently freed), recomputed
    assert d.num_cached_tokens == 0


def test_prefix_cache_hit_within_the_resident_pool():
    bm = BlockManager(64, 4, resident_blocks=4)
    a = _run(bm, list(range(9)))  # 0, 1 full and cached, 2 partial
    assert a.block_table == [0, 1, 2]
    bm.free(a)
    b = _run(bm, list(range(9)) + [50])
    # the hits, then a's tail block taken over whole: its computed token 8 is reused too
    assert b.block_table == [0, 1, 2] and b.num_cached_tokens == 9


def test_pool_doubles_only_when_every_used_block_is_held():
    bm = BlockManager(64, 4, resident_blocks=2)
    seqs = [_run(bm, list(range(100 * i, 100 * i + 8))) for i in range(3)]  # 6 blocks held at once
    assert sorted(b for s in seqs for b in s.block_table) == list(range(6))
    assert bm.resident_blocks == 8 and bm.num_touched == 6  # 2 -> 4 -> 8
    for s in seqs:
        bm.free(s)
    assert bm.num_free_blocks == 64
    again = [_run(bm, list(range(1000 * i, 1000 * i + 8))) for i in range(1, 4)]
    assert max(b for s in again for b in s.block_table) < 8  # reused, no new id


def test_keep_blocks_lets_the_pool_grow_before_a_cached_prefix_is_evicted():
    """One request at a time (a chat server at concurrency 1): with keep_blocks the finished prompts stay cached
    while the pool grows up to it, so a prompt asked again is a hit; past it the oldest prefix is evicted."""
    bm = BlockManager(64, 4, resident_blocks=2, keep_blocks=8)
    prompts = [list(range(100 * i, 100 * i + 8)) for i in range(4)]  # 2 full blocks each, nothing shared
    for p in prompts:
        bm.free(_run(bm, p))
    assert bm.num_touched == 8 and bm.resident_blocks == 8  # grew 2 -> 4 -> 8 instead of evicting
    again = _run(bm, prompts[0] + [7])
    assert again.num_cached_tokens == 8  # the first prompt survived three others
    bm.free(again)
    bm.free(_run(bm, list(range(900, 908))))  # at keep_blocks: this one evicts the least recently freed prefix
    assert bm.num_touched == 8
    assert _run(bm, prompts[1] + [7]).num_cached_tokens == 0


def test_without_keep_blocks_the_next_request_evicts_the_last_prompt():
    bm = BlockManager(64, 4, resident_blocks=2)
    bm.free(_run(bm, list(range(8))))
    bm.free(_run(bm, list(range(100, 108))))
    assert bm.num_touched == 2 and _run(bm, list(range(8)) + [7]).num_cached_tokens == 0


def test_with_keep_blocks_a_finished_prompts_tail_outlives_the_next_requests():
    """A prompt whose last block is partly filled (a short reply ended inside it): the tail is kept in turn like
    a cached block, so the same prompt asked again after others reuses all but its last token."""
    bm = BlockManager(64, 4, resident_blocks=2, keep_blocks=16)
    first = list(range(7))  # one full block, a tail of 3
    bm.free(_run(bm, first))
    for i in range(1, 4):
        bm.free(_run(bm, list(range(100 * i, 100 * i + 7))))
    assert _run(bm, first).num_cached_tokens == 6  # the tail lent 2 of its 3 (one token is always computed)
