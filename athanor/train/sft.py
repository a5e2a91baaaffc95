"""Supervised fine-tuning (stage: sft) and plain-text pretraining (stage: pt) with LoRA, QLoRA, full or freeze
tuning: config -> data -> model -> train -> save.

For: the one recipe, readable top to bottom (torchtune's shape): `run_sft(cfg)` validates and tokenizes every
sample before the model loads, then trains with `SftTrainer` (transformers.Trainer whose LM head runs only on
labelled positions, fast_loss.py; + `peft` for LoRA) and writes `output_dir`: the adapter (or full model),
tokenizer files, `train_config.yaml`, `trainer_log.jsonl` (one JSON object per log step) and `loss.png`;
checkpoints every save_steps, resumable with resume_from_checkpoint. sft: loss on assistant tokens only (encode.py);
pt: loss on every token of plain texts (pretrain.py). QLoRA (`quantization_bit` 4/8) loads the base through
bitsandbytes on CUDA; the config refuses it without a GPU.

Not for: DPO (dpo.py), merging and export (export.py). A base is a Hugging Face directory or a GGUF file (our
loader dequantizes it to float32; its tokenizer is rebuilt from the metadata and saved as HF files).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from athanor.errors import AthanorError
from athanor.models.loader import load_checkpoint
from athanor.text.tokenizer import Tokenizer
from athanor.train.callbacks import LOG_FILE, JsonlLogCallback, estimate_memory, plot_loss
from athanor.train.config import TrainConfig
from athanor.train.encode import Example, collate, encode_conversation, pack_examples
from athanor.train.export import use_template

if TYPE_CHECKING:
    from athanor.models.checkpoint import Checkpoint

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja",
                   "special_tokens_map.json")


@dataclass
class SftResult:
    output_dir: Path
    num_train_examples: int  # samples (before packing)
    num_train_rows: int  # rows the trainer sees (after packing)
    train_loss: float  # mean over the run, as transformers reports it
    log_history: list[dict]


def run_sft(cfg: TrainConfig, echo: Callable[[str], None] = print) -> SftResult:
    """Train and save; every user error (model, data, template) surfaces before the model is loaded. `echo` gets
    the human-readable progress lines (dataset validation counts, sizes)."""
    assert cfg.stage in ("sft", "pt"), "run_sft runs stage: sft and stage: pt (plain text, loss on every token)"
    # 1. Resolve the base model and its tokenizer (the template and stop token come from here).
    resume = resume_arg(cfg, echo)
    base, gguf, tokenizer = base_and_tokenizer(cfg)
    # 2. Data: validate every record, tokenize with the model's template, split, pack.
    train_rows, eval_rows, num_examples = build_datasets(cfg, tokenizer, echo)
    # 3. Model: transformers + peft.
    model = load_model(cfg, base, gguf, packed_attention=True)
    save_pissa_init(cfg, model)
    width = cfg.cutoff_len if cfg.streaming else max(len(r.input_ids) for r in train_rows)
    echo(estimate_memory(model, cfg.per_device_train_batch_size, width, cfg.gradient_checkpointing).summary())
    # 4. Train.
    trainer = _trainer(cfg, model, tokenizer, train_rows, eval_rows)
    if launch := describe_launch(trainer.args):
        echo(launch)
    try:
        # enable_grad: loading our inference engine in the same process turns autograd off globally.
        with torch.enable_grad():
            output = trainer.train(resume_from_checkpoint=resume)
    except RuntimeError as e:  # torch.OutOfMemoryError (CUDA) and CPU allocation failures are RuntimeErrors
        if "out of memory" not in str(e).lower() and "can't allocate memory" not in str(e).lower():
            raise
        raise AthanorError(out_of_memory_message(cfg)) from e
    # 5. Save the adapter (or model) next to the tokenizer files and the config that made it.
    out = Path(cfg.output_dir)
    save_model(trainer, out)
    if cfg.do_eval and eval_rows:  # LF's eval step after training (every process): eval_results.json
        trainer.save_metrics("eval", trainer.evaluate())
    if trainer.is_world_process_zero():  # under a launcher, one process writes the files (not N racing copies)
        save_side_files(cfg, base, tokenizer, out)
        plot_loss(out / LOG_FILE)
        if cfg.do_predict:  # LF's predict step: generated_predictions.jsonl and BLEU/ROUGE (predict.py)
            from athanor.train.predict import run_predict

            run_predict(cfg, trainer.model, tokenizer, echo)
    num_rows = num_examples if cfg.streaming else len(train_rows)
    return SftResult(out, num_examples, num_rows, float(output.training_loss), trainer.state.log_history)


def out_of_memory_message(cfg: TrainConfig) -> str:
    """The knobs that lower peak memory, with this config's current values."""
    batch = (f"per_device_train_batch_size={cfg.per_device_train_batch_size} (halve it and double "
             f"gradient_accumulation_steps={cfg.gradient_accumulation_steps})")
    knobs = [batch, f"cutoff_len={cfg.cutoff_len}"]
    if not cfg.gradient_checkpointing:
        knobs.append("gradient_checkpointing=true")
    if cfg.finetuning_type != "lora":
        knobs.append("finetuning_type=lora")
    elif cfg.quantization_bit is None:
        knobs.append("quantization_bit=4 (QLoRA, CUDA only)")
    return "out of memory while training; lower " + ", ".join(knobs)


