"""Attention over a paged KV cache, in plain PyTorch (CPU and CUDA), and the per-step metadata it reads.

The KV cache of one layer is one tensor (2, num_blocks, block_size, num_kv_heads, head_dim): K then V. A batch is
a flat run of N new tokens from B sequences; each new token has a cache slot (`slot_mapping`) and each
sequence a `block_table` listing its blocks in order. Not for scheduling or block bookkeeping (engine/).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AttentionMetadata:
    """Built once per step by the model runner and shared by every layer."""

    slot_mapping: torch.Tensor  # (N,) cache slot = block_id * block_size + offset, for each new token
    block_tables: torch.Tensor  # (B, max_blocks) block ids per sequence, padded with 0
    query_lens: list[int]  # new tokens per sequence, sums to N
    context_lens: list[int]  # tokens in the cache per sequence after this step (cached + new)
    # derived, filled by `prepare`:
    kv_len: int = 0  # max context length, gathered length per sequence
    mask: torch.Tensor | None = None  # (B, 1, max_q, kv_len) bool, None when no masking is needed
    pad_index: torch.Tensor | None = None  # (N,) position of each new token in the (B * max_q) padded layout
    is_plain_prefill: bool = False  # one sequence, nothing cached: causal attention on the new tokens alone
    write_cache: bool = True  # False: a cache-free forward (embeddings) that must not touch any KV cache

    @classmethod
    def cache_free(cls, num_tokens: int) -> "AttentionMetadata":
        """One sequence attended causally on its own, written nowhere: the forward behind embeddings."""
        empty = torch.empty(0, dtype=torch.long)
        return cls(empty, empty, [num_tokens], [num_tokens], write_cache=False)

    def prepare(self, device: torch.device) -> "AttentionMetadata":
        """Precompute masks and padding once per step (every layer reuses them)."""
        B, max_q = len(self.query_lens), max(self.query_lens)
        self.kv_len = max(self.context_lens)
        self.is_plain_prefill = B == 1 and self.query_lens[0] == self.context_lens[0]
        assert self.write_cache or self.is_plain_prefill, "a cache-free forward is one sequence with no context"
        if self.is_plain_prefill:
            return self
        if max_q > 1 or len(set(self.context_lens)) > 1:
            self.mask = _causal_mask(self.query_lens, self.context_lens, max_q, self.kv_len, device)
        if any(q != max_q for q in self.query_lens):
            rows = [b * max_q + i for b, q in enumerate(self.query_lens) for i in range(q)]
            self.pad_index = torch.tensor(rows, dtype=torch.long, device=device)
        return self


def _causal_mask(query_lens: list[int], context_lens: list[int], max_q: int, kv_len: int, device) -> torch.Tensor:
    """True where query i of sequence b may attend to cache position j: j <= its absolute position."""
    q_idx = torch.arange(max_q, device=device)  # (Q,)
    ctx = torch.tensor(context_lens, device=device)  # (B,)
    qlen = torch.tensor(query_lens, device=device)  # (B,)
    q_pos = ctx[:, None] - qlen[:, None] + q_idx[None, :]  # (B, Q) absolute position of each query
    q_pos = torch.where(q_idx[None, :] < qlen[:, None], q_pos, 0)  # padded queries see slot 0: no all-False rows
    j = torch.arange(kv_len, device=device)
    return (j[None, None, :] <= q_pos[:, :, None]).unsqueeze(1)  # (B, 1, Q, K)


def paged_attention(
    q: torch.Tensor,  # (N, H, D)
    k: torch.Tensor,  # (N, KVH, D)
    v: torch.Tensor,  # (N, KVH, D)
    kv_cache,  # (2, num_blocks, block_size, KVH, D): a tensor, or an int8 nn/kv_quant.QuantKV
    meta: AttentionMetadata,
    scale: float,
    window: int = 0,
) -> torch.Tensor:
    """Write the new k/v into their slots, then attend each sequence's queries to its cached context.
    window > 0 (Gemma 3's sliding layers): a query at position i sees positions j with i - window < j <= i."""
    N, H, D = q.shape
    kvh = k.shape[1]
    if meta.write_cache:
        if isinstance(kv_cache, torch.Tensor):
            new = torch.stack((k, v))  # one write for both
            kv_cache.view(2, -1, kvh, D).index_copy_(1, meta.slot_mapping, new.to(kv_cache.dtype))
        else:  # an int8 cache (nn/kv_quant.py): quantized as it is written
            kv_cache.write(meta.slot_mapping, k, v)
    if window and meta.kv_len > window:
        return _windowed(q, k, v, kv_cache, meta, scale, window)
    if meta.is_plain_prefill:  # fast path: no gather, no explicit mask
        out = _sdpa(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], None, scale, True)
        return out[0].transpose(0, 1)  # (N, H, D)
    B, max_q = len(meta.query_lens), max(meta.query_lens)
    keys, values = _gather(kv_cache, meta, q.dtype)  # (B, KVH, K, D) each
    if meta.pad_index is None:
        qp = q.view(B, max_q, H, D)
    else:
        qp = q.new_zeros(B * max_q, H, D).index_copy_(0, meta.pad_index, q).view(B, max_q, H, D)
    out = _sdpa(qp.transpose(1, 2), keys, values, meta.mask, scale, False)  # (B, H, Q, D)
    out = out.transpose(1, 2).reshape(B * max_q, H, D)
    return out if meta.pad_index is None else out.index_select(0, meta.pad_index)


