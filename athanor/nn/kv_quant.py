"""An int8 KV cache (`--kv-cache-type q8_0`): llama.cpp's q8_0 layout in PyTorch, for a quarter of fp32's bytes.

Each run of 32 values along head_dim (or the whole head_dim when it is not a multiple of 32) is stored as int8
with one float16 scale (amax / 127), as llama.cpp's q8_0 blocks are: 34 bytes per 32 values instead of 128 (fp32)
or 64 (f16). New keys and values are quantized when written into their slots; attention dequantizes the blocks
it gathers. A plain prefill (one sequence, nothing cached) attends to its own unrounded keys and values; every
later step reads the rounded cache. The fused C decode path (nn/cpu_ops.c) reads fp32 caches only, so a model
with an int8 cache decodes on the PyTorch path.
Not for: weights (nn/quant.py, nn/gguf_matmul.py) or the cache's paging (engine/block_manager.py).
"""

from __future__ import annotations

import torch

GROUP = 32


def group_size(head_dim: int) -> int:
    return GROUP if head_dim % GROUP == 0 else head_dim


def bytes_per_head(kv_cache_type: str, math_dtype: torch.dtype, head_dim: int) -> int:
    """Cache bytes of one token's key (or value) in one KV head."""
    if kv_cache_type == "q8_0":
        return head_dim + 2 * (head_dim // group_size(head_dim))  # int8 values + float16 scales
    return head_dim * _element_bytes(kv_cache_type, math_dtype)


def _element_bytes(kv_cache_type: str, math_dtype: torch.dtype) -> int:
    if kv_cache_type == "f16":
        return 2
    if kv_cache_type == "f32":
        return 4
    return torch.empty(0, dtype=math_dtype).element_size()


class QuantKV:
    """One layer's int8 cache: `data` (2, num_blocks, block_size, KVH, D) int8, `scale` (..., D // group) float16."""

    def __init__(self, data: torch.Tensor, scale: torch.Tensor) -> None:
        self.data, self.scale = data, scale
        self.group = data.shape[-1] // scale.shape[-1]

    @classmethod
    def allocate(cls, shape: tuple[int, ...], device) -> QuantKV:
        """Uninitialised storage for `shape` (..., D); blocks are zeroed when first handed out (`zero_blocks`)."""
        g = group_size(shape[-1])
        return cls(torch.empty(shape, dtype=torch.int8, device=device),
                   torch.empty((*shape[:-1], shape[-1] // g), dtype=torch.float16, device=device))

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    @property
    def nbytes(self) -> int:
        return self.data.numel() + self.scale.numel() * self.scale.element_size()

    def __getitem__(self, index) -> QuantKV:
        """A view of part of the cache (a layer of a multi-layer cache)."""
        return QuantKV(self.data[index], self.scale[index])

    def zero_blocks(self, start: int, end: int) -> None:
        """Zero blocks [start, end) of every layer (dim 2 of the (L, 2, NB, ...) cache this was allocated as)."""
        self.data[:, :, start:end].zero_()
        self.scale[:, :, start:end].zero_()

    def write(self, slot_mapping: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Quantize the new keys and values (N, KVH, D) and store them in their slots."""
        x = torch.stack((k, v)).float()  # (2, N, KVH, D)
        two, n, kvh, d = x.shape
        groups = x.view(two, n, kvh, d // self.group, self.group)
        scale = groups.abs().amax(dim=-1) / 127.0  # (2, N, KVH, G)
        q = torch.where(scale[..., None] > 0, groups / scale[..., None].clamp_min(1e-30), 0.0)
        q = q.round_().clamp_(-127, 127).to(torch.int8).view(two, n, kvh, d)
        self.data.view(2, -1, kvh, d).index_copy_(1, slot_mapping, q)
        self.scale.view(2, -1, kvh, d // self.group).index_copy_(1, slot_mapping, scale.to(torch.float16))

    def gather(self, block_tables: torch.Tensor, kv_len: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Each sequence's blocks in order, dequantized: two (B, KVH, kv_len, D) tensors of `dtype`."""
        B = block_tables.shape[0]
        idx = block_tables.view(-1)
        data = self.data.index_select(1, idx)  # (2, B * max_blocks, BS, KVH, D)
        scale = self.scale.index_select(1, idx)
        kvh, d = data.shape[-2:]
        data = data.view(2, B, -1, kvh, d)[:, :, :kv_len]
        scale = scale.view(2, B, -1, kvh, d // self.group)[:, :, :kv_len]
        x = (data.view(*data.shape[:-1], -1, self.group).to(dtype) * scale[..., None].to(dtype)).view(data.shape)
        return x[0].transpose(1, 2), x[1].transpose(1, 2)
