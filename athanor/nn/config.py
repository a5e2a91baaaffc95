"""ModelConfig: the architecture hyper-parameters our decoder needs, read from HF config.json or GGUF metadata.

Not for sampling defaults or engine sizing (those live in the manifest and engine/config.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from athanor.errors import ModelFormatError, UnsupportedArchitectureError

# architecture name -> features that differ inside the Llama family
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma3", "phi3", "qwen3_moe")

_HF_ARCH_NAMES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma3ForCausalLM": "gemma3",
    "Phi3ForCausalLM": "phi3",
    "Qwen3MoeForCausalLM": "qwen3_moe",
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
    # Gemma 3 (nn/gemma3.py) only:
    layer_types: list[str] | None = None  # per layer "sliding_attention" or "full_attention"
    # attend to the last this many positions (0: no window): Gemma 3's sliding layers, every Phi-3 layer
    sliding_window: int = 0
    rope_local_theta: float = 10000.0  # RoPE base of the sliding layers (rope_theta is the full layers')
    query_pre_attn_scalar: float = 0.0  # attention scale is this ** -0.5; 0 -> head_dim
    hidden_act: str = "silu"  # MLP gate activation: silu (Llama family) or gelu_pytorch_tanh (Gemma)
    # mixture of experts (qwen3_moe, nn/moe.py): 0 experts -> dense MLPs everywhere
    num_experts: int = 0
    num_experts_per_tok: int = 0  # top-k experts per token
    moe_intermediate_size: int = 0  # each expert's MLP width
    norm_topk_prob: bool = False  # renormalize the top-k router probabilities to sum to 1
    moe_layers: list[int] = field(default_factory=list)  # layer indices whose MLP is the expert mixture
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
        if arch == "gemma3":
            return _gemma3_from_hf(cfg)
        if arch == "phi3":
            _check_phi3(cfg)
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
            qk_norm=arch in ("qwen3", "qwen3_moe"),
            extra={k: cfg[k] for k in ("sliding_window", "torch_dtype") if k in cfg},
            sliding_window=(cfg.get("sliding_window") or 0) if arch == "phi3" else 0,
            **(_moe_from_hf(cfg) if arch == "qwen3_moe" else {}),
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
            if self.arch == "phi3":  # Phi-3 checkpoints hold q|k|v and gate|up already fused, as we run them
                for a, b, c in (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("mlp.gate_proj", "mlp.up_proj", None)):
                    rows = sum(layer.pop(f"{n}.weight")[0] for n in (a, b, c) if n)
                    layer[f"{a.rsplit('.', 1)[0]}.{'qkv_proj' if c else 'gate_up_proj'}.weight"] = (rows, h)
            if self.attention_bias:
                layer |= {"self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,), "self_attn.v_proj.bias": (kv,)}
            if self.qk_norm:
                layer |= {"self_attn.q_norm.weight": (d,), "self_attn.k_norm.weight": (d,)}
            if n in self.moe_layers:  # router + experts instead of the dense MLP
                for name in ("mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"):
                    layer.pop(name)
                mi, e = self.moe_intermediate_size, self.num_experts
                layer["mlp.gate.weight"] = (e, h)
                for j in range(e):
                    layer |= {f"mlp.experts.{j}.gate_proj.weight": (mi, h), f"mlp.experts.{j}.up_proj.weight": (mi, h),
                              f"mlp.experts.{j}.down_proj.weight": (h, mi)}
            shapes |= {p + name: shape for name, shape in layer.items()}
        if self.arch == "gemma3":
            for n in range(self.num_hidden_layers):
                shapes |= {f"model.layers.{n}.{k}_feedforward_layernorm.weight": (h,) for k in ("pre", "post")}
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


def _gemma3_from_hf(cfg: dict) -> ModelConfig:
    """Gemma 3 text config (Gemma3ForCausalLM): per-layer-type RoPE, sliding window, GELU, scaled queries."""
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if cfg.get(key) is not None:
            raise UnsupportedArchitectureError(f"gemma3 with {key} is not supported")
    rope = cfg.get("rope_parameters") or {}
    full, local = rope.get("full_attention") or {}, rope.get("sliding_attention") or {}
    heads, n_layers = cfg["num_attention_heads"], cfg["num_hidden_layers"]
    pattern = cfg.get("sliding_window_pattern", 6)
    layer_types = cfg.get("layer_types") or [
        "sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n_layers)]
    scaling = {k: v for k, v in full.items() if k != "rope_theta"} or cfg.get("rope_scaling")
    if scaling and (scaling.get("rope_type") or scaling.get("type")) in (None, "default"):
        scaling = None
    return ModelConfig(
        arch="gemma3", vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"], num_hidden_layers=n_layers, num_attention_heads=heads,
        num_key_value_heads=cfg.get("num_key_value_heads") or heads, head_dim=cfg.get("head_dim") or 256,
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        rope_theta=full.get("rope_theta") or cfg.get("rope_theta", 1_000_000.0), rope_scaling=scaling,
        max_position_embeddings=cfg.get("max_position_embeddings", 32768),
        tie_word_embeddings=cfg.get("tie_word_embeddings", True), attention_bias=cfg.get("attention_bias", False),
        qk_norm=True, layer_types=layer_types, sliding_window=cfg.get("sliding_window") or 0,
        rope_local_theta=local.get("rope_theta") or cfg.get("rope_local_base_freq", 10000.0),
        query_pre_attn_scalar=cfg.get("query_pre_attn_scalar", 256),
        hidden_act=cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh",
    )


def _check_phi3(cfg: dict) -> None:
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if (cfg.get("partial_rotary_factor") or rope.get("partial_rotary_factor") or 1.0) != 1.0:
        raise UnsupportedArchitectureError("phi3 with partial_rotary_factor != 1 is not supported")
    if (rope.get("rope_type") or rope.get("type") or "default") not in ("default",):
        raise UnsupportedArchitectureError(f"phi3 rope type {rope.get('rope_type') or rope.get('type')!r} "
                                           "(e.g. the 128k longrope models) is not supported")


def _moe_from_hf(cfg: dict) -> dict:
    """Qwen3-MoE: which layers route to experts (decoder_sparse_step, mlp_only_layers) and their sizes."""
    experts = cfg.get("num_experts") or cfg.get("num_local_experts") or 0
    step, dense = cfg.get("decoder_sparse_step", 1) or 1, set(cfg.get("mlp_only_layers") or [])
    layers = [i for i in range(cfg["num_hidden_layers"]) if experts and i not in dense and (i + 1) % step == 0]
    return {"num_experts": experts, "num_experts_per_tok": cfg["num_experts_per_tok"],
            "moe_intermediate_size": cfg["moe_intermediate_size"], "norm_topk_prob": bool(cfg.get("norm_topk_prob")),
            "moe_layers": layers}


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
