"""The optimizer a config asks for beyond `optim`: LoRA+, GaLore, APOLLO, BAdam and Adam-mini, as LLaMA-Factory
builds them (its `train/trainer_utils.py`), on the packages that implement them.

For: `install_optimizer(trainer, cfg, model)`, called once by every recipe right after it builds its Trainer. It
gives the Trainer the optimizer (LF's priority: GaLore, APOLLO, LoRA+, BAdam, Adam-mini; the config refuses the
combinations LF refuses) and, for BAdam, LF's two Trainer adjustments. The parameter groups are LF's: weight decay
on weights of non-norm layers only, GaLore/APOLLO settings on the 2-D weights of the targeted linear layers.
Layer-wise GaLore/APOLLO give each parameter its own optimizer, stepped in a post-accumulate-grad hook, and the
Trainer a placeholder optimizer whose learning rate (set by the Trainer's schedule) the hooks follow; LF builds one
scheduler per parameter instead, with the same schedule.

Not for: the keys and their checks (optimizer_keys.py) or the plain `optim` choices (transformers builds those).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from types import MethodType, ModuleType
from typing import Any

import torch

from athanor.errors import AthanorError


def install_optimizer(trainer: Any, cfg: Any, model: Any) -> None:
    """Give `trainer` the config's own optimizer when it has one (else the Trainer builds `optim` as usual)."""
    optimizer = custom_optimizer(cfg, model, trainer.args)
    if optimizer is None:
        return
    one_process = cfg.use_badam or cfg.use_galore and cfg.galore_layerwise or cfg.use_apollo and cfg.apollo_layerwise
    if one_process and trainer.args.world_size > 1:
        raise AthanorError("layer-wise GaLore/APOLLO and BAdam run in one process only (LLaMA-Factory's BAdam "
                               "needs DeepSpeed ZeRO-3 for several)")
    trainer.optimizer = optimizer
    if cfg.use_badam:
        from badam import BAdamCallback, clip_grad_norm_old_version

        # ratio-wise BAdam leaves sparse gradients, which torch's foreach norm cannot clip (LF patches the same)
        trainer.accelerator.clip_grad_norm_ = MethodType(clip_grad_norm_old_version, trainer.accelerator)
        trainer.add_callback(BAdamCallback)


def custom_optimizer(cfg: Any, model: Any, args: Any) -> torch.optim.Optimizer | None:
    """LF's `create_custom_optimizer`: the first of GaLore, APOLLO, LoRA+, BAdam, Adam-mini, Muon the config turns on."""
    if cfg.use_galore:
        return _low_rank_optimizer(cfg, model, args, "galore")
    if cfg.use_apollo:
        return _low_rank_optimizer(cfg, model, args, "apollo")
    if cfg.loraplus_lr_ratio is not None and hasattr(getattr(model, "lm", model), "peft_config"):  # rm: model.lm
        return _loraplus(cfg, model)
    if cfg.use_badam:
        return _badam(cfg, model, args)
    if cfg.use_adam_mini:
        return _adam_mini(cfg, model)
    if cfg.use_muon:
        from athanor.train.muon import muon_optimizer

        return muon_optimizer(cfg, model)
    return None


def describe_optimizer(cfg: Any) -> str | None:
    """One phrase for `athanor train --check`, or None for the plain `optim`."""
    if cfg.use_galore:
        return (f"GaLore {cfg.optim} rank {cfg.galore_rank} every {cfg.galore_update_interval} steps, scale "
                f"{cfg.galore_scale:g}, {cfg.galore_proj_type}" + (", layer-wise" if cfg.galore_layerwise else ""))
    if cfg.use_apollo:
        return (f"APOLLO rank {cfg.apollo_rank} ({cfg.apollo_proj}, {cfg.apollo_scale_type}) every "
                f"{cfg.apollo_update_interval} steps, scale {cfg.apollo_scale:g}"
                + (", layer-wise" if cfg.apollo_layerwise else ""))
    if cfg.use_badam:
        if cfg.badam_mode == "ratio":
            return f"BAdam ratio-wise, {cfg.badam_update_ratio:g} of each matrix ({cfg.badam_mask_mode})"
        return f"BAdam layer-wise, {cfg.badam_switch_mode}, switching every {cfg.badam_switch_interval} steps"
    if cfg.use_muon:
        return "Muon on 2-D hidden weights, AdamW for the rest"
    return "Adam-mini" if cfg.use_adam_mini else None


