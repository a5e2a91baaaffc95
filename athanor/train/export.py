"""`athanor export`: a base model with its LoRA adapter merged in, written as a Hugging Face directory or a GGUF file.

For: turning a training result (base + PEFT adapter dir) into one self-contained model that transformers,
llama.cpp and our engine load with the same output as base + adapter, and optionally registering it in the
store so `athanor run NAME` works. The base is a store name (its manifest's adapters and template come along),
a .gguf file or a HF directory; merging is `models/lora.py`, GGUF writing is `models/gguf_export.py`.

Not for: training (sft.py / dpo.py), serving an unmerged adapter (a Modelfile `ADAPTER` line does that), or
reading models (models/loader.py). GGUF exports take every type `athanor quantize` writes (K-quants chosen per tensor
as llama.cpp's llama-quantize does). HF exports are
safetensors in fp32 (default), fp16 or bf16, optionally sharded with a model.safetensors.index.json as
transformers writes them. The YAML form of `athanor export` is export_config.py. Never imports transformers or peft.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from athanor.errors import AthanorError

if TYPE_CHECKING:
    from athanor.models.checkpoint import Checkpoint
    from athanor.nn.config import ModelConfig
    from athanor.text.tokenizer import Tokenizer

FORMATS = ("hf", "gguf")
GGUF_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q4_K_M", "Q5_K_M", "Q6_K", "IQ4_NL",
              "IQ4_XS")  # = gguf_export.TENSOR_TYPES
HF_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
# ModelConfig.arch -> (config.json "architectures"[0], "model_type")
_HF_ARCH = {
    "llama": ("LlamaForCausalLM", "llama"),
    "mistral": ("MistralForCausalLM", "mistral"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
}


@dataclass
class ResolvedBase:
    """What `base` resolved to: weights on disk plus what a store manifest adds on top of them."""

    weights: str
    adapters: list[str] = field(default_factory=list)
    template: str | None = None  # a manifest TEMPLATE override, baked into the export's tokenizer
    modelfile_extras: dict[str, Any] = field(default_factory=dict)  # system/parameters/messages/license to re-register


# ---------------------------------------------------------------- entry point


def export_model(
    base: str,
    adapter: str | Path | None,
    out: str | Path,
    fmt: Literal["hf", "gguf"],
    gguf_type: str = "F16",  # one of GGUF_TYPES
    register_as: str | None = None,
    dtype: str = "fp32",
    max_shard_size: int | str | None = None,
    template: str | None = None,
) -> Path:
    """Merge `adapter` (a peft save_pretrained dir, or None) into `base` and write it to `out` as `fmt`.

    fmt "hf": `out` is a new directory (model.safetensors, config.json, tokenizer files, generation_config.json).
    fmt "gguf": `out` is a .gguf file with tensors in `gguf_type` and the tokenizer + chat template as metadata.
    `register_as`: also create that store name pointing at the export. `dtype` (fp32, fp16, bf16) and
    `max_shard_size` (bytes, or "2GB" / "500MB") apply to hf. `template` (a config's `template`: "chatml", a
    Jinja source or one of the model's named templates) becomes the export's chat template, over the base's own
    and a store manifest's. Returns the absolute path of `out`.
    """
    from athanor.models.gguf_export import write_gguf_file
    from athanor.models.loader import load_checkpoint
    from athanor.models.lora import check_adapter_dir, merge_adapters

    out = _check_request(fmt, gguf_type, out, register_as)  # cheap checks before anything loads
    shard_bytes = parse_size(max_shard_size) if max_shard_size is not None else None
    if dtype not in HF_DTYPES:
        raise AthanorError(f"export dtype {dtype!r} is not supported; choose fp32, fp16 or bf16")
    if fmt == "gguf" and dtype != "fp32":
        raise AthanorError("--dtype applies to hf exports; for GGUF choose the tensor type with --gguf-type")
    resolved = resolve_base(base)
    if adapter is not None:
        resolved.adapters.append(str(check_adapter_dir(adapter)))
    ckpt = load_checkpoint(resolved.weights)
    if resolved.adapters:
        ckpt.tensors = merge_adapters(ckpt.tensors, resolved.adapters, ckpt.config)
    if resolved.template is not None:
        ckpt.tokenizer.chat_template = resolved.template
    if template is not None:
        ckpt.tokenizer.chat_template = template_source(template, ckpt.tokenizer)
    if fmt == "hf":
        write_hf_dir(ckpt, out, dtype, shard_bytes)
    else:
        write_gguf_file(ckpt, out, gguf_type)
    from athanor.train.lineage import record_export

    record_export(base, [str(adapter)] if adapter is not None else [], out, fmt,
                  {"dtype": dtype} if fmt == "hf" else {"gguf_type": gguf_type})
    if register_as is not None:
        register_model(register_as, out, resolved.modelfile_extras)
    return out


def template_source(template: str, tokenizer: Tokenizer, enable_thinking: bool | None = None) -> str:
    """The Jinja source a config's `template` names: "chatml", a Jinja string, a LLaMA-Factory template name
    (text/lf_templates.py; `enable_thinking` picks where reasoning templates put an empty thought) or one of the
    model's named templates (e.g. "tool_use"); anything else is "unknown template X; known: ..."."""
    from athanor.text.lf_templates import LF_TEMPLATES, lf_jinja

    if template == "chatml":
        from athanor.text.tokenizer import CHATML_TEMPLATE

        return CHATML_TEMPLATE
    if "{{" in template or "{%" in template:
        return template
    if template in LF_TEMPLATES:
        return lf_jinja(template, enable_thinking)
    named = tokenizer.named_chat_templates
    if template not in named:
        known = sorted(set(LF_TEMPLATES) | set(named) | {"chatml"})
        raise AthanorError(f"unknown template {template}; known: {', '.join(known)}")
    return named[template]


def use_template(tokenizer: Tokenizer, template: str | None, enable_thinking: bool | None = None) -> None:
    """Make a config's `template` the tokenizer's chat template; a LLaMA-Factory template's stop words that are
    single tokens of this vocabulary become stop tokens too (the model's own template is kept when None)."""
    from athanor.text.lf_templates import LF_TEMPLATES

    if template is None:
        return
    tokenizer.chat_template = template_source(template, tokenizer, enable_thinking)
    for word in LF_TEMPLATES[template].stop_words if template in LF_TEMPLATES else ():
        ids = tokenizer.backend.encode(word, add_special_tokens=False).ids
        if len(ids) == 1:
            tokenizer.stop_token_ids.add(ids[0])


def _check_request(fmt: str, gguf_type: str, out: str | Path, register_as: str | None) -> Path:
    from athanor.models.store import normalize_name

    if fmt not in FORMATS:
        raise AthanorError(f"export format {fmt!r} is not supported; choose hf or gguf")
    if fmt == "gguf" and gguf_type not in GGUF_TYPES:
        raise AthanorError(f"GGUF type {gguf_type!r} is not supported; choose one of {', '.join(GGUF_TYPES)}")
    if register_as is not None:
        normalize_name(register_as)  # a malformed name fails now, not after the export is written
    out = Path(out).expanduser().resolve()
    if fmt == "gguf" and out.suffix.lower() != ".gguf":
        raise AthanorError(f"--out {out} for a GGUF export should be a file path ending in .gguf")
    if fmt == "hf" and (out.is_file() or (out.is_dir() and any(out.iterdir()))):
        raise AthanorError(f"--out {out} already exists and is not an empty directory; remove it or choose another")
    return out


def resolve_base(base: str) -> ResolvedBase:
    """A .gguf file or HF directory on disk, else a store name (its adapters, template and Modelfile settings)."""
    from athanor.models.store import Store

    m = Store().resolve(base)  # unknown names raise ModelNotFoundError with "did you mean"
    extras = {"system": m.system, "parameters": dict(m.parameters), "messages": list(m.messages), "license": m.license}
    return ResolvedBase(weights=m.weights, adapters=list(m.adapters), template=m.template, modelfile_extras=extras)


def register_model(name: str, weights: Path, extras: dict[str, Any] | None = None) -> None:
    """Create store entry `name` for `weights` through a Modelfile (FROM the absolute path + the base's settings)."""
    from athanor.models.modelfile import Modelfile, render_modelfile_text
    from athanor.models.store import Store

    extras = {k: v for k, v in (extras or {}).items() if v}  # Modelfile defaults for what the base did not set
    text = render_modelfile_text(Modelfile(from_=str(weights), **extras))
    with tempfile.TemporaryDirectory(prefix="athanor-export-") as tmp:
        modelfile = Path(tmp) / "Modelfile"
        modelfile.write_text(text, encoding="utf-8")
        Store().create(name, modelfile)


# ---------------------------------------------------------------- GGUF


# ---------------------------------------------------------------- Hugging Face directory


def write_hf_dir(ckpt: Checkpoint, out: Path, dtype: str = "fp32", max_shard_size: int | None = None) -> Path:
    """model.safetensors (or shards + index) + config.json + tokenizer files + generation_config.json.

    Written into a temporary sibling directory that is renamed at the end, so `out` is complete or absent."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _save_tensors(ckpt, tmp, HF_DTYPES[dtype], max_shard_size)
        _write_json(tmp / "config.json", hf_config_dict(ckpt.config, ckpt.tokenizer) | {"torch_dtype": HF_DTYPES[dtype]})
        ckpt.tokenizer.backend.save(str(tmp / "tokenizer.json"))
        _write_json(tmp / "tokenizer_config.json", tokenizer_config_dict(ckpt.tokenizer, ckpt.config))
        _write_json(tmp / "generation_config.json", generation_config_dict(ckpt.tokenizer, ckpt.generation_defaults))
        if out.is_dir():
            out.rmdir()  # empty (checked before loading); os.replace cannot replace a directory
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string like "2GB", "500MB", "1.5GiB" (decimal units as transformers uses them)."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        text = str(size).strip().upper().replace(" ", "")
        number = text.rstrip("KMGIB")
        unit = text[len(number):]
        try:
            value = int(float(number) * _SIZE_UNITS[unit])
        except (ValueError, KeyError):
            raise AthanorError(f"shard size {size!r} is not a size; write e.g. 2GB, 500MB or a byte count") from None
    if value <= 0:
        raise AthanorError(f"shard size {size!r} must be positive")
    return value


def _save_tensors(ckpt: Checkpoint, out_dir: Path, dtype: str, max_shard_size: int | None) -> None:
    """One model.safetensors, or model-0000k-of-0000n.safetensors shards of at most max_shard_size bytes (a single
    larger tensor gets a shard of its own) with the index transformers reads."""
    import torch
    from safetensors.torch import save_file

    target = getattr(torch, dtype)
    tied = ckpt.config.tie_word_embeddings
    tensors, storages = {}, set()
    for name, t in ckpt.tensors.items():
        if tied and name == "lm_head.weight":
            continue  # transformers re-ties it to the embeddings
        t = t.to(target).contiguous()
        if t.untyped_storage().data_ptr() in storages:  # safetensors refuses tensors that share memory
            t = t.clone()
        storages.add(t.untyped_storage().data_ptr())
        tensors[name] = t
    shards: list[dict] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if max_shard_size is not None and shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(out_dir / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for k, shard in enumerate(shards, start=1):
        file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out_dir / file), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(shard, file)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    _write_json(out_dir / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


def hf_config_dict(config: ModelConfig, tokenizer: Tokenizer) -> dict[str, Any]:
    """config.json for transformers: the arch's class and model_type plus every shape field ModelConfig holds."""
    class_name, model_type = _HF_ARCH[config.arch]
    cfg = {
        "architectures": [class_name],
        "model_type": model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": dict(config.rope_scaling) if config.rope_scaling else None,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_bias": config.attention_bias,
        "torch_dtype": "float32",
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "use_cache": True,
    }
    if config.arch in ("llama", "mistral"):
        cfg["mlp_bias"] = False
    if config.arch == "mistral":
        cfg["sliding_window"] = config.extra.get("sliding_window")
    if config.arch in ("qwen2", "qwen3"):
        cfg |= {"use_sliding_window": False, "sliding_window": config.extra.get("sliding_window")}
    return cfg


def tokenizer_config_dict(tokenizer: Tokenizer, config: ModelConfig) -> dict[str, Any]:
    """tokenizer_config.json: special tokens, BOS behaviour and the chat template(s), as transformers reads them."""
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "add_bos_token": tokenizer.add_bos_token,
        "clean_up_tokenization_spaces": False,
        "model_max_length": config.max_position_embeddings,
    }
    named = {k: v for k, v in tokenizer.named_chat_templates.items() if k != "default"}
    if named:  # the list form keeps tool_use & co.; "default" is the template in use
        default = [{"name": "default", "template": tokenizer.chat_template}] if tokenizer.chat_template else []
        cfg["chat_template"] = default + [{"name": k, "template": v} for k, v in named.items()]
    elif tokenizer.chat_template:
        cfg["chat_template"] = tokenizer.chat_template
    return cfg


def generation_config_dict(tokenizer: Tokenizer, defaults: dict[str, Any]) -> dict[str, Any]:
    """generation_config.json: every stop id as eos_token_id (eos first), then the base's sampling defaults."""
    eos = tokenizer.eos_token_id
    stops = ([eos] if eos is not None else []) + sorted(tokenizer.stop_token_ids - {eos})
    cfg = {k: v for k, v in defaults.items() if k != "eos_token_id"}
    if tokenizer.bos_token_id is not None:
        cfg["bos_token_id"] = tokenizer.bos_token_id
    if stops:
        cfg["eos_token_id"] = stops[0] if len(stops) == 1 else stops
    return cfg


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
