"""The Llama-family decoder (Llama 2/3, SmolLM2, TinyLlama, Mistral, Qwen2/2.5, Qwen3, Qwen3-MoE, Phi-3) in PyTorch.

Reads top to bottom: attention block, MLP block, decoder layer, model. Runs over a flat batch of new tokens
with a paged KV cache (see attention.py); returns logits only for the rows the caller asks for, because
the sampler needs one row per sequence, not one per prompt token. Not for loading files (models/) or for
deciding what runs when (engine/).
"""

from __future__ import annotations

import torch
from torch import nn

from athanor.errors import ModelFormatError
from athanor.nn.attention import AttentionMetadata, paged_attention
from athanor.nn.config import ModelConfig
from athanor.nn.layers import (
    Embedding,
    Linear,
    LMHead,
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
    apply_rope,
    row_slice,
    row_slices,
)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = (
            cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        )
        self.q_size, self.kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.qkv_proj = Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=cfg.attention_bias)
        self.o_proj = Linear(self.q_size, cfg.hidden_size)
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.scale = self.head_dim**-0.5
        self.window = cfg.sliding_window  # Phi-3; 0 for the rest of the family
        self.kv_cache = torch.empty(0)  # (2, num_blocks, block_size, KVH, D), set by the model runner

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        qk, v = self.rotated_qkv(x, cos, sin)
        return self.o_proj(self.attend(qk, v, meta).reshape(x.shape[0], self.q_size))

    def rotated_qkv(self, x, cos, sin, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normed rows x (N, C) -> q and k heads rotated together (N, H + KVH, D), written to `out` when given,
        and v (N, KVH, D). Row-wise: a long chunk may come a slice at a time (DecoderLayer.forward)."""
        N = x.shape[0]
        qkv = self.qkv_proj(x)  # (N, (H + 2*KVH) * D)
        qk = qkv[:, : self.q_size + self.kv_size].view(N, self.num_heads + self.num_kv_heads, self.head_dim)
        v = qkv[:, self.q_size + self.kv_size :].view(N, self.num_kv_heads, self.head_dim)  # (N, KVH, D)
        if self.q_norm is not None:  # Qwen3: per-head RMSNorm before RoPE
            q, k = qk.split([self.num_heads, self.num_kv_heads], dim=1)
            qk = torch.cat((self.q_norm(q), self.k_norm(k)), dim=1)
        return apply_rope(qk, cos, sin, out=out), v  # q and k heads rotated together

    def attend(self, qk: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        q, k = qk.split([self.num_heads, self.num_kv_heads], dim=1)
        return paged_attention(q, k, v, self.kv_cache, meta, self.scale, window=self.window)  # (N, H, D)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, index: int = 0) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if index in cfg.moe_layers:
            from athanor.nn.moe import SparseMoE

            self.mlp = SparseMoE(cfg.hidden_size, cfg.moe_intermediate_size, cfg.num_experts,
                                 cfg.num_experts_per_tok, cfg.norm_topk_prob)
        else:
            self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x, cos, sin, meta: AttentionMetadata) -> torch.Tensor:
        attn, mlp = self.self_attn, self.mlp
        dense = hasattr(mlp, "gate_up_proj")  # not a mixture of experts
        rows = row_slice(attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj) if dense else 0
        if rows and x.shape[0] > rows:
            return self._sliced(x, cos, sin, meta, rows)
        x = x + attn(self.input_layernorm(x), cos, sin, meta)
        return x + mlp(self.post_attention_layernorm(x))

    def _sliced(self, x, cos, sin, meta: AttentionMetadata, rows: int) -> torch.Tensor:
        """`forward` over a long chunk with every row-wise step (norms, block-kernel products, RoPE, residual adds)
        done `rows` tokens at a time; only attention sees the whole chunk. Same bits, temporaries of `rows` rows
        (layers.ROW_SLICE). x, the model's running activations, is updated in place."""
        attn = self.self_attn
        out = sliced_attention(attn, self.input_layernorm, x, cos, sin, meta, rows)  # (N, H, D)
        for s in row_slices(x.shape[0], rows):
            x[s] += attn.o_proj(out[s].reshape(-1, attn.q_size))
            x[s] += self.mlp(self.post_attention_layernorm(x[s]))
        return x


def sliced_attention(attn, norm, x, cos, sin, meta: AttentionMetadata, rows: int) -> torch.Tensor:
    """The attention half of a layer over a long chunk x (N, C): `norm`, the q/k/v products and RoPE `rows` tokens
    at a time, then attention over the whole chunk -> (N, H, D). `attn` has `rotated_qkv` and `attend` (this
    family's Attention or Gemma 3's)."""
    N = x.shape[0]
    qk = x.new_empty(N, attn.num_heads + attn.num_kv_heads, attn.head_dim)
    v = x.new_empty(N, attn.num_kv_heads, attn.head_dim)
    for s in row_slices(N, rows):
        v[s] = attn.rotated_qkv(norm(x[s]), cos[s], sin[s], out=qk[s])[1]
    return attn.attend(qk, v, meta)


class LlamaModel(nn.Module):
    """Decoder + LM head. Parameter names mirror Hugging Face's except the fused qkv_proj and gate_up_proj."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        # lazy: SmolLM2's 8192 positions would hold 4 MiB of tables before the first token
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling,
                                      lazy=True)
        self.lm_head = LMHead(cfg.hidden_size, cfg.vocab_size)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.cpu_ops = False  # see enable_cpu_ops
        self.decode_stack = None  # nn/cpu_ops.DecodeStack when enabled and every layer matmul is blocks (any GGUF type)
        self.fused_chunk_tokens = 0  # see fused_step; set by enable_cpu_ops

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,  # (N,) new tokens of every sequence, flattened
        positions: torch.Tensor,  # (N,) absolute position of each
        meta: AttentionMetadata,
        logits_indices: torch.Tensor | None = None,  # (M,) rows that need logits; None -> all N
    ) -> torch.Tensor:
        if self.cpu_ops and fused_step(self, meta):
            return self._decode_cpu(input_ids, positions, meta, logits_indices)
        x = self.embed_tokens(input_ids)  # (N, C)
        cos, sin = self.rotary(positions, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, meta)
        if logits_indices is not None:
            x = x.index_select(0, logits_indices)  # (M, C): the head is the biggest matmul, skip unused rows
        return self.lm_head(self.norm(x)).float()  # (M, V) fp32 for the sampler

    def _decode_cpu(self, input_ids, positions, meta: AttentionMetadata, logits_indices) -> torch.Tensor:
        """The decode step (one new token per sequence) through nn/cpu_ops.c: the same layers as `forward`, with
        the residual adds fused into the norms and RoPE + cache write + attention in one call per layer."""
        from athanor.nn.cpu_ops import add_rmsnorm

        x = self.embed_tokens(input_ids)  # (B, C), a fresh tensor: updated in place below
        self.rotary.cover(positions)  # the C code reads the tables directly
        h = add_rmsnorm(x, None, self.layers[0].input_layernorm.weight, self.layers[0].input_layernorm.eps)
        if self.decode_stack is not None:  # every layer in one C call: the same operations, no Python between
            self.decode_stack.run(x, h, positions, self.rotary.cos, self.rotary.sin, meta.slot_mapping,
                                  row_block_tables(meta))
        else:
            self._decode_layers(x, h, positions, meta)
        if logits_indices is not None:
            h = h.index_select(0, logits_indices)
        return self.lm_head(h)  # (M, V) fp32

    def _decode_layers(self, x, h, positions, meta: AttentionMetadata) -> None:
        """The per-op form of DecodeStack.run: one C call per fused op; x and h updated in place."""
        from athanor.nn.cpu_ops import add_rmsnorm, check_decode_args, decode_attention

        norms = [layer.input_layernorm for layer in self.layers[1:]] + [self.norm]
        rope, first = (self.rotary.cos, self.rotary.sin), self.layers[0].self_attn
        qkv_width = (first.num_heads + 2 * first.num_kv_heads) * first.head_dim
        tables = row_block_tables(meta)
        check_decode_args(h.new_empty(h.shape[0], qkv_width), positions, *rope, first.kv_cache, meta.slot_mapping,
                          tables, first.num_heads)  # once per step: every layer's tensors match
        for layer, next_norm in zip(self.layers, norms):
            attn = layer.self_attn
            a = decode_attention(attn.qkv_proj(h), positions, *rope, attn.kv_cache, meta.slot_mapping,
                                 tables, attn.num_heads, attn.scale, check=False)
            post = layer.post_attention_layernorm
            add_rmsnorm(x, attn.o_proj(a), post.weight, post.eps, out=h, check=False)  # x += attention; h = norm(x)
            add_rmsnorm(x, layer.mlp(h), next_norm.weight, next_norm.eps, out=h, check=False)  # x += mlp; next norm

    def enable_cpu_ops(self) -> bool:
        """Route fp32 CPU work through nn/cpu_ops.c when it can (see its docstring); True when enabled."""
        from athanor.nn import cpu_ops

        cfg = self.config
        p = self.embed_tokens.weight
        ok = (p.device.type == "cpu" and p.dtype == torch.float32 and not cfg.qk_norm and not cfg.sliding_window
              and not cfg.moe_layers
              and cpu_ops.supports(cfg.hidden_size, cfg.intermediate_size, cfg.head_dim) and cpu_ops.available())
        self.cpu_ops = ok
        self.decode_stack = cpu_ops.DecodeStack(self) if ok and cpu_ops.DecodeStack.supports(self) else None
        self.fused_chunk_tokens = FUSED_CHUNK_TOKENS if ok else 0
        for m in self.modules():
            if isinstance(m, (RMSNorm, SwiGLU)):
                m.cpu_ops = ok
        return ok

    @torch.inference_mode()
    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(N,) one sequence's ids -> (N, C) final hidden states (after the last norm), fp32; touches no KV cache.
        What Hugging Face calls `hidden_states[-1]`; the base of embeddings."""
        n = input_ids.shape[0]
        meta = AttentionMetadata.cache_free(n).prepare(input_ids.device)
        x = self.embed_tokens(input_ids)
        cos, sin = self.rotary(torch.arange(n, device=input_ids.device), x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, meta)
        return self.norm(x).float()

    def load_hf_tensors(self, tensors: dict[str, torch.Tensor], keep_blocks: bool | dict = False) -> None:
        """Adopt Hugging Face-named tensors (no copy where no fusing is needed); consumes the dict.
        GGUF block weights in it (models/gguf.py keep_blocks) stay in their blocks when `keep_blocks` is True
        (or a quant plan with "blocks"); a quant plan's {"linear": kind, "lm_head": kind} re-packs the blocks
        already of that kind into nn/quant.py's format without a float copy; the rest are dequantized."""
        adopted = _adopt_blocks(self, tensors, keep_blocks)  # our parameter names now held as blocks
        expected = self.config.hf_tensor_shapes().keys() - {n for p in adopted for n in _source_names(p)}
        if self.config.tie_word_embeddings:
            tensors.pop("lm_head.weight", None)
        missing = sorted(expected - tensors.keys())
        if missing:
            raise ModelFormatError(f"checkpoint is missing {len(missing)} tensors, e.g. {missing[:3]}")
        ours = {}
        for name, param in self.named_parameters(remove_duplicate=False):
            if name in adopted or (name == "lm_head.weight" and "embed_tokens.weight" in adopted
                                   and self.config.tie_word_embeddings):
                continue
            src = ours.get("embed_tokens.weight") if name == "lm_head.weight" and self.config.tie_word_embeddings else None
            src = src if src is not None else _fused_source(name, tensors)
            if _is_transposed(self, name):
                src = src.t().contiguous()  # (out, in) -> our (in, out)
            if src.shape != param.shape:
                raise ModelFormatError(f"tensor {name}: shape {tuple(src.shape)}, model expects {tuple(param.shape)}")
            ours[name] = src
        unused = sorted(k for k in tensors if not k.endswith("rotary_emb.inv_freq"))
        if unused:
            raise ModelFormatError(f"checkpoint has {len(unused)} tensors the model does not use, e.g. {unused[:3]}")
        self.load_state_dict(ours, strict=False, assign=True)
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight


def _is_transposed(model: nn.Module, param_name: str) -> bool:
    module_name, _, leaf = param_name.rpartition(".")
    return leaf == "weight" and isinstance(model.get_submodule(module_name), Linear)


def _source_names(name: str) -> list[str]:
    """The Hugging Face tensor names behind one of our parameter names (several where we fuse)."""
    hf = "model." + name if not name.startswith("lm_head") else name
    if ".qkv_proj." in hf:
        return [hf.replace("qkv_proj", p) for p in ("q_proj", "k_proj", "v_proj")]
    if ".gate_up_proj." in hf:
        return [hf.replace("gate_up_proj", p) for p in ("gate_proj", "up_proj")]
    return [hf]


def _adopt_blocks(model: nn.Module, tensors: dict, keep: bool | dict) -> set[str]:
    """Matrices given as GGUF blocks (nn/gguf_matmul.GGUFWeight). `keep` True (or a plan with "blocks"): each
    module whose sources all have a block kernel takes them as its `qweight`, views of the file. A plan's
    {"linear": kind, "lm_head": kind}: sources already in that kind (Q4_1, Q8_0) are re-packed exactly into
    nn/quant.QuantizedWeight, and a Q4_1/Q8_0 token table is kept re-packed too (rows decoded on lookup; a
    tied head multiplies the same blocks). The module's float weight is left empty; every other block tensor
    is dequantized. Returns the parameter names now held as blocks."""
    from athanor.nn.gguf_matmul import GGUFWeight

    adopted: set[str] = set()
    if not any(isinstance(t, GGUFWeight) for t in tensors.values()):
        return adopted
    plan = keep if isinstance(keep, dict) else ({"blocks": True} if keep else {})
    tied = model.config.tie_word_embeddings
    for mname, module in model.named_modules() if plan else []:
        if not isinstance(module, (Linear, LMHead, Embedding)) or (isinstance(module, LMHead) and tied):
            continue
        names = _source_names(f"{mname}.weight")
        srcs = [tensors.get(n) for n in names]
        if not all(isinstance(src, GGUFWeight) for src in srcs):
            continue
        qweight = _held_blocks(module, srcs, plan, tied)
        if qweight is None:
            continue
        for n in names:
            tensors.pop(n)
        module.qweight = qweight
        module.weight = nn.Parameter(torch.empty(0), requires_grad=False)
        adopted.add(f"{mname}.weight")
    if tied and "embed_tokens.weight" in adopted:  # the head reads the embedding's blocks
        model.lm_head.qweight = _tied_head(model.embed_tokens.qweight, plan)
        model.lm_head.weight = model.embed_tokens.weight
    for name, t in tensors.items():
        if isinstance(t, GGUFWeight):
            tensors[name] = t.dequantize()
    return adopted


_REPACKS = {3: "q4_1", 8: "q8_0"}  # ggml type -> the nn/quant.py kind that holds its blocks bit for bit
# Which of those stay views of the file, multiplied in GGUF's layout with float activations (the products of the
# re-packed copy, bit for bit: GGUFWeight.with_float_activations) instead of re-packed into an anonymous copy:
# "none", "tables" (the token table and an LM head) or "all". "none" by default: in place a layer matrix's product
# took 12-20% more CPU on this 2-core VM (each row's f16 scales gathered from 20/34-byte blocks instead of loaded
# 8 at a time) and SmolLM2's tied Q8_0 head 6% more (file pages), for RssAnon -> RssFile, not less RSS
# (benchmarks/bench_gguf_models.py --in-place measures it).
REPACK_IN_PLACE = "none"


def _held_blocks(module: nn.Module, srcs: list, plan: dict, tied: bool):
    """What `module` keeps of its GGUFWeight sources under `plan`: BlockParts (native), a re-packed
    QuantizedWeight, or None (dequantized, as before)."""
    from athanor.nn.gguf_matmul import BlockParts, supports

    if plan.get("blocks") and all(supports(s.ggml_type, s.in_features) for s in srcs):
        return srcs[0] if isinstance(module, Embedding) else BlockParts(srcs)
    kinds = {_REPACKS.get(s.ggml_type) for s in srcs}
    kind = kinds.pop() if len(kinds) == 1 else None
    if isinstance(module, Embedding):  # the table: re-packed when its type is, and a tied head can be quantized
        return _repack(srcs, kind, table=True) if kind and (not tied or plan.get("lm_head")) else None
    want = plan.get("lm_head" if isinstance(module, LMHead) else "linear")
    return _repack(srcs, kind, head=isinstance(module, LMHead)) if kind and kind == want else None


def _repack(srcs: list, kind: str, table: bool = False, head: bool = False):
    """GGUF blocks of `kind` (the parts of one fused matrix, stacked along the output) -> what multiplies them
    with float activations: the file's blocks themselves where REPACK_IN_PLACE says (the GGUFWeight for a token
    table, BlockParts for a matrix), else one QuantizedWeight in nn/quant.py's row layout."""
    from athanor.nn.gguf_matmul import BlockParts
    from athanor.nn.quant import QuantizedWeight

    if REPACK_IN_PLACE == "all" or (REPACK_IN_PLACE == "tables" and (table or head)):
        parts = [s.with_float_activations() for s in srcs]
        return parts[0] if table else BlockParts(parts)
    raws = [s.raw if s.row_order is None else s.raw.index_select(0, s.row_order) for s in srcs]
    qweight = QuantizedWeight.from_gguf_parts(raws, kind, srcs[0].in_features)
    for s in srcs:  # the copy is made: the file's pages need not stay resident next to it
        s.release_pages()
    return qweight


def _tied_head(table, plan: dict):
    """The LM head of a tied model whose embedding is held as blocks: the same blocks where the plan's head kind
    is theirs (one copy), else those weights quantized to the plan's kind (what quantizing the float table gave)."""
    from athanor.nn.gguf_matmul import BlockParts, GGUFWeight
    from athanor.nn.quant import QuantizedWeight

    kind = plan.get("lm_head")
    if isinstance(table, GGUFWeight):  # kept in its blocks: natively, or as float-activation Q4_1/Q8_0
        if not table.float_activations or _REPACKS[table.ggml_type] == kind:
            return BlockParts([table])
        return QuantizedWeight.quantize(table.dequantize(), kind)
    return table if kind == table.kind else QuantizedWeight.quantize(table.dequantize(), kind)


def _fused_source(name: str, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The HF tensor(s) behind one of our parameter names, concatenated where we fuse."""
    hf = "model." + name if not name.startswith("lm_head") else name
    if hf in tensors:  # already fused in the checkpoint (Phi-3)
        return tensors.pop(hf)
    if ".qkv_proj." in hf:
        parts = [hf.replace("qkv_proj", p) for p in ("q_proj", "k_proj", "v_proj")]
        return torch.cat([tensors.pop(p) for p in parts], dim=0)
    if ".gate_up_proj." in hf:
        parts = [hf.replace("gate_up_proj", p) for p in ("gate_proj", "up_proj")]
        return torch.cat([tensors.pop(p) for p in parts], dim=0)
    return tensors.pop(hf)


def _quant_kind(module: nn.Module, quant: dict[str, str] | None) -> str | None:
    """The block format `quant` asks for this matmul, when its input width splits into blocks of 32."""
    is_head = isinstance(module, LMHead)
    kind = (quant or {}).get("lm_head" if is_head else "linear")
    in_features = module.weight.shape[1 if is_head else 0]  # LMHead keeps (V, C); Linear stores (in, out)
    return kind if kind and in_features % 32 == 0 else None


def build_model(cfg: ModelConfig, tensors: dict[str, torch.Tensor], device="cpu", dtype=torch.float32,
                weight_dtype: torch.dtype | None = None, quant: dict[str, str] | None = None) -> LlamaModel:
    """A ready-to-run model on `device` in `dtype` from HF-named tensors (the dict is consumed).

    `quant` (CPU, float32 math): {"linear": kind, "lm_head": kind} with kind "q4_1" / "q8_0": those matmuls read
    GGUF-style block weights through athanor's AVX2 kernels (nn/quant.py) instead of `weight_dtype`.
    {"blocks": True}: GGUF block tensors in `tensors` (models/gguf.py keep_blocks) run in their own format
    (nn/gguf_matmul.py); without it they are dequantized here.

    Built on the CPU without a meta-device context: every parameter starts as torch.empty (no init work) and is
    replaced by the checkpoint's tensor; the meta context would pull in torch's compiler stack (~1 s).
    """
    on_cpu_fp32 = dtype == torch.float32 and str(device) == "cpu"
    assert not quant or on_cpu_fp32, "quantized kernels are CPU, float32 math"
    if cfg.arch == "gemma3":
        from athanor.nn.gemma3 import Gemma3Model

        model = Gemma3Model(cfg)
    else:
        model = LlamaModel(cfg)
    model.load_hf_tensors(tensors, keep_blocks=quant or False)  # blocks kept, re-packed or dequantized
    model.lm_head.weight_t = torch.empty(0)  # rebuilt below, after the move and cast
    model = model.to(device=device, dtype=dtype).eval()
    pack = weight_dtype == torch.float16 and on_cpu_fp32  # FBGEMM fp16 weights, fp32 math: half the bytes
    assert pack or weight_dtype in (None, dtype), "weights in another dtype than the math only via FBGEMM on CPU"
    for module in model.modules():
        if not isinstance(module, (Linear, LMHead)) or module.qweight is not None:
            continue
        kind = _quant_kind(module, quant)
        if kind:
            module.quantize(kind)
        elif pack:
            module.pack_fp16()
        elif isinstance(module, LMHead):
            module.refresh()
    if on_cpu_fp32:
        model.enable_cpu_ops()
    return model


FUSED_CHUNK_TOKENS = 64  # a sequence's step of up to this many new tokens runs through the fused C stack


def fused_step(model, meta: AttentionMetadata) -> bool:
    """Whether this step runs through the fused C layers (nn/cpu_ops.c, nn/gemma_ops.c): it writes the cache (an
    fp32 one) and no sequence adds more than `model.fused_chunk_tokens` tokens. A decode step, and a short
    prefill chunk (the part of a chat after a prefix-cache hit) as rows of one sequence: each row attends over
    positions [0, its own] and the C code writes every row's k/v before any row's attention reads the cache.
    Longer chunks take the per-op path (blocked SDPA). The model runner splits a step that mixes both kinds, so a
    sequence takes the path it would take alone (engine/model_runner.py)."""
    return (meta.write_cache and max(meta.query_lens) <= model.fused_chunk_tokens
            and _fp32_cache(model.layers[0].self_attn.kv_cache))


def row_block_tables(meta: AttentionMetadata) -> torch.Tensor:
    """(N, MB): the block table of each new token's sequence (the fused C code takes one row per token)."""
    if len(meta.query_lens) == meta.slot_mapping.shape[0]:  # one token per sequence
        return meta.block_tables
    counts = torch.tensor(meta.query_lens, device=meta.block_tables.device)
    return meta.block_tables.repeat_interleave(counts, dim=0)


def _fp32_cache(cache) -> bool:
    """The fused C decode reads fp32 caches only (an f16 or int8 cache decodes on the PyTorch path)."""
    return isinstance(cache, torch.Tensor) and cache.dtype == torch.float32
