"""Impossible combinations in a training config: settings that are each valid but cannot go together, or cannot run
on this machine (a GPU-only option on a CPU, a LoRA key with a full fine-tune, a dataset or adapter that is not
there). One line per problem, so `load_config` can report them all at once with the type errors.

For: `check_combinations(cfg, has_cuda)`, called by config.load_config after the keys parsed.
Not for: key names and types (config.py's TrainConfig), LLaMA-Factory-only keys (lf_keys.py, lf_data_keys.py,
lf_extras.py, which this module calls), or reading dataset rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from athanor.errors import AthanorError
from athanor.train.optimizer_keys import optimizer_problems

if TYPE_CHECKING:
    from athanor.train.config import TrainConfig


def check_combinations(cfg: TrainConfig, has_cuda: bool) -> list[str]:
    """Settings that are each fine but impossible together (or on this machine); one line per problem."""
    problems = _hardware_problems(cfg, has_cuda) + _method_problems(cfg) + _schedule_problems(cfg)
    problems += optimizer_problems(cfg)
    problems += _path_problems(cfg)
    if cfg.dataset:
        problems += _dataset_problems(cfg)
    return problems


def _hardware_problems(cfg: TrainConfig, has_cuda: bool) -> list[str]:
    out = []
    if cfg.quantization_bit is not None:
        from athanor.train.qlora import NEEDS_BNB, NEEDS_CUDA, has_bitsandbytes

        if not has_cuda:
            out.append(NEEDS_CUDA.format(bits=cfg.quantization_bit))
        elif not has_bitsandbytes():
            out.append(NEEDS_BNB)
    if cfg.fp16 and not has_cuda:
        out.append("fp16: float16 mixed precision needs a CUDA GPU; use bf16: true or neither on CPU")
    if cfg.fp16 and cfg.bf16:
        out.append("bf16 and fp16 are both true; pick one")
    return out


def _method_problems(cfg: TrainConfig) -> list[str]:
    out = []
    explicit = cfg.model_fields_set
    if cfg.quantization_bit is not None and cfg.finetuning_type != "lora":
        out.append(f"quantization_bit needs finetuning_type: lora (got {cfg.finetuning_type}); a quantized base "
                   "cannot be trained directly")
    lora_keys = sorted(k for k in ("lora_rank", "lora_alpha", "lora_dropout", "lora_target") if k in explicit)
    if lora_keys and cfg.finetuning_type != "lora":
        out.append(f"{', '.join(lora_keys)} set but finetuning_type is {cfg.finetuning_type}; they only apply to lora")
    if "pref_loss" in explicit and cfg.stage != "dpo":
        out.append(f"pref_loss set but stage is {cfg.stage}; it only applies to stage: dpo")
    if "pref_beta" in explicit and cfg.stage not in ("dpo", "kto"):
        out.append(f"pref_beta set but stage is {cfg.stage}; it only applies to stage: dpo and kto")
    kto_keys = sorted(k for k in ("kto_chosen_weight", "kto_rejected_weight") if k in explicit)
    if kto_keys and cfg.stage != "kto":
        out.append(f"{', '.join(kto_keys)} set but stage is {cfg.stage}; they only apply to stage: kto")
    if cfg.packing and cfg.stage in ("dpo", "rm", "kto"):
        out.append(f"packing: true is not supported with stage: {cfg.stage} (chosen and rejected must stay whole)")
    if not cfg.dataset and cfg.do_train:
        out.append("dataset: no dataset given; name one from dataset_info.json or a file path")
    from athanor.train.lf_data_keys import data_key_problems, predict_problems
    from athanor.train.lf_extras import extras_problems  # Muon, LLaMA Pro, ASFT/EAFT, GRPO

    return out + _lf_method_problems(cfg) + extras_problems(cfg) + data_key_problems(cfg) + predict_problems(cfg)


def _lf_method_problems(cfg: TrainConfig) -> list[str]:
    """LLaMA-Factory methods modelled as keys but not implemented here: refused, each with its reason."""
    out = []
    explicit = cfg.model_fields_set
    if cfg.finetuning_type == "oft" and (cfg.oft_rank == 0) == (cfg.oft_block_size == 0):
        out.append(f"oft_rank and oft_block_size: exactly one must be non-zero (got {cfg.oft_rank} and "
                   f"{cfg.oft_block_size})")
    if cfg.finetuning_type == "oft" and cfg.quantization_bit is not None:
        out.append("quantization_bit with finetuning_type: oft is not supported here; use lora")
    if cfg.tokenized_path and cfg.stage in ("dpo", "rm", "kto"):
        out.append(f"tokenized_path: not implemented for stage: {cfg.stage} (pairs are tokenized each run)")
    if cfg.use_dft_loss and cfg.stage != "sft":
        out.append(f"use_dft_loss: the DFT loss applies to stage: sft (got {cfg.stage})")
    if cfg.pref_loss in ("hinge", "kto_pair"):
        out.append(f"pref_loss: {cfg.pref_loss} is not implemented; use sigmoid, ipo, orpo or simpo")
    lora_extras = sorted(k for k in ("use_dora", "use_rslora", "pissa_init", "loraplus_lr_ratio", "additional_target",
                                     "create_new_adapter", "adapter_name_or_path") if k in explicit
                         and getattr(cfg, k) not in (None, False))
    if lora_extras and cfg.finetuning_type not in ("lora", "oft"):
        out.append(f"{', '.join(lora_extras)} set but finetuning_type is {cfg.finetuning_type}; they only apply to lora")
    if cfg.pissa_init and cfg.use_dora:
        out.append("pissa_init and use_dora are both true; peft initialises DoRA its own way, pick one")
    if cfg.create_new_adapter and not cfg.adapter_name_or_path:
        out.append("create_new_adapter: true needs adapter_name_or_path (the adapter to merge first)")
    if cfg.adapter_name_or_path:
        for part in cfg.adapter_name_or_path.split(","):
            if not (Path(part.strip()).expanduser() / "adapter_config.json").is_file():
                out.append(f"adapter_name_or_path: {part.strip()} holds no adapter_config.json")
    return out


def _schedule_problems(cfg: TrainConfig) -> list[str]:
    out = []
    if cfg.max_steps == 0 or cfg.max_steps < -1:
        out.append(f"max_steps: must be -1 (use num_train_epochs) or a positive number (got {cfg.max_steps})")
    if cfg.val_size >= 1 and cfg.val_size != int(cfg.val_size):
        out.append(f"val_size: a share must be below 1, a count must be whole (got {cfg.val_size})")
    if cfg.val_size and cfg.eval_dataset:
        out.append("val_size and eval_dataset are both set; hold out either a split of dataset or eval_dataset")
    return out


def _path_problems(cfg: TrainConfig) -> list[str]:
    out = []
    model = cfg.model_name_or_path
    if not _model_exists(model):
        out.append(f"model_name_or_path: {model!r} is not a file, a directory or a model in the store "
                   "(see `athanor list`)")
    resume = cfg.resume_from_checkpoint
    if isinstance(resume, str) and not Path(resume).expanduser().is_dir():
        out.append(f"resume_from_checkpoint: {resume} is not a checkpoint folder")
    return out


def _model_exists(name: str) -> bool:
    if Path(name).expanduser().exists():
        return True
    from athanor.models.store import Store

    try:
        Store().get(name)
    except AthanorError:
        return False
    return True


def _dataset_problems(cfg: TrainConfig) -> list[str]:
    """Each dataset must be found, and its kind (conversations vs preference pairs) must suit the stage."""
    from athanor.data.registry import resolve_dataset

    if cfg.stage == "pt":
        return _text_dataset_problems(cfg)
    out = []
    for name in cfg.dataset + cfg.eval_dataset:
        try:
            spec = resolve_dataset(name, cfg.dataset_dir)
        except AthanorError as e:
            out.append(f"dataset: {e}")
            continue
        if cfg.stage == "kto":
            if not spec.ranking and "kto_tag" not in spec.columns:
                out.append(f"dataset: {name} has neither a kto_tag column nor chosen/rejected pairs, which stage: "
                           "kto needs (columns: {\"kto_tag\": ...} in dataset_info.json, or ranking: true)")
            continue
        pairs = cfg.stage in ("dpo", "rm")
        if pairs and not spec.ranking:
            out.append(f"dataset: {name} has no chosen/rejected pairs, which stage: {cfg.stage} needs "
                       "(set ranking: true in dataset_info.json, or use a preference file)")
        if not pairs and spec.ranking:
            out.append(f"dataset: {name} holds preference pairs; use stage: dpo or rm, or an SFT dataset")
    return out


def _text_dataset_problems(cfg: TrainConfig) -> list[str]:
    from athanor.train.pretrain import resolve_text_dataset

    out = []
    for name in cfg.dataset + cfg.eval_dataset:
        try:
            resolve_text_dataset(name, cfg.dataset_dir)
        except AthanorError as e:
            out.append(f"dataset: {e}")
    return out
