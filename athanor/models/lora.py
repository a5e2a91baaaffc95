"""Merge PEFT LoRA and DoRA adapters (the Modelfile's ADAPTER) into Hugging Face-named weights at load time.

(An ADAPTER may also be a llama.cpp LoRA `.gguf`: `merge_adapters` and `check_adapter` hand those to lora_gguf.py.)

An adapter is a directory written by `peft`'s `save_pretrained`: `adapter_config.json` (r, lora_alpha,
use_rslora, fan_in_fan_out, rank_pattern, alpha_pattern, ...) and `adapter_model.safetensors` with keys like
`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`. Merging does what peft's
`merge_and_unload` does: W += scale * B @ A with scale = alpha / r (alpha / sqrt(r) with rsLoRA); with DoRA
(`use_dora`, a `lora_magnitude_vector` per module) each output row of W + scale * B @ A is then rescaled to the
trained magnitude m: W' = m / ||W + scale * B @ A||_row * (W + scale * B @ A). Full tensors saved by
`modules_to_save` (and trained biases) replace the base ones. OFT adapters (peft_type OFT) merge in oft.py.

Not for training adapters (train/ uses peft) and not for serving many adapters over one base model (weights
are merged once, so an engine runs the merged model at full speed). LoRA biases and LoRA on embeddings
are refused with a clear error rather than merged wrongly. Never imports peft or transformers.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from athanor.errors import AthanorError

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_PREFIX = "base_model.model."
# `<module>.lora_A.weight`; some writers keep the adapter name: `<module>.lora_A.default.weight`
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[\w-]+)?\.weight$")
# DoRA: `<module>.lora_magnitude_vector` (peft's file), or with the adapter name and `.weight` (its module name)
_MAGNITUDE_KEY = re.compile(r"^(?P<module>.+)\.lora_magnitude_vector(?:\.[\w-]+)?(?:\.weight)?$")


@dataclass
class LoraSettings:
    """The parts of adapter_config.json that decide the merge."""

    r: int
    lora_alpha: float
    use_rslora: bool = False
    fan_in_fan_out: bool = False  # weights stored (in, out) as in GPT-2's Conv1D: the delta is transposed
    rank_pattern: dict[str, int] = field(default_factory=dict)  # module-name regex -> r
    alpha_pattern: dict[str, float] = field(default_factory=dict)  # module-name regex -> alpha
    use_dora: bool = False  # every module carries a magnitude vector

    def scale(self, module: str, rank: int) -> float:
        alpha = self.alpha_pattern.get(_pattern_key(self.alpha_pattern, module), self.lora_alpha)
        return alpha / math.sqrt(rank) if self.use_rslora else alpha / rank

    def rank(self, module: str) -> int:
        return self.rank_pattern.get(_pattern_key(self.rank_pattern, module), self.r)


def _pattern_key(patterns: dict, module: str) -> str | None:
    # peft's rule: a pattern key matches a module whose dotted name ends with it
    return next((k for k in patterns if re.match(rf"(.*\.)?({k})$", module)), None)


def check_adapter_dir(adapter_dir: str | Path) -> Path:
    """Raise AthanorError unless `adapter_dir` is a PEFT LoRA adapter directory; return it resolved."""
    path = Path(adapter_dir).expanduser().resolve()
    if not path.is_dir():
        raise AthanorError(f"LoRA adapter {adapter_dir}: not a directory (expected a peft save_pretrained folder)")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise AthanorError(f"LoRA adapter {adapter_dir}: missing {name} (expected a peft save_pretrained folder)")
    return path


def read_lora_settings(adapter_dir: str | Path) -> LoraSettings:
    """Parse and check adapter_config.json."""
    cfg = _read_config(adapter_dir)
    _refuse_unsupported(cfg, adapter_dir)
    try:
        return LoraSettings(
            r=int(cfg["r"]),
            lora_alpha=float(cfg["lora_alpha"]),
            use_rslora=bool(cfg.get("use_rslora", False)),
            fan_in_fan_out=bool(cfg.get("fan_in_fan_out", False)),
            rank_pattern=cfg.get("rank_pattern") or {},
            alpha_pattern=cfg.get("alpha_pattern") or {},
            use_dora=bool(cfg.get("use_dora", False)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise AthanorError(f"LoRA adapter {adapter_dir}: {CONFIG_FILE} needs numeric r and lora_alpha ({e})") from None


def _read_config(adapter_dir: str | Path) -> Any:
    """adapter_config.json of a checked adapter folder, parsed; bad JSON is a one-line error."""
    path = check_adapter_dir(adapter_dir)
    try:
        return json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AthanorError(f"LoRA adapter {adapter_dir}: {CONFIG_FILE} is not valid JSON ({e})") from None


def peft_type(adapter_dir: str | Path) -> str:
    """adapter_config.json's peft_type (LORA when absent, as old peft wrote it), upper-case."""
    cfg = _read_config(adapter_dir)
    return str(cfg.get("peft_type", "LORA")).upper() if isinstance(cfg, dict) else "LORA"


