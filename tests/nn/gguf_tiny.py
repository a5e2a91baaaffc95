"""A GGUFWriter holding a tiny Llama-shaped model's metadata and a byte-level vocabulary of 256 tokens, as
llama.cpp's converter writes them; the caller adds the tensors and writes the file (tests only)."""

from __future__ import annotations

from pathlib import Path


def tiny_writer(path: Path, arch: str, file_type, *, layers: int, hidden: int, ffn: int, heads: int,
                kv_heads: int):
    import gguf
    from tokenizers import pre_tokenizers

    w = gguf.GGUFWriter(path, arch)
    w.add_file_type(file_type)
    w.add_block_count(layers)
    w.add_context_length(512)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(sorted(pre_tokenizers.ByteLevel.alphabet()))
    w.add_token_merges([])
    return w