def resume_arg(cfg: TrainConfig, echo: Callable[[str], None] = print) -> str | bool | None:
    """Also the first check every recipe runs, before anything loads."""
    from athanor.train.checkpoints import check_resume_folder, last_whole_checkpoint

    resume = cfg.resume_from_checkpoint
    if resume is True:  # the last whole checkpoint: one half-written by a killed run is named and skipped
        return str(last_whole_checkpoint(cfg.output_dir, echo))
    if resume:
        return str(check_resume_folder(resume))
    return None


def resolve_base(name_or_path: str) -> Path:
    """The weights for `model_name_or_path`: a Hugging Face directory or a .gguf file (a path or a store name)."""
    from athanor.models.store import Store

    return Path(Store().resolve(name_or_path).weights)


# ------------------------------------------------------------------------------------------------ data


def build_datasets(cfg: TrainConfig, tokenizer: Tokenizer, echo: Callable[[str], None] = print
                   ) -> tuple[list[Example], list[Example], int]:
    """(train rows, eval rows, number of training samples): validated, tokenized, split, packed if asked. With
    tokenized_path (LLaMA-Factory's): rows saved there by an earlier run are loaded instead (the dataset keys are
    then not read), else this run's rows are saved there."""
    if cfg.streaming:  # a lazily read IterableDataset instead of a list (streaming.py)
        from athanor.train.streaming import stream_datasets

        stream, held_out = stream_datasets(cfg, tokenizer, echo)
        return stream, held_out, 0
    if cfg.tokenized_path is None:
        return _build_datasets(cfg, tokenizer, echo)
    file = Path(cfg.tokenized_path) / TOKENIZED_FILE
    if file.is_file():
        saved = json.loads(file.read_text(encoding="utf-8"))
        train, held_out = ([Example(**r) for r in saved[k]] for k in ("train", "eval"))
        echo(f"loaded {len(train)} rows, {len(held_out)} held out from {file} (dataset keys not read)")
        return train, held_out, saved["num_samples"]
    train, held_out, num = _build_datasets(cfg, tokenizer, echo)
    file.parent.mkdir(parents=True, exist_ok=True)
    rows = {"train": [vars(r) for r in train], "eval": [vars(r) for r in held_out], "num_samples": num}
    file.write_text(json.dumps(rows), encoding="utf-8")
    echo(f"tokenized rows saved to {file}; later runs with this tokenized_path load them")
    return train, held_out, num


