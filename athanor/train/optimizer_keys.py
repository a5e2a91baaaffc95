"""LLaMA-Factory's optimizer keys (GaLore, APOLLO, BAdam, Adam-mini) as typed config fields, and their checks.

For: `OptimizerKeys`, the pydantic fields `TrainConfig` inherits, with LLaMA-Factory's names, defaults and choices
(its `GaloreArguments`, `ApolloArguments`, `BAdamArgument` and `use_adam_mini`), and `optimizer_problems(cfg)`: the
combinations LLaMA-Factory rejects (LoRA with GaLore/APOLLO/BAdam, two of them at once, layer-wise updates with
gradient accumulation, an `optim` the package has no version of) plus what cannot run here (a missing package),
one line each, before anything loads.

Not for: building the optimizers (optimizers.py, which imports torch and the packages).
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

# module to import -> what to pip install (athanor's `optimizers` extra has all four)
PACKAGES = {"galore_torch": "galore-torch", "apollo_torch": "apollo-torch", "badam": "badam", "adam_mini": "adam-mini"}


class OptimizerKeys(BaseModel):
    """The optimizer fields of TrainConfig (LLaMA-Factory's defaults)."""

    use_galore: bool = Field(False, description="GaLore: AdamW/Adafactor on gradients projected to low rank (galore-torch).")
    galore_target: str | list[str] = Field("all", description="GaLore: 'all' linear layers or module names.")
    galore_rank: int = Field(16, ge=1, description="GaLore: rank of the projected gradients.")
    galore_update_interval: int = Field(200, ge=1, description="GaLore: steps between projection updates.")
    galore_scale: float = Field(2.0, description="GaLore: scale of the projected-back update.")
    galore_proj_type: Literal["std", "reverse_std", "right", "left", "full"] = Field("std", description="GaLore: projection side.")
    galore_layerwise: bool = Field(False, description="GaLore: one optimizer per parameter, stepped during backward.")
    use_apollo: bool = Field(False, description="APOLLO: AdamW with low-rank-estimated gradient scaling (apollo-torch).")
    apollo_target: str | list[str] = Field("all", description="APOLLO: 'all' linear layers or module names.")
    apollo_rank: int = Field(16, ge=1, description="APOLLO: rank of the auxiliary space.")
    apollo_update_interval: int = Field(200, ge=1, description="APOLLO: steps between projection updates.")
    apollo_scale: float = Field(32.0, description="APOLLO: scale of the update.")
    apollo_proj: Literal["svd", "random"] = Field("random", description="APOLLO: projection (svd or random).")
    apollo_proj_type: Literal["std", "right", "left"] = Field("std", description="APOLLO: projection side.")
    apollo_scale_type: Literal["channel", "tensor"] = Field("channel", description="APOLLO: scaling per channel or tensor.")
    apollo_layerwise: bool = Field(False, description="APOLLO: one optimizer per parameter, stepped during backward.")
    apollo_scale_front: bool = Field(False, description="APOLLO: the norm-growth limiter before gradient scaling.")
    use_badam: bool = Field(False, description="BAdam: Adam on one block of parameters at a time (badam).")
    badam_mode: Literal["layer", "ratio"] = Field("layer", description="BAdam: whole layers or a share of each matrix.")
    badam_start_block: int | None = Field(None, ge=0, description="BAdam layer mode: the first block.")
    badam_switch_mode: Literal["ascending", "descending", "random", "fixed"] | None = Field(
        "ascending", description="BAdam layer mode: the order blocks train in.")
    badam_switch_interval: int | None = Field(50, description="BAdam layer mode: steps per block (-1: never switch).")
    badam_update_ratio: float = Field(0.05, gt=0, le=1, description="BAdam ratio mode: share of each matrix updated.")
    badam_mask_mode: Literal["adjacent", "scatter"] = Field("adjacent", description="BAdam ratio mode: which entries.")
    badam_verbose: int = Field(0, ge=0, le=2, description="BAdam: 0 quiet, 1 block names, 2 parameter names.")
    use_adam_mini: bool = Field(False, description="Adam-mini: one second moment per head/neuron block (adam-mini).")

    @field_validator("galore_target", "apollo_target", mode="before")
    @classmethod
    def _split_optimizer_targets(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip() != "all":
            return [s.strip() for s in v.split(",") if s.strip()]
        return v


def chosen(cfg: Any) -> list[str]:
    """The LF optimizer keys switched on in `cfg`."""
    return [k for k in ("use_galore", "use_apollo", "use_badam", "use_adam_mini") if getattr(cfg, k)]


def optimizer_problems(cfg: Any) -> list[str]:
    """LLaMA-Factory's own refusals for these optimizers, and the ones this machine adds; one line each."""
    on = chosen(cfg)
    if not on:
        return []
    out = [_missing(k) for k in on if _missing(k)]
    block = [k for k in on if k != "use_adam_mini"]
    if len(block) > 1:
        out.append(f"{' and '.join(block)}: GaLore, APOLLO and BAdam cannot be used together; pick one")
    if block and cfg.finetuning_type == "lora":
        out.append(f"{block[0]}: cannot be used with finetuning_type: lora (as in LLaMA-Factory); use full or freeze")
    if block and cfg.finetuning_type == "oft":
        out.append(f"{block[0]}: cannot be used with finetuning_type: oft; use full or freeze")
    if cfg.use_badam and cfg.finetuning_type == "freeze":
        out.append("use_badam: BAdam chooses the trainable block itself and would train frozen layers; "
                   "use finetuning_type: full")
    if cfg.use_adam_mini and cfg.finetuning_type in ("lora", "oft"):
        out.append(f"use_adam_mini: Adam-mini partitions whole weight matrices by head and neuron; it cannot "
                   f"optimize {cfg.finetuning_type} adapter matrices, use finetuning_type: full or freeze")
    if cfg.use_adam_mini and cfg.loraplus_lr_ratio is not None:
        out.append("use_adam_mini and loraplus_lr_ratio: LoRA+ is its own optimizer; pick one")
    if cfg.use_badam and cfg.badam_switch_interval is not None and cfg.badam_switch_interval < 1 \
            and cfg.badam_switch_interval != -1:
        out.append(f"badam_switch_interval: -1 (never switch) or a number of steps (got {cfg.badam_switch_interval})")
    for key, layerwise in (("galore", cfg.use_galore and cfg.galore_layerwise),
                           ("apollo", cfg.use_apollo and cfg.apollo_layerwise)):
        if layerwise and cfg.gradient_accumulation_steps != 1:
            out.append(f"{key}_layerwise: steps each parameter during backward, so it needs "
                       f"gradient_accumulation_steps: 1 (got {cfg.gradient_accumulation_steps})")
    if cfg.use_galore and cfg.optim not in ("adamw_torch", "adafactor"):
        out.append(f"use_galore with optim: {cfg.optim}: GaLore has adamw_torch and adafactor versions here "
                   "(its 8-bit AdamW needs bitsandbytes and CUDA)")
    if cfg.use_apollo and cfg.optim != "adamw_torch":
        out.append(f"use_apollo with optim: {cfg.optim}: APOLLO is an AdamW; use optim: adamw_torch")
    if cfg.use_badam and cfg.badam_mode == "ratio" and cfg.optim not in ("adamw_torch", "adamw_torch_fused"):
        out.append(f"badam_mode: ratio with optim: {cfg.optim}: ratio-wise BAdam is its own sparse Adam; use "
                   "optim: adamw_torch")
    if cfg.use_adam_mini and cfg.optim not in ("adamw_torch", "adamw_torch_fused"):
        out.append(f"use_adam_mini with optim: {cfg.optim}: Adam-mini replaces AdamW; use optim: adamw_torch")
    return out


def _missing(key: str) -> str | None:
    module = {"use_galore": "galore_torch", "use_apollo": "apollo_torch", "use_badam": "badam",
              "use_adam_mini": "adam_mini"}[key]
    if importlib.util.find_spec(module) is not None:
        return None
    return f"{key}: needs the {PACKAGES[module]} package: pip install {PACKAGES[module]} (or athanor[optimizers])"
