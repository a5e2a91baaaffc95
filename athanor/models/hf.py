"""Load a Hugging Face model directory: config.json, one or many *.safetensors, tokenizer files, generation_config.

Not for downloading (everything is local) and not for GGUF (gguf.py). Never imports transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

from athanor.errors import ModelFormatError
from athanor.models.checkpoint import Checkpoint
from athanor.nn.config import ModelConfig

_GEN_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "eos_token_id", "max_new_tokens", "do_sample")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{path}: not valid JSON ({e})") from None


def is_hf_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def inspect_hf(path: str | Path) -> dict:
    """Metadata for `show`, without reading tensor data."""
    path = Path(path)
    raw = read_json(path / "config.json")
    cfg = ModelConfig.from_hf(raw)
    tok_cfg = _optional_json(path / "tokenizer_config.json")
    return {
        "format": "hf",
        "arch": cfg.arch,
        "num_parameters": cfg.num_parameters(),
        "quantization": str(raw.get("torch_dtype") or raw.get("dtype") or "unknown"),
        "context_length": cfg.max_position_embeddings,
        "embedding_length": cfg.hidden_size,
        "license": None,
        "chat_template": _template_of(path, tok_cfg),
        "name": path.name,
    }


def _optional_json(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}


def _template_of(path: Path, tok_cfg: dict) -> str | None:
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    t = tok_cfg.get("chat_template")
    if isinstance(t, list):  # named templates: [{"name": "default", "template": ...}, ...]
        t = next((x["template"] for x in t if x.get("name") == "default"), t[0]["template"] if t else None)
    return t


def load_safetensors(path: Path) -> dict:
    """All tensors of the directory's *.safetensors files as float32 CPU tensors, HF names."""
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelFormatError(f"{path}: no *.safetensors files (pytorch .bin checkpoints are not supported)")
    tensors = {}
    for f in files:
        try:
            part = load_file(str(f))
        except Exception as e:  # safetensors raises its own error types across versions
            raise ModelFormatError(f"{f}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
        tensors.update({k: v.float() for k, v in part.items()})
    return tensors


def load_hf(path: str | Path) -> Checkpoint:
    from athanor.tokenizer import Tokenizer

    path = Path(path)
    info = inspect_hf(path) | {"path": str(path)}
    config = ModelConfig.from_hf(read_json(path / "config.json"))
    if not (path / "tokenizer.json").is_file():
        raise ModelFormatError(f"{path}: no tokenizer.json (only fast tokenizers are supported)")
    gen = _optional_json(path / "generation_config.json")
    return Checkpoint(
        config=config,
        tensors=load_safetensors(path),
        tokenizer=Tokenizer.from_hf_dir(path),
        generation_defaults={k: gen[k] for k in _GEN_KEYS if k in gen},
        info=info,
    )