TOKENIZED_FILE = "athanor_tokenized.json"


def _build_datasets(cfg: TrainConfig, tokenizer: Tokenizer, echo: Callable[[str], None] = print
                    ) -> tuple[list[Example], list[Example], int]:
    examples = _examples(cfg, cfg.dataset, tokenizer, echo)
    if not examples:
        raise AthanorError(f"no sample keeps any assistant token within cutoff_len={cfg.cutoff_len}; raise it")
    if cfg.eval_dataset:  # a separate held-out set (e.g. new phrasings) instead of a random split
        train, held_out = examples, _examples(cfg, cfg.eval_dataset, tokenizer, echo)
        examples = examples + held_out
    else:
        train, held_out = _split(examples, cfg.val_size, cfg.seed)
    num_tokens = sum(len(e.input_ids) for e in train)
    if cfg.packing:
        train = pack_examples(train, cfg.cutoff_len)
    echo(f"{len(examples)} samples, {num_tokens} training tokens, {len(train)} rows, {len(held_out)} held out")
    return train, held_out, len(examples) - len(held_out)


def _examples(cfg: TrainConfig, names: list[str], tokenizer: Tokenizer, echo: Callable[[str], None]
              ) -> list[Example]:
    """The datasets `names`, tokenized; samples whose labels cutoff_len removed entirely are dropped."""
    if cfg.stage == "pt":
        examples = _pt_examples(cfg, names, tokenizer, echo)
    else:
        examples = _sft_examples(cfg, names, tokenizer, echo)
    return [e for e in examples if e.num_label_tokens]


def _sft_examples(cfg: TrainConfig, names: list[str], tokenizer: Tokenizer, echo: Callable[[str], None]
                  ) -> list[Example]:
    from athanor.data.formats import Conversation
    from athanor.data.registry import load_datasets

    samples, reports = load_datasets(names, cfg.dataset_dir, cfg.max_samples)
    for report in reports:
        echo(f"dataset {report.summary()}")
    assert all(isinstance(s, Conversation) for s in samples), "config checks keep preference data out of sft"
    return [encode_conversation(tokenizer, with_system(s.messages, cfg.default_system), s.tools,
                                cutoff_len=cfg.cutoff_len, mask_history=cfg.mask_history,
                                train_on_prompt=cfg.train_on_prompt) for s in samples]


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    """LLaMA-Factory's default_system: the system prompt of samples that bring none."""
    if system is None or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system}, *messages]


def _pt_examples(cfg: TrainConfig, names: list[str], tokenizer: Tokenizer, echo: Callable[[str], None]
                 ) -> list[Example]:
    from athanor.train.pretrain import encode_texts, load_all_texts

    texts, reports = load_all_texts(names, cfg.dataset_dir, cfg.max_samples)
    for report in reports:
        echo(f"dataset {report.summary()}")
    return encode_texts(tokenizer, texts, cfg.cutoff_len)


def _split(examples: list[Example], val_size: float, seed: int) -> tuple[list[Example], list[Example]]:
    import random

    num_val = int(val_size) if val_size >= 1 else round(val_size * len(examples))
    if num_val == 0:
        return examples, []
    if num_val >= len(examples):
        raise AthanorError(f"val_size={val_size} leaves no training samples out of {len(examples)}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = set(order[:num_val])
    return [e for i, e in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)]


