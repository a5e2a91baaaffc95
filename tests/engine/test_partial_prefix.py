"""Token-granular prefix reuse (engine/block_manager.py): past the whole-block hits, the leading slots of a cached
block that follows the same prefix are copied into the new sequence's own block (or a finished sequence's free
tail block is taken over), and only the rest is computed. Greedy tokens equal a run without any prefix cache:
alone, batched, with the source block evicted meanwhile, on an int8 cache, on Gemma 3's sliding-window layers,
and on the real SmolLM2."""

from __future__ import annotations

import random

import pytest

from athanor.engine.block_manager import BlockManager
from athanor.engine.config import EngineConfig
from athanor.engine.engine import LLMEngine
from athanor.engine.sampling_params import SamplingParams
from athanor.engine.sequence import Sequence
from athanor.models.hf import load_safetensors, read_json
from athanor.nn.config import ModelConfig
from athanor.nn.llama import build_model
from tests.engine.test_engine_invariants import GREEDY, assert_all_blocks_free, make_engine, tiny_model  # noqa: F401
from tests.nn.tiny import tiny_hf_model


def _run(bm: BlockManager, tokens: list[int]) -> Sequence:
    seq = Sequence(tokens, SamplingParams(max_tokens=1))
    assert bm.can_allocate(seq)
    bm.allocate(seq)
    seq.num_computed_tokens = seq.num_tokens
    bm.commit_computed(seq)
    return seq


def _fresh_outputs(model, prompts, params=GREEDY, **kw) -> list[list[int]]:
    """Each prompt alone on an engine without a prefix cache: the reference."""
    return [make_engine(model, enable_prefix_caching=False, **kw).generate([p], params)[0].output_token_ids
            for p in prompts]


# --- bookkeeping ---------------------------------------------------------------------------------------------


def test_partial_hit_copies_the_matching_slots_of_a_full_cached_block():
    bm = BlockManager(16, 4)
    a = _run(bm, [1, 2, 3, 4, 5, 6, 7, 8, 9])  # blocks 0, 1 full and hashed, 2 holds token 9
    b = _run(bm, [1, 2, 3, 4, 5, 6, 70, 80, 90, 100])  # block 0 whole, then 5, 6 of block 1
    assert b.num_cached_tokens == 6 and b.block_table[0] == a.block_table[0]
    assert bm.take_copies() == [(a.block_table[1], b.block_table[1], 2)] and bm.take_copies() == []
    assert b.block_table[1] not in a.block_table  # copy-on-write: a's block is not shared, not written
    assert bm.blocks[a.block_table[1]].ref_count == 1  # still a's alone, still cached
    c = _run(bm, [1, 2, 3, 4, 5, 6, 7, 8, 11])  # a's full blocks again: a whole-block hit, no copy
    assert c.num_cached_tokens == 8 and c.block_table[:2] == a.block_table[:2] and bm.take_copies() == []


def test_partial_hit_in_the_first_block_and_never_the_last_token():
    bm = BlockManager(16, 4)
    a = _run(bm, [1, 2, 3, 4, 5, 6, 7, 8])
    b = _run(bm, [1, 2, 9])  # two tokens of a's block 0
    assert b.num_cached_tokens == 2 and bm.take_copies() == [(a.block_table[0], b.block_table[0], 2)]
    c = _run(bm, [1, 2, 3, 4, 5, 6, 7, 8])  # a itself: all but the last token (its logits are needed)
    assert c.num_cached_tokens == 7 and c.block_table[0] == a.block_table[0]
    assert bm.take_copies() == [(a.block_table[1], c.block_table[1], 3)]
    d = _run(bm, [50, 2, 3])
    assert d.num_cached_tokens == 0 and bm.take_copies() == []


def test_a_finished_tail_is_taken_over_until_its_block_is_handed_out():
    bm = BlockManager(16, 4)
    a = _run(bm, [1, 2, 3, 4, 5, 6])
    head, tail = a.block_table
    bm.free(a)
    b = _run(bm, [1, 2, 3, 4, 5, 6, 7, 8, 9])  # a's whole conversation, then more
    assert b.block_table[:2] == [head, tail]
    assert b.num_cached_tokens == 6 and bm.take_copies() == []  # taken over: nothing to copy
    bm.free(b)
    c = _run(bm, [7, 7, 7, 7, 7])  # takes b's tail block (uncached blocks are handed out first)
    bm.free(c)
    d = _run(bm, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])  # b's full blocks are still cached; its tail is gone
    assert d.num_cached_tokens == 8


