"""Our decoder vs transformers on the same tiny random weights, every architecture: logits and greedy tokens."""

from __future__ import annotations

import pytest
import torch

from athanor.engine.block_manager import BlockManager
from athanor.engine.config import EngineConfig
from athanor.engine.model_runner import ModelRunner
from athanor.engine.sampling_params import SamplingParams
from athanor.engine.sequence import Sequence
from athanor.models.hf import load_safetensors, read_json
from athanor.nn import cpu_ops
from athanor.nn.config import ModelConfig
from athanor.nn.llama import build_model
from tests.nn.tiny import ARCHS, tiny_hf_model


def ours_from_hf(hf_model, tmp_path, dtype=torch.float32, device="cpu"):
    hf_model.save_pretrained(tmp_path)
    cfg = ModelConfig.from_hf(read_json(tmp_path / "config.json"))
    return build_model(cfg, load_safetensors(tmp_path), device=device, dtype=dtype)


def full_logits(model, ids: list[int], chunk: int | None = None) -> torch.Tensor:
    """All-position logits through the paged-cache path, optionally prefilling in chunks."""
    runner = ModelRunner(model, EngineConfig(num_kvcache_blocks=64, block_size=4, device=str(model.embed_tokens.weight.device)))
    runner._bind_kv_cache()
    bm = BlockManager(runner.num_blocks, 4, enable_prefix_caching=False)
    seq = Sequence(ids, SamplingParams())
    bm.allocate(seq)
    out, chunk = [], chunk or len(ids)
    while seq.num_computed_tokens < len(ids):
        n = min(chunk, len(ids) - seq.num_computed_tokens)
        input_ids, positions, meta, _ = runner.prepare([(seq, n)])
        out.append(model(input_ids, positions, meta, None))
        seq.num_computed_tokens += n
    return torch.cat(out)


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_transformers(arch, tmp_path):
    hf = tiny_hf_model(arch)
    ours = ours_from_hf(hf, tmp_path)
    ids = torch.randint(0, 256, (37,)).tolist()
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].float()
    got = full_logits(ours, ids)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    # chunked prefill through the cache gives the same logits
    torch.testing.assert_close(full_logits(ours, ids, chunk=5), ref, atol=1e-4, rtol=1e-4)
    # one token at a time: the decode step (nn/cpu_ops.c's fused path on x86 CPUs, except Qwen3's q/k norms
    # and Gemma 3 / Phi-3's sliding windows)
    assert ours.cpu_ops == (cpu_ops.available() and arch not in ("qwen3", "gemma3", "phi3", "qwen3_moe"))
    torch.testing.assert_close(full_logits(ours, ids, chunk=1), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_tokens_match_transformers(arch, tmp_path):
    from athanor.engine.engine import LLMEngine

    hf = tiny_hf_model(arch, seed=1)
    ours = ours_from_hf(hf, tmp_path)
    engine = LLMEngine(ours, EngineConfig(num_kvcache_blocks=64, block_size=8), eos_token_ids=set())
    prompts = [torch.randint(0, 256, (n,)).tolist() for n in (3, 11, 20)]
    seqs = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=24))
    for p, seq in zip(prompts, seqs):
        with torch.no_grad():
            ref = hf.generate(torch.tensor([p]), max_new_tokens=24, do_sample=False, min_new_tokens=24,
                              pad_token_id=0, eos_token_id=None)[0, len(p):].tolist()
        assert seq.output_token_ids == ref
