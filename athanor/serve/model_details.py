"""What Ollama's /api/show, /api/tags and /api/ps say about a model: `details`, `model_info`, `capabilities`.

Ollama derives these from the GGUF header and the template (server/routes.go, api/types.go): `details` names the
format, family, parameter size and quantization; `capabilities` lists what the model can be asked for. Ours come
from the same places (models/loader.inspect_weights and the manifest's template) and claim only what this server
serves: "completion" for every model, "tools" when the template renders tools (the model was trained for them),
"insert" when the tokenizer has fill-in-the-middle tokens (fim.py serves `suffix`), "thinking" when the template
renders a reasoning block. Never "vision" or "embedding" (any model answers /api/embed here, but none is a
trained embedder).
Not for the routes themselves (ollama_models.py).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

# Jinja `tools` / Go `.Tools`; Qwen3-style thinking templates mention <think> or reasoning_content / enable_thinking
_TOOLS = re.compile(r"\btools\b|\.Tools\b")
_THINKING = re.compile(r"<think>|reasoning_content|enable_thinking|\.Thinking\b|\.IsThinkSet\b")


def model_facts(store, name: str) -> dict:
    """What `store.show(name)` says (manifest over weights metadata); the weights' header is read once per file
    and modification time, since /api/tags describes every model on each call."""
    m = store.get(name)
    info = _inspect(m.weights, _mtime(m.weights))
    return {"architecture": info.get("arch"), "has_fim": _has_fim(m.weights, _mtime(m.weights)), "num_parameters": info.get("num_parameters"),
            "quantization": info.get("quantization"), "context_length": info.get("context_length"),
            "embedding_length": info.get("embedding_length"),
            "template": m.template if m.template is not None else info.get("chat_template"),
            "license": m.license if m.license is not None else info.get("license")}


@functools.lru_cache(maxsize=64)
def _inspect(weights: str, mtime: float) -> dict:
    from athanor.models.loader import inspect_weights

    return inspect_weights(weights)


@functools.lru_cache(maxsize=64)
def _has_fim(weights: str, mtime: float) -> bool:
    """Whether the vocabulary holds a FIM token triple, read from tokenizer.json or the GGUF header (no weights)."""
    from athanor.serve.fim import FIM_TOKENS

    path = Path(weights)
    if path.is_dir():
        text = (path / "tokenizer.json").read_text(encoding="utf-8") if (path / "tokenizer.json").is_file() else ""
        return any(all(f'"{t}"' in text for t in names) for names in FIM_TOKENS)
    from athanor.models.gguf import read_gguf_header

    tokens = set(read_gguf_header(path).metadata.get("tokenizer.ggml.tokens") or [])
    return any(all(t in tokens for t in names) for names in FIM_TOKENS)


def details(m, info: dict) -> dict:
    arch = info.get("architecture") or ""
    n = info.get("num_parameters") or 0
    return {"parent_model": m.parent or "", "format": m.format, "family": arch, "families": [arch] if arch else None,
            "parameter_size": _size_label(n), "quantization_level": _quant_label(info.get("quantization"))}


def template_thinks(template: str | None) -> bool:
    """Whether a chat template renders a reasoning block (the "thinking" capability)."""
    return bool(_THINKING.search(template or ""))


def capabilities(info: dict) -> list[str]:
    template = info.get("template") or ""
    caps = ["completion"]
    if _TOOLS.search(template):
        caps.append("tools")
    if info.get("has_fim"):
        caps.append("insert")
    if _THINKING.search(template):
        caps.append("thinking")
    return caps


def model_info(info: dict) -> dict:
    arch = info.get("architecture") or "unknown"
    out = {"general.architecture": arch, "general.parameter_count": info.get("num_parameters"),
           "general.file_type": _quant_label(info.get("quantization")),
           f"{arch}.context_length": info.get("context_length"),
           f"{arch}.embedding_length": info.get("embedding_length")}
    return {k: v for k, v in out.items() if v not in (None, "")}


def _size_label(n: int) -> str:
    if not n:
        return ""
    return f"{n / 1e6:.0f}M" if n < 1e9 else f"{n / 1e9:.1f}B"


def _quant_label(q) -> str:
    """GGUF file types as Ollama spells them (Q4_1, Q4_K_M, F16); HF dtypes as F32 / F16 / BF16."""
    q = str(q or "")
    return {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}.get(q, q.upper())


def _mtime(weights: str) -> float:
    try:
        return Path(weights).stat().st_mtime
    except OSError:
        return 0.0
