"""ModelConfig from a GGUF file's metadata: sizes, RoPE (Llama 3 scaling recovered from `rope_freqs.weight`,
linear, YaRN) and Gemma 3's sliding-window layout, read as llama.cpp's loaders read them.

For: `gguf_config(header, rope_freqs)`, called by gguf.load_gguf, and `llama3_rope_factors`, which gguf_export.py
writes back. Not for: parsing the file (gguf.py) or the tokenizer (gguf_tokenizer.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from athanor.errors import ModelFormatError, UnsupportedArchitectureError
from athanor.nn.config import ModelConfig

if TYPE_CHECKING:
    from athanor.models.gguf import GGUFHeader

GGUF_ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma3")  # general.architecture values we load


def _meta(header: GGUFHeader, key: str, default: Any = ...) -> Any:
    arch = header.metadata["general.architecture"]
    value = header.metadata.get(f"{arch}.{key}", default)
    if value is ...:
        raise ModelFormatError(f"{header.path.name}: metadata key {arch}.{key} is missing")
    if isinstance(value, list):  # per-layer values (e.g. head_count_kv); we need them uniform
        if not value or len(set(value)) != 1:
            raise ModelFormatError(f"{header.path.name}: {arch}.{key} varies per layer, which athanor cannot load")
        value = value[0]
    return value


def llama3_rope_factors(scaling: dict, inv_freq: torch.Tensor) -> torch.Tensor:
    """Per-frequency wavelength multipliers of HF's llama3 rope scaling (what llama.cpp calls rope_freqs)."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_ctx = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_ctx / wavelen - low) / (high - low)
    mid = 1 / ((1 - smooth) / factor + smooth)
    return torch.where(wavelen < old_ctx / high, 1.0, torch.where(wavelen > old_ctx / low, factor, mid))


def _rope_freqs_scaling(factors: torch.Tensor, theta: float, head_dim: int, name: str) -> dict | None:
    """Recover HF's llama3 `rope_scaling` from llama.cpp's `rope_freqs.weight`.  factors: (head_dim // 2,)"""
    factors = factors.double()
    factor = float(str(np.float32(factors.max().item())))
    if factor == 1.0:
        return None
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    mid = (factors > 1 + 1e-6) & (factors < factor - 1e-6)
    if mid.any():  # smooth band: 1/f = (1-s)/factor + s with s = (old_ctx/wavelen - low) / (high - low)
        s = (1 / factors[mid] - 1 / factor) / (1 - 1 / factor)
        old_ctx = (s * 3.0 + 1.0) * (2 * math.pi / inv_freq[mid])  # s * (high - low) + low, times wavelen
        scaling["original_max_position_embeddings"] = round(old_ctx.median().item())
    if not torch.allclose(llama3_rope_factors(scaling, inv_freq), factors, rtol=1e-3):
        raise ModelFormatError(f"{name}: rope_freqs.weight does not match Llama 3 rope scaling; cannot load it")
    return scaling


def _rope_scaling(header: GGUFHeader, rope_freqs: torch.Tensor | None, theta: float, head_dim: int) -> dict | None:
    if rope_freqs is not None:
        return _rope_freqs_scaling(rope_freqs, theta, head_dim, header.path.name)
    kind, factor = _meta(header, "rope.scaling.type", None), _meta(header, "rope.scaling.factor", None)
    if kind == "linear" and factor:
        return {"rope_type": "linear", "factor": factor}
    if kind == "yarn" and factor:
        orig = _meta(header, "rope.scaling.original_context_length", None)
        return {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": orig}
    if kind not in (None, "none"):
        raise ModelFormatError(f"{header.path.name}: rope scaling {kind!r} is not supported")
    return None


def gguf_config(header: GGUFHeader, rope_freqs: torch.Tensor | None = None) -> ModelConfig:
    """ModelConfig from GGUF metadata (and the tensor table, for what metadata may leave out)."""
    arch = header.metadata.get("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"{header.path.name}: GGUF architecture {arch!r} is not supported; "
            f"supported: {', '.join(GGUF_ARCHITECTURES)}"
        )
    tensors = header.tensors
    heads, hidden = _meta(header, "attention.head_count"), _meta(header, "embedding_length")
    q_rows = tensors["blk.0.attn_q.weight"].shape[0] if "blk.0.attn_q.weight" in tensors else hidden
    head_dim = _meta(header, "attention.key_length", q_rows // heads)
    theta = _meta(header, "rope.freq_base", 10000.0)
    vocab = _meta(header, "vocab_size", None) or tensors["token_embd.weight"].shape[0]
    window = _meta(header, "attention.sliding_window", None)
    return ModelConfig(
        arch=arch,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=_meta(header, "feed_forward_length"),
        num_hidden_layers=_meta(header, "block_count"),
        num_attention_heads=heads,
        num_key_value_heads=_meta(header, "attention.head_count_kv", heads),
        head_dim=head_dim,
        rms_norm_eps=_meta(header, "attention.layer_norm_rms_epsilon", 1e-6),
        rope_theta=theta,
        rope_scaling=_rope_scaling(header, rope_freqs, theta, head_dim),
        max_position_embeddings=_meta(header, "context_length", 2048),
        tie_word_embeddings="output.weight" not in tensors,
        attention_bias="blk.0.attn_q.bias" in tensors,
        qk_norm="blk.0.attn_q_norm.weight" in tensors,
        extra={"sliding_window": window} if window and arch != "gemma3" else {},
        **(_gemma3_fields(header, head_dim) if arch == "gemma3" else {}),
    )


def _gemma3_fields(header: GGUFHeader, head_dim: int) -> dict:
    """What llama.cpp's gemma3 loader reads or fixes: which layers slide (`attention.sliding_window_pattern`, a
    per-layer bool array or a period n: every n-th layer global; default 6), their RoPE base (`rope.freq_base_swa`,
    default 10000), queries scaled by head_dim ** -0.5, GELU (tanh) MLP. No window: every layer global."""
    n_layers = _meta(header, "block_count")
    window = _meta(header, "attention.sliding_window", 0) or 0
    pattern = header.metadata.get("gemma3.attention.sliding_window_pattern", 6)  # a list: not _meta's uniform value
    if not window:
        sliding = [False] * n_layers
    elif isinstance(pattern, (list, tuple)):
        sliding = [bool(p) for p in pattern][:n_layers] + [False] * max(0, n_layers - len(pattern))
    else:
        sliding = [pattern == 0 or i % pattern < pattern - 1 for i in range(n_layers)]
    return {"layer_types": ["sliding_attention" if s else "full_attention" for s in sliding],
            "sliding_window": window, "rope_local_theta": float(_meta(header, "rope.freq_base_swa", 10000.0)),
            "query_pre_attn_scalar": float(head_dim), "hidden_act": "gelu_pytorch_tanh"}
