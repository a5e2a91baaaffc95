"""Short prefill chunks through the fused C layers (nn/llama.fused_step) inside the engine: a step that mixes
them with a long prefill chunk runs as two forwards (engine/model_runner.py), so every request gets the numbers
it gets alone, and the logits come back in batch order."""

from __future__ import annotations

import pytest
import torch

from athanor.engine.config import EngineConfig
from athanor.engine.engine import LLMEngine
from athanor.engine.sampling_params import SamplingParams
from athanor.models.hf import load_safetensors, read_json
from athanor.nn.config import ModelConfig
from athanor.nn.llama import build_model
from tests.nn.tiny import tiny_hf_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    tiny_hf_model("llama", seed=5).save_pretrained(d)
    m = build_model(ModelConfig.from_hf(read_json(d / "config.json")), load_safetensors(d), quant={"linear": "q8_0"})
    if not m.cpu_ops:
        pytest.skip("the fused CPU kernels do not build here")
    return m


def _engine(model) -> LLMEngine:
    return LLMEngine(model, EngineConfig(num_kvcache_blocks=256, block_size=4, max_num_batched_tokens=512,
                                         enable_prefix_caching=False), eos_token_ids=set())


def test_a_step_mixing_short_and_long_chunks_splits_and_each_request_equals_alone(model):
    gen = torch.Generator().manual_seed(0)
    limit = model.fused_chunk_tokens
    prompts = [torch.randint(0, 256, (n,), generator=gen).tolist() for n in (9, limit + 40, 3, limit)]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    alone = [_engine(model).generate([p], params)[0].output_token_ids for p in prompts]
    engine = _engine(model)
    forwards: list[list[int]] = []
    run = engine.runner._forward
    engine.runner._forward = lambda batch: forwards.append([n for _, n in batch]) or run(batch)
    seqs = [engine.add_request(p, params) for p in prompts]
    engine.step()  # all four admitted at once: the short prompts, then the long one
    assert forwards == [[9, 3, limit], [limit + 40]]
    assert [s.num_output_tokens for s in seqs] == [1, 1, 1, 1]  # each sampled from its own row
    while engine.has_unfinished():
        engine.step()
    assert [s.output_token_ids for s in seqs] == alone


def test_fused_chunks_of_a_long_prompt_equal_one_token_per_step(model):
    """A prompt longer than the step budget: its first chunks fill the cache with no head; chunks of 50 (fused,
    rows of one sequence) give the tokens of a prefill one token per step; a budget of 100 (a per-op chunk,
    then a fused one) runs too."""
    prompt = torch.randint(0, 256, (150,), generator=torch.Generator().manual_seed(1)).tolist()
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)

    def run(budget: int) -> list[int]:
        engine = LLMEngine(model, EngineConfig(num_kvcache_blocks=256, block_size=4, max_num_seqs=1,
                                               max_num_batched_tokens=budget, enable_prefix_caching=False),
                           eos_token_ids=set())
        return engine.generate([prompt], params)[0].output_token_ids

    by_token = run(1)
    assert run(50) == by_token
    assert len(run(100)) == 6