def _gather(kv_cache, meta: AttentionMetadata, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sequence's blocks in order, K and V in one index_select: two (B, KVH, kv_len, D) views (an int8
    cache: dequantized copies in the math dtype)."""
    if not isinstance(kv_cache, torch.Tensor):
        return kv_cache.gather(meta.block_tables, meta.kv_len, dtype)
    B = meta.block_tables.shape[0]
    blocks = kv_cache.index_select(1, meta.block_tables.view(-1))  # (2, B * max_blocks, block_size, KVH, D)
    flat = blocks.view(2, B, -1, *kv_cache.shape[3:])[:, :, : meta.kv_len].to(dtype)  # (2, B, K, KVH, D)
    return flat[0].transpose(1, 2), flat[1].transpose(1, 2)


def _sdpa(q, k, v, mask, scale, is_causal) -> torch.Tensor:
    """q (B, H, Q, D), k/v (B, KVH, K, D); grouped-query heads share k/v without copying them H/KVH times."""
    H, kvh = q.shape[1], k.shape[1]
    if H != kvh and q.shape[2] == 1 and mask is None:
        # decode without a mask: fold the query groups into the sequence dim, (B, KVH, G, D), no k/v repeat
        B, _, _, D = q.shape
        out = F.scaled_dot_product_attention(q.view(B, kvh, H // kvh, D), k, v, scale=scale)
        return out.view(B, H, 1, D)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=H != kvh
    )


def _window_mask(meta: AttentionMetadata, window: int, device) -> torch.Tensor:
    """(B, 1, Q, K) causal mask that also drops positions `window` or more behind each query (cached per step)."""
    cache = meta.__dict__.setdefault("_window_masks", {})
    if window not in cache:
        max_q = max(meta.query_lens)
        q_idx = torch.arange(max_q, device=device)
        ctx, qlen = torch.tensor(meta.context_lens, device=device), torch.tensor(meta.query_lens, device=device)
        q_pos = ctx[:, None] - qlen[:, None] + q_idx[None, :]  # (B, Q)
        q_pos = torch.where(q_idx[None, :] < qlen[:, None], q_pos, 0)
        j = torch.arange(meta.kv_len, device=device)[None, None, :]
        cache[window] = ((j <= q_pos[:, :, None]) & (j > q_pos[:, :, None] - window)).unsqueeze(1)
    return cache[window]


def _windowed(q, k, v, kv_cache, meta: AttentionMetadata, scale: float, window: int) -> torch.Tensor:
    """paged_attention's general path with a sliding-window mask (also for a plain prefill longer than it)."""
    N, H, D = q.shape
    B, max_q = len(meta.query_lens), max(meta.query_lens)
    mask = _window_mask(meta, window, q.device)
    if meta.is_plain_prefill or not meta.write_cache:  # the new tokens are the whole context
        keys, values = k.transpose(0, 1)[None], v.transpose(0, 1)[None]
    else:
        keys, values = _gather(kv_cache, meta, q.dtype)  # (B, KVH, K, D)
    pad_index = meta.pad_index
    if pad_index is None:
        qp = q.view(B, max_q, H, D)
    else:
        qp = q.new_zeros(B * max_q, H, D).index_copy_(0, pad_index, q).view(B, max_q, H, D)
    out = _sdpa(qp.transpose(1, 2), keys, values, mask, scale, False).transpose(1, 2).reshape(B * max_q, H, D)
    return out if pad_index is None else out.index_select(0, pad_index)
