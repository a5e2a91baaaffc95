"""Attention for packed training rows that only ever looks inside one sample ("varlen" attention, on any device).

For: `use_packed_attention(model)`, which sft.py calls on the model it trains. A packed row holds several samples
whose position ids restart at 0 (encode.pack_examples). transformers' sdpa path turns that into a dense (T x T)
block-diagonal mask: every row pays T^2 attention work and mask memory however short its samples, and masked
sdpa on the CPU falls back to a slower kernel. Here the attention function finds each sample's span from the
position ids and runs causal sdpa on that span alone (flash kernels, no mask), so a packed row costs what its
samples would cost one by one, while the linear layers still see one big matrix. Same numbers as the masked path:
tests/train/test_packed_attention.py compares logits and gradients.

Not for: inference (the engine has its own paged attention), rows with left padding or an attention_mask (collate
right-pads, and right padding is a sample of its own here), sliding-window or soft-capped attention (Mistral's
window, Gemma 2/3): those models keep transformers' own attention.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from athanor.errors import AthanorError

NAME = "athanor_packed"


def packed_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     position_ids: torch.Tensor | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: q (B, H, T, D), k / v (B, Hkv, T, D) -> ((B, T, H, D), None)."""
    assert attention_mask is None, "no_padding_mask lets no mask through"
    batch, _, length, _ = query.shape
    if key.shape[2] != length:
        raise RuntimeError("packed attention is for training forwards without a KV cache (use_cache=False)")

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling,
                                              enable_gqa=q.shape[1] != k.shape[1])

    if position_ids is None:  # one sample per row, right-padded: causal attention alone is already exact
        out = attend(query, key, value)
    else:
        rows = []
        for b, bounds in enumerate(_row_bounds(position_ids, batch)):
            rows.append(torch.cat([attend(query[b:b + 1, :, s:e], key[b:b + 1, :, s:e], value[b:b + 1, :, s:e])
                                   for s, e in zip(bounds, bounds[1:])], dim=2))
        out = torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


_last_bounds: tuple[torch.Tensor | None, list[list[int]]] = (None, [])


def _row_bounds(position_ids: torch.Tensor, batch: int) -> list[list[int]]:
    """Each row's sample bounds, found once per forward: every layer gets the same position_ids tensor, and
    reading it back to the host (a device sync on a GPU) once per layer would be wasted. Holding the last tensor
    keeps its identity from being reused by another one."""
    global _last_bounds
    if _last_bounds[0] is not position_ids:
        _last_bounds = (position_ids, [sample_bounds(position_ids[b if position_ids.shape[0] > 1 else 0])
                                       for b in range(batch)])
    return _last_bounds[1]


def no_padding_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                    mask_function: Any = None, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> None:
    """The mask builder transformers calls for this attention: samples are told apart by their position ids, so
    there is never a mask; a padding mask that masks something would be silently ignored, so it is refused."""
    if attention_mask is not None and not bool(attention_mask.all()):
        raise AthanorError("packed attention takes right-padded rows with position ids and no attention_mask "
                           "(athanor.train.encode.collate)")
    return None


def sample_bounds(positions: torch.Tensor) -> list[int]:
    """[0, start of sample 2, ..., T]: a new sample starts wherever the position does not follow the previous one
    (the rule transformers' own packed-sequence detection uses)."""
    starts = torch.nonzero(positions[1:] != positions[:-1] + 1).flatten().add(1).tolist()
    return [0, *starts, int(positions.shape[0])]


def supports_packed_attention(config: Any) -> bool:
    """Full causal attention in every layer: no sliding window, no logit soft-capping."""
    if getattr(config, "attn_logit_softcapping", None):
        return False
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or []):
        return False
    return not (getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True))


def use_packed_attention(model: Any) -> bool:
    """Switch a transformers model (before peft wraps it) to packed attention where it supports it; True if on."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    config = getattr(model, "config", None)
    if config is None or not supports_packed_attention(config) or not hasattr(model, "set_attn_implementation"):
        return False
    AttentionInterface.register(NAME, packed_attention)
    AttentionMaskInterface.register(NAME, no_padding_mask)
    if not model._can_set_attn_implementation():  # an architecture outside transformers' attention interface
        return False
    model.set_attn_implementation(NAME)
    return config._attn_implementation == NAME
