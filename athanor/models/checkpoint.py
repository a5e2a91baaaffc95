"""Checkpoint: what every loader (GGUF, HF dir) returns, so nn/ and the engine never see a file format.

Not for weights on a device: tensors here are CPU torch tensors in Hugging Face parameter naming
(`model.layers.0.self_attn.q_proj.weight`, ...); nn/ fuses and moves them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from athanor.nn.config import ModelConfig
    from athanor.text.tokenizer import Tokenizer


@dataclass
class Checkpoint:
    config: "ModelConfig"
    tensors: dict[str, "torch.Tensor"]  # HF names -> float CPU tensors (dequantized)
    tokenizer: "Tokenizer"
    generation_defaults: dict = field(default_factory=dict)  # e.g. temperature, top_p, eos_token_id
    info: dict = field(default_factory=dict)  # format, quantization, file path, license... for `show`
