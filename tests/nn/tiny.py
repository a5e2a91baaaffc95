"""Tiny random Hugging Face models of every supported architecture, built with transformers (the reference)."""

from __future__ import annotations

import torch

ARCHS = ["llama", "llama3", "mistral", "qwen2", "qwen3", "gemma3", "phi3", "qwen3_moe"]


def tiny_hf_model(arch: str, seed: int = 0, vocab: int = 256):
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  rms_norm_eps=1e-5, tie_word_embeddings=False)
    if arch == "llama":
        cfg = tf.LlamaConfig(**common, rope_theta=10000.0)
        model = tf.LlamaForCausalLM(cfg)
    elif arch == "llama3":  # Llama 3.x: rope scaling + tied embeddings (as in Llama 3.2 1B)
        common["tie_word_embeddings"] = True
        cfg = tf.LlamaConfig(**common, rope_theta=500000.0, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64})
        model = tf.LlamaForCausalLM(cfg)
    elif arch == "mistral":
        cfg = tf.MistralConfig(**common, sliding_window=None)
        model = tf.MistralForCausalLM(cfg)
    elif arch == "qwen2":
        cfg = tf.Qwen2Config(**common, use_sliding_window=False)
        model = tf.Qwen2ForCausalLM(cfg)
    elif arch == "qwen3":
        cfg = tf.Qwen3Config(**common, head_dim=32, use_sliding_window=False)  # head_dim != hidden/heads
        model = tf.Qwen3ForCausalLM(cfg)
    elif arch == "gemma3":  # a sliding layer (window 8, local RoPE base) then a global one; tied; GELU
        common["tie_word_embeddings"] = True
        cfg = tf.Gemma3TextConfig(**common, head_dim=32, query_pre_attn_scalar=24, sliding_window=8,
                                  layer_types=["sliding_attention", "full_attention"],
                                  rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                                   "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
        model = tf.Gemma3ForCausalLM(cfg)
    elif arch == "phi3":  # fused qkv_proj / gate_up_proj in the checkpoint; a sliding window of 8
        cfg = tf.Phi3Config(**common, sliding_window=8, pad_token_id=0)
        model = tf.Phi3ForCausalLM(cfg)
    elif arch == "qwen3_moe":  # layer 0 routes to 2 of 4 experts, layer 1 stays dense (mlp_only_layers)
        cfg = tf.Qwen3MoeConfig(**common, head_dim=32, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48,
                                decoder_sparse_step=1, mlp_only_layers=[1], norm_topk_prob=True)
        model = tf.Qwen3MoeForCausalLM(cfg)
    else:
        raise ValueError(arch)
    with torch.no_grad():  # random biases/norms so those code paths matter in the comparison
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()