def _refuse_unsupported(cfg: dict, adapter_dir: str | Path) -> None:
    if cfg.get("peft_type", "LORA").upper() != "LORA":
        raise AthanorError(f"LoRA adapter {adapter_dir}: peft_type {cfg['peft_type']!r} is not supported "
                           "(LORA, with or without DoRA, and OFT are)")
    if cfg.get("lora_bias"):
        raise AthanorError(f"LoRA adapter {adapter_dir}: lora_bias=true is not supported; merge it with peft first")


def merge_lora(tensors: dict[str, torch.Tensor], adapter_dir: str | Path) -> dict[str, torch.Tensor]:
    """Return a new dict: `tensors` (HF names, e.g. `model.layers.0.self_attn.q_proj.weight`) with the adapter
    merged in. Inputs are not modified; merged tensors keep their dtype (the sum is done in float32)."""
    settings = read_lora_settings(adapter_dir)
    pairs, magnitudes, full = _split_adapter(_load_adapter_tensors(adapter_dir), adapter_dir)
    if settings.use_dora and set(magnitudes) != set(pairs):
        missing = sorted(set(pairs) - set(magnitudes))[:1] or sorted(set(magnitudes) - set(pairs))[:1]
        raise AthanorError(f"LoRA adapter {adapter_dir}: use_dora=true but {missing[0]} lacks its lora_A/lora_B or "
                           "lora_magnitude_vector")
    if magnitudes and not settings.use_dora:
        raise AthanorError(f"LoRA adapter {adapter_dir}: has lora_magnitude_vector tensors but use_dora is not set")
    out = dict(tensors)
    for module, (a, b) in pairs.items():
        out[f"{module}.weight"] = _merged(tensors, module, a, b, settings, adapter_dir, magnitudes.get(module))
    for name, value in full.items():
        if name not in tensors:
            raise AthanorError(f"LoRA adapter {adapter_dir}: tensor {name!r} matches no weight of the base model")
        _check_shape(adapter_dir, name, tuple(value.shape), tuple(tensors[name].shape))
        out[name] = value.to(tensors[name].dtype)
    return out


def merge_adapters(tensors: dict[str, torch.Tensor], adapters: list[str], config=None) -> dict[str, torch.Tensor]:
    """Merge a manifest's adapters in order (what the loader calls with `Manifest.adapters`): PEFT directories
    here, llama.cpp LoRA `.gguf` files in lora_gguf.py (which needs the model's `config`: arch and heads)."""
    from athanor.models.lora_gguf import is_gguf_file, merge_gguf_lora

    for adapter in adapters:
        if is_gguf_file(adapter):
            if config is None:
                raise AthanorError(f"LoRA adapter {adapter}: a GGUF adapter needs the model's config to merge")
            tensors = merge_gguf_lora(tensors, adapter, config)
        elif peft_type(adapter) == "OFT":
            from athanor.models.oft import merge_oft

            tensors = merge_oft(tensors, adapter)
        else:
            tensors = merge_lora(tensors, adapter)
    return tensors


