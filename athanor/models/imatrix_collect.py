"""Collect an importance matrix: run a float model on a text and sum the squares of every activation that enters
each quantizable matmul, per input column, as llama.cpp's `llama-imatrix` does.

The text is tokenized once and cut into `chunk`-token pieces (the first token of each replaced by BOS when the
tokenizer adds one, as llama-imatrix does); each piece runs cache-free through the model while forward hooks on
its Linear modules add x^2 of their inputs. A fused module (qkv_proj, gate_up_proj) reads one input for several
GGUF weights (attn_q/attn_k/attn_v, ffn_gate/ffn_up): each gets the same sums, as in llama.cpp where they are
separate matmuls on the same input. The LM head is left out (llama-imatrix's default, no --process-output).
Not for: the file format (imatrix_file.py) or quantizing with it (gguf_quantize.py).
"""

from __future__ import annotations

import numpy as np
import torch

from athanor.errors import AthanorError
from athanor.models.imatrix_file import Entry, Imatrix


def _gguf_names(module_name: str) -> list[str]:
    """Our Linear module name -> the GGUF weight names it computes (several for fused modules)."""
    from athanor.models.gguf_export import gguf_name
    from athanor.nn.llama import _source_names

    return [gguf_name(hf) for hf in _source_names(f"{module_name}.weight")]


def chunks_of(ids: list[int], chunk: int, chunks: int | None, bos: int | None) -> list[list[int]]:
    """Whole `chunk`-token pieces of `ids` (at most `chunks` of them), each starting with `bos` when given."""
    if chunk < 16:
        raise AthanorError(f"--chunk must be >= 16 tokens (llama.cpp skips smaller batches), got {chunk}")
    n = len(ids) // chunk if chunks is None else min(chunks, len(ids) // chunk)
    if n < 1:
        raise AthanorError(f"the calibration text has {len(ids)} tokens, fewer than one chunk of {chunk}")
    pieces = [list(ids[i * chunk : (i + 1) * chunk]) for i in range(n)]
    if bos is not None:
        for p in pieces:
            p[0] = bos
    return pieces


@torch.inference_mode()
def collect(model, pieces: list[list[int]], dataset: str = "") -> Imatrix:
    """Sums of squared inputs of every Linear in `model` (a float athanor model) over `pieces`."""
    from athanor.nn.layers import Linear

    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []

    def hook(name: str):
        def add(_module, inputs, _output):
            x = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]
        return add

    for name, module in model.named_modules():
        if isinstance(module, Linear):
            hooks.append(module.register_forward_hook(hook(name)))
    if not hooks:
        raise AthanorError("this model has no Linear layers to collect an importance matrix from")
    try:
        for p in pieces:
            model.hidden_states(torch.tensor(p))
    finally:
        for h in hooks:
            h.remove()
    im = Imatrix(datasets=[dataset] if dataset else [], chunk_count=len(pieces), chunk_size=len(pieces[0]))
    for name, s in sums.items():
        values = s.float().numpy().reshape(1, -1)
        try:
            gnames = _gguf_names(name)
        except AthanorError:  # a module with no GGUF weight name of its own (e.g. MoE experts): not collected
            continue
        for gname in gnames:
            im.entries[gname] = Entry(values.copy(), np.array([float(counts[name])]))
    return im


def imatrix_of(model, tokenizer, text: str, chunk: int = 512, chunks: int | None = None,
               dataset: str = "") -> Imatrix:
    """The importance matrix of `model` (float weights: runtime.llm.float_model) over `text`."""
    ids = tokenizer.encode(text)
    bos = tokenizer.bos_token_id if tokenizer.add_bos_token else None
    return collect(model, chunks_of(ids, chunk, chunks, bos), dataset)
