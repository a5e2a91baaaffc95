"""Write a model (ModelConfig + HF-named tensors + byte-level BPE tokenizer) as a GGUF file llama.cpp can run.

For: `athanor export --gguf`, `athanor quantize` and tests that need GGUF files, in F32/F16/BF16/Q8_0/Q4_0/Q4_1,
and the llama.cpp mixes Q5_0/Q4_K_M/Q5_K_M/Q6_K/IQ4_NL/IQ4_XS (per-tensor types and K-quant/IQ4 blocks from
gguf_quantize.py). Does what llama.cpp's convert_hf_to_gguf does for our architectures: llama.cpp tensor names,
the Q/K row permutation for `llama`, Llama 3 rope scaling as a `rope_freqs.weight` tensor, the tokenizer as
tokens/merges/types.
With an importance matrix (`imatrix=`), the block quantizers weight their errors by it (gguf_quantize.py).
Not for: SentencePiece
(`tokenizer.ggml.model == "llama"`) tokenizers, or reading GGUF (gguf.py).

Matrices whose rows do not split into 32-weight blocks are written F16 when a block type is asked for;
1-D tensors (norms, biases) are always F32, as llama.cpp does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Union

import gguf
import numpy as np
import torch

from athanor.errors import AthanorError
from athanor.models.gguf import (
    GEMMA3_LAYER_NAMES,
    GLOBAL_NAMES,
    LAYER_NAMES,
    LLAMA3_SPLIT,
    QWEN2_SPLIT,
    permute_qk,
)
from athanor.models.gguf_config import llama3_rope_factors
from athanor.nn.config import ModelConfig

if TYPE_CHECKING:
    import tokenizers

    from athanor.text.tokenizer import Tokenizer

TokenizerLike = Union["Tokenizer", "tokenizers.Tokenizer", str, Path]

TENSOR_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q4_K_M", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS")
_FILE_TYPES = {"F32": "ALL_F32", "F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16", "Q8_0": "MOSTLY_Q8_0",
               "Q4_0": "MOSTLY_Q4_0", "Q4_1": "MOSTLY_Q4_1", "Q5_0": "MOSTLY_Q5_0", "Q4_K_M": "MOSTLY_Q4_K_M",
               "Q5_K_M": "MOSTLY_Q5_K_M", "Q6_K": "MOSTLY_Q6_K", "IQ4_NL": "MOSTLY_IQ4_NL", "IQ4_XS": "MOSTLY_IQ4_XS"}
_MIXES = ("Q5_0", "Q4_K_M", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS")  # per-tensor types: gguf_quantize.tensor_type
# ModelConfig.arch -> general.architecture (llama.cpp writes Mistral as llama)
_GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3": "gemma3"}
# HF name (layer index as "{}", no .weight/.bias) -> GGUF name
_HF_TO_GGUF = {hf: g for g, hf in GLOBAL_NAMES.items()} | {
    f"model.layers.{{}}.{hf}": f"blk.{{}}.{g}" for g, hf in LAYER_NAMES.items()
}
# Gemma 3 has four norms per layer: post_attention_layernorm is attn_post_norm there, not the FFN's input norm
_GEMMA3_HF_TO_GGUF = _HF_TO_GGUF | {
    f"model.layers.{{}}.{hf}": f"blk.{{}}.{g}" for g, hf in GEMMA3_LAYER_NAMES.items()
}
_NORMAL, _CONTROL, _USER_DEFINED, _UNUSED = 1, 3, 4, 5  # tokenizer.ggml.token_type values


# ---------------------------------------------------------------- tensors


def gguf_name(hf_name: str, arch: str = "llama") -> str:
    """`model.layers.3.self_attn.q_proj.weight` -> `blk.3.attn_q.weight`."""
    names = _GEMMA3_HF_TO_GGUF if arch == "gemma3" else _HF_TO_GGUF
    base, _, kind = hf_name.rpartition(".")
    parts = base.split(".")
    if len(parts) > 3 and parts[:2] == ["model", "layers"] and parts[2].isdigit():
        key = ".".join(["model", "layers", "{}", *parts[3:]])
        if key in names:
            return f"{names[key].format(parts[2])}.{kind}"
    if base in names:
        return f"{names[base]}.{kind}"
    raise AthanorError(f"cannot export tensor {hf_name!r}: no GGUF name for it")


def _encode(w: torch.Tensor, tensor_type: str,
            importance: np.ndarray | None = None) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """Tensor -> (array for GGUFWriter, its ggml type). Quantized arrays are raw bytes (rows, bytes_per_row).
    importance: the tensor's imatrix entry (one weight per column) for the types that use one."""
    x = w.detach().to(torch.float32).contiguous().numpy()
    if w.ndim < 2 or tensor_type == "F32":
        return x, gguf.GGMLQuantizationType.F32
    if tensor_type == "F16" or (tensor_type.startswith(("Q", "IQ")) and x.shape[-1] % 32):
        return x.astype(np.float16), gguf.GGMLQuantizationType.F16
    qtype = gguf.GGMLQuantizationType[tensor_type]
    ours = ("Q4_K", "Q5_K", "Q6_K", "Q5_0", "IQ4_NL", "IQ4_XS")  # gguf_quantize's quantizers (gguf-py's for the rest)
    if tensor_type in ours or (importance is not None and tensor_type == "Q4_0"):
        from athanor.models.gguf_quantize import quantize

        rows = x.reshape(-1, x.shape[-1])
        return quantize(rows, tensor_type, importance if x.ndim == 2 else None).reshape(*x.shape[:-1], -1), qtype
    return gguf.quants.quantize(x, qtype), qtype