def check_adapter(path: str | Path) -> Path:
    """A Modelfile ADAPTER: a PEFT directory or a llama.cpp LoRA .gguf file; return it resolved."""
    from athanor.models.lora_gguf import check_gguf_adapter, is_gguf_file

    if is_gguf_file(Path(path).expanduser()):
        return check_gguf_adapter(path)
    if Path(path).expanduser().is_file():
        raise AthanorError(f"LoRA adapter {path}: not a GGUF file (a llama.cpp LoRA .gguf or a peft folder)")
    return check_adapter_dir(path)


def _load_adapter_tensors(adapter_dir: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(Path(adapter_dir).expanduser() / WEIGHTS_FILE))
    except (SafetensorError, OSError) as e:
        raise AthanorError(f"LoRA adapter {adapter_dir}: cannot read {WEIGHTS_FILE} ({e})") from None


def _split_adapter(raw: dict[str, torch.Tensor], adapter_dir: str | Path) -> tuple[dict, dict, dict]:
    """-> ({module: (A (r, in), B (out, r))}, {module: DoRA magnitude (out,)}, {base tensor name: full tensor})."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    magnitudes: dict[str, torch.Tensor] = {}
    full: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        name = key.removeprefix(_PREFIX)
        if ".lora_embedding_" in name:
            raise AthanorError(f"LoRA adapter {adapter_dir}: {key!r} (LoRA on embeddings) is not supported")
        m = _LORA_KEY.match(name)
        if m:
            halves.setdefault(m["module"], {})[m["ab"]] = value
        elif mag := _MAGNITUDE_KEY.match(name):
            magnitudes[mag["module"]] = value
        else:
            full[name] = value  # modules_to_save or a trained bias
    for module, ab in halves.items():
        if set(ab) != {"A", "B"}:
            missing = "lora_B" if "A" in ab else "lora_A"
            raise AthanorError(f"LoRA adapter {adapter_dir}: {module} has no {missing} weight")
    return {m: (ab["A"], ab["B"]) for m, ab in halves.items()}, magnitudes, full


def _merged(
    tensors: dict, module: str, a: torch.Tensor, b: torch.Tensor, settings: LoraSettings, adapter_dir: str | Path,
    magnitude: torch.Tensor | None = None,
) -> torch.Tensor:
    name = f"{module}.weight"
    if name not in tensors:
        raise AthanorError(f"LoRA adapter {adapter_dir}: {module} matches no weight of the base model (no {name!r})")
    base = tensors[name]
    rank = a.shape[0]
    if b.shape[1] != rank or rank != settings.rank(module):
        raise AthanorError(
            f"LoRA adapter {adapter_dir}: {module} has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}, "
            f"expected rank {settings.rank(module)} from {CONFIG_FILE}"
        )
    delta = b.float() @ a.float()  # (out, r) @ (r, in) -> (out, in)
    if settings.fan_in_fan_out:
        delta = delta.T  # base is stored (in, out)
    _check_shape(adapter_dir, name, tuple(delta.shape), tuple(base.shape))
    merged = base.float() + settings.scale(module, rank) * delta
    if magnitude is not None:
        merged = _dora(merged, magnitude, settings.fan_in_fan_out, module, adapter_dir)
    return merged.to(base.dtype)


def _dora(merged: torch.Tensor, magnitude: torch.Tensor, fan_in_fan_out: bool, module: str,
          adapter_dir: str | Path) -> torch.Tensor:
    """DoRA: rescale each output row of W + delta to the trained magnitude (peft's merge: m / ||W + delta||)."""
    rows = merged.T if fan_in_fan_out else merged  # (out, in)
    if tuple(magnitude.shape) != (rows.shape[0],):
        raise AthanorError(f"LoRA adapter {adapter_dir}: {module} has a magnitude vector of shape "
                           f"{tuple(magnitude.shape)}, expected ({rows.shape[0]},)")
    rows = rows * (magnitude.float() / rows.norm(dim=1)).unsqueeze(1)
    return rows.T if fan_in_fan_out else rows


def _check_shape(adapter_dir: str | Path, name: str, got: tuple, want: tuple) -> None:
    if got != want:
        raise AthanorError(
            f"LoRA adapter {adapter_dir}: {name} would be {got} but the base model has {want}; "
            "was it trained for another model?"
        )
