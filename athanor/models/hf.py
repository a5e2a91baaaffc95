"""Load a Hugging Face model directory: config.json, one or many *.safetensors, tokenizer files, generation_config.

Every tensor is checked against config.json (names and shapes) while loading, so a bad checkpoint fails here
with one ModelFormatError line naming the file, not later inside nn/.
Not for downloading (everything is local) and not for GGUF (gguf.py). Never imports transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from athanor.errors import AthanorError, ModelFormatError, UnsupportedArchitectureError
from athanor.models.checkpoint import Checkpoint
from athanor.nn.config import ModelConfig

if TYPE_CHECKING:
    import torch

    from athanor.text.tokenizer import Tokenizer

_GEN_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "eos_token_id", "max_new_tokens",
             "do_sample")
_INDEX = "model.safetensors.index.json"


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{path}: not valid JSON ({e})") from None


def is_hf_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def hf_config(path: str | Path) -> ModelConfig:
    """ModelConfig from the directory's config.json; every failure names that file."""
    file = Path(path) / "config.json"
    raw = read_json(file)
    if not isinstance(raw, dict):
        raise ModelFormatError(f"{file}: should hold a JSON object, found {type(raw).__name__}")
    quant = raw.get("quantization_config")
    if quant:  # GPTQ/AWQ/FP8 checkpoints hold packed weights and scales nn/ cannot use
        method = quant.get("quant_method", "?") if isinstance(quant, dict) else "?"
        raise ModelFormatError(f"{file}: quantized checkpoints ({method}) are not supported; use unquantized weights")
    try:
        return ModelConfig.from_hf(raw)
    except UnsupportedArchitectureError as e:
        raise UnsupportedArchitectureError(f"{file}: {e}") from None
    except AthanorError as e:
        raise ModelFormatError(f"{file}: {e}") from None
    except KeyError as e:
        raise ModelFormatError(f"{file}: missing key {e.args[0]!r}") from None
    except (TypeError, ValueError, ZeroDivisionError) as e:  # a value of the wrong type, or zero heads
        raise ModelFormatError(f"{file}: bad value ({' '.join(str(e).split())})") from None


def inspect_hf(path: str | Path) -> dict:
    """Metadata for `show`, without reading tensor data."""
    path = Path(path)
    cfg = hf_config(path)
    raw = read_json(path / "config.json")
    return {
        "format": "hf",
        "arch": cfg.arch,
        "num_parameters": cfg.num_parameters(),
        "quantization": str(raw.get("torch_dtype") or raw.get("dtype") or "unknown"),
        "context_length": cfg.max_position_embeddings,
        "embedding_length": cfg.hidden_size,
        "license": None,
        "chat_template": _template_of(path, _optional_json(path / "tokenizer_config.json")),
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


# ---------------------------------------------------------------- tensors


def _shard_files(path: Path) -> list[Path]:
    """The index's shards when there is one (stray *.safetensors beside it are not ours), else every file."""
    if (path / _INDEX).is_file():
        weight_map = read_json(path / _INDEX).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelFormatError(f"{path / _INDEX}: no weight_map")
        files = [path / name for name in sorted(set(weight_map.values()))]
        for f in files:
            if not f.is_file():
                raise ModelFormatError(f"{f}: shard listed in {_INDEX} is missing (an incomplete download?)")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelFormatError(f"{path}: no *.safetensors files (pytorch .bin checkpoints are not supported)")
    return files


def _read_shard(f: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(f))
    except Exception as e:  # noqa: BLE001 -- safetensors raises its own error types across versions
        lines = str(e).splitlines() or [type(e).__name__]
        raise ModelFormatError(f"{f}: not a readable safetensors file ({lines[0]})") from None


def _check_shapes(f: Path, part: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]) -> None:
    for name, t in part.items():
        if name in expected and tuple(t.shape) != expected[name]:
            raise ModelFormatError(f"{f}: tensor {name} has shape {list(t.shape)}, "
                                   f"config.json implies {list(expected[name])}")


def _check_names(path: Path, names: set[str], config: ModelConfig) -> None:
    expected = config.hf_tensor_shapes().keys()
    missing = sorted(expected - names)
    if missing:
        raise ModelFormatError(f"{path}: checkpoint is missing {len(missing)} tensors, e.g. {', '.join(missing[:3])}")
    # old checkpoints carry rotary buffers; a tied model may still store lm_head.weight (nn/ drops it)
    unused = sorted(n for n in names - expected if not n.endswith("rotary_emb.inv_freq") and n != "lm_head.weight")
    if unused:
        raise ModelFormatError(f"{path}: {len(unused)} tensors a {config.arch} model does not use, "
                               f"e.g. {', '.join(unused[:3])}")


def load_safetensors(path: Path, config: ModelConfig | None = None) -> dict[str, torch.Tensor]:
    """All tensors of the directory's safetensors shards as float32 CPU tensors, HF names.
    With `config`, every name and shape is checked against it."""
    expected = config.hf_tensor_shapes() if config is not None else {}
    tensors: dict[str, torch.Tensor] = {}
    for f in _shard_files(path):
        part = _read_shard(f)
        _check_shapes(f, part, expected)
        repeated = sorted(tensors.keys() & part.keys())
        if repeated:
            raise ModelFormatError(f"{f}: tensor {repeated[0]} is also in another shard")
        tensors.update({k: v.float() for k, v in part.items()})
        del part  # one shard's original-dtype copy alive at a time
    if config is not None:
        _check_names(path, set(tensors), config)
    return tensors


# ---------------------------------------------------------------- load


def _tokenizer(path: Path) -> Tokenizer:
    from athanor.text.tokenizer import Tokenizer

    if not (path / "tokenizer.json").is_file():
        raise ModelFormatError(f"{path}: no tokenizer.json (only fast tokenizers are supported)")
    try:
        return Tokenizer.from_hf_dir(path)
    except AthanorError as e:  # most messages name their file already; the rest get the directory
        raise ModelFormatError(str(e) if str(path) in str(e) else f"{path}: {e}") from None


def load_hf(path: str | Path) -> Checkpoint:
    path = Path(path)
    config = hf_config(path)
    tokenizer = _tokenizer(path)  # before the tensors, so a missing tokenizer fails fast
    gen = _optional_json(path / "generation_config.json")
    return Checkpoint(
        config=config,
        tensors=load_safetensors(path, config),
        tokenizer=tokenizer,
        generation_defaults={k: gen[k] for k in _GEN_KEYS if k in gen},
        info=inspect_hf(path) | {"path": str(path)},
    )
