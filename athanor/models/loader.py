"""One entry point from a weights path (a .gguf file or a Hugging Face directory) to a Checkpoint.

Not for names (store.py resolves names to paths) or for building the torch model (nn/llama.py).
"""

from __future__ import annotations

from pathlib import Path

from athanor.errors import ModelFormatError
from athanor.models.checkpoint import Checkpoint


def _kind(path: str | Path) -> str:
    p = Path(path)
    if p.is_dir():
        if (p / "config.json").is_file():
            return "hf"
        raise ModelFormatError(f"{p}: a directory without config.json is not a Hugging Face model")
    if not p.exists():
        raise ModelFormatError(f"{p}: file not found")
    if p.suffix.lower() == ".gguf" or _magic(p) == b"GGUF":
        return "gguf"
    raise ModelFormatError(f"{p}: not a .gguf file or a Hugging Face model directory")


def _magic(p: Path) -> bytes:
    with open(p, "rb") as f:
        return f.read(4)


def inspect_weights(path: str | Path) -> dict:
    """Metadata (format, arch, num_parameters, quantization, context_length, ...) without loading tensors."""
    if _kind(path) == "hf":
        from athanor.models.hf import inspect_hf

        return inspect_hf(path)
    from athanor.models.gguf import inspect_gguf

    return inspect_gguf(path)


def load_checkpoint(path: str | Path, keep_blocks: bool = False) -> Checkpoint:
    """keep_blocks: a GGUF file's block-quantized matrices stay in their blocks (see models/gguf.load_gguf)."""
    if _kind(path) == "hf":
        from athanor.models.hf import load_hf

        return load_hf(path)
    from athanor.models.gguf import load_gguf

    return load_gguf(path, keep_blocks=keep_blocks)