# ------------------------------------------------------------------------------------------------ parameter groups


def decay_parameter_names(model: Any) -> set[str]:
    """LF's rule (transformers' get_parameter_names): weights outside layer norms, biases excluded."""
    from transformers.pytorch_utils import ALL_LAYERNORM_LAYERS
    from transformers.trainer_pt_utils import get_parameter_names

    return {n for n in get_parameter_names(model, ALL_LAYERNORM_LAYERS) if "bias" not in n}


def linear_targets(model: Any, target: str | list[str]) -> list[str]:
    """LF's find_all_linear_modules for 'all': the short names of every linear layer but the LM head."""
    if target != "all":
        return list(target)
    names = {name.split(".")[-1] for name, module in model.named_modules()
             if "lm_head" not in name and "Linear" in type(module).__name__ and "Embedding" not in type(module).__name__}
    return sorted(names)


def _split(model: Any, special: list[torch.nn.Parameter]) -> tuple[list, list]:
    """(decay, no-decay) trainable parameters outside `special`."""
    ids = {id(p) for p in special}
    decay_names = decay_parameter_names(model)
    decay, nodecay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in ids:
            (decay if name in decay_names else nodecay).append(p)
    return decay, nodecay


# ------------------------------------------------------------------------------------------------ GaLore / APOLLO


def _low_rank_optimizer(cfg: Any, model: Any, args: Any, kind: str) -> torch.optim.Optimizer:
    import transformers

    targets = linear_targets(model, getattr(cfg, f"{kind}_target"))
    special = [p for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and any(t in name for t in targets)
               for p in module.parameters() if p.requires_grad and p.dim() > 1]
    decay, nodecay = _split(model, special)
    _, kwargs = transformers.Trainer.get_optimizer_cls_and_kwargs(args)
    if kind == "galore":
        cls = _float_class("galore_torch", "adafactor" if cfg.optim == "adafactor" else "adamw",
                           "Adafactor" if cfg.optim == "adafactor" else "AdamW")
        extra = {"rank": cfg.galore_rank, "update_proj_gap": cfg.galore_update_interval, "scale": cfg.galore_scale,
                 "proj_type": cfg.galore_proj_type}
        if cfg.optim != "adafactor":
            kwargs["no_deprecation_warning"] = True
        layerwise = cfg.galore_layerwise
    else:
        cls = _float_class("apollo_torch", "apollo", "AdamW")
        extra = {"rank": cfg.apollo_rank, "proj": cfg.apollo_proj, "proj_type": cfg.apollo_proj_type,
                 "update_proj_gap": cfg.apollo_update_interval, "scale": cfg.apollo_scale,
                 "scale_type": cfg.apollo_scale_type}
        # LF puts scale_front in the parameter group, where apollo-torch never reads it; it is a constructor argument
        kwargs["scale_front"] = cfg.apollo_scale_front
        layerwise = cfg.apollo_layerwise
    groups = [(nodecay, {"weight_decay": 0.0}), (decay, {"weight_decay": cfg.weight_decay}),
              (special, {"weight_decay": cfg.weight_decay, **extra})]
    if not layerwise:
        return cls([{"params": ps, **g} for ps, g in groups if ps], **kwargs)
    per_param = {p: cls([{"params": [p], **g}], **kwargs) for ps, g in groups for p in ps}
    return LayerwiseOptimizer(per_param, cfg.learning_rate)


class LayerwiseOptimizer(torch.optim.Optimizer):
    """What the Trainer sees of layer-wise GaLore/APOLLO: each parameter's optimizer steps in a hook as soon as its
    gradient is complete; `step` and `zero_grad` do nothing. Its one group carries the scheduled learning rate, which
    every hook copies into its optimizer first (LF: one scheduler per parameter, with the same schedule)."""

    def __init__(self, per_param: dict[torch.nn.Parameter, torch.optim.Optimizer], lr: float) -> None:
        self.per_param = per_param
        super().__init__([torch.zeros(1, requires_grad=True)], {"lr": lr})
        for p in per_param:
            p.register_post_accumulate_grad_hook(self._step_one)

    def _step_one(self, p: torch.nn.Parameter) -> None:
        if p.grad is None:
            return
        optimizer = self.per_param[p]
        for group in optimizer.param_groups:
            group["lr"] = self.param_groups[0]["lr"]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def step(self, closure: Any = None) -> None:
        return None


