"""`athanor train --check CONFIG.yaml`: everything a run would check, and what it would run, without training.

For: `check_run(path, overrides)`, which loads and checks the config (keys, combinations, datasets), resolves the
model reference and its tokenizer, applies the template, tokenizes every dataset as the run would, and builds the
model skeleton on torch's meta device (no weights read) to count trainable parameters with the config's method.
It prints stage, method, template, samples, tokens per epoch, optimizer steps and parameters.

Not for: training (run.py) or data statistics beyond the one line (`athanor data stats`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from athanor.train.config import TrainConfig, load_config


@dataclass
class RunPlan:
    stage: str
    method: str
    template: str
    num_samples: int
    tokens_per_epoch: int
    rows: int
    steps: int
    trainable_params: int
    total_params: int
    data: str | None = None  # replaces the counts when there are none (a stream, a predict-only run)

    def lines(self) -> list[str]:
        share = 100.0 * self.trainable_params / max(self.total_params, 1)
        data = self.data or f"{self.num_samples} samples, {self.tokens_per_epoch} tokens per epoch, {self.rows} rows"
        return [f"stage: {self.stage}", f"method: {self.method}", f"template: {self.template}", f"data: {data}",
                f"optimizer steps: {self.steps}",
                f"trainable parameters: {self.trainable_params:,} of {self.total_params:,} ({share:.3f}%)"]


def check_run(config_path: str | Path, overrides: list[str] | None = None,
              echo: Callable[[str], None] = print) -> RunPlan:
    """Check everything `athanor train` checks before training and print the plan; raises on any problem."""
    from athanor.text.tokenizer import Tokenizer
    from athanor.train.export import use_template
    from athanor.train.sft import resolve_base

    cfg = load_config(config_path, overrides)
    for note in cfg.notes:
        echo(note)
    base = resolve_base(cfg.model_name_or_path)
    if base.is_dir():
        tokenizer = Tokenizer.from_hf_dir(base)
    else:
        from athanor.models.loader import load_checkpoint

        tokenizer = load_checkpoint(base).tokenizer
    use_template(tokenizer, cfg.template, cfg.enable_thinking)
    num_samples, tokens, rows = _data(cfg, tokenizer, echo)
    trainable, total = _param_counts(cfg, base)
    plan = RunPlan(cfg.stage, describe_method(cfg), cfg.template or "the model's own", num_samples, tokens, rows,
                   _steps(cfg, rows), trainable, total, _data_note(cfg, num_samples))
    for line in plan.lines():
        echo(line)
    return plan


def describe_method(cfg: TrainConfig) -> str:
    from athanor.train.optimizers import describe_optimizer

    method = _describe_tuning(cfg)
    optimizer = describe_optimizer(cfg)  # GaLore, APOLLO, BAdam, Adam-mini or Muon
    return f"{method}, {optimizer}" if optimizer else method


def _describe_tuning(cfg: TrainConfig) -> str:
    if cfg.finetuning_type == "freeze" and cfg.use_llama_pro:
        return f"freeze, LLaMA Pro (the {cfg.freeze_trainable_layers} expanded decoder layers train)"
    if cfg.finetuning_type == "freeze":
        return f"freeze (last {cfg.freeze_trainable_layers} decoder layers train)"
    if cfg.finetuning_type != "lora":
        return cfg.finetuning_type
    target = "all linear layers" if cfg.lora_target == "all" else ",".join(cfg.lora_target)
    extras = [name for name, on in (("LLaMA Pro blocks only", cfg.use_llama_pro), ("DoRA", cfg.use_dora),
                                    ("rsLoRA", cfg.use_rslora), ("PiSSA init", cfg.pissa_init),
                                    (f"LoRA+ x{cfg.loraplus_lr_ratio}", cfg.loraplus_lr_ratio)) if on]
    if cfg.quantization_bit:
        extras.append(f"{cfg.quantization_bit}-bit base (QLoRA)")
    if cfg.adapter_name_or_path:
        extras.append("new adapter over " if cfg.create_new_adapter else "continuing " + cfg.adapter_name_or_path)
    return f"lora r={cfg.lora_rank} alpha={cfg.effective_lora_alpha:g} on {target}" + "".join(f", {e}" for e in extras)


def _data(cfg: TrainConfig, tokenizer: Any, echo: Callable[[str], None]) -> tuple[int, int, int]:
    """(training samples, training tokens per epoch, rows per epoch), tokenized exactly as the run will."""
    if not cfg.do_train:  # predict only: the eval prompts
        from athanor.train.predict import prediction_prompts

        prompts = prediction_prompts(cfg, tokenizer, echo)
        return len(prompts), sum(len(p) for p, _ in prompts), 0
    if cfg.stage == "kto":
        from athanor.train.kto import feedback_rows

        rows = feedback_rows(cfg, tokenizer, cfg.dataset, echo)
        return len(rows), sum(len(r["prompt_ids"]) + len(r["completion_ids"]) for r in rows), len(rows)
    if cfg.stage == "grpo":  # prompts (each sampled grpo_num_generations times), tokens of the prompts
        from athanor.train.grpo import grpo_prompts

        prompts = grpo_prompts(cfg, tokenizer, echo)
        tokens = sum(len(tokenizer.encode(p["prompt"], add_special_tokens=False)) for p in prompts)
        return len(prompts), tokens, len(prompts) * cfg.grpo_num_generations
    if cfg.stage in ("dpo", "rm"):
        from athanor.train.dpo import split_pairs

        pairs, _ = split_pairs(cfg, tokenizer, echo)
        return len(pairs), sum(len(c.input_ids) + len(r.input_ids) for c, r in pairs), len(pairs)
    from athanor.train.sft import build_datasets

    train, _, num = build_datasets(cfg, tokenizer, echo)
    if cfg.streaming:  # a stream is not counted (its first sample was read and tokenized)
        return 0, 0, 0
    return num, sum(len(r.input_ids) for r in train), len(train)


def _data_note(cfg: TrainConfig, num_samples: int) -> str | None:
    if not cfg.do_train:
        return f"no training (do_train: false); do_predict generates for {num_samples} eval_dataset samples"
    if cfg.streaming:
        return (f"streamed from {', '.join(cfg.dataset)} (not counted; the first sample was read and tokenized), "
                f"shuffle buffer {cfg.buffer_size}")
    return None


def _steps(cfg: TrainConfig, rows: int) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = math.ceil(rows / (cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps))
    return math.ceil(per_epoch * cfg.num_train_epochs)


def _param_counts(cfg: TrainConfig, base: Path) -> tuple[int, int]:
    """(trainable, total) parameters of the model the config builds, on the meta device (no weights read)."""
    import torch
    import transformers

    from athanor.train.sft import freeze_layers

    if base.is_dir():
        config = transformers.AutoConfig.from_pretrained(base)
    else:
        config = transformers.AutoConfig.from_pretrained(base.parent, gguf_file=base.name)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    if cfg.finetuning_type == "lora":
        model = _meta_lora(cfg, model)
    elif cfg.finetuning_type == "oft":
        from athanor.train.sft import _with_oft

        model = _with_oft(cfg, model)
    elif cfg.finetuning_type == "freeze":
        freeze_layers(cfg, model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def _meta_lora(cfg: TrainConfig, model: Any) -> Any:
    """The LoRA the run would add (a continued adapter has the shape its adapter_config.json gives)."""
    from peft import LoraConfig, PeftConfig, get_peft_model

    adapters = [a.strip() for a in (cfg.adapter_name_or_path or "").split(",") if a.strip()]
    if adapters and not cfg.create_new_adapter:
        lora = PeftConfig.from_pretrained(adapters[-1])
    else:
        target = "all-linear" if cfg.lora_target == "all" else cfg.lora_target
        if cfg.use_llama_pro:
            from athanor.train.llama_pro import expanded_lora_targets

            target = expanded_lora_targets(model, cfg.lora_target, cfg.freeze_trainable_layers)
        lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.effective_lora_alpha, target_modules=target,
                          task_type="CAUSAL_LM", use_dora=cfg.use_dora, modules_to_save=cfg.additional_target or None)
    return get_peft_model(model, lora)
