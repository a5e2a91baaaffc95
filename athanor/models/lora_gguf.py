"""llama.cpp LoRA adapters (`.gguf`, as convert_lora_to_gguf.py writes them) merged into a model at load time.

Such a file has `general.type = "adapter"`, `adapter.type = "lora"`, `adapter.lora.alpha` (float) and, per
adapted matrix, `<gguf name>.lora_a` (r, in) and `<gguf name>.lora_b` (out, r), e.g. `blk.0.attn_q.weight.lora_a`
(numpy order; ggml's ne is reversed); 1-D norm tensors, when present, replace the base ones. llama.cpp applies
W x + scale * B (A x) with scale = alpha / r (r from B; alpha 0 means scale 1, the user's --lora scale): merged
here once as W += scale * B @ A, in float32. For the architectures whose converter permutes q/k rows (llama),
B's rows of attn_q / attn_k are in llama.cpp's rope order and are put back into Hugging Face order, the order
our loader keeps every model in. Not for PEFT directories (lora.py) or for adapters applied per request.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from athanor.errors import AthanorError

if TYPE_CHECKING:
    import torch

    from athanor.nn.config import ModelConfig


def is_gguf_file(path: str | Path) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return f.read(4) == b"GGUF"


def check_gguf_adapter(path: str | Path) -> Path:
    """Raise AthanorError unless `path` is a llama.cpp LoRA adapter; return it resolved."""
    from athanor.models.gguf import read_gguf_header

    p = Path(path).expanduser().resolve()
    meta = read_gguf_header(p).metadata
    if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
        kind = meta.get("general.type") or "model"
        raise AthanorError(f"LoRA adapter {path}: a GGUF {kind} file, not a llama.cpp LoRA adapter "
                           "(general.type 'adapter', adapter.type 'lora')")
    return p


def merge_gguf_lora(tensors: dict[str, torch.Tensor], path: str | Path, config: ModelConfig) -> dict:
    """Return a new dict: `tensors` (HF names) with the adapter at `path` merged in (inputs not modified)."""
    import torch

    from athanor.models.gguf import _PERMUTED_ARCHS, _load_tensor, _mapped, _read, hf_name, unpermute_qk

    check_gguf_adapter(path)
    out = dict(tensors)
    with _mapped(path) as buf:
        header = _read(buf, path)
        arch = header.metadata.get("general.architecture")
        if arch and arch != config.arch:
            raise AthanorError(f"LoRA adapter {path}: made for a {arch} model, but the base model is {config.arch}")
        alpha = float(header.metadata.get("adapter.lora.alpha") or 0.0)
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for info in header.tensors.values():
            base, _, half = info.name.rpartition(".")
            if half in ("lora_a", "lora_b"):
                pairs.setdefault(base, {})[half] = _load_tensor(buf, header, info).to(torch.float32, copy=True)
                continue
            name = _hf(hf_name(info.name, config.arch), info.name, path, tensors)
            out[name] = _load_tensor(buf, header, info).to(tensors[name].dtype, copy=True)  # norms (mergekit)
        for base, ab in pairs.items():
            if set(ab) != {"lora_a", "lora_b"}:
                raise AthanorError(f"LoRA adapter {path}: {base} has only {', '.join(ab)}")
            name = _hf(hf_name(base, config.arch), base, path, tensors)
            a, b = ab["lora_a"], ab["lora_b"]
            if config.arch in _PERMUTED_ARCHS and (".attn_q." in base or ".attn_k." in base):
                b = unpermute_qk(b, config.num_attention_heads if ".attn_q." in base else config.num_key_value_heads)
            out[name] = _merged(tensors[name], a, b, alpha, base, path)
    return out


def _hf(name: str | None, gguf_name: str, path, tensors: dict) -> str:
    if name is None or name not in tensors:
        raise AthanorError(f"LoRA adapter {path}: tensor {gguf_name!r} matches no weight of the base model")
    return name


def _merged(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float, name: str, path) -> torch.Tensor:
    rank = b.shape[1]
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != rank or (b.shape[0], a.shape[1]) != tuple(w.shape):
        raise AthanorError(f"LoRA adapter {path}: {name} has lora_a {tuple(a.shape)} and lora_b {tuple(b.shape)}, "
                           f"which do not fit the base weight {tuple(w.shape)}; was it made for another model?")
    scale = alpha / rank if alpha else 1.0
    return (w.float() + scale * (b @ a)).to(w.dtype)