def test_the_borrower_may_be_handed_the_source_itself():
    bm = BlockManager(2, 4)
    a = _run(bm, [1, 2, 3, 4, 5, 6, 7, 8])
    bm.free(a)  # both blocks cached and free; block 1 is the least recently freed
    b = _run(bm, [1, 2, 3, 4, 5, 9, 9])
    assert b.block_table == [0, 1] and b.num_cached_tokens == 5  # block 1's slot 0 is still intact: no copy
    assert bm.take_copies() == [] and bm.blocks[1].hash is None and 1 not in bm.children.get(bm.blocks[0].hash, {})


def test_admission_counts_the_copied_block_as_a_fresh_one():
    bm = BlockManager(3, 4)
    a = _run(bm, [1, 2, 3, 4, 5, 6])  # two of three blocks
    b = Sequence([1, 2, 3, 4, 5, 9, 9, 9, 9], SamplingParams(max_tokens=1))  # 3 blocks: 1 hit, 2 fresh, 1 free
    assert not bm.can_allocate(b)
    bm.free(a)
    assert bm.can_allocate(b)


# --- the engine: same greedy tokens as without a prefix cache -------------------------------------------------


def _partly_shared(seed: int, shared_len: int, n: int) -> list[list[int]]:
    rng = random.Random(seed)
    shared = [rng.randrange(256) for _ in range(shared_len)]
    return [shared + [rng.randrange(256) for _ in range(rng.randint(1, 9))] for _ in range(n)]


def test_partially_shared_prompts_alone_and_batched(tiny_model):
    prompts = _partly_shared(seed=5, shared_len=10, n=6)  # block_size 4: 2 whole blocks + 2 tokens of the third
    reference = _fresh_outputs(tiny_model, prompts)
    engine = make_engine(tiny_model)
    first = engine.generate(prompts[:1], GREEDY)[0]
    assert first.num_cached_tokens == 0 and first.output_token_ids == reference[0]
    one = engine.generate(prompts[1:2], GREEDY)[0]  # alone, after the first: reuses 10 tokens, not just 8
    assert one.num_cached_tokens >= 10 and one.output_token_ids == reference[1]
    seqs = engine.generate(prompts[2:], GREEDY)  # batched: several copies before one forward
    assert all(s.num_cached_tokens >= 10 for s in seqs)
    assert [s.output_token_ids for s in seqs] == reference[2:]
    steps = engine.stats.num_prompt_tokens
    assert steps == sum(len(p) for p in prompts) - sum(s.num_cached_tokens for s in [first, one, *seqs])
    assert_all_blocks_free(engine)


def test_next_chat_turn_reuses_the_previous_answer(tiny_model):
    """The next turn's prompt is the previous prompt + answer + more: all of it but the unsampled last token is
    in the cache, the tail block too."""
    prompt = _partly_shared(seed=6, shared_len=9, n=1)[0]
    engine = make_engine(tiny_model)
    turn1 = engine.generate([prompt], GREEDY)[0]
    history = turn1.token_ids[:-1]  # the last sampled token was never fed back: not in the cache
    turn2 = engine.generate([history + [7, 8, 9]], GREEDY)[0]
    assert turn2.num_cached_tokens == len(history)
    assert turn2.output_token_ids == _fresh_outputs(tiny_model, [history + [7, 8, 9]])[0]
    assert_all_blocks_free(engine)


