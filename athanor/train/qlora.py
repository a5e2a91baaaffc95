"""QLoRA: the base loaded in 4-bit NF4 (or 8-bit) through bitsandbytes on a CUDA GPU, LoRA adapters trained on top.

For: `load_quantized(cfg, base, gguf)`, which sft.load_model calls when `quantization_bit` is set. A GGUF base is
dequantized by our loader and written as a temporary Hugging Face directory first (bitsandbytes quantizes while
transformers loads safetensors). The adapter is saved like any LoRA adapter, so `athanor export` merges it into
the full-precision base as usual.

Not for: CPU training (bitsandbytes' 4/8-bit training kernels are CUDA only; the config refuses it before loading)
or quantized export (export.py writes Q8_0 GGUF).
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from athanor.errors import AthanorError

if TYPE_CHECKING:
    from athanor.models.checkpoint import Checkpoint
    from athanor.train.config import TrainConfig

NEEDS_CUDA = ("quantization_bit: {bits}-bit QLoRA needs a CUDA GPU (bitsandbytes); remove it to train LoRA in full "
              "precision on this machine")
NEEDS_BNB = "quantization_bit: QLoRA needs the bitsandbytes package: pip install bitsandbytes"


def has_bitsandbytes() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def compute_dtype(cfg: TrainConfig) -> torch.dtype:
    """The dtype the dequantized matmuls run in: bf16 / fp16 as the config asks, else bf16 where supported."""
    if cfg.fp16:
        return torch.float16
    if cfg.bf16 or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def quantization_config(cfg: TrainConfig) -> Any:
    from transformers import BitsAndBytesConfig

    if cfg.quantization_bit == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype(cfg))


def load_quantized(cfg: TrainConfig, base: Path, gguf: Checkpoint | None) -> Any:
    """The base model quantized on the current CUDA device, prepared for k-bit training (peft)."""
    import transformers
    from peft import prepare_model_for_kbit_training

    if not torch.cuda.is_available():
        raise AthanorError(NEEDS_CUDA.format(bits=cfg.quantization_bit))
    if not has_bitsandbytes():
        raise AthanorError(NEEDS_BNB)
    tmp = None
    if gguf is not None:  # bitsandbytes quantizes while loading safetensors: write the dequantized GGUF as HF
        from athanor.train.export import write_hf_dir

        tmp = Path(tempfile.mkdtemp(prefix="athanor-qlora-"))
        base = write_hf_dir(gguf, tmp / "base")
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            base, quantization_config=quantization_config(cfg), dtype=compute_dtype(cfg),
            device_map={"": torch.cuda.current_device()})
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
