"""The Gemma 3 text decoder (Gemma3ForCausalLM; e.g. Gemma 3 270M) in plain PyTorch, over the paged KV cache.

What differs from the Llama family (nn/llama.py), as Hugging Face's modeling_gemma3 computes it:
- the embedding is multiplied by sqrt(hidden_size);
- RMSNorm multiplies by (1 + w): we store 1 + w, so Hugging Face tensors get +1 at load (llama.cpp files
  already hold 1 + w; models/gguf.py hands them over in Hugging Face's convention);
- four norms per layer: input, post-attention, pre-feedforward, post-feedforward, and q/k norms per head;
- attention scale query_pre_attn_scalar ** -0.5; five of every six layers attend over a sliding window with
  their own RoPE base (rope_local_theta), the sixth is global (rope_theta, rope_scaling);
- MLP gate activation GELU (tanh approximation).
Not for Gemma 1/2 (logit soft-capping), Gemma 3 vision, or loading files (models/).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from athanor.nn.attention import AttentionMetadata, paged_attention
from athanor.nn.config import ModelConfig
from athanor.nn.layers import Embedding, Linear, LMHead, RMSNorm, RotaryEmbedding, apply_rope, row_slice, row_slices
from athanor.nn.llama import LlamaModel, fused_step, row_block_tables, sliced_attention


# a sequence's step of up to this many new tokens runs through the fused C stack (nn/gemma_ops.c), prefill included:
# its row-parallel norms/RoPE/GELU and register-blocked attention beat ~30 PyTorch ops per layer (nn/llama.fused_step)
GEMMA_FUSED_CHUNK_TOKENS = 1024


class GeluMLP(nn.Module):
    """down(gelu_tanh(gate(x)) * up(x)), gate and up fused into one matmul (names as SwiGLU's)."""

    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_up_proj = Linear(hidden, 2 * intermediate)
        self.down_proj = Linear(intermediate, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.gelu(gate, approximate="tanh") * up)


class Gemma3Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, is_sliding: bool) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_size, self.kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.qkv_proj = Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=cfg.attention_bias)
        self.o_proj = Linear(self.q_size, cfg.hidden_size)
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.scale = (cfg.query_pre_attn_scalar or self.head_dim) ** -0.5
        self.window = cfg.sliding_window if is_sliding else 0
        self.kv_cache = torch.empty(0)  # (2, num_blocks, block_size, KVH, D), set by the model runner

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        qk, v = self.rotated_qkv(x, cos, sin)
        return self.o_proj(self.attend(qk, v, meta).reshape(x.shape[0], self.q_size))

    def rotated_qkv(self, x, cos, sin, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normed rows x (N, C) -> normed q and k heads rotated together (N, H + KVH, D), written to `out` when
        given, and v (N, KVH, D). Row-wise: a long chunk may come a slice at a time (Gemma3Layer.forward)."""
        N = x.shape[0]
        qkv = self.qkv_proj(x)  # (N, (H + 2*KVH) * D)
        q = self.q_norm(qkv[:, : self.q_size].reshape(N, self.num_heads, self.head_dim))
        k = self.k_norm(qkv[:, self.q_size : self.q_size + self.kv_size].reshape(N, self.num_kv_heads, self.head_dim))
        v = qkv[:, self.q_size + self.kv_size :].reshape(N, self.num_kv_heads, self.head_dim)  # (N, KVH, D)
        return apply_rope(torch.cat((q, k), dim=1), cos, sin, out=out), v

    def attend(self, qk: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        q, k = qk.split([self.num_heads, self.num_kv_heads], dim=1)
        return paged_attention(q, k, v, self.kv_cache, meta, self.scale, window=self.window)  # (N, H, D)


class Gemma3Layer(nn.Module):
    def __init__(self, cfg: ModelConfig, is_sliding: bool) -> None:
        super().__init__()
        h, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.is_sliding = is_sliding
        self.input_layernorm = RMSNorm(h, eps)
        self.self_attn = Gemma3Attention(cfg, is_sliding)
        self.post_attention_layernorm = RMSNorm(h, eps)
        self.pre_feedforward_layernorm = RMSNorm(h, eps)
        self.post_feedforward_layernorm = RMSNorm(h, eps)
        self.mlp = GeluMLP(h, cfg.intermediate_size)

    def forward(self, x, rope_global, rope_local, meta: AttentionMetadata) -> torch.Tensor:
        cos, sin = rope_local if self.is_sliding else rope_global
        attn = self.self_attn
        rows = row_slice(attn.qkv_proj, attn.o_proj, self.mlp.gate_up_proj, self.mlp.down_proj)
        if rows and x.shape[0] > rows:
            return self._sliced(x, cos, sin, meta, rows)
        x = x + self.post_attention_layernorm(attn(self.input_layernorm(x), cos, sin, meta))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))

    def _sliced(self, x, cos, sin, meta: AttentionMetadata, rows: int) -> torch.Tensor:
        """`forward` over a long chunk, every row-wise step `rows` tokens at a time (as llama.DecoderLayer._sliced):
        same bits, smaller temporaries; x updated in place."""
        attn = self.self_attn
        out = sliced_attention(attn, self.input_layernorm, x, cos, sin, meta, rows)  # (N, H, D)
        for s in row_slices(x.shape[0], rows):
            x[s] += self.post_attention_layernorm(attn.o_proj(out[s].reshape(-1, attn.q_size)))
            x[s] += self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x[s])))
        return x


class Gemma3Model(LlamaModel):
    """Decoder + tied LM head; LlamaModel's loading, hidden-state and engine interface, Gemma's layers."""

    def __init__(self, cfg: ModelConfig) -> None:
        nn.Module.__init__(self)
        self.config = cfg
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size)
        types = cfg.layer_types or ["full_attention"] * cfg.num_hidden_layers
        self.layers = nn.ModuleList(Gemma3Layer(cfg, t == "sliding_attention") for t in types)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        P = cfg.max_position_embeddings
        self.rotary = RotaryEmbedding(cfg.head_dim, P, cfg.rope_theta, cfg.rope_scaling, lazy=True)
        self.rotary_local = RotaryEmbedding(cfg.head_dim, P, cfg.rope_local_theta, None, lazy=True)
        self.lm_head = LMHead(cfg.hidden_size, cfg.vocab_size)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.embed_scale = cfg.hidden_size**0.5
        self.cpu_ops, self.decode_stack = False, None  # decode_stack: see enable_cpu_ops
        self.fused_chunk_tokens = 0  # nn/llama.fused_step; set by enable_cpu_ops

    def _run_layers(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        x = self.embed_tokens(input_ids)  # (N, C)
        x = x * torch.tensor(self.embed_scale, dtype=x.dtype)  # HF multiplies by the scale cast to the dtype
        rope_global, rope_local = self.rotary(positions, x.dtype), self.rotary_local(positions, x.dtype)
        for layer in self.layers:
            x = layer(x, rope_global, rope_local, meta)
        return x

    @torch.inference_mode()
    def forward(self, input_ids, positions, meta: AttentionMetadata, logits_indices=None) -> torch.Tensor:
        if self.decode_stack is not None and fused_step(self, meta):
            x = self.embed_tokens(input_ids)
            x = x * torch.tensor(self.embed_scale, dtype=x.dtype)
            h = self.decode_stack.run(x, positions, meta.slot_mapping, row_block_tables(meta))  # nn/gemma_ops.c
            if logits_indices is not None:
                h = h.index_select(0, logits_indices)
            return self.lm_head(h).float()
        x = self._run_layers(input_ids, positions, meta)
        if logits_indices is not None:
            x = x.index_select(0, logits_indices)  # (M, C)
        return self.lm_head(self.norm(x)).float()  # (M, V)

    @torch.inference_mode()
    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[0]
        meta = AttentionMetadata.cache_free(n).prepare(input_ids.device)
        return self.norm(self._run_layers(input_ids, torch.arange(n, device=input_ids.device), meta)).float()

    def enable_cpu_ops(self) -> bool:
        """The whole layer stack of a decode step or a prefill chunk (up to GEMMA_FUSED_CHUNK_TOKENS new tokens
        per sequence) in one C call (nn/gemma_ops.py) when every projection is GGUF blocks; True when enabled. The
        per-op PyTorch path stays for longer chunks and everything else."""
        from athanor.nn.gemma_ops import GemmaDecodeStack

        p = self.layers[0].input_layernorm.weight
        ok = p.device.type == "cpu" and p.dtype == torch.float32 and GemmaDecodeStack.supports(self)
        self.decode_stack = GemmaDecodeStack(self) if ok else None
        self.fused_chunk_tokens = GEMMA_FUSED_CHUNK_TOKENS if ok else 0
        return ok

    def load_hf_tensors(self, tensors: dict[str, torch.Tensor], keep_blocks: bool = False) -> None:
        """As LlamaModel's, after turning Hugging Face's norm weights w into the 1 + w we multiply by."""
        for name in [n for n in tensors if n.endswith("norm.weight")]:
            tensors[name] = tensors[name].float() + 1.0
        super().load_hf_tensors(tensors, keep_blocks)