class ListDataset:
    """The minimum torch's DataLoader needs; rows are `Example`s and `collate` turns them into tensors."""

    def __init__(self, rows: list[Example]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Example:
        return self.rows[i]


# ------------------------------------------------------------------------------------------------ model


def base_and_tokenizer(cfg: TrainConfig) -> tuple[Path, Checkpoint | None, Tokenizer]:
    """The base model's path, its GGUF checkpoint (our dequantizer; None for a Hugging Face folder; the file is
    checked before any data work) and its tokenizer with the config's template (a LLaMA-Factory name, chatml, Jinja,
    or the model's own). Every stage starts here."""
    base = resolve_base(cfg.model_name_or_path)
    gguf = None if base.is_dir() else load_checkpoint(base)
    tokenizer = gguf.tokenizer if gguf else Tokenizer.from_hf_dir(base)
    use_template(tokenizer, cfg.template, cfg.enable_thinking)
    return base, gguf, tokenizer


def load_model(cfg: TrainConfig, base: Path, gguf: Checkpoint | None, packed_attention: bool = False) -> Any:
    """transformers model (+ peft LoRA, or frozen layers) from the config. `packed_attention`: attention runs per
    sample of a packed row (packed_attention.py; for rows from encode.collate, which sft and pt train on)."""
    import transformers

    transformers.set_seed(cfg.seed)  # new LoRA weights are drawn here
    if cfg.quantization_bit is not None:
        from athanor.train.qlora import load_quantized

        model = load_quantized(cfg, base, gguf)
    elif gguf is None:
        model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    else:
        model = _model_from_gguf(base, gguf)
    if cfg.pure_bf16:  # LF: weights and trainable parameters stay bfloat16 (no float32 upcast)
        model = model.to(torch.bfloat16)
    # Without a KV cache transformers turns restarting position_ids into a per-sample mask (see encode.collate);
    # packed attention does without the mask where the architecture allows it.
    model.config.use_cache = False
    if packed_attention:
        from athanor.train.packed_attention import use_packed_attention

        use_packed_attention(model)
    if cfg.finetuning_type == "lora":
        return _with_lora(cfg, model)
    if cfg.finetuning_type == "oft":
        return _with_oft(cfg, model)
    if cfg.finetuning_type == "freeze":
        freeze_layers(cfg, model)
    return model


def freeze_layers(cfg: TrainConfig, model: Any) -> None:
    """finetuning_type: freeze: the last freeze_trainable_layers blocks train, or with use_llama_pro the expanded
    blocks (llama_pro.py)."""
    if cfg.use_llama_pro:
        from athanor.train.llama_pro import train_only_expanded_blocks

        train_only_expanded_blocks(model, cfg.freeze_trainable_layers)
    else:
        _freeze_all_but_last_layers(model, cfg.freeze_trainable_layers)


def _model_from_gguf(base: Path, gguf: Checkpoint) -> Any:
    """transformers maps the GGUF metadata to a config; the weights are our dequantized float32 tensors. (Loading
    with `gguf_file=` marks the model as quantized, and Trainer then refuses to train it.)"""
    import transformers

    config = transformers.AutoConfig.from_pretrained(base.parent, gguf_file=base.name)
    config.dtype = torch.float32
    model = transformers.AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(gguf.tensors, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if unexpected or set(missing) - tied:
        raise AthanorError(f"{base.name}: GGUF tensors do not match the {type(model).__name__} layout "
                           f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})")
    return model


def _with_lora(cfg: TrainConfig, model: Any) -> Any:
    """A new LoRA (with LF's variants: DoRA, rsLoRA, PiSSA init, extra fully-trained modules), or training continued
    on adapter_name_or_path: every adapter but the last is merged in first (the last too with create_new_adapter)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    adapters = [a.strip() for a in (cfg.adapter_name_or_path or "").split(",") if a.strip()]
    keep = adapters[-1] if adapters and not cfg.create_new_adapter else None
    for path in adapters if keep is None else adapters[:-1]:
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    if keep is not None:
        return PeftModel.from_pretrained(model, keep, is_trainable=True)
    target = "all-linear" if cfg.lora_target == "all" else cfg.lora_target
    if cfg.use_llama_pro:  # LLaMA Pro + LoRA: adapters only on the expanded blocks
        from athanor.train.llama_pro import expanded_lora_targets

        target = expanded_lora_targets(model, cfg.lora_target, cfg.freeze_trainable_layers)
    init: Any = True
    if cfg.pissa_init:
        init = "pissa" if cfg.pissa_iter == -1 else f"pissa_niter_{cfg.pissa_iter}"
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.effective_lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=target, task_type="CAUSAL_LM", use_dora=cfg.use_dora, use_rslora=cfg.use_rslora,
                      init_lora_weights=init, modules_to_save=cfg.additional_target or None)
    try:
        return get_peft_model(model, lora)
    except ValueError as e:  # peft: "Target modules {...} not found in the base model"
        raise AthanorError(" ".join(f"lora_target: {e}".split())) from None


def _with_oft(cfg: TrainConfig, model: Any) -> Any:
    """Orthogonal fine-tuning adapters (peft OFT), with LLaMA-Factory's keys: oft_rank or oft_block_size,
    oft_target, module_dropout, additional_target."""
    from peft import OFTConfig, get_peft_model

    target = "all-linear" if cfg.oft_target == "all" else cfg.oft_target
    oft = OFTConfig(r=cfg.oft_rank, oft_block_size=cfg.oft_block_size, target_modules=target,
                    module_dropout=cfg.module_dropout, modules_to_save=cfg.additional_target or None,
                    task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, oft)
    except ValueError as e:  # e.g. a layer width that oft_block_size does not divide
        raise AthanorError(" ".join(f"oft: {e}".split())) from None


def _freeze_all_but_last_layers(model: Any, num_layers: int) -> None:
    layers = model.model.layers
    if num_layers > len(layers):
        raise AthanorError(f"freeze_trainable_layers={num_layers} but the model has {len(layers)} layers")
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in layers[-num_layers:]:
        for p in layer.parameters():
            p.requires_grad_(True)


# ------------------------------------------------------------------------------------------------ trainer


def _trainer(cfg: TrainConfig, model: Any, tokenizer: Tokenizer, train_rows: list[Example],
             eval_rows: list[Example]) -> Any:
    from athanor.train.fast_loss import SftTrainer
    from athanor.train.optimizers import install_optimizer

    pad_id = pad_token_id(tokenizer)
    trainer = SftTrainer(
        model=model, args=training_arguments(cfg, bool(eval_rows)),
        train_dataset=train_rows if cfg.streaming else ListDataset(train_rows),
        eval_dataset=ListDataset(eval_rows) if eval_rows else None,
        data_collator=lambda rows: collate(rows, pad_id), callbacks=[JsonlLogCallback(Path(cfg.output_dir))],
    )
    install_optimizer(trainer, cfg, model)  # LoRA+, GaLore, APOLLO, BAdam, Adam-mini (optimizers.py)
    trainer.dft_loss = cfg.use_dft_loss
    if cfg.use_eaft_loss or cfg.use_asft_loss:
        from athanor.train.sft_losses import use_reweighted_loss

        use_reweighted_loss(trainer, cfg, model)
    return trainer


def describe_launch(args: Any) -> str | None:
    """One line naming the distributed setup when a launcher (accelerate launch, torchrun) started this process."""
    state = args.distributed_state
    if state is None or state.distributed_type.value == "NO":
        return None
    return f"distributed: {state.distributed_type.value}, {args.world_size} process(es), this is rank {args.process_index}"


def pad_token_id(tokenizer: Tokenizer) -> int:
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0  # padding is never attended


def training_arguments(cfg: TrainConfig, has_eval: bool, cls: Any = None, **extra: Any) -> Any:
    """The config's optimisation keys as `transformers.TrainingArguments` (shared by every recipe), or as its
    subclass `cls` (trl's configs) with `extra` keys."""
    import transformers

    eval_strategy = (cfg.eval_strategy or "steps") if has_eval else "no"
    return (cls or transformers.TrainingArguments)(
        output_dir=cfg.output_dir, per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size or cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps, lr_scheduler_type=cfg.lr_scheduler_type,
        # transformers 5: a float below 1 is a share of the steps; LF's warmup_steps wins when set
        warmup_steps=cfg.warmup_steps if cfg.warmup_steps > 0 else cfg.warmup_ratio,
        optim=cfg.optim, adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2, adam_epsilon=cfg.adam_epsilon,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, bf16=cfg.bf16, fp16=cfg.fp16,
        gradient_checkpointing=cfg.gradient_checkpointing, seed=cfg.seed, data_seed=cfg.seed,
        logging_steps=cfg.logging_steps, save_strategy=cfg.save_strategy, save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, save_only_model=cfg.save_only_model,
        eval_strategy=eval_strategy, eval_steps=(cfg.eval_steps or cfg.save_steps) if has_eval else None,
        report_to="none", remove_unused_columns=False, dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(), include_num_input_tokens_seen="all",
        prediction_loss_only=True,  # eval reports eval_loss; SftTrainer's logits are label rows only
        **extra,
    )


PISSA_INIT = "pissa_init"


def save_pissa_init(cfg: TrainConfig, model: Any) -> None:
    """PiSSA moves the principal components out of the base weights; to give an adapter for the *unchanged* base,
    the initial adapter is kept (as peft asks: saved with init_lora_weights=True) and used when saving."""
    if not (cfg.pissa_init and _is_peft(model)):
        return
    lora = model.peft_config["default"]
    init, lora.init_lora_weights = lora.init_lora_weights, True
    model.save_pretrained(str(Path(cfg.output_dir) / PISSA_INIT), save_embedding_layers=False)
    lora.init_lora_weights = init


def save_model(trainer: Any, out: Path) -> None:
    """The adapter (or whole model). A PiSSA adapter is saved converted to a plain LoRA of the original base (what
    LLaMA-Factory's pissa_convert writes), so chat/export merge it into the base they load."""
    init = out / PISSA_INIT
    if _is_peft(trainer.model) and (init / "adapter_config.json").is_file():
        trainer.model.save_pretrained(str(out), save_embedding_layers=False,
                                      path_initial_model_for_weight_conversion=str(init))
        return
    if _is_peft(trainer.model):
        # peft would also save the (frozen, unchanged) lm_head / embedding base weights when LoRA targets them
        # ("save_embedding_layers"); those are only needed after resizing the vocabulary, which we never do.
        if trainer.is_world_process_zero():  # DDP replicas hold the same adapter: the main process writes it
            trainer.model.save_pretrained(str(out), save_embedding_layers=False)
    else:
        trainer.save_model(str(out))  # every process calls it (FSDP/DeepSpeed gather shards); the main one writes


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def save_side_files(cfg: TrainConfig, base: Path, tokenizer: Tokenizer, out: Path) -> None:
    """Tokenizer files (so chat/export find the template and stop token) and the config that made this run."""
    save_tokenizer_files(base, tokenizer, out)
    (out / "train_config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def save_tokenizer_files(base: Path, tokenizer: Tokenizer, out: Path) -> None:
    """The base's tokenizer files as Hugging Face files in `out` (a GGUF's rebuilt from its metadata)."""
    out.mkdir(parents=True, exist_ok=True)
    if base.is_dir():
        for name in TOKENIZER_FILES:
            if (base / name).is_file():
                shutil.copy2(base / name, out / name)
    else:  # a GGUF base: write the tokenizer rebuilt from its metadata as HF files
        tokenizer.backend.save(str(out / "tokenizer.json"))
        (out / "tokenizer_config.json").write_text(json.dumps({
            "bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token,
            "chat_template": tokenizer.chat_template, "add_bos_token": tokenizer.add_bos_token}, indent=2))
        (out / "generation_config.json").write_text(json.dumps({"eos_token_id": sorted(tokenizer.stop_token_ids)}))