def _gguf_tensors(config: ModelConfig, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF names and layout -> llama.cpp names and layout (same shapes; q/k rows permuted for llama)."""
    out = {}
    for name, w in tensors.items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied: llama.cpp reuses token_embd
        if _GGUF_ARCH[config.arch] == "llama" and ".self_attn.q_proj." in name:
            w = permute_qk(w, config.num_attention_heads)
        elif _GGUF_ARCH[config.arch] == "llama" and ".self_attn.k_proj." in name:
            w = permute_qk(w, config.num_key_value_heads)
        elif config.arch == "gemma3" and name.endswith("norm.weight"):
            w = _gemma3_norm(config, name, w)
        out[gguf_name(name, config.arch)] = w
    return out


def _gemma3_norm(config: ModelConfig, name: str, w: torch.Tensor) -> torch.Tensor:
    """Gemma's RMSNorm multiplies by (1 + w): llama.cpp stores 1 + w (its converter's norm_shift). llama.cpp scales
    queries by head_dim ** -0.5 and has no key for query_pre_attn_scalar: another scalar is folded into the query
    norm (applied before RoPE, which is linear), so the scores come out the same."""
    w = w.float() + 1
    scalar = config.query_pre_attn_scalar or config.head_dim
    if name.endswith("self_attn.q_norm.weight") and scalar != config.head_dim:
        w = w * (config.head_dim / scalar) ** 0.5
    return w


# ---------------------------------------------------------------- metadata


def _add_config(writer: gguf.GGUFWriter, config: ModelConfig) -> None:
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    if config.extra.get("sliding_window"):
        writer.add_sliding_window(config.extra["sliding_window"])
    if config.arch == "gemma3":
        _add_gemma3(writer, config)


def _add_gemma3(writer: gguf.GGUFWriter, config: ModelConfig) -> None:
    """What llama.cpp's gemma3 loader reads beyond the common keys: the window, which layers slide (as a per-layer
    array, so any pattern round-trips; llama.cpp assumes every 6th layer global without it) and their RoPE base."""
    if config.hidden_act not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise AthanorError(f"cannot export gemma3 with activation {config.hidden_act!r}: llama.cpp runs GELU (tanh)")
    if config.sliding_window:
        writer.add_sliding_window(config.sliding_window)
        types = config.layer_types or []
        writer.add_sliding_window_pattern([t == "sliding_attention" for t in types])
        writer.add_rope_freq_base_swa(config.rope_local_theta)


def _rope_tensors(writer: gguf.GGUFWriter, config: ModelConfig) -> dict[str, torch.Tensor]:
    """Rope scaling as llama.cpp stores it: keys for linear/yarn, a factors tensor for llama3."""
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return {}
    if kind == "llama3":
        d = config.head_dim
        inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))  # as llama.cpp
        return {"rope_freqs.weight": llama3_rope_factors(scaling, inv_freq.double()).float()}  # (head_dim // 2,)
    if kind in ("linear", "yarn"):
        writer.add_rope_scaling_type(gguf.RopeScalingType(kind))
        writer.add_rope_scaling_factor(scaling["factor"])
        if kind == "yarn" and scaling.get("original_max_position_embeddings"):
            writer.add_rope_scaling_orig_ctx_len(scaling["original_max_position_embeddings"])
        return {}
    raise AthanorError(f"cannot export rope scaling {kind!r} to GGUF; supported: llama3, linear, yarn")


def _pre_name(backend: tokenizers.Tokenizer) -> str:
    """The llama.cpp `tokenizer.ggml.pre` name for a byte-level tokenizer's pre-tokenizer (what gguf.py reads)."""
    pre = json.loads(backend.to_str()).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"]:
        regex = steps[0].get("pattern", {}).get("Regex")
        named = {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2"}
        if regex in named:
            return named[regex]
    raise AthanorError(f"cannot export this tokenizer to GGUF: pre-tokenizer {kinds} has no llama.cpp name")


def _vocab_lists(backend: tokenizers.Tokenizer, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) in GGUF form, padded with [PADi] tokens up to the embedding rows."""
    model = json.loads(backend.to_str())["model"]
    if model.get("type") != "BPE":
        raise AthanorError(f"cannot export a {model.get('type')} tokenizer to GGUF; only byte-level BPE")
    added = backend.get_added_tokens_decoder()  # id -> AddedToken
    n = max(vocab_size, backend.get_vocab_size(with_added_tokens=True))
    tokens, types = [], []
    for i in range(n):
        token = backend.id_to_token(i)
        tokens.append(token if token is not None else f"[PAD{i}]")
        kind = _UNUSED if token is None else _NORMAL
        if i in added:
            kind = _CONTROL if added[i].special else _USER_DEFINED
        types.append(kind)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, types, merges


def _resolve_tokenizer(tokenizer: TokenizerLike) -> tuple[tokenizers.Tokenizer, dict]:
    """(backend, {bos_token, eos_token, chat_template, add_bos_token, stop_token_ids}) from any accepted form."""
    import tokenizers

    if isinstance(tokenizer, (str, Path)):
        path = Path(tokenizer)
        if path.is_dir():
            from athanor.text.tokenizer import Tokenizer

            tokenizer = Tokenizer.from_hf_dir(path)
        else:
            tokenizer = tokenizers.Tokenizer.from_file(str(path))
    if isinstance(tokenizer, tokenizers.Tokenizer):
        return tokenizer, {}
    fields = ("bos_token", "eos_token", "chat_template", "add_bos_token", "stop_token_ids")
    return tokenizer.backend, {k: getattr(tokenizer, k) for k in fields}


def _gguf_vocab_model(source: Path) -> str | None:
    f = gguf.GGUFReader(source).get_field("tokenizer.ggml.model")
    return None if f is None else f.contents()


def _copy_gguf_tokenizer(writer: gguf.GGUFWriter, source: Path, chat_template: str | None) -> None:
    """Every `tokenizer.ggml.*` key of a GGUF source as it is (vocabulary, scores, types, special ids): a
    SentencePiece vocabulary (Gemma's `llama` model) round-trips untouched. The chat template is the model's
    current one (an export may have set another)."""
    reader = gguf.GGUFReader(source)
    for key, f in reader.fields.items():
        if key.startswith("tokenizer.ggml."):
            sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, f.contents(), f.types[0], sub_type=sub)
    if chat_template:
        writer.add_chat_template(chat_template)


def _add_tokenizer(writer: gguf.GGUFWriter, tokenizer: TokenizerLike, vocab_size: int, overrides: dict) -> None:
    backend, fields = _resolve_tokenizer(tokenizer)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    tokens, types, merges = _vocab_lists(backend, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_name(backend))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_add_bos_token(bool(fields.get("add_bos_token", False)))
    ids = {k: backend.token_to_id(fields[k]) for k in ("bos_token", "eos_token") if fields.get(k)}
    if ids.get("bos_token") is not None:
        writer.add_bos_token_id(ids["bos_token"])
    if ids.get("eos_token") is not None:
        writer.add_eos_token_id(ids["eos_token"])
    extra_stops = sorted(set(fields.get("stop_token_ids") or ()) - {ids.get("eos_token")})
    if extra_stops:
        writer.add_eot_token_id(extra_stops[0])  # llama.cpp has one slot for a second stop token
    if fields.get("chat_template"):
        writer.add_chat_template(fields["chat_template"])


def _add_imatrix_keys(writer: gguf.GGUFWriter, imatrix, imatrix_file: str | None) -> None:
    """The keys llama-quantize writes when it used an importance matrix."""
    if imatrix_file:
        writer.add_string("quantize.imatrix.file", imatrix_file)
    if imatrix.datasets:
        writer.add_string("quantize.imatrix.dataset", imatrix.datasets[0])
    writer.add_int32("quantize.imatrix.entries_count", len(imatrix.entries))
    writer.add_int32("quantize.imatrix.chunks_count", imatrix.chunk_count)


# ---------------------------------------------------------------- entry point


def write_gguf(
    config: ModelConfig,
    tensors: dict[str, torch.Tensor],
    tokenizer: TokenizerLike,
    path: str | Path,
    tensor_type: str = "F32",
    *,
    name: str | None = None,
    license: str | None = None,
    bos_token: str | None = None,
    eos_token: str | None = None,
    chat_template: str | None = None,
    add_bos_token: bool | None = None,
    imatrix=None,
    imatrix_file: str | None = None,
    tokenizer_gguf: str | Path | None = None,
) -> Path:
    """Write `tensors` (HF names, (out_features, in_features) matrices) and `tokenizer` as a GGUF file.

    tokenizer: athanor's Tokenizer, a `tokenizers.Tokenizer`, a tokenizer.json path or a HF directory;
    the keyword arguments override what it says (a bare `tokenizers.Tokenizer` says nothing about them).
    imatrix: an models/imatrix_file.Imatrix whose entries (GGUF tensor names) weight the quantizers' errors, as
    `llama-quantize --imatrix`; the file records it under llama.cpp's `quantize.imatrix.*` keys.
    tokenizer_gguf: a GGUF file whose `tokenizer.ggml.*` keys are copied as they are instead of converting
    `tokenizer` (the model came from that file: any vocabulary type llama.cpp has, e.g. Gemma's SentencePiece).
    """
    if tensor_type not in TENSOR_TYPES:
        choices = ", ".join(TENSOR_TYPES)
        raise AthanorError(f"GGUF tensor type {tensor_type!r} is not supported; choose one of {choices}")
    if config.arch not in _GGUF_ARCH:
        raise AthanorError(f"cannot export architecture {config.arch!r} to GGUF")
    if not config.tie_word_embeddings and "lm_head.weight" not in tensors:
        raise AthanorError("cannot export: lm_head.weight is missing and the config does not tie embeddings")
    path = Path(path)
    writer = gguf.GGUFWriter(path, _GGUF_ARCH[config.arch])
    writer.add_name(name or path.stem)
    writer.add_file_type(gguf.LlamaFileType[_FILE_TYPES[tensor_type]].value)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if license:
        writer.add_license(license)
    if imatrix is not None:
        _add_imatrix_keys(writer, imatrix, imatrix_file)
    _add_config(writer, config)
    overrides = {"bos_token": bos_token, "eos_token": eos_token, "chat_template": chat_template,
                 "add_bos_token": add_bos_token}
    if tokenizer_gguf is not None:
        _copy_gguf_tokenizer(writer, Path(tokenizer_gguf), chat_template or getattr(tokenizer, "chat_template", None))
    else:
        _add_tokenizer(writer, tokenizer, config.vocab_size, overrides)
    for gname, w in {**_gguf_tensors(config, tensors), **_rope_tensors(writer, config)}.items():
        ttype = tensor_type
        if tensor_type in _MIXES:
            from athanor.models.gguf_quantize import tensor_type as mix_type

            ttype = mix_type(gname, tuple(w.shape), tensor_type, config.num_hidden_layers, config.tie_word_embeddings,
                             gqa=config.num_attention_heads // max(1, config.num_key_value_heads),
                             imatrix=imatrix is not None)
        array, qtype = _encode(w, ttype, imatrix.weights(gname) if imatrix is not None else None)
        writer.add_tensor(gname, array, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path



def write_gguf_file(ckpt, out: Path, tensor_type: str, imatrix=None, imatrix_file: str | None = None) -> None:
    """Write a Checkpoint next to `out` and rename, so a failed write (e.g. a tokenizer GGUF cannot hold) leaves
    no half file (athanor export, athanor quantize)."""
    import os

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        source = ckpt.info.get("path") if ckpt.info.get("format") == "gguf" else None
        if source and _gguf_vocab_model(Path(source)) == "gpt2":
            source = None  # a byte-level BPE vocabulary is rebuilt from the tokenizer (as for HF sources)
        write_gguf(ckpt.config, ckpt.tensors, ckpt.tokenizer, tmp, tensor_type=tensor_type, name=out.stem,
                   license=ckpt.info.get("license"), imatrix=imatrix, imatrix_file=imatrix_file,
                   tokenizer_gguf=source)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