def _float_class(package: str, module: str, name: str) -> type:
    """galore-torch's and apollo-torch's `__init__` imports their 8-bit optimizers, hence bitsandbytes, which athanor
    does not install (and which, once installed, peft imports on every start). The float optimizers do not use it:
    load their modules into the package without running its `__init__`, then expose them under the package."""
    if package not in sys.modules:
        spec = importlib.util.find_spec(package)
        if spec is None:
            raise AthanorError(f"the {package.replace('_', '-')} package is not installed")
        shell = importlib.util.module_from_spec(spec)  # the package object; its __init__ is not run
        sys.modules[package] = shell
    cls = getattr(importlib.import_module(f"{package}.{module}"), name)
    package_module: ModuleType = sys.modules[package]
    exported = {"galore_torch": {"AdamW": "GaLoreAdamW", "Adafactor": "GaLoreAdafactor"},
                "apollo_torch": {"AdamW": "APOLLOAdamW"}}[package][name]
    if not hasattr(package_module, exported):
        setattr(package_module, exported, cls)
    return cls


# ------------------------------------------------------------------------------------------------ LoRA+, BAdam, Adam-mini


def _loraplus(cfg: Any, model: Any) -> torch.optim.Optimizer:
    """peft's LoRA+ optimizer: B matrices at loraplus_lr_ratio x the learning rate."""
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(model, torch.optim.AdamW, lr=cfg.learning_rate,
                                     loraplus_lr_ratio=cfg.loraplus_lr_ratio, weight_decay=cfg.weight_decay,
                                     betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon)


NEVER = 2**62  # badam_switch_interval: -1 means "never switch" (LF's help); badam itself would switch every step


def _badam(cfg: Any, model: Any, args: Any) -> torch.optim.Optimizer:
    import transformers

    decay, nodecay = _split(model, [])
    groups = [{"params": nodecay, "weight_decay": 0.0}, {"params": decay, "weight_decay": cfg.weight_decay}]
    cls, kwargs = transformers.Trainer.get_optimizer_cls_and_kwargs(args)
    named = list(model.named_parameters())
    interval = NEVER if cfg.badam_switch_interval == -1 else cfg.badam_switch_interval
    with warnings.catch_warnings():  # "BAdam expects fp16/bf16 weights": athanor trains float32 weights on purpose
        warnings.filterwarnings("ignore", message="BAdam expect")
        if cfg.badam_mode == "layer":
            from badam import BlockOptimizer

            return BlockOptimizer(base_optimizer=cls(groups, **kwargs), named_parameters_list=named,
                                  block_prefix_list=None, switch_block_every=interval,
                                  start_block=cfg.badam_start_block, switch_mode=cfg.badam_switch_mode,
                                  verbose=cfg.badam_verbose)
        from badam import BlockOptimizerRatio

        kwargs.pop("fused", None)
        tied = not any("lm_head" in n for n, _ in named)  # tied: the LM head is the embedding, frozen as LF means
        return BlockOptimizerRatio(param_groups=groups, named_parameters_list=named,
                                   update_ratio=cfg.badam_update_ratio, mask_mode=cfg.badam_mask_mode,
                                   verbose=cfg.badam_verbose, include_embedding=False, include_lm_head=tied, **kwargs)


def _adam_mini(cfg: Any, model: Any) -> torch.optim.Optimizer:
    """Adam-mini with the model's hidden size and (query, key/value) head counts, as LF passes them."""
    import contextlib
    import io

    from adam_mini import Adam_mini

    config = getattr(model, "config", None) or model.lm.config  # rm: the value-head wrapper holds the LM
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every parameter block it finds
        optimizer = Adam_mini(named_parameters=model.named_parameters(), lr=cfg.learning_rate,
                              betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon,
                              weight_decay=cfg.weight_decay, dim=config.hidden_size,
                              n_heads=config.num_attention_heads,
                              n_kv_heads=getattr(config, "num_key_value_heads", None), verbose=False)
    return optimizer
