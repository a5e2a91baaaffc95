"""The int8 KV cache (`--kv-cache-type q8_0`) and the f16 one: rounding bounds, sizes, and parity with the fp32
cache through the engine (perplexity through the paged cache, batched == alone)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from athanor.engine.config import EngineConfig
from athanor.nn.kv_quant import QuantKV

TEXT = "The capital of France is Paris. hello world, how are you? 数字 12345 and emoji 🙂 too. " * 10


def test_write_then_gather_is_within_half_a_step_of_the_input():
    torch.manual_seed(0)
    L, NB, BS, KVH, D = 1, 4, 4, 2, 64
    kv = QuantKV.allocate((L, 2, NB, BS, KVH, D), "cpu")
    kv.zero_blocks(0, NB)
    layer = kv[0]
    k, v = torch.randn(6, KVH, D) * 3, torch.randn(6, KVH, D)
    slots = torch.tensor([0, 1, 2, 5, 6, 9])  # block 0 (3 slots), block 1 (2), block 2 (1)
    layer.write(slots, k, v)
    keys, values = layer.gather(torch.tensor([[0, 1, 2]]), 12, torch.float32)  # (1, KVH, 12, D)
    got_k = keys[0].transpose(0, 1)[slots]  # (6, KVH, D)
    got_v = values[0].transpose(0, 1)[slots]
    for got, want in ((got_k, k), (got_v, v)):
        step = want.view(6, KVH, 2, 32).abs().amax(-1, keepdim=True) / 127  # one scale per 32 values
        err = (got.view(6, KVH, 2, 32) - want.view(6, KVH, 2, 32)).abs()
        assert (err <= step * (0.5 + 127 / 2048) + 1e-6).all()  # half a step + the float16 scale's rounding
    untouched = [s for s in range(12) if s not in slots.tolist()]
    assert keys[0][:, untouched].abs().max() == 0  # zeroed blocks read back as zeros, not NaN


def test_q8_0_holds_about_four_times_the_tokens_in_the_same_bytes(tiny_hf_dir):
    from athanor.engine.model_runner import kv_bytes_per_token
    from athanor.runtime.handle import ModelHandle
    from athanor.runtime.registry import ModelRegistry

    runners = {}
    for kind in ("auto", "f16", "q8_0"):
        reg = ModelRegistry(engine_config=EngineConfig(kv_cache_type=kind, kv_cache_bytes=8 * 2**20))
        with ModelHandle.open(str(tiny_hf_dir), reg) as llm:
            runners[kind] = (llm.engine.runner.num_blocks, llm.engine.runner.kv_cache_nbytes(),
                             kv_bytes_per_token(llm.engine.runner.model.config, torch.float32, kind))
        reg.shutdown()
    (b32, n32, t32), (b16, n16, t16), (b8, n8, t8) = runners["auto"], runners["f16"], runners["q8_0"]
    assert t16 * 2 == t32 and t8 == t32 * (16 + 2) // 64  # head_dim 16: one float16 scale per head
    assert b16 >= 2 * b32 - 1 and b8 >= 3.5 * b32 - 1  # the same byte budget holds more blocks
    for blocks, nbytes in ((b32, n32), (b16, n16), (b8, n8)):
        assert nbytes <= 8 * 2**20 + 2**16  # and stays within it


def _perplexity(model, *args) -> float:
    r = CliRunner().invoke(__import__("athanor.cli", fromlist=["app"]).app,
                           ["perplexity", str(model), str(args[0]), "--ctx", "64", "--json", *args[1:]],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["perplexity"]


def test_perplexity_through_the_cache_matches_the_cache_free_path(tiny_hf_dir, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    free = _perplexity(tiny_hf_dir, text)
    f32 = _perplexity(tiny_hf_dir, text, "--kv-cache-type", "f32", "--chunk", "8")
    f16 = _perplexity(tiny_hf_dir, text, "--kv-cache-type", "f16", "--chunk", "8")
    q8 = _perplexity(tiny_hf_dir, text, "--kv-cache-type", "q8_0", "--chunk", "8")
    assert f32 == pytest.approx(free, rel=1e-5)  # the paged path computes the same thing
    assert f16 == pytest.approx(f32, rel=2e-3)
    assert q8 == pytest.approx(f32, rel=2e-2) and q8 != f32  # rounded, but only a little


def test_int8_cache_batched_equals_alone(tiny_hf_dir):
    from athanor.runtime.handle import ModelHandle
    from athanor.runtime.registry import ModelRegistry

    reg = ModelRegistry(engine_config=EngineConfig(kv_cache_type="q8_0"))
    with ModelHandle.open(str(tiny_hf_dir), reg) as llm:
        params = llm.sampling_params({"temperature": 0, "max_tokens": 12, "ignore_eos": True})
        prompts = [llm.tokenizer.encode(p) for p in ("hello world", "The capital of France", "数字 12345")]
        alone = [llm.generate_ids([p], params)[0].token_ids for p in prompts]
        together = [c.token_ids for c in llm.generate_ids(prompts, params)]
    reg.shutdown()
    assert together == alone and all(len(a) == 12 for a in alone)


def test_bad_kv_cache_type_is_a_one_line_error():
    with pytest.raises(ValueError, match="kv_cache_type must be one of auto, f32, f16, q8_0"):
        EngineConfig(kv_cache_type="q4_0")
