"""The built-in SmolLM2-135M-Instruct: our loader + decoder + engine vs transformers loading the same GGUF.

transformers dequantizes the GGUF with its own code path (gguf-py) and runs its own Llama; we compare
full-prompt logits and 32 greedy tokens for 5 chat prompts, ours batched together through the engine.
"""

from __future__ import annotations

import pytest
import torch

from athanor.engine.config import EngineConfig
from athanor.engine.sampling_params import SamplingParams
from athanor.runtime.llm import LLM
from tests.nn.test_parity_tiny import full_logits

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a hash table is in two sentences.",
    "List three prime numbers greater than 100.",
    "Translate 'good morning' into Spanish and German.",
]


@pytest.fixture(scope="module")
def ours():
    return LLM.load("smollm2", EngineConfig(max_num_seqs=8, weight_dtype="float32"))  # exact weights for parity


@pytest.fixture(scope="module")
def reference(smollm2_transformers):
    return smollm2_transformers


def prompt_ids(llm, question):
    return llm.chat_prompt([{"role": "user", "content": question}])


def test_logits_match_transformers(ours, reference):
    for q in QUESTIONS[:2]:
        ids = prompt_ids(ours, q)
        with torch.no_grad():
            ref = reference(torch.tensor([ids])).logits[0]
        got = full_logits(ours.engine.runner.model, ids)
        torch.testing.assert_close(got, ref, atol=2e-3, rtol=1e-4)
        assert torch.equal(got.argmax(-1), ref.argmax(-1))


def test_greedy_32_tokens_match_transformers(ours, reference):
    prompts = [prompt_ids(ours, q) for q in QUESTIONS]
    params = SamplingParams(temperature=0, max_tokens=32, min_tokens=32)  # = HF min_new_tokens: eos masked
    got = ours.generate_ids(prompts, params)  # all five batched in the engine
    for p, completion in zip(prompts, got):
        with torch.no_grad():
            ref = reference.generate(torch.tensor([p]), max_new_tokens=32, min_new_tokens=32, do_sample=False,
                                     pad_token_id=2)[0, len(p):].tolist()
        assert completion.token_ids == ref, (ours.tokenizer.decode(completion.token_ids), ours.tokenizer.decode(ref))
    assert "Paris" in got[0].text


def test_fp16_weights_stay_close_to_exact(ours):
    """The default CPU path stores weights in fp16 (FBGEMM); it must agree closely with the exact fp32 path."""
    from athanor.nn.layers import fbgemm_fp16_available

    if not fbgemm_fp16_available():
        pytest.skip("this torch build has no FBGEMM fp16 GEMM")
    fast = LLM.load("smollm2", EngineConfig(max_num_seqs=8, weight_dtype="float16"))
    assert fast.engine.runner.model.layers[0].mlp.down_proj.packed is not None
    ids = prompt_ids(ours, QUESTIONS[2])
    exact, approx = full_logits(ours.engine.runner.model, ids), full_logits(fast.engine.runner.model, ids)
    assert (exact - approx).abs().max() < 0.1  # logits span ~30; fp16 weight rounding moves them by ~1e-2
    assert (exact.argmax(-1) == approx.argmax(-1)).float().mean() > 0.95
    params = SamplingParams(temperature=0, max_tokens=32, min_tokens=32)
    prompts = [prompt_ids(ours, q) for q in QUESTIONS]
    same = sum(a.token_ids == b.token_ids for a, b in zip(ours.generate_ids(prompts, params), fast.generate_ids(prompts, params)))
    assert same >= 3, f"only {same}/5 greedy continuations identical with fp16 weights"
    assert "Paris" in fast.chat([{"role": "user", "content": QUESTIONS[0]}], {"temperature": 0}).text


def test_builtin_sampling_defaults_end_on_their_own():
    """The built-in model's defaults (temperature 0.2, top_p 0.9, repeat_penalty 1.1 over 64) answer the demo
    question and stop by themselves; without the penalty 4 of 16 seeds looped to the length cap (2026-11-23)."""
    llm = LLM.load("smollm2", EngineConfig(max_num_seqs=16))
    ids = prompt_ids(llm, QUESTIONS[0])
    runs = [llm.generate_ids([ids], llm.sampling_params({"seed": s, "max_tokens": 200}))[0] for s in range(8)]
    assert all(r.finish_reason == "stop" for r in runs), [r.text[:80] for r in runs]
    assert sum("Paris" in r.text for r in runs) >= 7