def test_source_block_handed_to_a_prompt_admitted_in_the_same_step(tiny_model):
    """A full pool (4 blocks of 4): B borrows 2 slots of a free cached block, and C, admitted in the same step,
    is handed that very block and writes it in the forward: the copy happens before, B's token stays right."""
    rng = random.Random(10)
    z, a, c = ([rng.randrange(256) for _ in range(k)] for k in (13, 8, 8))
    b = a[:6] + [rng.randrange(256) for _ in range(2)]
    one = SamplingParams(temperature=0, max_tokens=1, logprobs=5)
    engine = make_engine(tiny_model, num_kvcache_blocks=4)
    engine.generate([z], one)  # touches all 4 ids
    engine.generate([a], one)  # a's blocks: cached, the most recently freed
    copies, tables = [], []
    copy_slots, run = engine.runner.copy_slots, engine.runner.run
    engine.runner.copy_slots = lambda cs: (copies.extend(cs), copy_slots(cs))
    engine.runner.run = lambda batch: (tables.extend(list(s.block_table) for s, _ in batch), run(batch))[1]
    sb, sc = engine.generate([b, c], one)
    assert sb.num_cached_tokens == 6 and len(copies) == 1 and copies[0][2] == 2
    assert copies[0][0] in tables[1]  # the source block is C's now
    fresh = [make_engine(tiny_model, enable_prefix_caching=False).generate([p], one)[0] for p in (b, c)]
    for got, want in zip((sb, sc), fresh):  # the whole top-5 of the first token's distribution, not just argmax
        assert got.output_token_ids == want.output_token_ids
        (got_ids, got_lp), (want_ids, want_lp) = (zip(*x.output_logprobs[0].top_logprobs) for x in (got, want))
        assert got_ids == want_ids and got_lp == pytest.approx(want_lp, abs=1e-5)
    assert_all_blocks_free(engine)


def test_int8_cache_partial_reuse_equals_a_chunked_prefill():
    """An int8 cache: a prompt reusing 10 tokens reads the rounded cache for them, as a prefill chunked at 10
    without a prefix cache does (the first chunk attends to its own unrounded keys, as the first prompt did)."""
    d_model = _tiny("qwen2", seed=3)
    prompts = _partly_shared(seed=8, shared_len=10, n=3)
    engine = make_engine(d_model, kv_cache_type="q8_0")
    engine.generate(prompts[:1], GREEDY)
    seqs = engine.generate(prompts[1:], GREEDY)
    assert all(s.num_cached_tokens == 10 for s in seqs)
    chunked = [make_engine(d_model, kv_cache_type="q8_0", enable_prefix_caching=False,
                           max_num_batched_tokens=10, max_num_seqs=1).generate([p], GREEDY)[0].output_token_ids for p in prompts[1:]]
    assert [s.output_token_ids for s in seqs] == chunked
    assert_all_blocks_free(engine)


def _tiny(arch: str, seed: int):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        tiny_hf_model(arch, seed=seed).save_pretrained(d)
        return build_model(ModelConfig.from_hf(read_json(Path(d) / "config.json")), load_safetensors(Path(d)))


def test_gemma3_sliding_window_layers_share_the_pool():
    """Gemma 3's sliding layers (window 8) keep their keys in the same blocks: reused slots serve them too."""
    model = _tiny("gemma3", seed=4)
    prompts = _partly_shared(seed=9, shared_len=14, n=4)  # longer than the window
    reference = _fresh_outputs(model, prompts)
    engine = make_engine(model)
    engine.generate(prompts[:1], GREEDY)
    seqs = engine.generate(prompts[1:], GREEDY)
    assert all(s.num_cached_tokens >= 14 for s in seqs)
    assert [s.output_token_ids for s in seqs] == reference[1:]
    assert_all_blocks_free(engine)


@pytest.mark.slow
def test_smollm2_chats_sharing_the_system_prompt():
    """The real model's chat template: prompts share the default system prompt and the user header (about 30
    tokens, so two whole blocks of 16 do not cover it); greedy answers equal a run without a prefix cache."""
    from athanor.runtime.llm import LLM

    llm = LLM.load("smollm2", EngineConfig(max_num_seqs=4))
    questions = ("Why is the sky blue?", "What is the capital of France?", "Name a colour.", "Why is grass green?")
    prompts = [llm.chat_prompt([{"role": "user", "content": q}]) for q in questions]
    shared = min(_common(prompts[0], p) for p in prompts[1:])
    assert shared % 16 and shared > 16  # a partial block is shared
    sp = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    cold = LLMEngine(llm.engine.runner.model, EngineConfig(max_num_seqs=4, enable_prefix_caching=False),
                     eos_token_ids=set())
    reference = [cold.generate([p], sp)[0].output_token_ids for p in prompts]
    warm = LLMEngine(llm.engine.runner.model, EngineConfig(max_num_seqs=4), eos_token_ids=set())
    warm.generate(prompts[:1], sp)
    alone = warm.generate(prompts[1:2], sp)[0]
    batched = warm.generate(prompts[2:], sp)
    assert all(s.num_cached_tokens >= shared for s in [alone, *batched])
    assert [s.output_token_ids for s in [alone, *batched]] == reference[1:]


def _common(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
