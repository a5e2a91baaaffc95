"""Config checks for LLaMA-Factory's extra methods and athanor's GRPO stage: which combinations make sense.

For: `extras_problems(cfg)`, one line per impossible combination of `use_muon`, `use_llama_pro`, the
`use_asft_loss` / `use_eaft_loss` losses and `stage: grpo` (its reward functions are imported here, so a typo in
`reward_funcs` is reported before any model loads). Called from config.check_combinations.

Not for: running any of them (muon.py, llama_pro.py, sft_losses.py, grpo.py).
"""

from __future__ import annotations

from typing import Any


def extras_problems(cfg: Any) -> list[str]:
    return _loss_problems(cfg) + _muon_problems(cfg) + _llama_pro_problems(cfg) + _grpo_problems(cfg)


def _loss_problems(cfg: Any) -> list[str]:
    out = []
    losses = [k for k in ("use_dft_loss", "use_eaft_loss", "use_asft_loss") if getattr(cfg, k)]
    if len(losses) > 1:
        out.append(f"{' and '.join(losses)} are all set; each replaces the SFT loss, pick one")
    for key in losses:
        if key != "use_dft_loss" and cfg.stage != "sft":
            out.append(f"{key}: the {key[4:8].upper()} loss applies to stage: sft (got {cfg.stage})")
    return out


def _muon_problems(cfg: Any) -> list[str]:
    if not cfg.use_muon:
        return []
    out = []
    if cfg.loraplus_lr_ratio is not None:
        out.append("use_muon and loraplus_lr_ratio both pick the optimizer; pick one")
    if cfg.stage not in ("sft", "pt", "dpo", "grpo"):
        out.append(f"use_muon: Muon is wired into stages sft, pt, dpo and grpo here (got {cfg.stage})")
    if "optim" in cfg.model_fields_set and cfg.optim not in ("adamw_torch", "adamw_torch_fused"):
        out.append(f"use_muon replaces the optimizer (Muon + AdamW); optim: {cfg.optim} would be ignored, drop it")
    return out


def _llama_pro_problems(cfg: Any) -> list[str]:
    if cfg.use_llama_pro and cfg.finetuning_type not in ("freeze", "lora"):
        return [(f"use_llama_pro: trains the expanded blocks with finetuning_type freeze or lora (got "
                 f"{cfg.finetuning_type}), as in LLaMA-Factory")]
    return []


def _grpo_problems(cfg: Any) -> list[str]:
    grpo_keys = sorted(k for k in cfg.model_fields_set if k.startswith(("grpo_", "reward_")))
    if cfg.stage != "grpo":
        if not grpo_keys:
            return []
        return [f"{', '.join(grpo_keys)} set but stage is {cfg.stage}; they only apply to stage: grpo"]
    out = []
    if not cfg.reward_funcs:
        out.append("reward_funcs: stage: grpo needs at least one reward function (`module:function` or "
                   "`file.py:function`)")
    from athanor.train.grpo import RewardError, load_reward_func

    for spec in cfg.reward_funcs:
        try:
            load_reward_func(spec, cfg.dataset_dir)
        except RewardError as e:
            out.append(f"reward_funcs: {e}")
    if cfg.reward_weights is not None and len(cfg.reward_weights) != len(cfg.reward_funcs):
        out.append(f"reward_weights: {len(cfg.reward_weights)} weights for {len(cfg.reward_funcs)} reward functions")
    batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    if batch % cfg.grpo_num_generations:
        out.append(f"grpo_num_generations: {cfg.grpo_num_generations} must divide per_device_train_batch_size x "
                   f"gradient_accumulation_steps = {batch} (each batch holds whole groups of completions)")
    for key, on in (("packing", cfg.packing), ("tokenized_path", cfg.tokenized_path),
                    ("val_size", cfg.val_size), ("eval_dataset", cfg.eval_dataset)):
        if on:
            out.append(f"{key}: not supported with stage: grpo (prompts are generated from online, no eval here)")
    return out
