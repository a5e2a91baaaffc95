"""Engine invariants: batched greedy == each request alone (plain, prefix-cache hits, forced preemption,
chunked prefill), and every KV block is back in the free pool after every run, aborts included."""

from __future__ import annotations

import random

import pytest
import torch

from athanor.engine.config import EngineConfig
from athanor.engine.engine import LLMEngine
from athanor.engine.sampling_params import SamplingParams
from athanor.models.hf import load_safetensors, read_json
from athanor.nn.config import ModelConfig
from athanor.nn.llama import build_model
from tests.nn.tiny import tiny_hf_model

GREEDY = SamplingParams(temperature=0, max_tokens=20)


def _weight_dtypes():
    from athanor.nn.layers import fbgemm_fp16_available

    return [torch.float32] + ([torch.float16] if fbgemm_fp16_available() else [])


@pytest.fixture(scope="module", params=_weight_dtypes(), ids=lambda d: f"weights-{str(d).split('.')[-1]}")
def tiny_model(tmp_path_factory, request):
    """Exact fp32 weights, and (where FBGEMM is there) the default CPU path's fp16-packed weights."""
    d = tmp_path_factory.mktemp("tiny")
    tiny_hf_model("qwen2", seed=3).save_pretrained(d)
    return build_model(ModelConfig.from_hf(read_json(d / "config.json")), load_safetensors(d), weight_dtype=request.param)


def make_engine(model, **kw) -> LLMEngine:
    cfg = dict(num_kvcache_blocks=128, block_size=4, max_num_seqs=16, max_num_batched_tokens=64) | kw
    return LLMEngine(model, EngineConfig(**cfg), eos_token_ids=set())


def assert_all_blocks_free(engine: LLMEngine) -> None:
    bm = engine.block_manager
    assert bm.num_free_blocks == len(bm.blocks)
    assert all(b.ref_count == 0 for b in bm.blocks)
    assert not engine.scheduler.running and not engine.scheduler.waiting and not engine.requests


def prompts_mixed(seed=0, n=8):
    rng = random.Random(seed)
    return [[rng.randrange(256) for _ in range(rng.randint(1, 40))] for _ in range(n)]


def alone(model, prompts, params=GREEDY):
    return [make_engine(model).generate([p], params)[0].output_token_ids for p in prompts]


def test_batched_equals_alone(tiny_model):
    prompts = prompts_mixed()
    engine = make_engine(tiny_model)
    together = [s.output_token_ids for s in engine.generate(prompts, GREEDY)]
    assert together == alone(tiny_model, prompts)
    assert all(len(t) == 20 for t in together)
    assert_all_blocks_free(engine)


def test_prefix_cache_hits_give_same_tokens(tiny_model):
    rng = random.Random(1)
    shared = [rng.randrange(256) for _ in range(23)]
    prompts = [shared + [rng.randrange(256) for _ in range(rng.randint(1, 9))] for _ in range(6)]
    engine = make_engine(tiny_model)
    first = engine.generate(prompts[:1], GREEDY)[0]
    assert first.num_cached_tokens == 0
    seqs = engine.generate(prompts, GREEDY)  # the first prompt's blocks are now cached
    # the repeated prompt reuses every token but its last (its logits are needed): whole blocks, then a copy of
    # the leading slots of the cached block that holds it
    assert seqs[0].num_cached_tokens == len(prompts[0]) - 1
    assert all(s.num_cached_tokens >= 23 for s in seqs)  # every prompt reuses the 23 shared tokens, not just 20
    assert [s.output_token_ids for s in seqs] == alone(tiny_model, prompts)
    assert_all_blocks_free(engine)


def test_preemption_by_recompute_gives_same_tokens(tiny_model):
    prompts = prompts_mixed(seed=2, n=6)
    # 24 blocks * 4 = 96 slots: six sequences of up to 60 tokens cannot all fit, so some are preempted
    engine = make_engine(tiny_model, num_kvcache_blocks=24, enable_prefix_caching=False)
    seqs = engine.generate(prompts, GREEDY)
    assert engine.scheduler.num_preemptions > 0
    assert [s.output_token_ids for s in seqs] == alone(tiny_model, prompts)
    assert_all_blocks_free(engine)


def test_chunked_prefill_with_tiny_budget(tiny_model):
    prompts = prompts_mixed(seed=4, n=5)
    engine = make_engine(tiny_model, max_num_batched_tokens=16, max_num_seqs=4)
    seqs = engine.generate(prompts, GREEDY)
    assert [s.output_token_ids for s in seqs] == alone(tiny_model, prompts)
    assert_all_blocks_free(engine)


def test_abort_frees_blocks_midway(tiny_model):
    engine = make_engine(tiny_model)
    seqs = [engine.add_request(p, SamplingParams(temperature=0, max_tokens=50)) for p in prompts_mixed(seed=5)]
    for _ in range(5):
        engine.step()
    engine.abort(seqs[0].request_id)
    engine.abort(seqs[-1].request_id)  # may still be waiting
    assert seqs[0].finish_reason == "abort"
    while engine.has_unfinished():
        engine.step()
    engine.abort("no-such-request")  # unknown ids are ignored
    assert_all_blocks_free(engine)


def test_seeded_sampling_is_batch_independent(tiny_model):
    params = SamplingParams(temperature=0.9, top_p=0.95, seed=1234, max_tokens=15)
    prompts = prompts_mixed(seed=6, n=4)
    engine = make_engine(tiny_model)
    mixed = [params] + [SamplingParams(temperature=1.0, max_tokens=15)] * 3
    together = engine.generate(prompts, mixed)[0].output_token_ids
    assert together == alone(tiny_model, prompts[:1], params)[0]


def test_stop_tokens_and_max_tokens(tiny_model):
    engine = make_engine(tiny_model)
    ref = engine.generate([[1, 2, 3]], GREEDY)[0].output_token_ids
    stop_at = ref[5]
    seq = engine.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=20, stop_token_ids=[stop_at]))[0]
    assert seq.finish_reason == "stop" and seq.output_token_ids == ref[: ref.index(stop_at) + 1]
    seq = engine.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=7))[0]
    assert seq.finish_reason == "length" and len(seq.output_token_ids) == 7
    assert_all_blocks_free(engine)


def test_out_of_vocabulary_ids_are_refused_at_admission(tiny_model):
    engine = make_engine(tiny_model)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.add_request([1, 2, 256], GREEDY)
    with pytest.raises(ValueError, match="vocab"):
        engine.add_request([1, 2], SamplingParams(logit_bias={999: 5.0}))
    assert not engine.has_unfinished()


def test_prompt_longer_than_context_is_a_clear_error(tiny_model):
    from athanor.errors import ContextLengthError

    engine = make_engine(tiny_model, max_model_len=32)
    with pytest.raises(ContextLengthError, match="prompt is 40 tokens; the context holds 32"):
        engine.add_request(list(range(40)), GREEDY)
    seq = engine.generate([list(range(30))], SamplingParams(temperature=0, max_tokens=100))[0]
    assert seq.finish_reason == "length" and seq.num_tokens == 32  # stops at the context, never past it
    assert_all_blocks_free(engine)
