"""The fused CPU ops (nn/cpu_ops.c) against their PyTorch definitions, and their row independence."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from athanor import cbuild
from athanor.nn import cpu_ops
from athanor.nn.layers import RotaryEmbedding, apply_rope

# They run wherever they can be built (a compiler and an AVX2 CPU); there a build failure fails the tests below.
_CANNOT_BUILD = cbuild.cpu_reason() or (None if cbuild.compiler() else "no C compiler (cc, gcc or $CC)")
pytestmark = pytest.mark.skipif(_CANNOT_BUILD is not None, reason=f"cpu ops: {_CANNOT_BUILD}")


def test_kernels_build_where_a_compiler_exists():
    assert cpu_ops.available(), cpu_ops.unavailable_reason()


def hf_rmsnorm(x, w, eps):
    var = x.double().pow(2).mean(-1, keepdim=True).float()
    return w * (x * torch.rsqrt(var + eps))


def test_add_rmsnorm_matches_hf_formula_and_adds_residual_in_place():
    torch.manual_seed(0)
    x, r, w = torch.randn(5, 576) * 3, torch.randn(5, 576), torch.randn(576)
    want_x = x + r
    want = hf_rmsnorm(want_x, w, 1e-5)
    got = cpu_ops.add_rmsnorm(x, r, w, 1e-5)
    assert torch.equal(x, want_x)  # the residual add is the same float op as torch's
    torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(cpu_ops.add_rmsnorm(x.clone(), None, w, 1e-5), want, rtol=2e-6, atol=1e-6)


def test_add_rmsnorm_rows_do_not_depend_on_the_batch():
    torch.manual_seed(1)
    x, w = torch.randn(100, 64), torch.randn(64)  # 100 rows: the multithreaded branch
    whole = cpu_ops.add_rmsnorm(x.clone(), None, w, 1e-6)
    for i in (0, 57, 99):
        assert torch.equal(cpu_ops.add_rmsnorm(x[i : i + 1].clone(), None, w, 1e-6), whole[i : i + 1])


def test_silu_mul_matches_torch_including_extremes():
    torch.manual_seed(2)
    gu = torch.randn(3, 2 * 1536) * 4
    gu[0, :6] = torch.tensor([-200.0, -90.0, 0.0, 90.0, 200.0, float("nan")])
    want = F.silu(gu[:, :1536]) * gu[:, 1536:]
    got = cpu_ops.silu_mul(gu)
    assert torch.isnan(got[0, 5]) and torch.isnan(want[0, 5])
    torch.testing.assert_close(got, want, rtol=3e-6, atol=1e-6, equal_nan=True)


def _reference_attention(q, cache, tables, positions, H, KVH, D, BS, scale):
    """Per sequence: gather its positions 0..p from the blocks, then plain softmax attention in float64."""
    outs = []
    for b, p in enumerate(positions.tolist()):
        n = p + 1
        idx = [tables[b, t // BS].item() * BS + t % BS for t in range(n)]
        k = cache[0].reshape(-1, KVH, D)[idx].double()  # (n, KVH, D)
        v = cache[1].reshape(-1, KVH, D)[idx].double()
        qb = q[b].view(H, D).double()
        kk = k.repeat_interleave(H // KVH, dim=1)  # (n, H, D)
        vv = v.repeat_interleave(H // KVH, dim=1)
        att = torch.softmax(torch.einsum("hd,nhd->hn", qb, kk) * scale, dim=-1)
        outs.append(torch.einsum("hn,nhd->hd", att, vv).reshape(H * D))
    return torch.stack(outs).float()


@pytest.mark.parametrize("H,KVH,D", [(9, 3, 64), (4, 4, 16), (8, 2, 128)])
def test_decode_attention_rotates_writes_and_attends_like_the_torch_path(H, KVH, D):
    torch.manual_seed(3)
    NB, BS, B = 12, 4, 3
    cache = torch.randn(2, NB, BS, KVH, D)
    positions = torch.tensor([0, 6, 13])
    tables = torch.tensor([[5, 0, 0, 0], [2, 7, 0, 0], [1, 3, 9, 11]])
    slots = torch.tensor([tables[b, p // BS].item() * BS + p % BS for b, p in enumerate(positions.tolist())])
    rot = RotaryEmbedding(D, 64, 10000.0, None)
    qkv = torch.randn(B, (H + 2 * KVH) * D)
    # the PyTorch path: rotate q and k, write k/v, attend over the sequence's blocks
    cos, sin = rot(positions, torch.float32)
    qk = apply_rope(qkv[:, : (H + KVH) * D].reshape(B, H + KVH, D), cos, sin)
    want_cache = cache.clone()
    want_cache.view(2, -1, KVH, D)[0, slots] = qk[:, H:]
    want_cache.view(2, -1, KVH, D)[1, slots] = qkv[:, (H + KVH) * D :].reshape(B, KVH, D)
    scale = 1 / math.sqrt(D)
    want = _reference_attention(qk[:, :H].reshape(B, H * D), want_cache, tables, positions, H, KVH, D, BS, scale)

    got_qkv = qkv.clone()
    got = cpu_ops.decode_attention(got_qkv, positions, rot.cos, rot.sin, cache, slots, tables, H, scale)
    assert torch.equal(got_qkv[:, : (H + KVH) * D].reshape(B, H + KVH, D), qk)  # RoPE: the same bits
    assert torch.equal(cache, want_cache)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

    # one sequence alone gives the same bits as inside the batch
    alone_cache = cache.clone()
    alone = cpu_ops.decode_attention(qkv[1:2].clone(), positions[1:2], rot.cos, rot.sin, alone_cache,
                                     slots[1:2], tables[1:2], H, scale)
    assert torch.equal(alone, got[1:2])


def _set_cpu_ops(model, mode: str) -> None:
    """"stack": every layer in one C call; "ops": one C call per fused op; "torch": PyTorch only."""
    from athanor.nn.layers import RMSNorm, SwiGLU

    if mode != "torch":
        assert model.enable_cpu_ops()
        assert model.decode_stack is not None  # the built-in model's matmuls are all quantized
        if mode == "ops":
            model.decode_stack = None
        return
    model.cpu_ops = False
    for m in model.modules():
        if isinstance(m, (RMSNorm, SwiGLU)):
            m.cpu_ops = False


def test_smollm2_decode_with_fused_ops_matches_the_torch_path(smollm2_path):
    """The built-in model through the engine: q4_1 weights, one prompt alone and four batched, the whole stack
    in C, one call per op, PyTorch only: the same greedy tokens; the batched requests equal each alone; the two
    C paths give the same logits bit for bit."""
    from athanor.engine.config import EngineConfig
    from athanor.engine.sampling_params import SamplingParams
    from athanor.runtime.llm import LLM

    llm = LLM.load(str(smollm2_path), EngineConfig(num_kvcache_blocks=64, block_size=16, weight_dtype="q4_1"))
    model = llm.engine.runner.model
    prompts = [llm.chat_prompt([{"role": "user", "content": q}]) for q in
               ("What is the capital of France?", "Name a color.", "Count to five.", "Say hi.")]
    params = SamplingParams(temperature=0, max_tokens=20)
    runs, logits = {}, {}
    for mode in ("stack", "ops", "torch"):
        _set_cpu_ops(model, mode)
        alone = [llm.generate_ids([p], params)[0].token_ids for p in prompts]
        batched = [o.token_ids for o in llm.generate_ids(prompts, params)]
        assert batched == alone, mode
        runs[mode] = alone
        logits[mode] = _decode_logits(llm, prompts[0] + alone[0][:5])
    assert runs["stack"] == runs["ops"] == runs["torch"]
    assert "Paris" in llm.tokenizer.decode(runs["stack"][0])
    assert torch.equal(logits["stack"], logits["ops"])
    torch.testing.assert_close(logits["stack"], logits["torch"], rtol=1e-4, atol=1e-4)


def _decode_logits(llm, ids: list[int]) -> torch.Tensor:
    """Logits of the last token computed as a decode step (the rest prefilled first)."""
    from athanor.engine.block_manager import BlockManager
    from athanor.engine.config import EngineConfig
    from athanor.engine.model_runner import ModelRunner
    from athanor.engine.sampling_params import SamplingParams
    from athanor.engine.sequence import Sequence

    model = llm.engine.runner.model
    runner = ModelRunner(model, EngineConfig(num_kvcache_blocks=16, block_size=16))
    bm = BlockManager(runner.num_blocks, 16, enable_prefix_caching=False)
    seq = Sequence(ids, SamplingParams())
    bm.allocate(seq)
    for n in (len(ids) - 1, 1):
        input_ids, positions, meta, _ = runner.prepare([(seq, n)])
        out = model(input_ids, positions, meta, None)
        seq.num_computed_tokens += n
    llm.engine.runner._bind_kv_cache()  # give the layers back to the engine's cache
    return out


def _chunked_logits(model, ids: list[int], sizes: list[int]) -> torch.Tensor:
    """(len(ids), V) logits of every position, the sequence fed in chunks of `sizes`, one step each."""
    from athanor.engine.block_manager import BlockManager
    from athanor.engine.config import EngineConfig
    from athanor.engine.model_runner import ModelRunner
    from athanor.engine.sampling_params import SamplingParams
    from athanor.engine.sequence import Sequence

    runner = ModelRunner(model, EngineConfig(num_kvcache_blocks=16, block_size=16))
    bm = BlockManager(runner.num_blocks, 16, enable_prefix_caching=False)
    seq = Sequence(ids, SamplingParams())
    bm.allocate(seq)
    out = []
    for n in sizes:
        input_ids, positions, meta, _ = runner.prepare([(seq, n)])
        out.append(model(input_ids, positions, meta, None))
        seq.num_computed_tokens += n
    return torch.cat(out)


def test_smollm2_short_prefill_runs_fused_like_decode_and_close_to_the_torch_prefill(smollm2_path):
    """A chat's tokens after a prefix-cache hit (here the first 24: the shared system prompt) prefilled as one
    short chunk through the fused C stack (nn/llama.fused_step): every position's logits equal, bit for bit, the
    same position decoded one token at a time, on both C paths; against the per-op PyTorch prefill (blocked
    SDPA) they agree to float rounding and give the same greedy tokens."""
    from athanor.engine.config import EngineConfig
    from athanor.runtime.llm import LLM

    llm = LLM.load(str(smollm2_path), EngineConfig(num_kvcache_blocks=64, block_size=16, weight_dtype="q4_1"))
    model = llm.engine.runner.model
    ids = llm.chat_prompt([{"role": "user", "content": "What is the capital of France? Answer in one word."}])
    assert 8 < len(ids) - 24 <= model.fused_chunk_tokens
    split = [24, len(ids) - 24]
    try:
        got = {}
        for mode in ("stack", "ops"):
            _set_cpu_ops(model, mode)
            got[mode] = _chunked_logits(model, ids, split)
            assert torch.equal(got[mode], _chunked_logits(model, ids, [1] * len(ids))), mode
        assert torch.equal(got["stack"], got["ops"])
        _set_cpu_ops(model, "stack")
        model.fused_chunk_tokens = 0  # the per-op path for every step, prefill and decode
        per_op = _chunked_logits(model, ids, split)
        torch.testing.assert_close(got["stack"], per_op, rtol=1e-4, atol=1e-4)
        assert torch.equal(got["stack"].argmax(-1), per_op.argmax(-1))
    finally:
        _set_cpu_ops(model, "stack")
        llm.engine.runner._bind_kv_cache()


def test_smollm2_with_llama_cpp_arithmetic_runs_the_file_blocks_in_the_stack(smollm2_path):
    """--weights gguf: the built-in model's Q4_1 layers and Q8_0 table stay the file's blocks and meet int8
    activations (nn/gguf_kernels.c, as llama.cpp computes them). Through the engine, the whole stack in C and one C
    call per op give the same greedy tokens, batched requests equal each alone, and a chunked prompt's logits
    equal its tokens decoded one by one, bit for bit; against the float-activation path (--weights q4_1) on the
    same file the next-token distributions stay close (int8 rounding of activations, not a different model)."""
    from athanor.engine.config import EngineConfig
    from athanor.engine.sampling_params import SamplingParams
    from athanor.nn.gguf_matmul import BlockParts
    from athanor.runtime.llm import LLM

    llm = LLM.load(str(smollm2_path), EngineConfig(num_kvcache_blocks=64, block_size=16, weight_dtype="gguf"))
    model = llm.engine.runner.model
    qkv = model.layers[0].self_attn.qkv_proj.qweight
    assert isinstance(qkv, BlockParts) and [p.type_name for p in qkv.parts] == ["Q4_1"] * 3
    assert not qkv.parts[0].float_activations and model.lm_head.qweight.parts[0] is model.embed_tokens.qweight
    prompts = [llm.chat_prompt([{"role": "user", "content": q}]) for q in
               ("What is the capital of France?", "Name a color.", "Count to five.", "Say hi.")]
    params = SamplingParams(temperature=0, max_tokens=12)
    runs = {}
    try:
        for mode in ("stack", "ops"):
            _set_cpu_ops(model, mode)
            alone = [llm.generate_ids([p], params)[0].token_ids for p in prompts]
            assert [o.token_ids for o in llm.generate_ids(prompts, params)] == alone, mode
            runs[mode] = alone
        assert runs["stack"] == runs["ops"]
        _set_cpu_ops(model, "stack")
        ids = prompts[0]
        got = _chunked_logits(model, ids, [24, len(ids) - 24])
        assert torch.equal(got, _chunked_logits(model, ids, [1] * len(ids)))
    finally:
        _set_cpu_ops(model, "stack")
        llm.engine.runner._bind_kv_cache()
    floats = LLM.load(str(smollm2_path), EngineConfig(num_kvcache_blocks=64, block_size=16, weight_dtype="q4_1"))
    ref = _chunked_logits(floats.engine.runner.model, ids, [24, len(ids) - 24])
    kl = torch.nn.functional.kl_div(got.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    agree = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    assert kl.max() < 0.1 and agree > 0.85, (kl.max().item(), agree)  # measured: 0.029, 0.92 (34 of 37)
