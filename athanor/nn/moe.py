"""Sparse mixture-of-experts MLP (Qwen3-MoE): a router picks the top-k experts per token, each a SwiGLU MLP.

As Hugging Face's Qwen3MoeSparseMoeBlock computes it: router logits -> fp32 softmax -> top-k (renormalized
when norm_topk_prob) -> the chosen experts' outputs weighted and summed, experts visited in index order.
Not for expert parallelism, shared experts (Qwen2-MoE / DeepSeek) or GGUF MoE files (their experts come
as 3-D tensors).
"""

from __future__ import annotations

import torch
from torch import nn

from athanor.nn.layers import Linear, SwiGLU


class SparseMoE(nn.Module):
    def __init__(self, hidden: int, intermediate: int, num_experts: int, top_k: int, norm_topk_prob: bool) -> None:
        super().__init__()
        self.gate = Linear(hidden, num_experts)  # router; Hugging Face's mlp.gate.weight
        self.experts = nn.ModuleList(SwiGLU(hidden, intermediate) for _ in range(num_experts))
        self.top_k, self.norm_topk_prob = top_k, norm_topk_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.gate(x)  # (N, E)
        probs = torch.softmax(logits, dim=-1, dtype=torch.float)
        top_w, top_i = torch.topk(probs, self.top_k, dim=-1)  # (N, k) each
        if self.norm_topk_prob:
            top_w /= top_w.sum(dim=-1, keepdim=True)
        top_w = top_w.to(x.dtype)
        out = torch.zeros_like(x)  # (N, C)
        for e in torch.unique(top_i).tolist():  # sorted: the reference's order of accumulation
            token_idx, k_pos = torch.where(top_i == e)
            y = self.experts[e](x[token_idx]) * top_w[token_idx, k_pos, None]
            out.index_add_(0, token_idx, y)
        return out
