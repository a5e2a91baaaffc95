"""ModelConfig: the architecture hyper-parameters our decoder needs, read from HF config.json or GGUF metadata.

Not for sampling defaults or engine sizing (those live in the manifest and engine/config.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from athanor.errors import ModelFormatError, UnsupportedArchitectureError

# architecture name -> features that differ inside the Llama family
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")

_HF_ARCH_NAMES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}


@dataclass
class ModelConfig:
    """Decoder shape. Field names follow Hugging Face's config.json where one exists."""

    arch: str  # one of SUPPORTED_ARCHITECTURES
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int = 0  # 0 -> hidden_size // num_attention_heads
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # HF rope_scaling dict (rope_type "llama3", "linear", ...) or None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # bias on q/k/v projections (Qwen2)
    qk_norm: bool = False  # RMSNorm on q and k per head (Qwen3)
    extra: dict = field(default_factory=dict)  # informational fields (e.g. sliding_window) kept for `show`

    def __post_init__(self) -> None:
        _check_sizes(self)
        if self.arch not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedArchitectureError(
                f"unsupported architecture {self.arch!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        if not self.head_dim:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:  # a config value, so not an assert
            raise ModelFormatError(f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                                   f"num_key_value_heads ({self.num_key_value_heads})")

    @classmethod
    def from_hf(cls, cfg: dict) -> "ModelConfig":
        """Build from a parsed Hugging Face config.json."""
        archs = cfg.get("architectures") or []
        name = archs[0] if archs else cfg.get("model_type", "?")
        arch = _HF_ARCH_NAMES.get(name) or (cfg.get("model_type") if cfg.get("model_type") in SUPPORTED_ARCHITECTURES else None)
        if arch is None:
            raise UnsupportedArchitectureError(
                f"unsupported architecture {name!r}; supported: {', '.join(_HF_ARCH_NAMES)}"
            )
        heads = cfg["num_attention_heads"]
        return cls(
            arch=arch,
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=_rope_theta(cfg),
            rope_scaling=_rope_scaling(cfg),
            max_position_embeddings=cfg.get("max_position_embeddings", 2048),
            tie_word_embeddings=cfg.get("tie_word_embeddings", False),
            attention_bias=cfg.get("attention_bias", arch == "qwen2"),
            qk_norm=arch == "qwen3",
            extra={k: cfg[k] for k in ("sliding_window", "torch_dtype") if k in cfg},
        )

    def hf_tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor a Hugging Face checkpoint of this shape holds -> its shape (no lm_head when tied)."""
        h, i, d, v = self.hidden_size, self.intermediate_size, self.head_dim, self.vocab_size
        q, kv = self.num_attention_heads * d, self.num_key_value_heads * d
        shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (v, h)
        for n in range(self.num_hidden_layers):
            p = f"model.layers.{n}."
            layer = {"input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
                     "self_attn.q_proj.weight": (q, h), "self_attn.k_proj.weight": (kv, h),
                     "self_attn.v_proj.weight": (kv, h), "self_attn.o_proj.weight": (h, q),
                     "mlp.gate_proj.weight": (i, h), "mlp.up_proj.weight": (i, h), "mlp.down_proj.weight": (h, i)}
            if self.attention_bias:
                layer |= {"self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,), "self_attn.v_proj.bias": (kv,)}
            if self.qk_norm:
                layer |= {"self_attn.q_norm.weight": (d,), "self_attn.k_norm.weight": (d,)}
            shapes |= {p + name: shape for name, shape in layer.items()}
        return shapes

    def num_parameters(self) -> int:
        """Parameter count implied by the shape (embeddings counted once when tied)."""
        return sum(math.prod(shape) for shape in self.hf_tensor_shapes().values())


def _rope_theta(cfg: dict) -> float:
    # transformers >= 5 writes `rope_parameters` (theta inside); older checkpoints have top-level keys
    return (cfg.get("rope_parameters") or {}).get("rope_theta") or cfg.get("rope_theta", 10000.0)


def _rope_scaling(cfg: dict) -> dict | None:
    params = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    if not params or (params.get("rope_type") or params.get("type")) in (None, "default"):
        return None
    return {k: v for k, v in params.items() if k != "rope_theta"}


# Upper bounds well above every released decoder (405B: 126 layers, 16384 hidden; 10M-token contexts): a file
# asking for more is lying, and is refused before anything is sized from it (tensor tables, rotary tables).
_SIZE_LIMITS = {"vocab_size": 2**22, "hidden_size": 2**17, "intermediate_size": 2**19, "num_hidden_layers": 1024,
                "num_attention_heads": 1024, "num_key_value_heads": 1024, "head_dim": 2**12,
                "max_position_embeddings": 2**24}


def _check_sizes(cfg: ModelConfig) -> None:
    for name, limit in _SIZE_LIMITS.items():
        value = getattr(cfg, name)
        if name == "head_dim" and value == 0:
            continue  # derived below
        low = 0 if name == "num_hidden_layers" else 1  # 0 layers: a tokenizer-only file
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= limit:
            raise ModelFormatError(f"model config {name} must be an integer in [{low}, {limit}], got {value!r}")
