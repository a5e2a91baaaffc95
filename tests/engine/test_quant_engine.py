"""The engine on block-quantized weights (q4_1 / q8_0 through athanor's AVX2 kernels, fp32 activations): the
engine's invariants hold (a sequence batched equals it alone, chunked prefill included), hidden states stay within
float rounding of the exact weights, and SmolLM2 runs its own Q4_1/Q8_0 blocks unchanged, by default."""

from __future__ import annotations

import pytest
import torch

from athanor.engine.config import EngineConfig
from athanor.engine.model_runner import memory_bytes
from athanor.engine.sampling_params import SamplingParams
from athanor import cbuild
from athanor.runtime.llm import LLM

_CANNOT_BUILD = cbuild.cpu_reason() or (None if cbuild.compiler() else "no C compiler (cc, gcc or $CC)")
pytestmark = pytest.mark.skipif(_CANNOT_BUILD is not None, reason=f"quantized kernels: {_CANNOT_BUILD}")

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19], [20], [21, 22, 23, 24, 25], list(range(30, 70))]


@pytest.mark.parametrize("kind", ["q4_1", "q8_0"])
def test_batched_equals_alone_on_quantized_weights(tiny_hf_dir, kind):
    config = EngineConfig(weight_dtype=kind, num_kvcache_blocks=64, block_size=8, max_num_batched_tokens=16,
                          max_num_seqs=8)  # a 16-token budget: the long prompt is prefilled in chunks
    llm = LLM.load(str(tiny_hf_dir), config)
    assert llm.engine.runner.model.layers[0].mlp.down_proj.qweight.kind == kind
    sp = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    together = [s.output_token_ids for s in llm.engine.generate(PROMPTS, sp)]
    alone = [llm.engine.generate([p], sp)[0].output_token_ids for p in PROMPTS]
    assert together == alone


def test_quantized_logits_stay_close_and_memory_shrinks(tiny_hf_dir):
    ids = torch.tensor(PROMPTS[1])
    exact = LLM.load(str(tiny_hf_dir), EngineConfig(weight_dtype="float32"))
    ref = exact.engine.runner.model.hidden_states(ids)
    for kind, bound in (("q8_0", 0.03), ("q4_1", 0.3)):  # the random weights' own rounding to 8 / 4 bits
        llm = LLM.load(str(tiny_hf_dir), EngineConfig(weight_dtype=kind))
        got = llm.engine.runner.model.hidden_states(ids)
        assert ((got - ref).norm() / ref.norm()).item() < bound, kind
    fp16 = LLM.load(str(tiny_hf_dir), EngineConfig(weight_dtype="float16", num_kvcache_blocks=8))
    q4 = LLM.load(str(tiny_hf_dir), EngineConfig(weight_dtype="q4_1", num_kvcache_blocks=8))
    assert memory_bytes(q4.engine.runner.model) < memory_bytes(fp16.engine.runner.model)


def test_weight_dtype_checks():
    with pytest.raises(ValueError, match="weight_dtype must be one of"):
        EngineConfig(weight_dtype="int3")
    with pytest.raises(ValueError, match="for CPU with dtype float32"):
        EngineConfig(weight_dtype="q4_1", dtype="bfloat16").quant_plan("Q4_1")
    assert EngineConfig(weight_dtype="gguf").quant_plan("F16") is None  # a float file keeps the float path
    # K-quant files keep their own blocks; matrices without a block kernel re-pack as before
    assert EngineConfig(weight_dtype="gguf").quant_plan("Q4_K_M") == {"blocks": True, "linear": "q4_1", "lm_head": "q8_0"}
    assert EngineConfig(weight_dtype="gguf").quant_plan("Q6_K") == {"blocks": True, "linear": "q8_0", "lm_head": "q8_0"}
    assert EngineConfig().quant_plan("Q4_1") == {"linear": "q4_1", "lm_head": "q8_0"}  # auto: exact re-packs only
    # gguf: llama.cpp's arithmetic, Q4_1 and Q8_0 files too (int8 activations, their own blocks)
    assert EngineConfig(weight_dtype="gguf").quant_plan("Q4_1") == {"blocks": True, "linear": "q4_1", "lm_head": "q8_0"}
    assert EngineConfig(weight_dtype="gguf").quant_plan("Q8_0") == {"blocks": True, "linear": "q8_0", "lm_head": "q8_0"}
    assert EngineConfig().quant_plan("Q4_K_M") == {"blocks": True} and EngineConfig().quant_plan("F16") is None
    assert EngineConfig().quant_plan("Q4_0") == {"blocks": True}  # no exact re-pack: its own blocks, not re-quantized


@pytest.mark.slow
def test_smollm2_runs_its_own_blocks(smollm2_path):
    from athanor.models.loader import load_checkpoint

    llm = LLM.load("smollm2", EngineConfig(max_num_seqs=4))  # auto: the file's blocks
    model = llm.engine.runner.model
    assert model.layers[3].self_attn.o_proj.qweight.kind == "q4_1" and model.lm_head.qweight.kind == "q8_0"
    ckpt = load_checkpoint(smollm2_path)  # the file's Q4_1 / Q8_0 values re-pack without any change
    assert torch.equal(model.layers[3].self_attn.o_proj.qweight.dequantize(),
                       ckpt.tensors["model.layers.3.self_attn.o_proj.weight"])
    assert torch.equal(model.lm_head.qweight.dequantize(), ckpt.tensors["model.embed_tokens.weight"])
    prompts = [llm.chat_prompt([{"role": "user", "content": q}]) for q in ("Hi", "Name a colour.", "2+2?")]
    sp = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    together = [s.output_token_ids for s in llm.engine.generate(prompts, sp)]
    assert together == [llm.engine.generate([p], sp)[0].output_token_ids for p in prompts]
    answer = llm.chat([{"role": "user", "content": "What is the capital of France?"}], {"temperature": 0,
                                                                                         "max_tokens": 16})
    assert answer.text == "The capital of France is Paris."  # the float path's answer (int8 activations differ)
